"""How the dedup stage's cost grows with the rows of templated data: old (all pairs) vs new (bounded).

The typo pass (``dedup.edits``) bands a character signature; rows of one prompt template differ
only in a slot, so they meet in nearly every band and a bucket of m such rows gives m^2/2
candidate pairs, nearly all of which pass the edit similarity and are then kept apart by the
slot check: the pass grew as rows^1.9. With ``dedup.edits.bucket_cap`` a bucket of more than
``bucket_cap`` rows gives each row its ``window`` neighbours (ordered by the next bands' keys)
instead, and with ``digit_key`` rows whose numbers differ share no bucket.

For each size of the project's sample (``SampleParams(rows_per_lang=R)``, read through
``collect`` as the pipeline reads it), the stage (``dedup_records``, one process) runs with:

* ``old``: ``bucket_cap: null, digit_key: false`` (all pairs of every bucket, as before);
* ``new``: the params.yaml defaults (``DedupParams()``);
* ``cap 8, w 2``: the defaults with a tighter bound (semantic pass off only);

each with the semantic (paraphrase) pass off and, unless ``--no-semantic``, on. Printed per
run: CPU seconds of the stage (``resource.getrusage``, user + system, this process: not wall
time, so a busy machine moves it less), the typo pass's LSH candidates (distinct pairs
before the length, estimate and edit-similarity filters), its edit pairs (after the edit
similarity: what the slot check reads), the pairs the slot check accepted, rows dropped;
and the growth exponent b between neighbouring sizes (cost ~ rows^b, rows = distinct texts in).

    PYTHONPATH=. python bench/dedup_scaling.py                          # 2500..20000 per language
    PYTHONPATH=. python bench/dedup_scaling.py --sizes 2500,5000 --no-semantic
"""

from __future__ import annotations

import argparse
import math
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import command_line, machine, sample_records, setup_env, table  # noqa: E402


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def configs(semantic: bool):
    from sftpipe.config import DedupParams, EditsParams, SemanticDedupParams

    sem = SemanticDedupParams(enabled=semantic)
    out = {"old": DedupParams(edits=EditsParams(bucket_cap=None, digit_key=False), semantic=sem),
           "new": DedupParams(semantic=sem)}
    if not semantic:    # a tighter bound, for the trade-off (fewer checks, a little recall at scale)
        out["cap 8, w 2"] = DedupParams(edits=EditsParams(bucket_cap=8, window=2), semantic=sem)
    return out


def run(records: list[dict], params) -> dict:
    """The stage on ``records``, with the typo pass's pair counts (read off its two functions)."""
    import sftpipe.dedup.clusters as clusters

    seen = {}
    lsh_pairs, edit_candidates = clusters.candidate_pairs, clusters.edit_candidates

    def counting_lsh(sig, bands, rows, *a, **kw):
        out = lsh_pairs(sig, bands, rows, *a, **kw)
        if "cap" in kw:             # the typo pass's call (the word pass passes no cap)
            seen["lsh"] = len(out)
        return out

    def counting_edits(*a, **kw):
        out = edit_candidates(*a, **kw)
        seen["edit"] = len(out[0])
        return out

    clusters.candidate_pairs, clusters.edit_candidates = counting_lsh, counting_edits
    try:
        t = cpu_seconds()
        res = clusters.dedup_records(records, params)
        cpu = cpu_seconds() - t
    finally:
        clusters.candidate_pairs, clusters.edit_candidates = lsh_pairs, edit_candidates
    m = res.extra_metrics
    return {"cpu": cpu, "lsh": seen.get("lsh", 0), "edit": seen.get("edit", 0), "accepted": m["edit_pairs"],
            "dropped": len(res.dropped), "dropped_ids": sorted(d["id"] for d in res.dropped)}


def exponent(a: float, b: float, ra: int, rb: int) -> str:
    return f"{math.log(b / a) / math.log(rb / ra):.2f}" if a > 0 and b > 0 and rb != ra else "-"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="2500,5000,10000,20000", help="rows_per_lang of the sample, comma-separated")
    ap.add_argument("--no-semantic", action="store_true", help="only the runs with the semantic pass off")
    args = ap.parse_args()
    setup_env()
    from sftpipe.config import SampleParams
    from sftpipe.schema import text_of

    sizes = [int(s) for s in args.sizes.split(",")]
    modes = [False] if args.no_semantic else [False, True]
    rows, results = {}, {}
    t0 = time.time()
    with tempfile.TemporaryDirectory() as d:    # warm-up: imports and lookup tables are not charged
        small = sample_records(SampleParams(rows_per_lang=100), d)
    for sem in modes:
        for params in configs(sem).values():
            run(small, params)
    for R in sizes:
        with tempfile.TemporaryDirectory() as d:
            records = sample_records(SampleParams(rows_per_lang=R), d)
        rows[R] = len({text_of(r, "all") for r in records})
        for sem in modes:
            cfg = configs(sem)
            names = list(cfg) if sizes.index(R) % 2 == 0 else list(cfg)[::-1]   # alternate which runs first
            for name in names:
                results[R, sem, name] = r = run(records, cfg[name])
                print(f"rows_per_lang {R} ({len(records)} rows, {rows[R]} distinct), semantic {'on' if sem else 'off'}, "
                      f"{name}: {r['cpu']:.2f} CPU s, typo-pass LSH pairs {r['lsh']}, edit pairs {r['edit']}, "
                      f"accepted {r['accepted']}, dropped {r['dropped']}", file=sys.stderr, flush=True)
    for sem in modes:
        head = ["rows/lang", "rows", "config", "CPU s", "b (CPU)", "LSH pairs", "b", "edit pairs", "b",
                "accepted edit pairs", "dropped", "same drops as old"]
        body = []
        for name in configs(sem):
            prev = prevR = None
            for R in sizes:
                r = results[R, sem, name]
                bs = (["-"] * 3 if prev is None else
                      [exponent(prev[k], r[k], rows[prevR], rows[R]) for k in ("cpu", "lsh", "edit")])
                body.append([str(R), str(rows[R]), name, f"{r['cpu']:.2f}", bs[0], str(r["lsh"]), bs[1],
                             str(r["edit"]), bs[2], str(r["accepted"]), str(r["dropped"]),
                             "yes" if r["dropped_ids"] == results[R, sem, "old"]["dropped_ids"] else
                             f"no ({len(set(r['dropped_ids']) ^ set(results[R, sem, 'old']['dropped_ids']))} differ)"])
                prev, prevR = r, R
        print()
        print(table(head, body, title=f"dedup stage, semantic pass {'on' if sem else 'off'}, one process "
                                      "(b: growth exponent from the size above, cost ~ rows^b)"))
        first, last = sizes[0], sizes[-1]
        if len(sizes) > 1:
            for name in configs(sem):
                print(f"  {name}: b over {first}..{last} rows/lang: CPU "
                      f"{exponent(results[first, sem, name]['cpu'], results[last, sem, name]['cpu'], rows[first], rows[last])}, "
                      f"edit pairs {exponent(results[first, sem, name]['edit'], results[last, sem, name]['edit'], rows[first], rows[last])}")
    print(f"\n{machine()}; total {time.time() - t0:.0f} s wall\n{command_line()}")


if __name__ == "__main__":
    main()
