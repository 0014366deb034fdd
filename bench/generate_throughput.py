"""Throughput of the generation backends (sftpipe.create.backends), each against its naive baseline,
in one process.

* transformers: generated tokens/s of :func:`sftpipe.model.generation.generate_replies` batched
  (``--batch-size`` prompts per forward pass, the K samples of a prompt in the same pass) against the
  same function one prompt and one sample at a time (the unbatched loop: K calls per prompt), on the
  first ``--prompts`` rows of the test split, with the built-in base model (or ``--model``). Greedy
  (K=1) and sampled (K=``--k``). Replies of greedy runs are checked equal between the two.
  Target (generation issue): >= 3x the unbatched loop on CPU.
* openai: prompts/s through a real local OpenAI-compatible server (tests/openai_server.py) that
  answers after a fixed ``--latency``, with ``concurrency`` 1 and N. Target: >= 0.8 N x the
  single-request throughput.

    PYTHONPATH=. python bench/generate_throughput.py [--prompts 64] [--k 4] [--batch-size 16] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _common import setup_env  # noqa: E402


def transformers_runs(args) -> None:
    from sftpipe.config import ModelParams
    from sftpipe.io import read_jsonl
    from sftpipe.model.generation import generate_replies, new_tokens
    from sftpipe.model.loading import load_model, load_tokenizer

    mp = ModelParams(name_or_path=args.model)
    model, tok = load_model(mp).eval(), load_tokenizer(mp)
    rows = read_jsonl(args.data)[: args.prompts]
    generate_replies(model, tok, rows[:4], max_new_tokens=8, batch_size=4)          # warm-up
    print(f"transformers: {args.model}, {len(rows)} prompts from {args.data}, max_new_tokens {args.max_new_tokens}, "
          f"{args.threads} torch thread(s)")
    print("| run | tokens | seconds | tokens/s | vs the unbatched loop |")
    print("|---|---|---|---|---|")
    for k, temp in ((1, 0.0), (args.k, 1.0)):
        def timed(batch_size: int, per_call_k: int, calls: int):
            t0 = time.perf_counter()
            outs = []
            for c in range(calls):
                outs.append(generate_replies(model, tok, rows, max_new_tokens=args.max_new_tokens,
                                             batch_size=batch_size, k=per_call_k, temperature=temp, seed=c))
            return outs, time.perf_counter() - t0

        loop, t_loop = timed(1, 1, k)                 # one prompt, one sample per call
        batched, t_b = timed(args.batch_size, k, 1)
        if k == 1:
            assert loop[0] == batched[0], "batched greedy replies differ from one-at-a-time ones"
        n_loop = sum(new_tokens(tok, o) for o in loop)
        n_b = new_tokens(tok, batched[0])
        what = "greedy" if k == 1 else f"sampled, k={k}"
        print(f"| unbatched loop, {what} | {n_loop} | {t_loop:.1f} | {n_loop / t_loop:,.0f} | 1.0x |")
        print(f"| batched {args.batch_size}, {what} | {n_b} | {t_b:.1f} | {n_b / t_b:,.0f} | "
              f"{(n_b / t_b) / (n_loop / t_loop):.1f}x |")


def openai_runs(args) -> None:
    from openai_server import FakeOpenAI
    from sftpipe.config import EndpointParams, GenerationParams, ModelParams
    from sftpipe.create.backends import generate

    records = [{"id": f"p{i}", "source": "b", "meta": {}, "messages": [{"role": "user", "content": f"prompt {i}"}]}
               for i in range(args.requests)]
    print(f"\nopenai: {args.requests} prompts, k={args.k}, a local server answering after {args.latency:g} s")
    print("| concurrency | seconds | prompts/s | vs concurrency 1 | target |")
    print("|---|---|---|---|---|")
    base = None
    with FakeOpenAI(reply=lambda b: [f"reply {j}" for j in range(b["n"])], latency=args.latency,
                    models=("teacher",)) as srv:
        for c in (1, 4, 8, 16):
            with tempfile.TemporaryDirectory() as tmp:
                gp = GenerationParams(backend="openai", k=args.k, cache_dir=tmp,
                                      openai=EndpointParams(base_url=srv.url, model="teacher", concurrency=c))
                t0 = time.perf_counter()
                out = generate(records, gp, ModelParams())
                dt = time.perf_counter() - t0
            assert all(o["replies"] and len(o["replies"]) == args.k for o in out)
            rate = len(records) / dt
            base = base or rate
            print(f"| {c} | {dt:.2f} | {rate:.1f} | {rate / base:.1f}x | >= {0.8 * c:.1f}x |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/base")
    ap.add_argument("--data", default="data/split/test.jsonl")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--requests", type=int, default=128)
    ap.add_argument("--latency", type=float, default=0.1)
    ap.add_argument("--skip", choices=["transformers", "openai"], default=None)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: a busy machine's OpenMP stalls would inflate the ratios; see bench/README.md)")
    args = ap.parse_args()
    setup_env()
    import torch

    torch.set_num_threads(args.threads)
    if args.skip != "transformers":
        transformers_runs(args)
    if args.skip != "openai":
        openai_runs(args)


if __name__ == "__main__":
    main()
