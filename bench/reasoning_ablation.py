"""Does step-by-step reasoning in the training data raise arithmetic exact match for this model?

Trains the pipeline's SFT model on the same rows (``data/split/train.jsonl`` and
``validation.jsonl``, as ``dvc repro`` left them) twice per seed: with the reasoning
(``train.reasoning: train``) and without it (``drop``: the same rows, reasoning removed).
Every other param is ``params.yaml``'s. Each model is scored on a frozen set of fresh
column-arithmetic problems (generated here with their own seed; none of their requests
occurs in the training rows), greedy, by

* answer EM:    the answer after the reasoning equals the reference answer line exactly;
* number right: the last number in the answer equals the true result (format aside);
* reasons:      share of generations that open with a ``<think>`` block.

Three seeds by default; the spread (min..max) is printed with the mean.

    PYTHONPATH=. python bench/reasoning_ablation.py [--seeds 0 1 2] [--eval-rows 200] [--method full]
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import setup_env  # noqa: E402

NUM = re.compile(r"-?\d+")


def frozen_problems(n: int, seen: set[str], seed: int = 20261126) -> list[dict]:
    from sftpipe.sample import tools as T

    rng = random.Random(seed)
    out, keys = [], set()
    while len(out) < n:
        row = T.reasoning(rng, "en" if len(out) % 2 == 0 else "zh")
        prompt = row["messages"][0]["content"]
        if prompt in seen or row["key"] in keys:
            continue
        keys.add(row["key"])
        out.append({"id": f"frozen:{len(out)}", "messages": row["messages"], "label": row["category"],
                    "meta": {"lang": row["lang"]}, "answer": row["answer"]})
    return out


def score(preds: list[str], rows: list[dict]) -> dict:
    from sftpipe.model.evaluation import answer, reference
    from sftpipe.model.templates import parse_reply

    em = sum(answer(p) == reference(r) for p, r in zip(preds, rows)) / len(rows)
    nums = [NUM.findall(answer(p).replace(" ", "")) for p in preds]
    right = sum(bool(x) and int(x[-1]) == r["answer"] for x, r in zip(nums, rows)) / len(rows)
    reasons = sum(bool(parse_reply(p)["reasoning"]) for p in preds) / len(rows)
    return {"answer_em": em, "number_right": right, "reasons": reasons}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--eval-rows", type=int, default=200)
    ap.add_argument("--data", default="data/split")
    ap.add_argument("--method", default=None, help="train.method (default: params.yaml's)")
    args = ap.parse_args()
    setup_env()
    from sftpipe.config import load_params
    from sftpipe.io import read_jsonl
    from sftpipe.model.evaluation import generate
    from sftpipe.model.loading import load_sft
    from sftpipe.model.train import train

    params = load_params("params.yaml")
    tr, va = read_jsonl(Path(args.data) / "train.jsonl"), read_jsonl(Path(args.data) / "validation.jsonl")
    seen = {m["content"] for r in tr + va for m in r["messages"] if m["role"] == "user"}
    rows = frozen_problems(args.eval_rows, seen)
    n_reasoning = sum(any(m.get("reasoning_content") for m in r["messages"]) for r in tr)
    print(f"{len(tr)} training rows, {n_reasoning} of them with reasoning; {len(rows)} frozen problems "
          f"(en/zh alternating, none in the training data)")
    results: dict[str, list[dict]] = {"train": [], "drop": []}
    for seed in args.seeds:
        for mode in ("train", "drop"):
            tp = params.train.model_copy(update={"seed": seed, "reasoning": mode,
                                                 "method": args.method or params.train.method})
            with tempfile.TemporaryDirectory() as tmp:
                t = Path(tmp)
                train(tr, va, params.model, tp, params.lora, t / "sft", t / "ckpt", t / "live")
                model, tok = load_sft(params.model, t / "sft")
                preds = generate(model.eval(), tok, rows, 160, params.evaluate.batch_size)  # reasoning ~110 tokens
            s = score(preds, rows)
            results[mode].append(s)
            print(f"seed {seed} reasoning={mode:5s}: answer EM {s['answer_em']:.3f}  number right "
                  f"{s['number_right']:.3f}  reasons {s['reasons']:.3f}", flush=True)
            print("   e.g.", repr(preds[0][:160]), flush=True)
    print("\n| training rows | answer EM mean [min..max] | number right mean [min..max] | reasons |")
    print("|---|---|---|---|")
    for mode, label in (("train", "with reasoning"), ("drop", "reasoning removed")):
        cells = []
        for k in ("answer_em", "number_right", "reasons"):
            v = [r[k] for r in results[mode]]
            cells.append(f"{statistics.mean(v):.3f} [{min(v):.3f}..{max(v):.3f}]")
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
