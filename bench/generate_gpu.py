"""Generation tokens/s on a GPU with the transformers backend (bf16, Qwen2-0.5B-shaped model): batched
:func:`sftpipe.model.generation.generate_replies` against the same function one prompt at a time.

The model and tokenizer are train_gpu.py's (random weights in Qwen2-0.5B's shape, a word-level tokenizer
whose vocabulary is the model's), so the run needs no network. With random weights a reply almost never
hits the end-of-text token (1 in 151,936 per step), so every reply runs to ``--max-new-tokens``: the
figures are decode throughput at a fixed length, which is what the comparison needs. Prompts are
synthetic user turns of random words, log-normal lengths around ``--prompt-median`` tokens.

Runs: the unbatched loop (batch 1, greedy) on ``--loop-prompts`` prompts; batched greedy at each
``--batch-sizes`` on ``--prompts`` prompts; batched sampling with K=``--k`` (T=1.0). tokens/s counts
generated tokens only; "agree" is the share of the loop's prompts whose greedy reply is the same in the
batched run (bf16 with left padding changes the arithmetic, so a few may differ).

    PYTHONPATH=. python bench/generate_gpu.py              # GPU, ~2 min
    PYTHONPATH=. python bench/generate_gpu.py --tiny       # CPU check, small model, fp32
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, setup_env  # noqa: E402


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="small model, fp32, CPU: a check that the code runs")
    ap.add_argument("--prompts", type=int, default=None, help="prompts per batched run (default 256; tiny 16)")
    ap.add_argument("--loop-prompts", type=int, default=None, help="prompts in the unbatched loop (16; tiny 4)")
    ap.add_argument("--batch-sizes", default=None, help="comma list (default 16,64,256; tiny 4,16)")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=None, help="default 128; tiny 16")
    ap.add_argument("--prompt-median", type=float, default=None, help="prompt tokens (default 120; tiny 20)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    tiny = args.tiny
    args.prompts = args.prompts or (16 if tiny else 256)
    args.loop_prompts = args.loop_prompts or (4 if tiny else 16)
    args.batch_sizes = [int(b) for b in (args.batch_sizes or ("4,16" if tiny else "16,64,256")).split(",")]
    args.max_new_tokens = args.max_new_tokens or (16 if tiny else 128)
    args.prompt_median = args.prompt_median or (20.0 if tiny else 120.0)
    return args


def prompts_only(records: list[dict]) -> list[dict]:
    return [{**r, "messages": [m for m in r["messages"] if m["role"] != "assistant"]} for r in records]


def main(argv=None) -> None:
    args = parse(argv)
    setup_env()
    from sftpipe.model.generation import generate_replies, new_tokens
    from train_gpu import bench_model, cuda_timed, synthetic_records

    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        model, tok, shape, precision = bench_model(tmp, args.tiny, args.seed)
        n_params = sum(p.numel() for p in model.parameters())
        records = prompts_only(synthetic_records(args.prompts, 4 * int(args.prompt_median) + 16, shape["vocab_size"],
                                                 args.prompt_median, args.seed, dense=False))
        print(f"model: Qwen2 {'tiny' if args.tiny else '0.5B'} shape, {n_params / 1e6:.0f}M parameters, {precision}, "
              f"attn {model.config._attn_implementation}, on {next(model.parameters()).device}; "
              f"{len(records)} prompts (median {args.prompt_median:g} tokens), max_new_tokens {args.max_new_tokens}")
        generate_replies(model, tok, records[:4], max_new_tokens=8, batch_size=4)  # warm-up

        def timed(rows, batch_size, k=1, temperature=0.0):
            out, dt, peak = cuda_timed(lambda: generate_replies(
                model, tok, rows, max_new_tokens=args.max_new_tokens, batch_size=batch_size, k=k,
                temperature=temperature, seed=args.seed))
            return out, dt, new_tokens(tok, out), peak

        loop_rows = records[: args.loop_prompts]
        loop, t_loop, n_loop, peak = timed(loop_rows, 1)
        base = n_loop / t_loop
        print("| run | prompts | tokens | seconds | tokens/s | vs the unbatched loop | greedy agree | peak GiB |")
        print("|---|---|---|---|---|---|---|---|")
        print(f"| unbatched loop, greedy | {len(loop_rows)} | {n_loop} | {t_loop:.1f} | {base:,.0f} | 1.0x | - | {peak:.1f} |")
        for bs in args.batch_sizes:
            out, dt, n, peak = timed(records, bs)
            agree = sum(a == b for a, b in zip(loop, out)) / len(loop)
            print(f"| batched {bs}, greedy | {len(records)} | {n} | {dt:.1f} | {n / dt:,.0f} | {n / dt / base:.1f}x "
                  f"| {agree:.2f} | {peak:.1f} |")
        bs = args.batch_sizes[-1]
        out, dt, n, peak = timed(records, max(1, bs // args.k), k=args.k, temperature=1.0)
        print(f"| batched {max(1, bs // args.k)} prompts x K={args.k}, T=1.0 | {len(records)} | {n} | {dt:.1f} | "
              f"{n / dt:,.0f} | {n / dt / base:.1f}x | - | {peak:.1f} |")


if __name__ == "__main__":
    main()
