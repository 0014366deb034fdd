"""Perplexity scoring throughput: ``score_rows`` against an unbatched loop, same process, interleaved.

Baseline: one row at a time, in the given order (no sorting), the same encoding
(``encode_for_scoring``), the same model, under ``torch.no_grad``, the same mean NLL over the
scored positions. Ours: ``sftpipe.perplexity.score_rows`` (length-sorted batches under
``torch.inference_mode``) at the default batch size, plus the batch sizes in ``--batch-sizes``.
Both sides include the encoding, since ``score_rows`` does it too.

The scores of every configuration are checked against the baseline (``--rtol``) before any
figure is printed. Throughput is rows/s and tokens/s (tokens of the scored rows, prompt included,
after ``max_length`` cutting: what the model actually reads), reported as the median over
``--repeats`` interleaved repeats, and as the median of the per-repeat ratios ours / loop.

Torch's default thread count by default (one per core), which is what the perplexity stage runs
with; the script prints how much CPU other processes took meanwhile, since with as many threads as
cores a busy neighbour stalls the loop's many small ops far more than the batched path (inflating the
ratio): trust a multi-threaded figure only when that load is near 0. ``--threads 1`` is the
contention-proof view. The "GFLOP/s" column shows how close each config gets to the matmul rate,
which is what bounds the gain from batching for a model this small.

    PYTHONPATH=. python bench/perplexity_throughput.py                 # ~1 min on 2 cores
    PYTHONPATH=. python bench/perplexity_throughput.py --threads 1     # one thread: immune to neighbours
    PYTHONPATH=. python bench/perplexity_throughput.py --rows 2000 --repeats 5
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import (OtherLoad, assets, command_line, interleave, machine, median_of,  # noqa: E402
                           peak_rss_mb, pick, ratios, set_threads, setup_env, spread, table)


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=600, help="rows to score per run (scale knob)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats after one warm-up")
    ap.add_argument("--batch-sizes", default="8,32,64", help="extra batch sizes for score_rows")
    ap.add_argument("--mode", choices=["response", "full"], default=None, help="default: params default")
    ap.add_argument("--template", choices=["plain", "chat"], default=None, help="default: params default")
    ap.add_argument("--rtol", type=float, default=1e-4)
    ap.add_argument("--no-bf16", action="store_true",
                    help="skip the opt-in perplexity.precision=bf16 run (default batch size, bf16 weights)")
    ap.add_argument("--rows-per-lang", type=int, default=600, help="sample size to draw --rows from")
    ap.add_argument("--assets", default=None, help="directory to build/reuse the model and rows in")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch intra-op threads; 0 (default): torch's default, one per core, as the stage runs")
    return ap.parse_args(argv)


def loop_scores(model, tokenizer, records, p) -> list[float | None]:
    """The unbatched baseline: one forward per row, in input order."""
    import torch
    import torch.nn.functional as F

    from sftpipe.model.formatting import IGNORE
    from sftpipe.perplexity import encode_for_scoring

    dev = next(model.parameters()).device
    out: list[float | None] = []
    with torch.no_grad():
        for rec in records:
            ids, scored = encode_for_scoring(tokenizer, rec, p)
            if not any(scored[1:]):
                out.append(None)
                continue
            logits = model(input_ids=torch.tensor([ids], device=dev)).logits[0].float()
            tgt = torch.tensor([t if s else IGNORE for t, s in zip(ids, scored)], device=dev)
            nll = F.cross_entropy(logits[:-1], tgt[1:], ignore_index=IGNORE, reduction="sum")
            n = int((tgt[1:] != IGNORE).sum())
            out.append(math.exp(min(float(nll) / max(n, 1), 50.0)))
    return out


def agree(a: list[float | None], b: list[float | None], rtol: float) -> tuple[bool, float]:
    """Same rows scored, and every score within rtol; returns (ok, max relative difference)."""
    worst = 0.0
    for x, y in zip(a, b, strict=True):
        if (x is None) != (y is None):
            return False, math.inf
        if x is not None:
            worst = max(worst, abs(x - y) / abs(y))
    return worst <= rtol, worst


def padding_overhead(lengths: list[int], bs: int) -> float:
    """Padded positions / real positions with score_rows' own batching (length-sorted, bounded padding)."""
    from sftpipe.perplexity import _batches

    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    padded = sum(max(lengths[i] for i in b) * len(b) for b in _batches(order, lengths, bs))
    return padded / sum(lengths) - 1


def linear_params(model) -> int:
    """Weights of every nn.Linear, LM head included (tied or not): 2x this is the matmul FLOPs per token."""
    import torch

    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def main(argv=None):
    args = parse(argv)
    setup_env()
    threads = set_threads(args.threads)
    from sftpipe.config import ModelParams, PerplexityParams
    from sftpipe.model.loading import load_model, load_tokenizer
    from sftpipe.perplexity import encode_for_scoring, score_rows

    print(f"machine: {machine()}")
    records, model_dir, _tmp = assets(args)
    records = pick(records, args.rows)
    mp = ModelParams(name_or_path=str(model_dir))
    model, tok = load_model(mp).eval(), load_tokenizer(mp)  # exactly as stages/perplexity.py loads them
    base = PerplexityParams()
    upd = {k: v for k, v in (("mode", args.mode), ("template", args.template)) if v}
    base = base.model_copy(update=upd)
    sizes = sorted({base.batch_size, *(int(x) for x in args.batch_sizes.split(",") if x)})

    enc = [encode_for_scoring(tok, r, base) for r in records]
    scorable = [(ids, sc) for ids, sc in enc if any(sc[1:])]
    lengths = [len(ids) for ids, _ in scorable]
    n_rows, n_tok = len(lengths), sum(lengths)
    n_scored = sum(sum(sc[1:]) for _, sc in scorable)
    flop_tok = 2 * linear_params(model)
    print(f"data: {len(records)} rows ({n_rows} scorable), {n_tok} tokens (mean {n_tok / n_rows:.1f}, "
          f"max {max(lengths)}), {100 * n_scored / n_tok:.0f}% of them scored; mode={base.mode} "
          f"template={base.template} max_length={base.max_length}; {flop_tok / 1e6:.1f} MFLOP/token in matmuls")

    scores: dict[str, list] = {}

    def timed(name, fn):
        def run():
            t0 = time.perf_counter()
            s = fn()
            dt = time.perf_counter() - t0
            scores.setdefault(name, s)
            return {"seconds": dt, "rows_per_s": n_rows / dt, "tokens_per_s": n_tok / dt}
        return run

    runs = {"loop": timed("loop", lambda: loop_scores(model, tok, records, base))}
    pads = {"loop": 0.0}
    for bs in sizes:
        p = base.model_copy(update={"batch_size": bs})
        name = f"score_rows bs{bs}"
        runs[name] = timed(name, lambda p=p: score_rows(model, tok, records, p))
        pads[name] = padding_overhead(lengths, bs)
    bf16 = None if args.no_bf16 else f"score_rows bs{base.batch_size} bf16"
    if bf16:  # the opt-in precision: the same rows, other numerics, so checked by rank and by drift, not rtol
        model16 = load_model(mp, precision="bf16").eval()
        runs[bf16] = timed(bf16, lambda: score_rows(model16, tok, records, base))
        pads[bf16] = pads[f"score_rows bs{base.batch_size}"]
    print(f"runs: {list(runs)}; 1 warm-up each, then {args.repeats} interleaved repeats")
    with OtherLoad() as load:
        res = interleave(runs, args.repeats)

    checks = {}
    for name in runs:
        if name == bf16:
            ok, checks[name] = agree(scores[name], scores["loop"], math.inf)
        elif name != "loop":
            ok, worst = agree(scores[name], scores["loop"], args.rtol)
            checks[name] = worst
            if not ok:
                raise SystemExit(f"{name}: scores disagree with the loop (max rel diff {worst:.3g} > {args.rtol})")

    default = f"score_rows bs{base.batch_size}"
    rows = []
    for name, rs in res.items():
        rows.append([name + (" (default)" if name == default else ""),
                     median_of(rs, "seconds"), median_of(rs, "rows_per_s"), median_of(rs, "tokens_per_s"),
                     spread(ratios(rs, res["loop"], "rows_per_s")), f"{100 * pads[name]:.0f}%",
                     flop_tok * median_of(rs, "tokens_per_s") / 1e9,
                     "-" if name == "loop" else f"{checks[name]:.1e}"])
    print()
    print(table(["config", "median s", "rows/s", "tokens/s", "ratio vs loop", "pad", "GFLOP/s*", "max rel diff"],
                rows, title=f"perplexity scoring, {n_rows} rows, {threads} torch thread(s), {args.repeats} repeats "
                            f"(median; ratio = median [min..max] of per-repeat ratios)"))
    print("* 2 x (nn.Linear weights) x real tokens / s: the useful matmul rate, padding and skipped logits not "
          "counted")
    r = statistics.median(ratios(res[default], res["loop"], "rows_per_s"))
    verdict = ("met" if r >= 3 else "NOT met") + (", UNRELIABLE: busy machine" if load.busy else "")
    print(f"\ndefault batch size {base.batch_size}: {r:.2f}x the unbatched loop (target >= 3x: {verdict}); "
          f"every fp32 config's scores agree with the loop within rtol {args.rtol}")
    if bf16:
        from scipy.stats import spearmanr

        pairs = [(a, b) for a, b in zip(scores[bf16], scores["loop"]) if a is not None]
        rel = sorted(abs(a - b) / b for a, b in pairs)
        rb = statistics.median(ratios(res[bf16], res["loop"], "rows_per_s"))
        print(f"opt-in perplexity.precision=bf16: {rb:.2f}x the fp32 loop; vs fp32 scores: median rel diff "
              f"{rel[len(rel) // 2]:.1e}, max {rel[-1]:.1e}, Spearman {spearmanr(*zip(*pairs)).correlation:.5f}")
    print(load.summary())
    print(f"peak RSS (process): {peak_rss_mb():.0f} MiB")
    print(f"command: {command_line()}")


if __name__ == "__main__":
    main()
