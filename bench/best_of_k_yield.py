"""Best-of-K yield: how many prompts get a verified answer from the SFT model, greedy vs K samples.

On the first ``--prompts`` rows of the test split whose task has a rule verifier
(sftpipe/create/verify.py: arithmetic, translation, sentiment, reverse, capital), the SFT model
(``models/sft`` after ``dvc repro``) answers greedily once and samples K replies per prompt
(``--k``, ``--temperature``); best-of-K keeps a prompt when any sample verifies
(sftpipe/create/best_of_k.py). Per category: pass@1 (greedy), the mean share of verified samples,
and best-of-K's yield, with the ledger's rejection counts. The verifiers themselves are checked
against the sample generator's truth in tests/test_verify_best_of_k.py.

    PYTHONPATH=. python bench/best_of_k_yield.py [--prompts 200] [--k 8] [--temperature 0.5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import setup_env  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sft", default="models/sft")
    ap.add_argument("--data", default="data/split/test.jsonl")
    ap.add_argument("--prompts", type=int, default=200)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--temperature", type=float, default=0.5)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    setup_env()
    from sftpipe.config import load_params
    from sftpipe.create.best_of_k import best_of_k
    from sftpipe.create.verify import RULES, verify
    from sftpipe.io import read_jsonl
    from sftpipe.model.generation import generate_replies
    from sftpipe.model.loading import load_sft

    params = load_params("params.yaml")
    rows = [r for r in read_jsonl(args.data) if r.get("label") in RULES]
    rows = [r for r in rows if verify(r, r["messages"][-1]["content"]).ok is not None][: args.prompts]
    model, tok = load_sft(params.model, args.sft)
    model.eval()
    t0 = time.perf_counter()
    greedy = generate_replies(model, tok, rows, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    t1 = time.perf_counter()
    samples = generate_replies(model, tok, rows, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                               k=args.k, temperature=args.temperature, top_p=args.top_p, seed=args.seed)
    t2 = time.perf_counter()
    res = best_of_k(rows, [{"replies": s, "error": None} for s in samples], unverifiable="drop")
    kept = {r["id"] for r in res.kept}
    by = defaultdict(lambda: {"n": 0, "greedy": 0, "share": [], "kept": 0})
    for r, g, s in zip(rows, greedy, samples):
        c = by[r["label"]]
        c["n"] += 1
        c["greedy"] += verify(r, g[0]).ok is True
        c["share"].append(sum(verify(r, x).ok is True for x in s) / len(s))
        c["kept"] += r["id"] in kept
    print(f"{len(rows)} verifiable test prompts, SFT model {args.sft}; greedy {t1 - t0:.0f} s, "
          f"K={args.k} samples (temperature {args.temperature:g}, top_p {args.top_p:g}) {t2 - t1:.0f} s")
    print(f"\n| category | prompts | pass@1 (greedy) | verified share of samples | best-of-{args.k} yield |")
    print("|---|---|---|---|---|")
    tot = {"n": 0, "greedy": 0, "kept": 0, "share": []}
    for cat in sorted(by):
        c = by[cat]
        print(f"| {cat} | {c['n']} | {c['greedy'] / c['n']:.2f} | {statistics.mean(c['share']):.2f} | "
              f"{c['kept'] / c['n']:.2f} |")
        for k in ("n", "greedy", "kept"):
            tot[k] += c[k]
        tot["share"] += c["share"]
    print(f"| all | {tot['n']} | {tot['greedy'] / tot['n']:.2f} | {statistics.mean(tot['share']):.2f} | "
          f"{tot['kept'] / tot['n']:.2f} |")
    print(f"\nledger: {res.extra_metrics['rejected']}; first passing sample at index: "
          f"{res.details['first_passing_candidate']}")


if __name__ == "__main__":
    main()
