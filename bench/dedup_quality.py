"""Dedup quality against injected ground truth (sftpipe.sample.dupbench), English and Chinese.

The dupbench makes, per seed, what a reader calls a duplicate on purpose: typo copies of
originals (2%, 5% and 8% of their characters edited), paraphrases (same request in other
words, same answer), and templated near-misses that are NOT duplicates (rows of one
template differing in one slot: ``capital of Kenya`` vs ``capital of Peru``). Dedup is
scored against that injection, never against its own similarity measure.

Every configuration runs ``dedup_records`` (the stage itself) in one process on the same
generated rows, for each seed; a dropped row joins the cluster of its ``kept_id``, and the
clustering is scored with ``Bench.score``:

* typo / paraphrase rows: recall, i.e. copies put in one cluster with their original,
  per language (and edit rate);
* precision: share of same-cluster pairs that are true duplicates (a wrong merge of two
  clusters costs all their cross pairs); false pairs: the others;
* one-slot merged: templated near-misses that differ in exactly one slot put in one cluster
  (of how many such pairs the bench holds, per seed);
* seconds: wall time of ``dedup_records`` (every config ran once on a small bench first, so
  imports are not charged; the config order is reversed every other seed). The machine may
  be shared: compare the columns, not the absolute figures.

Each cell is the mean over seeds with [min..max]. The configurations:

* ``word``:  word MinHash (before): edits, slot check and semantic pass off, what dedup was;
* ``char``:  the same with ``shingle="char"`` (character 5-grams), the obvious peer for typos;
* ``typo``:  + typo pass (``dedup.edits``), slot check and semantic pass off;
* ``slot``:  + slot check, semantic pass off;
* ``all``:   ``DedupParams()``, the params.yaml defaults, semantic paraphrase pass included.

The issue's targets are checked on the defaults, recall pooled over seeds per language.

    PYTHONPATH=. python bench/dedup_quality.py                       # 3 seeds x 4820 rows, ~80 s on 2 cores
    PYTHONPATH=. python bench/dedup_quality.py --seeds 0 --configs word,all
"""

from __future__ import annotations

import argparse
import inspect
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench._common import REPO, command_line, machine, setup_env, table  # noqa: E402
from sftpipe.config import DedupParams, EditsParams, SemanticDedupParams  # noqa: E402
from sftpipe.dedup.clusters import dedup_records  # noqa: E402
from sftpipe.sample import dupbench  # noqa: E402
from sftpipe.sample.neardup import same_component_pairs  # noqa: E402

LANGS = ("en", "zh")
_OFF = dict(edits=EditsParams(enabled=False), slot_check=False, semantic=SemanticDedupParams(enabled=False))
CONFIGS = {   # short name -> (column header, params)
    "word": ("word MinHash (before)", DedupParams(**_OFF)),
    "char": ("char 5-gram MinHash", DedupParams(**_OFF, shingle="char")),
    "typo": ("+ typo pass", DedupParams(slot_check=False, semantic=SemanticDedupParams(enabled=False))),
    "slot": ("+ slot check", DedupParams(semantic=SemanticDedupParams(enabled=False))),
    "all": ("all (defaults)", DedupParams()),
}
# the targets, on the defaults: (kind, rate or None, minimum recall), per language
RECALL_TARGETS = [("typo", 0.02, 0.95), ("typo", 0.05, 0.90), ("paraphrase", None, 0.80)]
PRECISION_TARGET = 0.99
_GEN = inspect.signature(dupbench.generate).parameters


def labels_of(records: list[dict], res) -> np.ndarray:
    """Per row, a cluster label: its own index when kept, its kept record's index when dropped."""
    index = {r["id"]: i for i, r in enumerate(records)}
    lab = np.arange(len(records))
    for d in res.dropped:
        lab[index[d["id"]]] = index[d["evidence"]["kept_id"]]
    return lab


def run(b: dupbench.Bench, params: DedupParams) -> dict:
    t = time.perf_counter()
    res = dedup_records(b.records, params)
    secs = time.perf_counter() - t
    lab = labels_of(b.records, res)
    return {"score": b.score(lab), "found": len(same_component_pairs(lab)), "seconds": secs, "res": res}


def spread(xs: list[float], digits: int, counts: bool = False) -> str:
    """'mean [min..max]' (the value alone for one seed); ``counts``: min and max as integers."""
    f = f"{{:.{digits}f}}"
    if len(xs) == 1:
        return str(xs[0]) if counts else f.format(xs[0])
    lo, hi = (str(min(xs)), str(max(xs))) if counts else (f.format(min(xs)), f.format(max(xs)))
    return f"{f.format(sum(xs) / len(xs))} [{lo}..{hi}]"


def pooled(scores, kind: str, lang: str, rate: float | None = None) -> tuple[int, int]:
    """(found, total) over all seeds for the cells that match."""
    a = b = 0
    for s in scores:
        for (k, la, r), (f, t) in s.recall.items():
            if k == kind and la == lang and rate in (None, r):
                a, b = a + f, b + t
    return a, b


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated dupbench seeds (default 0,1,2)")
    ap.add_argument("--configs", default=",".join(CONFIGS),
                    help=f"comma-separated subset of {','.join(CONFIGS)} (default: all five)")
    for name in ("n_per_lang", "n_long", "n_typo", "n_para"):
        ap.add_argument("--" + name.replace("_", "-"), type=int, default=_GEN[name].default,
                        help=f"dupbench.generate's {name} (default {_GEN[name].default})")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    names = [c.strip() for c in args.configs.split(",") if c.strip()]
    bad = [c for c in names if c not in CONFIGS]
    if bad or not names or not seeds:
        ap.error(f"unknown config(s) {bad}; choose from {','.join(CONFIGS)}" if bad else "no seeds or configs")
    setup_env()
    sizes = dict(n_per_lang=args.n_per_lang, n_long=args.n_long, n_typo=args.n_typo, n_para=args.n_para)

    t_all = time.perf_counter()
    print(f"machine: {machine()}")
    if (REPO / "params.yaml").is_file():
        from sftpipe.config import load_params

        same = load_params(REPO / "params.yaml").dedup == DedupParams()
        print(f"params.yaml dedup section {'==' if same else '!= (the defaults column uses DedupParams())'} "
              f"DedupParams()")
    warm = dupbench.generate(n_per_lang=60, n_long=10, n_typo=5, n_para=5, seed=99)
    for c in names:                          # imports and first-call costs out of the timings
        dedup_records(warm.records, CONFIGS[c][1])

    runs: dict[str, list[dict]] = {c: [] for c in names}
    rows_per_seed = []
    for k, seed in enumerate(seeds):
        t = time.perf_counter()
        b = dupbench.generate(seed=seed, **sizes)
        kinds = Counter(x["kind"] for x in b.truth)
        rows_per_seed.append(len(b.records))
        print(f"seed {seed}: {len(b.records)} rows ({', '.join(f'{n} {v}' for n, v in sorted(kinds.items()))}), "
              f"generated in {time.perf_counter() - t:.1f}s")
        for c in (names if k % 2 == 0 else names[::-1]):
            r = run(b, CONFIGS[c][1])
            runs[c].append(r)
            print(f"  {c:5s} {r['seconds']:6.1f}s  precision {r['score'].precision:.4f}, "
                  f"false pairs {r['score'].false_pairs}, dropped {len(r['res'].dropped)}")

    scores = {c: [r["score"] for r in runs[c]] for c in names}
    one_tot = [s.one_slot_pairs for s in scores[names[0]]]
    body = []
    for lang in LANGS:
        for rate in dupbench.RATES:
            body.append([f"typo {lang} {rate:.0%}"] + [spread([s.rate("typo", lang, rate) for s in scores[c]], 3)
                                                      for c in names])
    for lang in LANGS:
        body.append([f"paraphrase {lang}"] + [spread([s.rate("paraphrase", lang) for s in scores[c]], 3)
                                              for c in names])
    body.append(["precision"] + [spread([s.precision for s in scores[c]], 4) for c in names])
    body.append(["false pairs"] + [spread([s.false_pairs for s in scores[c]], 1, counts=True) for c in names])
    body.append([f"one-slot merged (of {spread(one_tot, 0, counts=True)})"]
                + [spread([s.one_slot_merged for s in scores[c]], 1, counts=True) for c in names])
    body.append(["seconds"] + [spread([r["seconds"] for r in runs[c]], 2) for c in names])
    print()
    print(table(["recall / metric"] + [CONFIGS[c][0] for c in names], body,
                title=f"dupbench, seeds {','.join(map(str, seeds))} "
                      f"({rows_per_seed[0] if len(set(rows_per_seed)) == 1 else spread(rows_per_seed, 0, counts=True)} rows each); "
                      f"mean [min..max] over seeds"))

    failed = False
    if "all" in names:
        sc = scores["all"]
        print(f"\ntargets (defaults; recall pooled over seeds {','.join(map(str, seeds))}, per language):")
        for kind, rate, target in RECALL_TARGETS:
            for lang in LANGS:
                f, t = pooled(sc, kind, lang, rate)
                val = f / t if t else float("nan")
                ok = val >= target
                failed |= not ok
                what = f"{kind} {lang}" + (f" {rate:.0%}" if rate is not None else "")
                print(f"  {what:16s} recall {f}/{t} = {val:.3f} >= {target:.2f}: {'PASS' if ok else 'FAIL'}")
        found = sum(r["found"] for r in runs["all"])
        false = sum(s.false_pairs for s in sc)
        prec = 1 - false / found if found else 1.0
        ok = prec >= PRECISION_TARGET
        failed |= not ok
        print(f"  {'precision':16s} {found - false}/{found} = {prec:.4f} >= {PRECISION_TARGET:.2f} "
              f"(lowest seed {min(s.precision for s in sc):.4f}): {'PASS' if ok else 'FAIL'}")
        print(f"  overall: {'FAIL' if failed else 'PASS'}")
        res = runs["all"][0]["res"]
        reasons = Counter(d["reason"] for d in res.dropped)
        m = res.extra_metrics
        print(f"\ndefaults, seed {seeds[0]}: ledger reasons "
              + ", ".join(f"{r} {reasons[r]}" for r in ("exact_duplicate", "near_duplicate", "paraphrase"))
              + "; metrics " + ", ".join(f"{k} {m[k]}" for k in ("edit_pairs", "slot_rejected_pairs",
                                                                   "semantic_pairs")))
    else:
        print("\ntargets: not checked (config 'all' not run)")
    print(f"\ntotal {time.perf_counter() - t_all:.0f}s")
    print(command_line())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
