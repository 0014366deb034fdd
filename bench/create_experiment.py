"""Does data made by models beat the same number of original rows, in eval metrics? (the create issue)

After ``dvc repro`` and ``dvc repro create/dvc.yaml``. For each experiment, each arm's rows train the
student (params.yaml's model, train and lora settings; ``train.seed`` = the seed) and it is scored on
the frozen test rows (``data/split/test.jsonl``: exact match, ROUGE-L, per category), for every seed:

* ``distill``: the teacher's replies to fresh unlabeled prompts (``data/create/distill/train.jsonl``) vs
  the same number of original rows, drawn from the rows the main pipeline trains on
  (``data/select/train.jsonl``) with the same count per (label, language) as the distilled rows, so the
  task mix is equal; plus the teacher itself (``models/teacher``), scored once;
* ``best_of_k``: the verified best of K candidates of the SFT model (``data/create/best_of_k/train.jsonl``)
  vs the same number of original rows, matched the same way; exact match per category.

The original rows are a new draw per seed. Verdict per experiment: the created arm's mean beats the
original arm's by more than twice the larger seed spread (max - min) of the two.

    PYTHONPATH=. python bench/create_experiment.py [--experiments distill best_of_k] [--seeds 0 1 2]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import mean_range, score_sets, seed_verdict, setup_env, train_and_score  # noqa: E402

CREATED = {"distill": "data/create/distill/train.jsonl", "best_of_k": "data/create/best_of_k/train.jsonl"}


def key(r: dict) -> tuple:
    return (r.get("label"), r.get("meta", {}).get("lang"))


def matched_sample(pool: list[dict], like: list[dict], seed: int) -> list[dict]:
    """As many pool rows per (label, language) as ``like`` has; a random draw of ``seed``. Where the pool
    holds fewer, all of them, and the shortfall is filled from the rest of the pool at random."""
    rng = random.Random(f"create-experiment:{seed}")
    need = Counter(key(r) for r in like)
    by = defaultdict(list)
    for r in pool:
        by[key(r)].append(r)
    out, rest = [], []
    for k, rows in sorted(by.items(), key=lambda kv: str(kv[0])):
        rows = rows[:]
        rng.shuffle(rows)
        out += rows[: need.get(k, 0)]
        rest += rows[need.get(k, 0):]
    rng.shuffle(rest)
    return out + rest[: len(like) - len(out)]


def strip(rows: list[dict]) -> list[dict]:
    """Rows as training sees them (scores and provenance in meta are not inputs)."""
    return [{**r, "meta": {k: v for k, v in r.get("meta", {}).items() if k in ("lang",)}} for r in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--experiments", nargs="+", default=["distill", "best_of_k"], choices=sorted(CREATED))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--pool", default="data/select/train.jsonl")
    ap.add_argument("--data", default="data/split")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    setup_env()
    from sftpipe.config import load_params
    from sftpipe.io import read_jsonl
    from sftpipe.model.loading import load_sft

    params = load_params("params.yaml")
    pool = read_jsonl(args.pool)
    va, test = read_jsonl(Path(args.data) / "validation.jsonl"), read_jsonl(Path(args.data) / "test.jsonl")

    runs = []
    print(f"pool {len(pool)} rows ({args.pool}); test {len(test)} frozen rows; student {params.train.method} "
          f"x{params.train.epochs:g} epochs; seeds {args.seeds}", flush=True)
    if "distill" in args.experiments and Path("models/teacher").is_dir():
        t0 = time.perf_counter()
        run = {"experiment": "distill", "arm": "teacher", "seed": params.teacher.seed, "rows": None,
               **score_sets(params, *load_sft(params.model, "models/teacher"), {"test": test})["test"]}
        run["seconds"] = round(time.perf_counter() - t0, 1)
        runs.append(run)
        print(f"teacher: EM {run['exact_match']:.4f} ROUGE-L {run['rougeL']:.4f}", flush=True)
    for exp in args.experiments:
        created = read_jsonl(CREATED[exp])
        for seed in args.seeds:
            for arm, rows in (("created", created), ("original", matched_sample(pool, created, seed))):
                t0 = time.perf_counter()
                run = {"experiment": exp, "arm": arm, "seed": seed, "rows": len(rows),
                       **train_and_score(params, strip(rows), va, seed, {"test": test})["test"]}
                run["seconds"] = round(time.perf_counter() - t0, 1)
                runs.append(run)
                print(f"{exp} seed {seed} {arm:8s} ({len(rows)} rows): EM {run['exact_match']:.4f}  "
                      f"ROUGE-L {run['rougeL']:.4f}  loss {run['loss']:.4f}  ({run['seconds']} s)", flush=True)
                if args.json:
                    Path(args.json).write_text(json.dumps(runs, indent=1, ensure_ascii=False))
    report(runs, args.experiments)


def report(runs: list[dict], experiments: list[str]) -> None:
    for exp in experiments:
        arms = {a: [r for r in runs if r["experiment"] == exp and r["arm"] == a] for a in ("created", "original")}
        print(f"\n{exp}: {arms['created'][0]['rows']} rows per arm, {len(arms['created'])} seeds")
        print("| arm | exact match, mean [min..max] | ROUGE-L | test loss |")
        print("|---|---|---|---|")
        for a, rs in arms.items():
            print(f"| {a} | " + " | ".join(mean_range([r[k] for r in rs]) for k in ("exact_match", "rougeL", "loss")) + " |")
        for r in runs:
            if r["experiment"] == exp and r["arm"] == "teacher":
                print(f"| the teacher itself | {r['exact_match']:.4f} | {r['rougeL']:.4f} | {r['loss']:.4f} |")
        cats = sorted(arms["created"][0]["per_category_em"])
        print("\nexact match per category (mean over seeds): " + "; ".join(
            f"{c} {statistics.mean(r['per_category_em'][c] for r in arms['created']):.3f} vs "
            f"{statistics.mean(r['per_category_em'][c] for r in arms['original']):.3f}" for c in cats))
        for k in ("exact_match", "rougeL"):
            gain, bar, verdict = seed_verdict([r[k] for r in arms["created"]], [r[k] for r in arms["original"]])
            print(f"{exp} vs original rows, {k}: {gain:+.4f} (twice the larger seed spread: {bar:.4f}) -> {verdict}")


if __name__ == "__main__":
    main()
