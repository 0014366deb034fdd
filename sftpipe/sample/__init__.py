"""The offline sample dataset: English and Chinese SFT rows with known, injected defects.

:func:`generate` writes four source files in three formats (alpaca JSON, ShareGPT
JSONL, OpenAI-messages JSONL, alpaca CSV) plus ``truth.jsonl``: for every row
the true category and the defect injected into it, if any. Tests and benches
measure each filter against that truth. Besides the defects filters catch
(:mod:`.defects`) there are quality defects for selection (:mod:`.quality`: wrong
answers, truncated, off-topic, wrong-language and padded responses), a category
over-represented (``sample.imbalance``) and a share of one category's rows on a
single prompt template (truth ``template_redundant``). Two more files hold tool-use
and reasoning rows (:mod:`.tools`: OpenAI JSONL and LLaMA-Factory ShareGPT JSON, no defects); they
draw from a generator of their own, so the four files above are the same bytes
whatever their params, and their truth rows follow the others in ``truth.jsonl``.
:func:`pretrain_corpus` gives the plain text the base model is pretrained on (same
facts, no chat format, no defects).
"""

from __future__ import annotations

import csv
import io
import random
from collections import Counter, defaultdict
from pathlib import Path

from ..config import SampleParams
from ..io import atomic_path, write_json, write_jsonl
from . import defects as D
from . import quality as Q
from . import tools as T
from .tasks import CATEGORIES, GENERATORS, SYSTEM, WEIGHTS, Item

CHAT_SOURCES = {"alpaca_en": "alpaca_en.json", "sharegpt_zh": "sharegpt_zh.jsonl",
                "openai_mixed": "openai_mixed.jsonl", "alpaca_zh": "alpaca_zh.csv"}
SOURCES = {**CHAT_SOURCES, **T.TOOL_SOURCES}    # every file generate() writes, name -> file name


# The prompt template redundant rows are rewritten in (the first of each task's templates).
REDUNDANT_TEMPLATE = 0


def _unique_items(rng: random.Random, category: str, lang: str, n: int, seen: set,
                  redundant: tuple[random.Random, float] | None = None) -> tuple[list[Item], list[bool]]:
    """``n`` items with keys not in ``seen``, and which of them were made template-redundant.

    With ``redundant`` (a generator of its own and a share), each item is, with that probability,
    rewritten in :data:`REDUNDANT_TEMPLATE`: the same slots, replayed from ``rng``'s state before
    the item, so ``rng`` draws the same either way. An item whose rewrite would repeat another
    item is left as it was."""
    out, alts, tries = [], {}, 0
    while len(out) < n and tries < n * 50:
        tries += 1
        state = rng.getstate() if redundant else None
        item = GENERATORS[category](rng, lang)
        if item.key in seen:
            continue
        seen.add(item.key)
        if redundant and redundant[0].random() < redundant[1]:
            replay = random.Random()
            replay.setstate(state)
            alts[len(out)] = GENERATORS[category](replay, lang, REDUNDANT_TEMPLATE)
        out.append(item)
    flags = [False] * len(out)
    keys = {it.key for it in out}
    for i, alt in alts.items():
        if alt.key != out[i].key and alt.key in keys:
            continue
        keys.add(alt.key)
        out[i], flags[i] = alt, True
    return out, flags


def category_counts(sample_params: SampleParams) -> dict[str, int]:
    """Rows per language and category: ``rows_per_lang`` shared by the category weights, each times
    its ``imbalance`` factor (renormalized, so the total stays ``rows_per_lang``)."""
    if not sample_params.imbalance:
        return {c: round(sample_params.rows_per_lang * WEIGHTS[c]) for c in CATEGORIES}
    w = {c: WEIGHTS[c] * sample_params.imbalance.get(c, 1.0) for c in CATEGORIES}
    total = sum(w.values())
    return {c: round(sample_params.rows_per_lang * w[c] / total) for c in CATEGORIES}


def clean_rows(sample_params: SampleParams, rng: random.Random) -> list[dict]:
    """Defect-free conversations: ~5% two-turn, ~10% with a system prompt. A share of the rows of
    ``redundant_category`` (``redundant_template_share``) all use one prompt template: such rows carry
    ``template_redundant``; the draws for it come from a generator of their own."""
    seen: set = set()
    rows = []
    counts = category_counts(sample_params)
    rrng = random.Random(f"redundant-template:{sample_params.seed}")
    for lang in sample_params.languages:
        for cat in CATEGORIES:
            redundant = ((rrng, sample_params.redundant_template_share)
                         if cat == sample_params.redundant_category and sample_params.redundant_template_share
                         else None)
            items, forced = _unique_items(rng, cat, lang, counts[cat], seen, redundant)
            i = 0
            while i < len(items):
                turns = items[i:i + 2] if rng.random() < 0.05 and i + 1 < len(items) else items[i:i + 1]
                msgs = [{"role": "system", "content": SYSTEM[lang]}] if rng.random() < 0.1 else []
                for it in turns:
                    msgs += [{"role": "user", "content": it.prompt}, {"role": "assistant", "content": it.response}]
                # the task slots without the template: rows that share them and the answer are
                # paraphrases the generator made by chance, which dedup should find (report uses it)
                row = {"messages": msgs, "label": cat, "lang": lang, "long": cat == "invitation",
                       "slots": ";".join(repr(it.key[:-1]) for it in turns), "items": turns}
                if any(forced[i:i + len(turns)]):
                    row["template_redundant"] = True
                rows.append(row)
                i += len(turns)
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
    pool = rest[k_exact + k_near:]
    _inject_quality_defects(sample_params, rows, pool, _inject_clean_defects(sample_params, rows, pool))
    return rows + extra


def _inject_clean_defects(sample_params: SampleParams, rows: list[dict], pool: list[int]) -> set[int]:
    """Break the last response of rows from ``pool`` (rows with no other defect and no copies) in
    ways the clean stage repairs; truth holds the kind and the expected text after cleaning.
    Returns the rows it broke.

    A generator of its own, so that the rest of the sample (ids, sources, the other defects) is the
    same whatever the rate. Mojibake goes only to responses with non-ASCII characters.
    """
    k = round(len(rows) * sample_params.clean_defect_rate)
    if not k:
        return set()
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
    return set(pool) - set(free)


def _inject_quality_defects(sample_params: SampleParams, rows: list[dict], pool: list[int], taken: set[int]) -> None:
    """Give the last response of rows from ``pool`` (no other defect, no copies) but ``taken`` a
    quality defect (:mod:`.quality`), the kinds in turn; truth holds the kind, the correct response
    (``expected``) and the kind's fields. Off-topic responses come from another category's row in the
    same language (truth ``response_from``: its id), as that row was generated.

    Each kind goes through the back half of ``pool`` in an order of its own (so each kind's rows are a
    fair sample of the rows it applies to), then the front half from its end; clean defects take
    their rows from the start. All draws come from a generator of their own: the rest of the sample is
    the same whatever the rate, and the clean defects whatever this rate, while the two fit apart.
    """
    k = round(len(rows) * sample_params.quality_defect_rate)
    if not k:
        return
    qrng = random.Random(f"quality-defects:{sample_params.seed}")
    back, front = pool[len(pool) // 2:], pool[:len(pool) // 2][::-1]
    orders = {kind: qrng.sample(back, len(back)) + front for kind in Q.QUALITY_TYPES}
    at = dict.fromkeys(Q.QUALITY_TYPES, 0)
    taken = set(taken)
    by_lang: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        by_lang[r["lang"]].append(i)
    for j in range(k):
        kind = Q.QUALITY_TYPES[j % len(Q.QUALITY_TYPES)]
        order, i = orders[kind], at[kind]
        while i < len(order) and (order[i] in taken or not Q.applies(kind, rows[order[i]]["items"][-1])):
            i += 1
        at[kind] = i
        if i == len(order):
            continue
        pick = order[i]
        taken.add(pick)
        r = rows[pick]
        item = r["items"][-1]
        if kind == "off_topic":
            donor = qrng.choice([d for d in by_lang[r["lang"]] if rows[d]["items"][-1].category != item.category])
            text, fields = Q.off_topic_fields(item, rows[donor]["items"][-1])
            fields["response_from"] = donor
        else:
            text, fields = Q.make(qrng, kind, item)
        r["messages"][-1]["content"] = text
        r["truth"].update(defect=kind, **fields)


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
        for ref in ("of", "response_from"):
            if ref in t:
                src = rows[t[ref]]
                t[ref] = f"{src['source']}:{src['rid']}"
        if r.get("template_redundant"):
            t["template_redundant"] = True
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
    chat_truth = truth[:len(rows)]
    per_category = dict(sorted(Counter(t["category"] for t in chat_truth).items()))
    redundant = sum(bool(t.get("template_redundant")) for t in chat_truth)
    per_source = {s: len(v) for s, v in by_source.items()}
    for r in tool_rows:
        per_source[r["source"]] = per_source.get(r["source"], 0) + 1
    n_reasoning = sum(r["category"] == T.REASONING for r in tool_rows)
    return {"rows": len(rows) + len(tool_rows), **dict(sorted(counts.items())),
            "tool_rows": len(tool_rows) - n_reasoning, "reasoning_rows": n_reasoning,
            "template_redundant": redundant, "per_source": dict(sorted(per_source.items())),
            "per_category": per_category}


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


HELDOUT_SEED_OFFSET = 7919


def heldout_corpus(base_params, corpus: list[str]) -> list[str]:
    """``base.heldout_docs`` documents drawn like the pretraining corpus from another seed, none equal to
    a training document: the general text on which evaluate checks what fine-tuning forgot."""
    seen = set(corpus)
    n = base_params.heldout_docs
    docs = pretrain_corpus(base_params.languages, 2 * n, base_params.seed + HELDOUT_SEED_OFFSET,
                           tool_share=base_params.tool_docs) if n else []
    return [d for d in docs if d not in seen][:n]


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
