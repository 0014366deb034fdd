"""What IFD adds to the perplexity stage, and what batching saves it: same process, interleaved.

The issue's target: "Scoring reuses batched, length-sorted inference: IFD costs at most 2x the
perplexity pass", read as (perplexity pass + IFD pass) / perplexity pass <= 2. On the real rows
(``data/label_noise/kept.jsonl``, the perplexity stage's input; ``--rows`` takes a fixed seeded
subset) with the real reference LM (``models/base``) and params.yaml's ``perplexity`` settings,
four configurations, each timed with its encoding (the stage encodes too):

* ``perplexity``: ``score_rows`` alone, the stage's first pass;
* ``perplexity + IFD``: the stage's path, ``score_rows`` then ``ifd_rows`` given its scores (in the
  plain response layout the conditioned losses are the perplexity pass's, so IFD costs one extra
  pass over the replies alone); the two parts are timed apart within the run;
* ``IFD, no reuse``: ``ifd_rows`` without the perplexity scores: two batched passes (conditioned
  and alone), the batching gain without the reuse;
* ``naive IFD``: one row at a time, in input order, two full forward passes per row (the reply
  after its prompt, the reply alone) through the model's own forward (full-vocabulary logits at
  every position), under ``torch.no_grad``: how IFD is usually written.

Every IFD config's scores are checked against the naive loop's (``--rtol``) before any figure is
printed. Ratios are per repeat (repeat i of one config against repeat i of another), reported as
median [min..max]. One torch thread by default (see ``--threads``): the machine is shared.

    PYTHONPATH=. python bench/ifd_cost.py                 # all rows of data/label_noise/kept.jsonl
    PYTHONPATH=. python bench/ifd_cost.py --rows 1000 --repeats 3
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import (THREADS_HELP, OtherLoad, command_line, interleave, machine, median_of, peak_rss_mb,  # noqa: E402
                     pick, set_threads, setup_env, spread, table)


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inp", default="data/label_noise/kept.jsonl", help="rows (the perplexity stage's input)")
    ap.add_argument("--model", default=None, help="reference LM dir (default: the stage's, models/base)")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--rows", type=int, default=None, help="a fixed seeded subset of this many rows (default: all)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats after one warm-up")
    ap.add_argument("--warmup-rows", type=int, default=200, help="rows of the unrecorded warm-up run")
    ap.add_argument("--rtol", type=float, default=1e-4)
    ap.add_argument("--threads", type=int, default=1, help=THREADS_HELP)
    return ap.parse_args(argv)


def naive_ifd(model, tokenizer, records, p) -> list[float | None]:
    """The unbatched baseline: per row, a forward over the reply after its prompt and one over the reply
    alone (the same encodings as ``ifd_rows``), full logits, mean NLL of the reply's tokens each."""
    import torch
    import torch.nn.functional as F

    from sftpipe.model.formatting import IGNORE
    from sftpipe.perplexity import _ifd_encoding

    dev = next(model.parameters()).device

    def mean_nll(ids, scored):
        if not any(scored[1:]):
            return None
        logits = model(input_ids=torch.tensor([ids], device=dev)).logits[0].float()
        tgt = torch.tensor([t if s else IGNORE for t, s in zip(ids, scored)], device=dev)
        return float(F.cross_entropy(logits[:-1], tgt[1:], ignore_index=IGNORE))

    out: list[float | None] = []
    with torch.no_grad():
        for rec in records:
            cond = mean_nll(*_ifd_encoding(tokenizer, rec, p, True))
            alone = mean_nll(*_ifd_encoding(tokenizer, rec, p, False))
            out.append(None if cond is None or alone is None or alone <= 0 else cond / alone)
    return out


def agree(a: list[float | None], b: list[float | None], rtol: float) -> float:
    """Max relative difference (inf when the two score different rows)."""
    worst = 0.0
    for x, y in zip(a, b, strict=True):
        if (x is None) != (y is None):
            return math.inf
        if x is not None:
            worst = max(worst, abs(x - y) / abs(y))
    return worst


def main(argv=None):
    args = parse(argv)
    setup_env()
    threads = set_threads(args.threads)
    from sftpipe.config import load_params
    from sftpipe.io import read_jsonl
    from sftpipe.model.loading import load_model, load_tokenizer
    from sftpipe.perplexity import _ifd_encoding, encode_for_scoring, ifd_rows, score_rows

    params = load_params(args.params)
    p = params.perplexity
    mp = params.model.model_copy(update={"name_or_path": args.model or p.model or params.model.name_or_path})
    model = load_model(mp, precision=p.precision).eval()       # as stages/perplexity.py loads it
    tok = load_tokenizer(mp)
    records = pick(read_jsonl(args.inp), args.rows)

    print(f"machine: {machine()}")
    ppl_tok = sum(len(encode_for_scoring(tok, r, p)[0]) for r in records)
    alone_tok = sum(len(_ifd_encoding(tok, r, p, False)[0]) for r in records)
    reuse = p.mode == "response" and p.template == "plain"
    print(f"data: {len(records)} rows of {args.inp}, model {mp.name_or_path}; mode={p.mode} template={p.template} "
          f"batch_size={p.batch_size} max_length={p.max_length}; tokens read: perplexity pass {ppl_tok}, "
          f"IFD's replies-alone pass {alone_tok} ({alone_tok / ppl_tok:.2f}x); IFD reuses the perplexity "
          f"pass: {'yes' if reuse else 'no (not the plain response layout)'}")

    ifd_out: dict[str, list] = {}

    def ppl_only(rows=records):
        t0 = time.perf_counter()
        score_rows(model, tok, rows, p)
        return {"seconds": time.perf_counter() - t0}

    def stage_path(rows=records):
        t0 = time.perf_counter()
        s = score_rows(model, tok, rows, p)
        t1 = time.perf_counter()
        ifd_out["perplexity + IFD"] = ifd_rows(model, tok, rows, p, s)
        t2 = time.perf_counter()
        return {"seconds": t2 - t0, "ppl_s": t1 - t0, "ifd_s": t2 - t1}

    def no_reuse(rows=records):
        t0 = time.perf_counter()
        ifd_out["IFD, no reuse"] = ifd_rows(model, tok, rows, p)
        return {"seconds": time.perf_counter() - t0}

    def naive(rows=records):
        t0 = time.perf_counter()
        ifd_out["naive IFD"] = naive_ifd(model, tok, rows, p)
        return {"seconds": time.perf_counter() - t0}

    runs = {"perplexity": ppl_only, "perplexity + IFD": stage_path, "IFD, no reuse": no_reuse, "naive IFD": naive}
    # warm-up on a subset spanning the lengths (allocator growth, lazy init), not on all rows again
    few = pick(records, args.warmup_rows)
    warm = {n: (lambda f=f: f(few)) for n, f in runs.items()}
    print(f"runs: {list(runs)}; 1 warm-up each on {len(few)} rows, then {args.repeats} interleaved repeats")
    with OtherLoad() as load:
        res = interleave(runs, args.repeats, warmup=warm)

    diffs = {n: agree(ifd_out[n], ifd_out["naive IFD"], args.rtol) for n in ("perplexity + IFD", "IFD, no reuse")}
    for n, d in diffs.items():
        if d > args.rtol:
            raise SystemExit(f"{n}: IFD disagrees with the naive loop (max rel diff {d:.3g} > {args.rtol})")
    n_scored = sum(x is not None for x in ifd_out["naive IFD"])

    def per_repeat(f):
        return [f(i) for i in range(args.repeats)]

    stage_runs, ppl_runs = res["perplexity + IFD"], res["perplexity"]
    ifd_s = [r["ifd_s"] for r in stage_runs]
    within = per_repeat(lambda i: stage_runs[i]["seconds"] / stage_runs[i]["ppl_s"])
    vs_ppl = per_repeat(lambda i: stage_runs[i]["seconds"] / ppl_runs[i]["seconds"])
    naive_vs_ifd = per_repeat(lambda i: res["naive IFD"][i]["seconds"] / ifd_s[i])
    naive_vs_noreuse = per_repeat(lambda i: res["naive IFD"][i]["seconds"] / res["IFD, no reuse"][i]["seconds"])
    noreuse_vs_ifd = per_repeat(lambda i: res["IFD, no reuse"][i]["seconds"] / ifd_s[i])
    rows = [["perplexity (score_rows)", median_of(ppl_runs, "seconds"), len(records) / median_of(ppl_runs, "seconds"),
             "1.00x", "-"],
            ["perplexity + IFD (stage)", median_of(stage_runs, "seconds"),
             len(records) / median_of(stage_runs, "seconds"), spread(vs_ppl), f"{diffs['perplexity + IFD']:.1e}"],
            ["  of which ifd_rows", statistics.median(ifd_s), len(records) / statistics.median(ifd_s),
             spread(per_repeat(lambda i: ifd_s[i] / ppl_runs[i]["seconds"])), ""],
            ["IFD, no reuse (2 batched passes)", median_of(res["IFD, no reuse"], "seconds"),
             len(records) / median_of(res["IFD, no reuse"], "seconds"),
             spread(per_repeat(lambda i: res["IFD, no reuse"][i]["seconds"] / ppl_runs[i]["seconds"])),
             f"{diffs['IFD, no reuse']:.1e}"],
            ["naive IFD (2 unbatched forwards/row)", median_of(res["naive IFD"], "seconds"),
             len(records) / median_of(res["naive IFD"], "seconds"),
             spread(per_repeat(lambda i: res["naive IFD"][i]["seconds"] / ppl_runs[i]["seconds"])), "(reference)"]]
    print()
    print(table(["config", "median s", "rows/s", "time / perplexity pass", "IFD max rel diff"], rows,
                title=f"IFD cost, {len(records)} rows ({n_scored} with an IFD), {threads} torch thread(s), "
                      f"{args.repeats} repeats (median; ratios: median [min..max] of per-repeat ratios)"))
    r_within, r_vs = statistics.median(within), statistics.median(vs_ppl)
    verdict = "met" if max(r_within, r_vs) <= 2 else "NOT met"
    print(f"\n(perplexity + IFD) / perplexity: {spread(within)} within the stage's run, {spread(vs_ppl)} against "
          f"the perplexity-only run (target <= 2x: {verdict}{', UNRELIABLE: busy machine' if load.busy and threads > 1 else ''})")
    print(f"batching gain: naive IFD / ifd_rows as the stage runs it: {spread(naive_vs_ifd)}; "
          f"naive / IFD without reuse (batching alone): {spread(naive_vs_noreuse)}; "
          f"reuse alone (no reuse / reuse): {spread(noreuse_vs_ifd)}")
    print(load.summary())
    print(f"peak RSS (process): {peak_rss_mb():.0f} MiB")
    print(f"command: {command_line()}")


if __name__ == "__main__":
    main()
