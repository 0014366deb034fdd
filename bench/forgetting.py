"""Forgetting vs task gain: LoRA and full fine-tuning side by side, on the same rows and test split.

For each method (``--methods``, default ``lora full``) and seed (``--seeds``), the SFT model is
trained with params.yaml's ``train`` settings (``train.method`` and ``train.seed`` replaced) on
``--train`` (default ``data/split/train.jsonl``, validation ``data/split/validation.jsonl``) and
scored the way the evaluate stage scores it:

* ``general_loss``: mean NLL per token on held-out general text (``evaluate.general_text``, else
  ``models/base/heldout.jsonl``: the base model's held-out pretraining documents), base -> SFT;
  the rise is the forgetting;
* exact match and ROUGE-L on ``data/split/test.jsonl`` (``evaluation.score_model``, greedy, the
  stage's batch size and ``max_new_tokens``), base -> SFT.

The base model is scored once (it does not depend on the seed or the method).

Learning rate: the train code has one ``train.lr`` for every method, and params.yaml's 0.002 is a
LoRA learning rate (LoRA updates a low-rank delta from zero; full fine-tuning moves every weight, and
usually wants a rate around 10x lower). ``--full-lr`` sets the rate of the ``full`` runs here only
(several values: one config per value, e.g. ``--full-lr 0.002 0.0002``); default: ``train.lr``.

Runs go seed by seed (every config of seed 0 first), each printed as it ends, and ``--json`` keeps
them as they come, so a cut-short run still gives its first seeds.

    PYTHONPATH=. python bench/forgetting.py --seeds 0 1 2 --full-lr 0.002 0.0002 --json /tmp/forgetting.json
    PYTHONPATH=. python bench/forgetting.py --seeds 0 --epochs 1 --full-lr 0.0002 0.002   # a busy machine
    PYTHONPATH=. python bench/forgetting.py --seeds 0 --max-steps 20 --eval-rows 32   # smoke run, ~1 min
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import THREADS_HELP, command_line, machine, set_threads, setup_env  # noqa: E402

METRICS = ("general_loss", "exact_match", "rougeL", "loss")


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", nargs="+", default=["lora", "full"], help="train.method values")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="train.seed values")
    ap.add_argument("--full-lr", type=float, nargs="+", default=None,
                    help="learning rate(s) of the full runs (default: params.yaml's train.lr)")
    ap.add_argument("--train", default="data/split/train.jsonl")
    ap.add_argument("--validation", default="data/split/validation.jsonl")
    ap.add_argument("--test", default="data/split/test.jsonl")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--epochs", type=float, default=None,
                    help="train.epochs override (default: params.yaml's; fewer to fit a busy machine)")
    ap.add_argument("--max-steps", type=int, default=None, help="train.max_steps override (smoke runs)")
    ap.add_argument("--eval-rows", type=int, default=None, help="first N test rows only (smoke runs)")
    ap.add_argument("--json", default=None, help="write every result here as it comes")
    ap.add_argument("--threads", type=int, default=1, help=THREADS_HELP)
    return ap.parse_args(argv)


def configs(args, params) -> list[tuple[str, dict]]:
    """(name, train overrides) per config: one per method, one per --full-lr value for ``full``."""
    out = []
    for m in args.methods:
        if m == "full" and args.full_lr:
            out += [(f"full lr={lr:g}", {"method": "full", "lr": lr}) for lr in args.full_lr]
        else:
            out.append((f"{m} lr={params.train.lr:g}", {"method": m}))
    return out


def evaluate(model, tok, rows, general, params) -> dict:
    from sftpipe.model import evaluation

    ev = params.evaluate
    scores, _ = evaluation.score_model("m", model, tok, rows, ev.max_new_tokens, ev.batch_size, params.train.max_length)
    nll, _ = evaluation.text_loss(model, tok, general, ev.batch_size, params.train.max_length)
    return {"general_loss": round(nll, 4), **{k: scores[k] for k in ("exact_match", "rougeL", "loss")}}


def general_texts(params) -> list[str]:
    from sftpipe.model.evaluation import read_general_text

    path = params.evaluate.general_text or Path(params.model.name_or_path) / "heldout.jsonl"
    return read_general_text(path)


def mean_range(xs: list[float]) -> str:
    if len(xs) == 1:
        return f"{xs[0]:.3f}"
    return f"{statistics.mean(xs):.3f} [{min(xs):.3f}..{max(xs):.3f}]"


def main(argv=None):
    args = parse(argv)
    setup_env()
    set_threads(args.threads)
    from sftpipe.config import load_params
    from sftpipe.io import read_jsonl
    from sftpipe.model.loading import fit_embeddings, load_model, load_sft
    from sftpipe.model.train import train

    params = load_params(args.params)
    tr, va = read_jsonl(args.train), read_jsonl(args.validation)
    rows = read_jsonl(args.test)[: args.eval_rows]
    general = general_texts(params)
    cfgs = configs(args, params)
    print(f"machine: {machine()}")
    print(f"{len(tr)} training rows ({args.train}), {len(va)} validation, {len(rows)} test rows, "
          f"{len(general)} general-text documents; configs {[n for n, _ in cfgs]}, seeds {args.seeds}, "
          f"epochs {args.epochs or params.train.epochs:g}", flush=True)

    results: dict = {"base": None, "runs": []}

    def dump():
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2) + "\n")

    for seed in args.seeds:
        for name, upd in cfgs:
            over = {"max_steps": args.max_steps, "epochs": args.epochs}
            tp = params.train.model_copy(update={**upd, "seed": seed, **{k: v for k, v in over.items() if v}})
            t0 = time.perf_counter()
            with tempfile.TemporaryDirectory(prefix="forgetting-") as tmp:
                t = Path(tmp)
                summary = train(tr, va, params.model, tp, params.lora, t / "sft", t / "ckpt", t / "live")
                sft, tok = load_sft(params.model, t / "sft")
                if results["base"] is None:  # as stages/evaluate.py: the SFT tokenizer, its template's tokens fitted
                    base = load_model(params.model).eval()
                    fit_embeddings(base, tok)
                    results["base"] = evaluate(base, tok, rows, general, params)
                    print(f"base: {results['base']}", flush=True)
                    del base
                res = evaluate(sft.eval(), tok, rows, general, params)
            run = {"config": name, "method": tp.method, "lr": tp.lr, "seed": seed, **res,
                   "train_loss": summary["train_loss"], "val_loss": summary.get("val_loss"),
                   "steps": summary["global_step"], "trainable_params": summary["trainable_params"],
                   "seconds": round(time.perf_counter() - t0, 1)}
            results["runs"].append(run)
            dump()
            print(f"seed {seed} {name}: " + ", ".join(f"{k}={v}" for k, v in run.items()
                                                      if k not in ("config", "seed", "method", "lr")), flush=True)

    b = results["base"]
    print(f"\nForgetting vs task gain, {len(tr)} training rows x {args.epochs or params.train.epochs:g} epochs, "
          f"{len(rows)} test rows, "
          f"{len(general)} general-text documents; SFT: mean [min..max] over seeds {args.seeds}")
    print("| model | trainable params | general_loss (base -> SFT) | forgetting (SFT - base) | exact match | ROUGE-L |")
    print("|---|---|---|---|---|---|")
    print(f"| base | - | {b['general_loss']:.3f} | - | {b['exact_match']:.3f} | {b['rougeL']:.3f} |")
    for name, _ in cfgs:
        rs = [r for r in results["runs"] if r["config"] == name]
        if not rs:
            continue
        print(f"| {name} ({len(rs)} seed{'s' * (len(rs) > 1)}) | {rs[0]['trainable_params']:,} | "
              f"{mean_range([r['general_loss'] for r in rs])} | "
              f"{mean_range([r['general_loss'] - b['general_loss'] for r in rs])} | "
              f"{mean_range([r['exact_match'] for r in rs])} | {mean_range([r['rougeL'] for r in rs])} |")
    print(f"command: {command_line()}")


if __name__ == "__main__":
    main()
