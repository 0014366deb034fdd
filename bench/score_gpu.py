"""Scoring rows with a reference LM on a GPU: the per-GPU rate of the perplexity stage and of IFD.

The perplexity stage (``sftpipe.perplexity.score_rows``) and select's IFD signal
(``sftpipe.perplexity.ifd_rows``) read every row once with a reference model. With a real 0.5B
reference that is GPU work, and the Scaling section of the README needs its rate. Model and rows are
train_gpu.py's (random weights in Qwen2-0.5B's shape, bf16, SDPA; synthetic prompt/reply rows of
random words, log-normal lengths around ``--median`` tokens), so the run needs no network; with random
weights the scores are meaningless, the cost is not.

Runs, all through the functions the stages call: ``score_rows`` one row at a time (``batch_size`` 1, on
``--loop-rows`` rows) and at each ``--batch-sizes`` (length-sorted batches, logits only at scored
positions); ``ifd_rows`` reusing the perplexity pass's scores (the default plain layout: one extra pass
over the replies alone). Tokens/s counts the tokens the model reads (prompt and reply, after
``max_length``). The batched scores are checked against the one-row-at-a-time scores (bf16: the largest
relative difference is printed).

``--ray 1x1,2x0.5`` then scores the same rows through ``perplexity.engine: ray``'s actor pool
(:class:`sftpipe.perplexity.RayModelPool`, a local Ray; ``AxG``: A actors of G GPUs each, one model
copy per actor) at the last batch size, warmed up first, against the in-process run: tokens/s ratio and
the largest relative score difference (the same batches on the same GPU: 0 expected since the per-row
sums left the GPU; the H100 run before that fix measured up to 1.3e-5).

    PYTHONPATH=. python bench/score_gpu.py              # GPU, ~1 min
    PYTHONPATH=. python bench/score_gpu.py --ray 1x1,2x0.5,4x0.25   # also through Ray actors sharing the GPU
    PYTHONPATH=. python bench/score_gpu.py --tiny       # CPU check, small model, fp32 (--ray 1x0,2x0: CPU actors)
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import machine, setup_env  # noqa: E402


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="small model, fp32, CPU: a check that the code runs")
    ap.add_argument("--rows", type=int, default=None, help="rows per batched run (default 8192; tiny 64)")
    ap.add_argument("--loop-rows", type=int, default=None, help="rows scored one at a time (default 128; tiny 8)")
    ap.add_argument("--batch-sizes", default=None, help="comma list (default 32,128,512; tiny 8,32)")
    ap.add_argument("--median", type=float, default=None, help="median row tokens (default 150; tiny 20)")
    ap.add_argument("--max-length", type=int, default=512, help="perplexity.max_length (params default 512)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rerun-check", action="store_true",
                    help="only: score the rows twice per numeric setting and count bit-identical scores")
    ap.add_argument("--ray", default="", help="comma list of AxG actor pools (A actors, G GPUs each), e.g. 1x1,2x0.5")
    args = ap.parse_args(argv)
    t = args.tiny
    args.rows = args.rows or (64 if t else 8192)
    args.loop_rows = args.loop_rows or (8 if t else 128)
    args.batch_sizes = [int(b) for b in (args.batch_sizes or ("8,32" if t else "32,128,512")).split(",")]
    args.median = args.median or (20.0 if t else 150.0)
    return args


def main(argv=None) -> None:
    args = parse(argv)
    setup_env()
    import torch

    from bench.train_gpu import bench_model, cuda_timed, synthetic_records
    from sftpipe.config import PerplexityParams
    from sftpipe.perplexity import encode_for_scoring, ifd_rows, score_rows

    cuda = torch.cuda.is_available()
    print(f"machine: {machine()}")
    if cuda:
        print(f"GPU: {torch.cuda.get_device_name()}")
    with tempfile.TemporaryDirectory(prefix="sftscore-") as tmp:
        model, tok, shape, precision = bench_model(tmp, args.tiny, args.seed)
        records = synthetic_records(args.rows, 4 * int(args.median) + 16, shape["vocab_size"], args.median,
                                    args.seed, dense=False)
        pp = PerplexityParams(max_length=args.max_length)
        n_tok = [min(len(encode_for_scoring(tok, r, pp)[0]), args.max_length) for r in records]
        print(f"model: Qwen2 {'tiny' if args.tiny else '0.5B'} shape, "
              f"{sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters, {precision}, attn "
              f"{model.config._attn_implementation}; {len(records)} rows, {sum(n_tok)} tokens "
              f"(mean {sum(n_tok) / len(n_tok):.0f}), perplexity.mode {pp.mode}, template {pp.template}")
        score_rows(model, tok, records[:64], pp.model_copy(update={"batch_size": 32}))  # warm-up
        if args.rerun_check:
            rerun_check(model, tok, records, pp.model_copy(update={"batch_size": args.batch_sizes[-1]}))
            return

        k = args.loop_rows
        loop, t_loop, peak = cuda_timed(lambda: score_rows(model, tok, records[:k], pp.model_copy(update={"batch_size": 1})))
        base = sum(n_tok[:k]) / t_loop
        print("\n| run | rows | tokens/s | rows/s | vs one row at a time | max rel. diff vs one at a time | peak GiB |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        print(f"| score_rows, one row at a time | {k} | {base:,.0f} | {k / t_loop:,.1f} | 1.0x | - | {peak:.1f} |")
        scores = None
        for bs in args.batch_sizes:
            scores, dt, peak = cuda_timed(lambda: score_rows(model, tok, records, pp.model_copy(update={"batch_size": bs})))
            tps = sum(n_tok) / dt
            print(f"| score_rows, batch {bs} | {len(records)} | {tps:,.0f} | {len(records) / dt:,.0f} | "
                  f"{tps / base:.1f}x | {rel_diff(scores[:k], loop):.2g} | {peak:.1f} |")
        bs = args.batch_sizes[-1]
        ifd, dt, peak = cuda_timed(lambda: ifd_rows(model, tok, records, pp.model_copy(update={"batch_size": bs}),
                                               conditioned_ppl=scores))
        print(f"| ifd_rows after it (replies alone), batch {bs} | {len(records)} | - | {len(records) / dt:,.0f} | - | - "
              f"| {peak:.1f} |")
        ok = sum(1 for x in ifd if x is not None and math.isfinite(x))
        print(f"IFD finite for {ok}/{len(ifd)} rows")
        if args.ray:
            again, dt_local, _ = cuda_timed(lambda: score_rows(model, tok, records,
                                                                pp.model_copy(update={"batch_size": bs})))
            same = sum(x == y for x, y in zip(again, scores))
            print(f"in-process rerun at batch {bs}: {same}/{len(scores)} scores bit-identical to the first run, "
                  f"max rel. diff {rel_diff(again, scores):.2g}")
            ray_runs(args, Path(tmp) / "model", tok, records, pp.model_copy(update={"batch_size": bs}),
                     precision, scores, sum(n_tok), dt_local)


def rel_diff(a, b) -> float:
    """The largest relative difference between two score lists (rows scored in both)."""
    return max((abs(x - y) / abs(y) for x, y in zip(a, b) if x is not None and y is not None), default=0.0)


def rerun_check(model, tok, records, pp) -> None:
    """Is the perplexity stage's scoring bit-reproducible on this device? The rows are scored twice in a
    row per setting (bf16 as the stage runs on a GPU; with torch's deterministic algorithms; with SDPA's
    math kernel; fp32); prints how many scores are bit-identical between the two runs."""
    import contextlib
    import os
    import time

    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from sftpipe.perplexity import score_rows

    print(f"\nrerun check, {len(records)} rows, batch {pp.batch_size}, "
          f"CUBLAS_WORKSPACE_CONFIG={os.environ.get('CUBLAS_WORKSPACE_CONFIG')}")
    print("| setting | bit-identical scores, run 2 vs run 1 | max rel. diff | seconds a run |")
    print("|---|---:|---:|---:|")
    settings = [("bf16 (the stage on a GPU)", contextlib.nullcontext, False, None),
                ("bf16, torch.use_deterministic_algorithms", contextlib.nullcontext, True, None),
                ("bf16, SDPA math kernel", lambda: sdpa_kernel(SDPBackend.MATH), False, None),
                ("fp32", contextlib.nullcontext, False, torch.float32),
                ("fp32, deterministic algorithms", contextlib.nullcontext, True, torch.float32)]
    for name, ctx, det, dtype in settings:
        if dtype is not None:
            model = model.to(dtype)
        torch.use_deterministic_algorithms(det)
        runs = []
        for _ in range(2):
            t0 = time.perf_counter()
            with ctx():
                runs.append(score_rows(model, tok, records, pp))
            dt = time.perf_counter() - t0
            junk = torch.empty(int(1e7) + len(runs), device=next(model.parameters()).device)   # move the allocator
        del junk
        a, b = runs
        same = sum(x == y for x, y in zip(a, b))
        print(f"| {name} | {same}/{len(a)} | {rel_diff(a, b):.2g} | {dt:.1f} |")
    torch.use_deterministic_algorithms(False)


def ray_runs(args, model_dir: Path, tok, records, pp, precision: str, local: list, tokens: int,
             dt_local: float) -> None:
    """Score ``records`` through RayModelPool for each AxG pool in ``args.ray`` (a local Ray); print the
    rate against the in-process run (``dt_local`` seconds for the same rows and batch size) and the
    largest relative difference from its scores ``local``."""
    import time

    import ray

    from sftpipe.config import ModelParams, RayParams
    from sftpipe.perplexity import RayModelPool, score_rows
    from sftpipe.ray_session import ray_session

    mp = ModelParams(name_or_path=str(model_dir))
    with ray_session(RayParams(), "bench"):
        res = {k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")}
        print(f"\nRay {ray.__version__}, local cluster {res}; in-process batch {pp.batch_size}: "
              f"{tokens / dt_local:,.0f} tokens/s")
        print("| Ray actor pool | actors' start s | tokens/s | vs in-process | max rel. diff vs in-process |")
        print("|---|---:|---:|---:|---:|")
        for spec in args.ray.split(","):
            a, g = spec.split("x")
            rp = pp.ray.model_copy(update={"actors": int(a), "num_gpus_per_actor": float(g)})
            p = pp.model_copy(update={"ray": rp, "precision": precision})
            t0 = time.perf_counter()
            with RayModelPool(mp, p, RayParams()) as pool:
                # small batches, so that every actor gets one and has loaded its model before the timed run
                score_rows(pool, tok, records[: 16 * int(a)], p.model_copy(update={"batch_size": 8}))
                t_start = time.perf_counter() - t0
                t1 = time.perf_counter()
                got = score_rows(pool, tok, records, p)
                dt = time.perf_counter() - t1
            print(f"| {a} actor(s) x {float(g):g} GPU | {t_start:.1f} | {tokens / dt:,.0f} | {dt_local / dt:.2f}x | "
                  f"{rel_diff(got, local):.2g} |")


if __name__ == "__main__":
    main()
