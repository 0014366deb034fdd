"""Does choosing the training rows beat a random choice of the same number, in eval metrics?

The experiment of the select issue, in one process: the pool is the train split ``dvc repro``
left (``data/split/train.jsonl``, scored by the perplexity stage: ``meta.ifd``, ``meta.ppl``),
the test rows are the frozen ``data/split/test.jsonl`` (select never touches them). For each
method (``random``, ``top``, ``diverse``, ...) and seed, the select stage's own function picks
``--budget`` rows with params.yaml's ``select`` settings (method, budget and seed replaced), the
SFT model is trained on them with params.yaml's train settings (``train.seed`` = the seed), and
scored on the test rows: exact match and ROUGE-L (the evaluate stage's metrics), per category too.
The random baseline draws another sample per seed (``select.seed`` = the seed as well).

It also reports, from ``data/raw/truth.jsonl``, the share of selected rows with a known defect.
The verdict per method: its mean beats random's by more than twice the larger seed spread
(max - min) of the two.

    PYTHONPATH=. python bench/select_experiment.py [--budget 800] [--seeds 0 1 2]
        [--methods random top diverse] [--set select.scores='{ifd: -1.0}'] [--json out.json]
        [--variant strat select.stratify=label --methods random top@strat] [--eval-on validation]

``--variant NAME key=value ...`` names a set of select overrides; ``method@NAME`` runs a method with
them (on top of ``--set``). ``--eval-on validation`` scores on the validation split instead: pick the
settings there, then confirm once on the test rows, so the test rows do not choose the settings.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import mean_range, seed_verdict, setup_env, train_and_score  # noqa: E402


def parse_set(items: list[str]) -> dict:
    """``select.key=yaml-value`` pairs -> {key: value} for SelectParams."""
    import yaml

    out = {}
    for it in items:
        key, _, value = it.partition("=")
        if not key.startswith("select."):
            raise SystemExit(f"--set {it}: only select.* keys")
        out[key.removeprefix("select.")] = yaml.safe_load(value)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=float, default=800)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=["random", "top", "diverse"])
    ap.add_argument("--set", nargs="*", default=[], help="select.* overrides, e.g. select.threshold=0.8")
    ap.add_argument("--variant", nargs="+", action="append", default=[], metavar="NAME KEY=VALUE",
                    help="named select.* overrides, used as method@NAME")
    ap.add_argument("--eval-on", choices=["test", "validation"], default="test")
    ap.add_argument("--data", default="data/split")
    ap.add_argument("--truth", default="data/raw/truth.jsonl")
    ap.add_argument("--json", default=None, help="write every run's figures here")
    args = ap.parse_args()
    setup_env()
    from sftpipe.config import load_params
    from sftpipe.io import read_jsonl
    from sftpipe.select.choose import choose, embed_rows

    params = load_params("params.yaml")
    pool = read_jsonl(Path(args.data) / "train.jsonl")
    va, test = read_jsonl(Path(args.data) / "validation.jsonl"), read_jsonl(Path(args.data) / "test.jsonl")
    truth = {r["id"]: r for r in read_jsonl(args.truth)} if Path(args.truth).is_file() else {}
    base_sp = params.select.model_copy(update=parse_set(args.set))
    variants = {v[0]: parse_set(v[1:]) for v in args.variant}
    if args.eval_on == "validation":
        test = va
    X = embed_rows(pool, base_sp)
    pool_defects = Counter(truth.get(r["id"], {}).get("defect") for r in pool)
    print(f"pool {len(pool)} rows ({sum(n for k, n in pool_defects.items() if k)} with a known defect: "
          f"{dict((k, n) for k, n in pool_defects.most_common() if k)}); test {len(test)} frozen rows; "
          f"budget {args.budget:g}; scored on {args.eval_on}; train {params.train.method} x{params.train.epochs:g} epochs", flush=True)
    runs = []
    for seed in args.seeds:
        for method in args.methods:
            name, _, variant = method.partition("@")
            if variant and variant not in variants:
                raise SystemExit(f"{method}: no --variant {variant}")
            sp = type(base_sp).model_validate({**base_sp.model_dump(), **variants.get(variant, {}),
                                               "method": name, "budget": args.budget, "seed": seed})
            t0 = time.perf_counter()
            res = choose(pool, sp, None, X)
            rows = [{**r, "meta": {k: v for k, v in r["meta"].items() if k not in ("scores", "select_rank")}}
                    for r in res.kept]
            defects = Counter(truth.get(r["id"], {}).get("defect") for r in rows)
            run = {"method": method, "seed": seed, "rows": len(rows),
                   "defect_rate": round(sum(n for k, n in defects.items() if k) / max(len(rows), 1), 4),
                   "defects": dict(sorted((k, n) for k, n in defects.items() if k)),
                   "labels": dict(sorted(Counter(str(r.get("label")) for r in rows).items())),
                   **train_and_score(params, rows, va, seed, {"test": test})["test"],
                   "seconds": round(time.perf_counter() - t0, 1)}
            runs.append(run)
            print(f"seed {seed} {method:8s}: EM {run['exact_match']:.4f}  ROUGE-L {run['rougeL']:.4f}  "
                  f"loss {run['loss']:.4f}  defect rate {run['defect_rate']:.3f}  ({run['seconds']} s)", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=1, ensure_ascii=False))
    table(runs, args.methods)


def table(runs: list[dict], methods: list[str]) -> None:
    by = {m: [r for r in runs if r["method"] == m] for m in methods}
    print("\n| selection | exact match, mean [min..max] | ROUGE-L | test loss | defective rows chosen |")
    print("|---|---|---|---|---|")
    for m in methods:
        rs = by[m]
        print(f"| {m} | " + " | ".join(mean_range([r[k] for r in rs]) for k in ("exact_match", "rougeL", "loss"))
              + f" | {statistics.mean(r['defect_rate'] for r in rs):.3f} |")
    if "random" not in by:
        return
    print()
    for m in methods:
        if m == "random":
            continue
        for k in ("exact_match", "rougeL"):
            gain, bar, verdict = seed_verdict([r[k] for r in by[m]], [r[k] for r in by["random"]])
            print(f"{m} vs random, {k}: {gain:+.4f} (twice the larger seed spread: {bar:.4f}) -> "
                  f"{'wins' if verdict == 'wins' else 'no clear win'}")


if __name__ == "__main__":
    main()
