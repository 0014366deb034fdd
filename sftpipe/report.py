"""The data card: rows in and out per stage, top drop reasons with examples, and, when the
data carries ground truth (the generated sample does), how well each filter did against it."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from .io import iter_jsonl
from .sample.quality import QUALITY_TYPES      # the sample's plausible-but-bad rows
from .schema import message_text

FILTER_STAGES = ("clean", "dedup", "label_noise", "perplexity", "split", "select")


def _read(path: Path) -> list[dict]:
    return list(iter_jsonl(path)) if path.is_file() else []


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _prf(found: set, truth: set) -> dict:
    tp = len(found & truth)
    p = tp / len(found) if found else 0.0
    r = tp / len(truth) if truth else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(f, 4), "found": len(found),
            "true": len(truth)}


def truth_metrics(truth: dict[str, dict], data: Path) -> dict:
    """Each filter measured against injected defects, over the rows that reached it."""
    collected_rows = _read(data / "collected" / "data.jsonl")
    collected = {r["id"] for r in collected_rows}
    if not collected & set(truth):
        return {}
    out = _clean_truth(truth, data, collected)
    dedup_drop = {d["id"] for d in _read(data / "dedup" / "dropped.jsonl")}
    pairs = [(i, t["of"], t["defect"]) for i, t in truth.items() if t["defect"] in ("exact_dup", "near_dup")
             and i in collected]
    in_pair = {x for i, o, _ in pairs for x in (i, o)}
    for kind in ("exact_dup", "near_dup"):
        ps = [(i, o) for i, o, k in pairs if k == kind]
        caught = sum(1 for i, o in ps if i in dedup_drop or o in dedup_drop)
        out[f"dedup_{kind}_recall"] = round(caught / len(ps), 4) if ps else None
    # paraphrases the generator made by chance: the same task slots in another template, same answer
    natural = _natural_paraphrases(truth, collected_rows)
    need = sum(len(g) - 1 for g in natural)
    found = sum(min(len(g & dedup_drop), len(g) - 1) for g in natural)
    out["dedup_paraphrase_recall"] = round(found / need, 4) if need else None
    others = collected - in_pair - set().union(*natural)
    out["dedup_other_rows_dropped"] = round(len(dedup_drop & others) / max(len(others), 1), 4)

    ln_in = {r["id"] for r in _read(data / "dedup" / "kept.jsonl")}
    flagged = {d["id"] for d in _read(data / "label_noise" / "dropped.jsonl")}
    flagged |= {r["id"] for r in _read(data / "label_noise" / "kept.jsonl") if r["meta"].get("label_issue")}
    flips = {i for i in ln_in if truth.get(i, {}).get("defect") == "label_flip"}
    for k, v in _prf(flagged, flips).items():
        out[f"label_noise_{k}"] = v

    pp_in = {r["id"] for r in _read(data / "label_noise" / "kept.jsonl")}
    pp_drop = {d["id"] for d in _read(data / "perplexity" / "dropped.jsonl")}
    garbage = {i for i in pp_in if truth.get(i, {}).get("defect") == "garbage"}
    quality = {i for i in pp_in if truth.get(i, {}).get("defect") in QUALITY_TYPES}
    clean = pp_in - garbage - quality       # plausible-but-bad rows are neither garbage nor clean
    out["perplexity_garbage_removed"] = round(len(pp_drop & garbage) / len(garbage), 4) if garbage else None
    out["perplexity_clean_removed"] = round(len(pp_drop & clean) / max(len(clean), 1), 4)
    by_kind = Counter(truth[i].get("garbage_type") for i in garbage - pp_drop)
    out["perplexity_garbage_missed_by_type"] = dict(sorted(by_kind.items()))
    for kind in QUALITY_TYPES:   # what the perplexity cut does to each quality defect (select scores the rest)
        rows = {i for i in quality if truth[i]["defect"] == kind}
        out[f"perplexity_{kind}_removed"] = round(len(pp_drop & rows) / len(rows), 4) if rows else None

    final = {r["id"] for s in ("train", "validation", "test") for r in _read(data / "split" / f"{s}.jsonl")}
    bad = {i for i in final if truth.get(i, {}).get("defect") in ("label_flip", "garbage", *QUALITY_TYPES)}
    bad |= {i for i, o, _ in pairs if i in final and o in final}  # both copies of a duplicate survived
    out["final_rows"] = len(final)
    out["final_defective_rows"] = len(bad)
    out["final_defect_rate"] = round(len(bad) / max(len(final), 1), 4)
    out.update(_select_truth(truth, data))
    return out


def _select_truth(truth: dict[str, dict], data: Path) -> dict:
    """Share of rows with a known defect in the training pool and among the selected rows, per kind."""
    pool = {d["id"] for d in _read(data / "select" / "dropped.jsonl")}
    chosen = {r["id"] for r in _read(data / "select" / "train.jsonl")}
    pool |= chosen
    if not pool:
        return {}
    out = {}
    for name, ids in (("pool", pool), ("selected", chosen)):
        kinds = Counter(truth.get(i, {}).get("defect") for i in ids)
        out[f"select_{name}_rows"] = len(ids)
        out[f"select_{name}_defect_rate"] = round(sum(n for k, n in kinds.items() if k) / max(len(ids), 1), 4)
        out[f"select_{name}_defects"] = dict(sorted((k, n) for k, n in kinds.items() if k))
        out[f"select_{name}_template_redundant"] = round(
            sum(bool(truth.get(i, {}).get("template_redundant")) for i in ids) / max(len(ids), 1), 4)
    return out


def _natural_paraphrases(truth: dict[str, dict], collected: list[dict]) -> list[set]:
    """Groups of collected rows with the same task slots (truth ``slots``) and the same normalized
    final answer: the same request in other words with the same answer."""
    from .dedup.semantic import normalize_text

    groups: dict[tuple, set] = {}
    for r in collected:
        slots = truth.get(r["id"], {}).get("slots")
        if slots:
            groups.setdefault((slots, normalize_text(r["messages"][-1]["content"])), set()).add(r["id"])
    return [g for g in groups.values() if len(g) > 1]


def _clean_truth(truth: dict[str, dict], data: Path, collected: set) -> dict:
    """Share of injected text defects that clean repaired to the expected text, per kind, and
    share of defect-free rows it changed at all."""
    kept = {r["id"]: r for r in _read(data / "clean" / "kept.jsonl")}
    if not kept:
        return {}
    dropped = {d["id"] for d in _read(data / "clean" / "dropped.jsonl")}
    done: dict[str, list[int]] = {}
    for i, t in truth.items():
        if t.get("defect") != "clean_defect" or i not in collected:
            continue
        ok = (i in dropped) if not t["expected"] else (i in kept and kept[i]["messages"][-1]["content"] == t["expected"])
        cell = done.setdefault(t["clean_defect"], [0, 0])
        cell[0] += ok
        cell[1] += 1
    plain = [i for i in collected if truth.get(i, {}).get("defect") is None and i in kept]
    changed = sum(1 for i in plain if kept[i]["meta"].get("clean"))
    total = sum(b for _, b in done.values())
    return {"clean_repaired": round(sum(a for a, _ in done.values()) / total, 4) if total else None,
            "clean_repaired_by_kind": {k: round(a / b, 4) for k, (a, b) in sorted(done.items())},
            "clean_defect_free_rows_changed": round(changed / max(len(plain), 1), 4)}


def _clean_examples(data: Path, metrics: Path, examples: int) -> list[str]:
    """Rows changed per rule, with before/after snippets (PII rules show only the masked text)."""
    m = _json(metrics / "clean.json")
    by_rule = m.get("rows_changed_by_rule", {})
    if not by_rule:
        return []
    shown = _json(data / "clean" / "details.json").get("examples", {})
    lines = ["## What clean changed", "", f"{m.get('rows_changed', 0)} of {m.get('rows_in', 0)} rows changed; "
             "every changed row lists its rules in `meta.clean`.", ""]
    for rule, n in by_rule.items():
        lines.append(f"### clean / {rule} ({n} rows)")
        for ex in shown.get(rule, [])[:examples]:
            before = f"\"{_one_line(ex['before'])}\" → " if "before" in ex else ""
            lines.append(f"- `{ex['id']}` message {ex['message']}: {before}\"{_one_line(ex['after'])}\"")
        lines.append("")
    return lines


def _one_line(text: str) -> str:
    """``text`` as it can stand in one line of the card: newlines shown as \\n, pipes escaped."""
    return text.replace("\n", "\\n").replace("|", "\\|")


def _excerpt(rec: dict, n: int = 90) -> str:
    text = " / ".join(message_text(m) for m in rec["messages"] if m["role"] != "system")
    text = text.replace("\n", " ").replace("|", "\\|")
    return text[:n] + ("…" if len(text) > n else "")


# (title, path relative to the card); written by the stages named, the last one after this card
PICTURES = [("dedup: duplicate cluster sizes", "plots/dedup_clusters.png"),
            ("label_noise: label issues per class", "plots/label_issues.png"),
            ("perplexity: distribution per group, with the cut lines", "plots/perplexity.png"),
            ("select: categories, reply length, IFD and embeddings, pool vs selected", "plots/select.png"),
            ("train: loss curves (drawn by the train stage)", "plots/training_curves.png")]


def _selection_section(data: Path, metrics: Path) -> list[str]:
    sel = _json(metrics / "select.json")
    details = _json(data / "select" / "details.json")
    if not sel:
        return []
    lines = ["", "## Selection", "", f"Method `{sel.get('method')}`, budget {sel.get('budget')}: "
             f"{sel.get('selected')} of {sel.get('rows_in')} training rows chosen."]
    cov = {k.removeprefix("coverage_"): v for k, v in sel.items() if k.startswith("coverage_")}
    if cov:
        lines += ["", "Embedding coverage of the pool by the selected rows (cosine to the nearest selected row; "
                  "spread: mean pairwise cosine, lower is more varied): "
                  + ", ".join(f"{k} {v}" for k, v in cov.items()) + "."]
    rows = details.get("distributions") or []
    if rows:
        lines += ["", "| dimension | value | before | after |", "|---|---|---|---|"]
        lines += [f"| {r['dimension']} | {r['value']} | {r['before']} | {r['after']} |" for r in rows
                  if r["dimension"] != "source" or len({x["value"] for x in rows if x["dimension"] == "source"}) < 12]
    return lines


def data_card(data: Path, metrics: Path, quality: dict, examples: int = 2) -> str:
    lines = ["# Data card", "", "Written by the `report` stage from the ledgers of each stage. "
             "Every dropped row is kept, with its evidence, in `data/<stage>/dropped.jsonl`.", ""]
    col = _json(metrics / "collect.json")
    lines += ["## Rows per stage", "", "| stage | in | kept | dropped | top reasons |", "|---|---|---|---|---|"]
    if col:
        top = ", ".join(f"{k} {v}" for k, v in Counter(col.get("quarantined_by_reason", {})).most_common(3))
        lines.append(f"| collect | {col['rows_in']} | {col['kept']} | {col['quarantined']} | {top} |")
    for st in FILTER_STAGES:
        m = _json(metrics / f"{st}.json")
        if m:
            top = ", ".join(f"{k} {v}" for k, v in Counter(m.get("dropped_by_reason", {})).most_common(3))
            lines.append(f"| {st} | {m['rows_in']} | {m['kept']} | {m['dropped']} | {top} |")
    split = _json(metrics / "split.json")
    if split:
        lines += ["", f"Final splits: train {split.get('train')}, validation {split.get('validation')}, "
                  f"test {split.get('test')} ({split.get('groups')} groups, "
                  f"{split.get('multi_row_groups')} with more than one row kept together)."]
    lines += _selection_section(data, metrics)
    lines += ["", "## Pictures", "", "PNG files beside this card (`dvc plots show` embeds them too); they need no "
              "network to view.", ""]
    lines += [f"![{title}]({path})" for title, path in PICTURES]
    lines += [""] + _clean_examples(data, metrics, examples)
    lines += ["## Why rows were dropped, with examples", ""]
    quarantine = _read(data / "collected" / "quarantine.jsonl")
    for reason, n in Counter(q["reason"] for q in quarantine).most_common():
        lines.append(f"### collect / {reason} ({n} rows)")
        for q in [q for q in quarantine if q["reason"] == reason][:examples]:
            lines.append(f"- `{q['path']}:{q['line'] or q['record']}` field `{q['field']}`: {q['message']}")
        lines.append("")
    for st in FILTER_STAGES:
        dropped = _read(data / st / "dropped.jsonl")
        for reason, n in Counter(d["reason"] for d in dropped).most_common():
            lines.append(f"### {st} / {reason} ({n} rows)")
            for d in [d for d in dropped if d["reason"] == reason][:examples]:
                ev = json.dumps(d["evidence"], ensure_ascii=False, sort_keys=True)
                lines.append(f"- `{d['id']}` {ev}: \"{_excerpt(d['record'])}\"")
            lines.append("")
    if quality:
        lines += ["## Filters measured against the injected ground truth", "",
                  "| measure | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in quality.items()]
        lines.append("")
    return "\n".join(lines)
