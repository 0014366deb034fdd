"""The offline sample dataset: English and Chinese SFT rows with known, injected defects.

:func:`generate` writes four source files in three formats (alpaca JSON, ShareGPT
JSONL, OpenAI-messages JSONL, alpaca CSV) plus ``truth.jsonl``: for every row
the true category and the defect injected into it, if any. Tests and benches
measure each filter against that truth. Two more files hold tool-use and reasoning
rows (:mod:`.tools`: OpenAI JSONL and LLaMA-Factory ShareGPT JSON, no defects); they
draw from a generator of their own, so the four files above are the same bytes
whatever their params, and their truth rows follow the others in ``truth.jsonl``.
:func:`pretrain_corpus` gives the plain text the base model is pretrained on (same
facts, no chat format, no defects).
"""

from __future__ import annotations

import csv
import io
import random
from collections import defaultdict
from pathlib import Path

from ..config import SampleParams
from ..io import atomic_path, write_json, write_jsonl
from . import defects as D
from . import tools as T
from .tasks import CATEGORIES, GENERATORS, SYSTEM, WEIGHTS, Item

CHAT_SOURCES = {"alpaca_en": "alpaca_en.json", "sharegpt_zh": "sharegpt_zh.jsonl",
                "openai_mixed": "openai_mixed.jsonl", "alpaca_zh": "alpaca_zh.csv"}
SOURCES = {**CHAT_SOURCES, **T.TOOL_SOURCES}    # every file generate() writes, name -> file name


def _unique_items(rng: random.Random, category: str, lang: str, n: int, seen: set) -> list[Item]:
    out, tries = [], 0
    while len(out) < n and tries < n * 50:
        tries += 1
        item = GENERATORS[category](rng, lang)
        if item.key in seen:
            continue
        seen.add(item.key)
        out.append(item)
    return out


def clean_rows(sample_params: SampleParams, rng: random.Random) -> list[dict]:
    """Defect-free conversations: ~5% two-turn, ~10% with a system prompt."""
    seen: set = set()
    rows = []
    for lang in sample_params.languages:
        for cat in CATEGORIES:
            n = round(sample_params.rows_per_lang * WEIGHTS[cat])
            items = _unique_items(rng, cat, lang, n, seen)
            i = 0
            while i < len(items):
                turns = items[i:i + 2] if rng.random() < 0.05 and i + 1 < len(items) else items[i:i + 1]
                i += len(turns)
                msgs = [{"role": "system", "content": SYSTEM[lang]}] if rng.random() < 0.1 else []
                for it in turns:
                    msgs += [{"role": "user", "content": it.prompt}, {"role": "assistant", "content": it.response}]
                # the task slots without the template: rows that share them and the answer are
                # paraphrases the generator made by chance, which dedup should find (report uses it)
                rows.append({"messages": msgs, "label": cat, "lang": lang, "long": cat == "invitation",
                             "slots": ";".join(repr(it.key[:-1]) for it in turns)})
    return rows


def _mojibake_source(texts: list[str], rng: random.Random) -> str:
    """``rng.choice(texts)``, moved on to the next text with non-ASCII characters: ASCII text (a
    Chinese row's English translation) reads the same in GBK and Latin-1, so its "mojibake" was a
    fluent real answer labelled garbage. Draws from ``rng`` exactly what ``rng.choice`` draws."""
    i = rng.randrange(len(texts))
    return next((t for t in texts[i:] + texts[:i] if not t.isascii()), "乱码示例文本")


def inject(sample_params: SampleParams, rows: list[dict], rng: random.Random) -> list[dict]:
    """Add duplicates and corrupt disjoint subsets; every row gets a ``truth`` dict."""
    for r in rows:
        r["truth"] = {"category": r["label"], "defect": None, "slots": r["slots"]}
    n = len(rows)
    order = list(range(n))
    rng.shuffle(order)
    k_flip, k_garb = round(n * sample_params.label_flip_rate), round(n * sample_params.garbage_rate)
    flip_idx, garb_idx = order[:k_flip], order[k_flip:k_flip + k_garb]
    rest = order[k_flip + k_garb:]  # dups are copied from rows without other defects
    zh_texts = [r["messages"][-1]["content"] for r in rows if r["lang"] == "zh"] or ["乱码示例文本"]
    for i in flip_idx:
        r = rows[i]
        r["label"] = D.flip_label(rng, r["label"], CATEGORIES)
        r["truth"].update(defect="label_flip", given_label=r["label"])
    for j, i in enumerate(garb_idx):
        r = rows[i]
        kind = D.GARBAGE_TYPES[j % len(D.GARBAGE_TYPES)]
        last = r["messages"][-1]
        last["content"] = D.garbage(rng, kind, r["lang"], last["content"], _mojibake_source(zh_texts, rng))
        r["truth"].update(defect="garbage", garbage_type=kind)
    extra = []
    k_exact, k_near = round(n * sample_params.exact_dup_rate), round(n * sample_params.near_dup_rate)
    for i in rest[:k_exact]:
        src = rows[i]
        extra.append({**src, "messages": [dict(m) for m in src["messages"]],
                      "truth": {"category": src["truth"]["category"], "defect": "exact_dup", "of": i}})
    for i in rest[k_exact:k_exact + k_near]:
        src = rows[i]
        msgs = [dict(m) for m in src["messages"]]
        target = -1 if src["long"] or rng.random() < 0.5 else -2
        msgs[target]["content"], kind = D.near_duplicate(rng, msgs[target]["content"], src["lang"], src["long"])
        extra.append({**src, "messages": msgs,
                      "truth": {"category": src["truth"]["category"], "defect": "near_dup", "of": i, "edit": kind}})
    _inject_clean_defects(sample_params, rows, rest[k_exact + k_near:])
    return rows + extra


def _inject_clean_defects(sample_params: SampleParams, rows: list[dict], pool: list[int]) -> None:
    """Break the last response of rows from ``pool`` (rows with no other defect and no copies) in
    ways the clean stage repairs; truth holds the kind and the expected text after cleaning.

    A generator of its own, so that the rest of the sample (ids, sources, the other defects) is the
    same whatever the rate. Mojibake goes only to responses with non-ASCII characters.
    """
    k = round(len(rows) * sample_params.clean_defect_rate)
    if not k:
        return
    crng = random.Random(f"clean-defects:{sample_params.seed}")
    free = list(pool)
    for j in range(k):
        kind = D.CLEAN_TYPES[j % len(D.CLEAN_TYPES)]
        pick = next((x for x in free if kind != "mojibake" or not rows[x]["messages"][-1]["content"].isascii()),
                    None)
        if pick is None:
            continue
        free.remove(pick)
        r = rows[pick]
        last = r["messages"][-1]
        last["content"], expected = D.clean_defect(crng, kind, r["lang"], last["content"])
        r["truth"].update(defect="clean_defect", clean_defect=kind, expected=expected)


def _assign_sources(rows: list[dict], rng: random.Random) -> None:
    for r in rows:
        multi = sum(m["role"] == "user" for m in r["messages"]) > 1
        x = rng.random()
        if multi:
            r["source"] = "openai_mixed" if r["lang"] == "en" or x < 0.5 else "sharegpt_zh"
        elif r["lang"] == "en":
            r["source"] = "alpaca_en" if x < 0.7 else "openai_mixed"
        else:
            r["source"] = "sharegpt_zh" if x < 0.5 else ("alpaca_zh" if x < 0.75 else "openai_mixed")


def _alpaca(r: dict) -> dict:
    msgs = r["messages"]
    out = {"id": r["rid"], "instruction": msgs[-2]["content"], "input": "", "output": msgs[-1]["content"],
           "category": r["label"]}
    if msgs[0]["role"] == "system":
        out["system"] = msgs[0]["content"]
    return out


def _sharegpt(r: dict) -> dict:
    names = {"user": "human", "assistant": "gpt", "system": "system"}
    conv = [{"from": names[m["role"]], "value": m["content"]} for m in r["messages"]]
    return {"id": r["rid"], "conversations": conv, "category": r["label"]}


def _openai(r: dict) -> dict:
    return {"id": r["rid"], "messages": r["messages"], "category": r["label"]}


def generate(sample_params: SampleParams, out_dir: str | Path) -> dict:
    """Write the sample sources and truth.jsonl under ``out_dir``; returns counts."""
    rng = random.Random(sample_params.seed)
    rows = inject(sample_params, clean_rows(sample_params, rng), rng)
    order = list(range(len(rows)))
    rng.shuffle(order)
    for new, old in enumerate(order):
        rows[old]["rid"] = f"s{new:06d}"
    _assign_sources(rows, rng)
    by_source: dict[str, list[dict]] = defaultdict(list)
    for i in order:
        by_source[rows[i]["source"]].append(rows[i])
    out_dir = Path(out_dir)
    write_json(out_dir / SOURCES["alpaca_en"], [_alpaca(r) for r in by_source["alpaca_en"]])
    write_jsonl(out_dir / SOURCES["sharegpt_zh"], [_sharegpt(r) for r in by_source["sharegpt_zh"]])
    write_jsonl(out_dir / SOURCES["openai_mixed"], [_openai(r) for r in by_source["openai_mixed"]])
    buf = io.StringIO()
    w = csv.DictWriter(buf, ["id", "instruction", "input", "output", "system", "category"], lineterminator="\n")
    w.writeheader()
    for r in by_source["alpaca_zh"]:
        w.writerow({"system": "", **_alpaca(r)})
    with atomic_path(out_dir / SOURCES["alpaca_zh"]) as tmp:
        tmp.write_text(buf.getvalue(), encoding="utf-8")
    truth = []
    for i in order:
        r = rows[i]
        t = {"id": f"{r['source']}:{r['rid']}", "lang": r["lang"], **r["truth"]}
        if "of" in t:
            src = rows[t["of"]]
            t["of"] = f"{src['source']}:{src['rid']}"
        truth.append(t)
    # tool-use and reasoning rows: their own generator, so nothing above depends on them
    avoid = {s for r in rows for s in r["slots"].split(";")}    # no tool row repeats a chat row's request
    tool_rows = T.generate_tool_rows(sample_params, avoid)
    write_jsonl(out_dir / T.TOOL_SOURCES["tools_openai"],
                [T.to_openai(r) for r in tool_rows if r["source"] == "tools_openai"])
    write_json(out_dir / T.TOOL_SOURCES["tools_sharegpt"],
               [T.to_sharegpt(r) for r in tool_rows if r["source"] == "tools_sharegpt"])
    truth += [T.truth_row(r) for r in tool_rows]
    write_jsonl(out_dir / "truth.jsonl", truth)
    counts = defaultdict(int)
    for t in truth:
        counts[t["defect"] or "clean"] += 1
    per_source = {s: len(v) for s, v in by_source.items()}
    for r in tool_rows:
        per_source[r["source"]] = per_source.get(r["source"], 0) + 1
    n_reasoning = sum(r["category"] == T.REASONING for r in tool_rows)
    return {"rows": len(rows) + len(tool_rows), **dict(sorted(counts.items())),
            "tool_rows": len(tool_rows) - n_reasoning, "reasoning_rows": n_reasoning,
            "per_source": dict(sorted(per_source.items()))}


# Share of the pretraining corpus written about the tool and reasoning rows. 0 keeps the corpus (and
# so the base model) as it was. At 0.05 the tokenizer learns merges for tool names, JSON keys and the
# tool markup: with params.yaml's base model every tool row then fits train.max_length (256 tokens;
# at most ~245), where at 0 a quarter of them are longer (up to ~355) and lose the end of the answer.
TOOL_DOC_SHARE = 0.0


def pretrain_corpus(languages: list[str], n: int, seed: int, tool_share: float = TOOL_DOC_SHARE) -> list[str]:
    """Plain-text documents about the same facts the tasks ask about: statements, and
    prompt/response pairs in a plain (non-chat) layout. No chat markup, no defects.

    With ``tool_share`` > 0 the last ``round(n * tool_share)`` documents are about the tool and
    reasoning rows instead (requests, tool outputs and answers; tool signatures, calls as JSON;
    column arithmetic: :func:`.tools.pretrain_documents`), drawn from a generator of their own:
    the documents before them are the corpus's first documents whatever the share."""
    k = round(n * tool_share)
    return _task_documents(languages, n - k, seed) + T.pretrain_documents(languages, k, seed)


def _task_documents(languages: list[str], n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    docs = []
    cats = list(CATEGORIES)
    weights = [WEIGHTS[c] for c in cats]
    while len(docs) < n:
        lang = rng.choice(languages)
        items = [GENERATORS[c](rng, lang) for c in rng.choices(cats, weights, k=rng.randint(2, 4))]
        if rng.random() < 0.4:  # the plain layout perplexity scoring uses: prompt, newline, response
            docs.append("\n\n".join(f"{it.prompt}\n{it.response}" for it in items))
        else:
            docs.append(("" if lang == "zh" else " ").join(it.statement for it in items))
    return docs
