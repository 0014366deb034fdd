"""What moves tool-call accuracy for this model? One training config, several seeds.

Trains the pipeline's SFT model on ``data/select/train.jsonl`` (validation: ``data/split/validation.jsonl``,
as ``dvc repro`` left them) with ``params.yaml``'s params, changed only by the options given
(``--method``, ``--lr``, ``--epochs``, ``--lora-r``), and optionally with more tool rows:

* ``--extra-tool-rows N``: N fresh rows per language from the sample's own tool generator
  (:func:`sftpipe.sample.tools.tool_rows`, seed ``--extra-seed``; no reasoning rows), none whose
  request occurs in the validation or test split or in the frozen set below;
* ``--repeat-tools K``: every training row with tools K times (K - 1 copies added).

Each model is scored on the call step (system, tools and request given; greedy) of

* the test split's rows with tools (``data/split/test.jsonl``: 19 rows in this revision), and
* a frozen set of fresh tool rows (``--frozen-rows`` per language, seed 777, all four tool
  families at the generator's shares), none of whose requests is in the training, validation
  or test rows,

by :func:`sftpipe.model.evaluation.tool_metrics` (tool_call_accuracy, valid JSON, argument EM).
``--full`` also scores the whole test split as the evaluate stage does (ROUGE-L, exact match) and
the general-text loss on ``models/base/heldout.jsonl`` (the forgetting check).

Run from a checkout that holds ``dvc repro``'s data and ``models/base``:

    PYTHONPATH=. python bench/tool_ablation.py --method full --lr 1e-3 --extra-tool-rows 300 --full
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import command_line, setup_env  # noqa: E402

FROZEN_SEED = 777


def _requests(rows: list[dict]) -> set[str]:
    return {m["content"] for r in rows for m in r["messages"] if m["role"] == "user"}


def generated_tool_rows(languages: list[str], per_lang: int, seed: int, avoid: set[str], prefix: str) -> list[dict]:
    """Tool rows (no reasoning rows) from the sample's generator, in the canonical schema, each request
    new (not in ``avoid``, not repeated); ``avoid`` gains their requests."""
    from sftpipe.sample import tools as T

    out = []
    for i, r in enumerate(T.tool_rows(languages, per_lang, 0, seed)):
        user = next(m["content"] for m in r["messages"] if m["role"] == "user")
        if r["category"] == T.REASONING or user in avoid:
            continue
        avoid.add(user)
        out.append({"id": f"{prefix}:{i}", "label": r["category"], "messages": r["messages"], "tools": r["tools"],
                    "meta": {"lang": r["lang"]}})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--method", default=None, help="train.method (default: params.yaml's)")
    ap.add_argument("--lr", type=float, default=None, help="train.lr (default: params.yaml's)")
    ap.add_argument("--epochs", type=float, default=None, help="train.epochs (default: params.yaml's)")
    ap.add_argument("--max-steps", type=int, default=None, help="train.max_steps (a smoke run)")
    ap.add_argument("--lora-r", type=int, default=None, help="lora.r (alpha kept at 2 r)")
    ap.add_argument("--extra-tool-rows", type=int, default=0, help="fresh generated tool rows per language")
    ap.add_argument("--extra-seed", type=int, default=4321)
    ap.add_argument("--repeat-tools", type=int, default=1, help="each training row with tools this many times")
    ap.add_argument("--frozen-rows", type=int, default=100, help="frozen fresh tool rows per language")
    ap.add_argument("--full", action="store_true", help="also ROUGE-L / EM on the whole test split, general loss")
    args = ap.parse_args()
    setup_env()
    from sftpipe.config import load_params
    from sftpipe.io import read_jsonl
    from sftpipe.model import evaluation as E
    from sftpipe.model.loading import load_sft
    from sftpipe.model.train import train

    params = load_params("params.yaml")
    tr = read_jsonl("data/select/train.jsonl")
    va = read_jsonl("data/split/validation.jsonl")
    test = read_jsonl(params.evaluate.test_file)
    test_tools = [r for r in test if r.get("tools")]
    langs = list(params.sample.languages)
    seen = _requests(tr + read_jsonl("data/split/train.jsonl") + va + test)
    frozen = generated_tool_rows(langs, args.frozen_rows, FROZEN_SEED, seen, "frozen")
    avoid = _requests(va + test + frozen)
    extra = generated_tool_rows(langs, args.extra_tool_rows, args.extra_seed, avoid, "extra") \
        if args.extra_tool_rows else []
    rows = tr + extra + [r for r in tr if r.get("tools")] * (args.repeat_tools - 1)
    print(f"{len(rows)} training rows ({sum(bool(r.get('tools')) for r in rows)} with tools: "
          f"{sum(bool(r.get('tools')) for r in tr)} selected, {len(extra)} generated, repeat x{args.repeat_tools}); "
          f"scored on {len(test_tools)} test rows with tools and {len(frozen)} frozen generated tool rows")
    update = {k: v for k, v in (("method", args.method), ("lr", args.lr), ("epochs", args.epochs),
                                ("max_steps", args.max_steps)) if v is not None}
    lora = params.lora.model_copy(update={"r": args.lora_r, "alpha": 2 * args.lora_r}) if args.lora_r else params.lora
    general = [d["text"] for d in read_jsonl(Path(params.model.name_or_path) / "heldout.jsonl")] if args.full else []
    results = []
    for seed in args.seeds:
        tp = params.train.model_copy(update={**update, "seed": seed})
        with tempfile.TemporaryDirectory() as tmp:
            t = Path(tmp)
            summary = train(rows, va, params.model, tp, lora, t / "sft", t / "ckpt", t / "live")
            model, tok = load_sft(params.model, t / "sft")
        res = {"train_s": summary["train_wall_s"]}
        for name, recs in (("test", test_tools), ("frozen", frozen)):
            preds = E.generate(model, tok, [E.call_step(r) for r in recs], params.evaluate.max_new_tokens,
                               params.evaluate.batch_size)
            res[name] = E.tool_metrics(recs, preds)
        if args.full:
            m, _ = E.score_model("sft", model, tok, test, params.evaluate.max_new_tokens, params.evaluate.batch_size,
                                 tp.max_length)
            res["rougeL"], res["exact_match"] = m["rougeL"], m["exact_match"]
            nll, _ = E.text_loss(model, tok, general, params.evaluate.batch_size, tp.max_length)
            res["general_loss"] = round(nll, 4)
        results.append(res)
        print(f"seed {seed}: " + json.dumps(res), flush=True)

    def cell(values):
        return f"{statistics.mean(values):.3f} [{min(values):.3f}..{max(values):.3f}]"

    cols = [("test", "tool_call_accuracy"), ("test", "tool_valid_json_rate"), ("test", "tool_args_exact_match"),
            ("frozen", "tool_call_accuracy"), ("frozen", "tool_valid_json_rate")]
    head = [f"{s} {k}" for s, k in cols] + (["ROUGE-L", "exact match", "general loss"] if args.full else [])
    head.append("train s")
    print("\n| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    vals = [cell([r[s].get(k, 0.0) for r in results]) for s, k in cols]
    if args.full:
        vals += [cell([r[k] for r in results]) for k in ("rougeL", "exact_match", "general_loss")]
    vals.append(cell([r["train_s"] for r in results]))
    print("| " + " | ".join(vals) + " |")
    print("\n" + command_line())


if __name__ == "__main__":
    main()
