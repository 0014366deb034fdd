"""A larger offline teacher without pretraining: the base grown deeper (``teacher.grow_depth``) and fine-tuned
in full, against the base-sized teacher, at the same learning rates and seeds.

Each config fine-tunes ``models/base`` with params.yaml's ``teacher`` section (``grow_depth``, ``lr`` and
``seed`` overridden) on ``data/select/train.jsonl``, validation on ``data/split/validation.jsonl``, as the
create pipeline's teacher stage does, and scores it on the frozen test rows (``data/split/test.jsonl``:
exact match, ROUGE-L, loss) as ``bench/create_experiment.py`` scores the teacher. Run after ``dvc repro``.

    PYTHONPATH=. python bench/teacher_grow.py --grow 1 2 --lr 0.0005 --seeds 0 1 2     # ~12 min, 2 cores
    PYTHONPATH=. python bench/teacher_grow.py --grow 1 2 3 --lr 0.0002 0.0005 0.001 --seeds 0
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import REPO, command_line, machine, mean_range, score_sets, setup_env, table  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grow", type=int, nargs="+", default=[1, 2], help="teacher.grow_depth values")
    ap.add_argument("--lr", type=float, nargs="+", default=None, help="teacher.lr values (default: params.yaml's)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--max-steps", type=int, default=None, help="cap the fine-tuning (a smoke run)")
    ap.add_argument("--json", default=None, help="write every run's figures here")
    a = ap.parse_args()
    setup_env()
    from sftpipe.config import load_params
    from sftpipe.io import read_jsonl
    from sftpipe.model.loading import load_sft
    from sftpipe.model.train import train

    params = load_params(REPO / "params.yaml")
    rows = read_jsonl(REPO / "data/select/train.jsonl")
    val, test = (read_jsonl(REPO / "data/split" / f) for f in ("validation.jsonl", "test.jsonl"))
    runs = []
    for grow, lr, seed in itertools.product(a.grow, a.lr or [params.teacher.lr], a.seeds):
        upd = {"grow_depth": grow, "lr": lr, "seed": seed}
        if a.max_steps:
            upd["max_steps"] = a.max_steps
        tp = params.teacher.model_copy(update=upd)
        with tempfile.TemporaryDirectory(prefix="teacher_grow_") as tmp:
            out = Path(tmp)
            t0 = time.perf_counter()
            summary = train(rows, val, params.model, tp, params.lora, out / "teacher", out / "ckpt", out / "live")
            train_s = time.perf_counter() - t0
            r = score_sets(params, *load_sft(params.model, out / "teacher"), {"test": test})["test"]
        run = {"grow_depth": grow, "lr": lr, "seed": seed, "params_m": round(summary["total_params"] / 1e6, 2),
               "train_s": round(train_s), "val_loss": summary["val_loss"], "em": r["exact_match"],
               "rougeL": r["rougeL"], "test_loss": r["loss"], "per_category_em": r["per_category_em"]}
        runs.append(run)
        print(json.dumps(run), flush=True)
    out_rows = []
    for (grow, lr), group in itertools.groupby(runs, key=lambda r: (r["grow_depth"], r["lr"])):
        g = list(group)
        out_rows.append([str(grow), f"{lr:g}", f"{g[0]['params_m']}M", str(len(g)),
                         *(mean_range([x[k] for x in g]) for k in ("val_loss", "em", "rougeL", "test_loss")),
                         f"{statistics.mean(x['train_s'] for x in g):.0f}"])
    print()
    print(table(["grow_depth", "lr", "params", "seeds", "validation loss", "test EM", "test ROUGE-L", "test loss",
                 "train s"], out_rows, title=f"teacher: {len(rows)} training rows, {len(test)} test rows"))
    print(f"\n{machine()}\n{command_line()}")
    if a.json:
        Path(a.json).write_text(json.dumps(runs, indent=1) + "\n")


if __name__ == "__main__":
    main()
