"""Semantic dedup (sftpipe.dedup.semantic) against the dupbench's user-level ground truth.

For each seed and method, per language:

* para recall:  pairs (paraphrase row, its original) found, out of all such pairs;
* precision:    found pairs that are true duplicates (``Bench.dup_pairs()``: one group;
                a pair joining a typo copy to its original or paraphrase counts as correct);
* one-slot:     found pairs that are templated near-misses differing in one slot
                (``Bench.one_slot_pairs()``), which must stay apart;
* typo pairs:   true pairs with a typo copy in them that were found (a bonus: typo copies
                are MinHash's job, and their answers carry typos too);
* s/1k rows:    wall time of ``semantic_pairs`` (embedding included, imports warmed up),
                per 1000 rows of the whole bench (both languages), on this machine.

``--ablations`` adds, on the first seed, the rule without each of its parts and the
embedding of other fields, to show why the defaults are what they are.

    PYTHONPATH=. python bench/semantic_dedup.py [--seeds 0 1 2] [--model models/base] [--ablations]
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from sftpipe.dedup import semantic  # noqa: E402
from sftpipe.sample import dupbench  # noqa: E402

LANGS = ("en", "zh")


def truth_sets(b: dupbench.Bench):
    orig = {t["group"]: i for i, t in enumerate(b.truth) if t["kind"] == "original"}
    para = {tuple(sorted((i, orig[t["group"]]))) for i, t in enumerate(b.truth) if t["kind"] == "paraphrase"}
    dup = b.dup_pairs()
    typo = {p for p in dup if "typo" in (b.truth[p[0]]["kind"], b.truth[p[1]]["kind"])}
    return para, dup, b.one_slot_pairs(), typo


def run(b: dupbench.Bench, params: semantic.SemanticParams) -> tuple[set, float]:
    t = time.perf_counter()
    pairs, _ = semantic.semantic_pairs(b.records, params)
    return set(map(tuple, pairs.tolist())), time.perf_counter() - t


def rows_for(b, found, sets, label, seconds):
    para, dup, one_slot, typo = sets
    out = []
    for lang in LANGS + ("all",):
        def mine(pairs):
            return {p for p in pairs if lang == "all" or b.truth[p[0]]["lang"] == lang}
        f, pl = mine(found), mine(para)
        prec = len(f & dup) / len(f) if f else float("nan")
        out.append((label, lang, f"{len(pl & f)}/{len(pl)} = {len(pl & f) / max(1, len(pl)):.3f}",
                    f"{len(f & dup)}/{len(f)} = {prec:.4f}", str(len(mine(one_slot) & f)),
                    f"{len(mine(typo) & f)}/{len(mine(typo))}",
                    f"{seconds / len(b.records) * 1000:.2f}" if lang == "all" else ""))
    return out


def print_table(rows):
    head = ("run", "lang", "para recall", "precision", "one-slot", "typo pairs", "s/1k rows")
    widths = [max(len(str(r[k])) for r in [head, *rows]) for k in range(len(head))]
    for r in [head, tuple("-" * w for w in widths), *rows]:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |")


@contextlib.contextmanager
def patched(name: str, fn, owner=semantic):
    old = getattr(owner, name)
    setattr(owner, name, fn)
    try:
        yield
    finally:
        setattr(owner, name, old)


def ablations(b, sets, base: semantic.SemanticParams):
    """The rule with one part switched off, and other embedded fields (first seed only)."""
    rows = []
    real_groups = semantic.candidate_groups

    def groups_any_answer(keys, params):                # rule 1 off: equal answers not required
        weak = real_groups(keys, params)[2]
        # one group per numbers (and task input of a label answer): every pair in it is a candidate
        blind = replace(keys, answer=np.zeros_like(keys.answer), request=np.zeros_like(keys.request),
                        inp=np.where(weak, keys.inp, np.uint64(0)), has_input=keys.has_input | ~weak)
        return (*real_groups(blind, params)[:2], weak)

    def no_content(self, requests, fit_pos):            # rule 3 off: every token is template
        return [(set(semantic.tokens(q)), set()) for q in requests]

    for t in (0.95, 0.98):
        with patched("candidate_groups", groups_any_answer):
            found, sec = run(b, replace(base, threshold=t))
        rows += rows_for(b, found, sets, f"answer cosine >= {t} instead of equal answers", sec)
    with patched("content", no_content, owner=semantic._Templates):
        found, sec = run(b, base)
    rows += rows_for(b, found, sets, "without the request-content rule", sec)
    found, sec = run(b, replace(base, label_rows=10 ** 9))
    rows += rows_for(b, found, sets, "without the label/task-input rule", sec)
    for share in (0.1, 0.3):
        found, sec = run(b, replace(base, template_share=share))
        rows += rows_for(b, found, sets, f"template_share={share}", sec)
    for field, t in (("prompt", 0.3), ("all", 0.5)):
        found, sec = run(b, replace(base, field=field, threshold=t))
        rows += rows_for(b, found, sets, f"field={field}, threshold={t}", sec)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--model", help="a local causal LM directory: also measure method base_model")
    ap.add_argument("--n-per-lang", type=int, default=1500, help="task originals per language (dupbench default)")
    ap.add_argument("--ablations", action="store_true")
    args = ap.parse_args()

    base = semantic.SemanticParams()
    warm = dupbench.generate(n_per_lang=60, n_long=10, n_typo=5, n_para=5, seed=99)
    semantic.semantic_pairs(warm.records, base)          # imports and first-call costs out of the timings
    methods = [("tfidf", base)]
    if args.model:
        methods.append(("base_model", replace(base, method="base_model", model=args.model)))
        semantic.semantic_pairs(warm.records, methods[-1][1])
    rows = []
    first = None
    for seed in args.seeds:
        b = dupbench.generate(n_per_lang=args.n_per_lang, seed=seed)
        sets = truth_sets(b)
        first = first or (b, sets)
        for name, params in methods:
            found, sec = run(b, params)
            rows += rows_for(b, found, sets, f"seed {seed} {name}", sec)
    print(f"dupbench: {len(first[0].records)} rows per seed; defaults {base}")
    print_table(rows)
    if args.ablations:
        print("\nablations (seed %d, tfidf):" % args.seeds[0])
        print_table(ablations(*first, base))
    print("\ncommand: PYTHONPATH=. " + " ".join(shlex.quote(a) for a in [sys.executable.split("/")[-1], *sys.argv]))


if __name__ == "__main__":
    main()
