"""Which data filters pay in eval metrics: the pipeline's filter stages on or off, three train seeds each,
scored on the same frozen test rows.

The README's recipe (`dvc exp run -S evaluate.test_file=... -S split.eval_files=[...]` per config), run as
the stages' own commands in a temporary directory so the workspace is untouched: for each config the
stages from clean to split run on ``data/collected/data.jsonl`` (``sftpipe clean``, ``dedup``,
``label-noise``, ``perplexity``, ``split``, with params.yaml plus the config's overrides and
``split.eval_files`` = the frozen test file, so no training row overlaps a test row); then the SFT
model is trained on that config's train split with params.yaml's train settings and ``train.seed`` =
each seed, and scored on the frozen test rows (``data/split/test.jsonl`` of the default run, copied
first) as the evaluate stage scores: exact match, ROUGE-L, loss. The share of training rows with a
defect the sample injected comes from ``data/raw/truth.jsonl`` (:func:`quality`).

Configs (``--configs``): ``default``; ``no_clean`` (every clean rule and PII mask off); ``old_dedup`` (the
typo, slot-check, paraphrase and typical-survivor passes off: dedup as it was before them); ``no_dedup``;
``no_label_noise``; ``no_perplexity``; ``none`` (all of them off).

    PYTHONPATH=. python bench/filter_ablation.py [--configs default old_dedup no_perplexity none] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import mean_range, seed_verdict, setup_env, train_and_score  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CLEAN_OFF = {"mojibake": False, "newlines": False, "html": False, "control_chars": False, "zero_width": False,
             "unicode": "none", "whitespace": False, "pii": []}
OLD_DEDUP = {"edits": {"enabled": False}, "slot_check": False, "semantic": {"enabled": False}, "prefer_typical": False}
CONFIGS = {
    "default": {},
    "no_clean": {"clean": CLEAN_OFF},
    "old_dedup": {"dedup": OLD_DEDUP},
    "no_dedup": {"dedup": {"exact": False, "near": False}},
    "no_label_noise": {"label_noise": {"enabled": False}},
    "no_perplexity": {"perplexity": {"enabled": False}},
    "none": {"clean": CLEAN_OFF, "dedup": {"exact": False, "near": False}, "label_noise": {"enabled": False},
             "perplexity": {"enabled": False}},
}
STAGES = [("clean", "data/collected/data.jsonl", "clean", ()), ("dedup", "clean/kept.jsonl", "dedup", ("plot", "picture")),
          ("label-noise", "dedup/kept.jsonl", "label_noise", ("plot", "picture")),
          ("perplexity", "label_noise/kept.jsonl", "perplexity", ("plot", "picture")),
          ("split", "perplexity/kept.jsonl", "split", ())]


def merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(base.get(k, {}), v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


def run_stages(work: Path, overrides: dict, frozen: Path) -> dict:
    """The stages from clean to split in ``work`` (the config's params file there); their metrics by stage."""
    import yaml

    params = merge(yaml.safe_load((ROOT / "params.yaml").read_text()), overrides)
    params["split"]["eval_files"] = [str(frozen)]
    (work / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True))
    metrics = {}
    for cmd, inp, out, extra in STAGES:
        src = ROOT / inp if inp.startswith("data/") else work / inp
        args = ["sftpipe", cmd, "--params", str(work / "params.yaml"), "--inp", str(src), "--out", str(work / out),
                "--metrics", str(work / f"{out}.json")]
        for opt in extra:
            args += [f"--{opt}", str(work / f"{out}.{opt}.{'csv' if opt == 'plot' else 'png'}")]
        r = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
        if r.returncode:
            raise SystemExit(f"{cmd} failed: {r.stderr.strip().splitlines()[-1]}")
        metrics[out] = json.loads((work / f"{out}.json").read_text())
    return metrics


QUALITY = ("garbage", "label_flip", "wrong_answer", "truncated", "off_topic", "wrong_language", "padded")


def quality(rows: list[dict], truth: dict) -> dict:
    """What the sample injected and these training rows still hold: quality defects (garbage, flipped labels,
    wrong, truncated, off-topic, wrong-language and padded replies), duplicate copies whose original is also
    here (a copy kept alone is a valid row), and rows whose text was broken (mojibake, invisible characters,
    HTML, PII: clean repairs them, so they count only when clean is off)."""
    ids = {r["id"] for r in rows}
    kinds = Counter(truth.get(i, {}).get("defect") for i in ids)
    dups = sum(1 for i in ids if truth.get(i, {}).get("defect") in ("exact_dup", "near_dup")
               and truth[i].get("of") in ids)
    return {"quality_defects": sum(kinds[k] for k in QUALITY),
            "quality_by_kind": {k: kinds[k] for k in QUALITY if kinds[k]}, "dup_pairs": dups,
            "broken_text": kinds["clean_defect"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=["default", "no_clean", "old_dedup",
                                                                         "no_perplexity", "none"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--test", default="data/split/test.jsonl", help="the frozen test rows")
    ap.add_argument("--truth", default="data/raw/truth.jsonl")
    ap.add_argument("--json", default=None, help="write every run's figures here")
    args = ap.parse_args()
    setup_env()
    from sftpipe.config import load_params
    from sftpipe.io import read_jsonl

    params = load_params(ROOT / "params.yaml")
    truth = {r["id"]: r for r in read_jsonl(ROOT / args.truth)}
    runs = []
    with tempfile.TemporaryDirectory(prefix="filter-ablation-") as tmp:
        frozen = Path(tmp) / "frozen_test.jsonl"
        frozen.write_bytes((ROOT / args.test).read_bytes())
        test = read_jsonl(frozen)
        print(f"frozen test rows: {len(test)} ({args.test}); seeds {args.seeds}; train {params.train.method} "
              f"x{params.train.epochs:g} epochs", flush=True)
        for name in args.configs:
            work = Path(tmp) / name
            work.mkdir()
            t0 = time.perf_counter()
            m = run_stages(work, CONFIGS[name], frozen)
            train_rows = read_jsonl(work / "split" / "train.jsonl")
            val = read_jsonl(work / "split" / "validation.jsonl")
            q = quality(train_rows, truth)
            data_s = time.perf_counter() - t0
            print(f"{name}: {len(train_rows)} train rows; {q['quality_defects']} with a quality defect "
                  f"({q['quality_by_kind']}); {q['dup_pairs']} duplicate copies beside their original; "
                  f"{q['broken_text']} with broken text (repaired when clean is on); contaminated dropped "
                  f"{m['split']['dropped']}; data stages {data_s:.0f} s", flush=True)
            for seed in args.seeds:
                t1 = time.perf_counter()
                s = train_and_score(params, train_rows, val, seed, {"test": test})["test"]
                run = {"config": name, "seed": seed, "train_rows": len(train_rows), **q,
                       "exact_match": s["exact_match"], "rougeL": s["rougeL"], "loss": s["loss"],
                       "per_category_em": s["per_category_em"], "seconds": round(time.perf_counter() - t1, 1)}
                runs.append(run)
                print(f"  seed {seed}: EM {run['exact_match']:.4f}  ROUGE-L {run['rougeL']:.4f}  loss "
                      f"{run['loss']:.4f}  ({run['seconds']} s)", flush=True)
                if args.json:
                    Path(args.json).write_text(json.dumps(runs, indent=1, ensure_ascii=False, default=str))
    print("\n| config | train rows | quality defects / duplicate copies / broken text | exact match, mean [min..max] "
          "| ROUGE-L | test loss | EM vs default | ROUGE-L vs default |")
    print("|---|---|---|---|---|---|---|---|")
    by = {c: [r for r in runs if r["config"] == c] for c in args.configs}
    ref = by.get("default")
    for c, rs in by.items():
        em, rl, loss = ([r[k] for r in rs] for k in ("exact_match", "rougeL", "loss"))
        vs = ["", ""]
        if ref and c != "default":
            vs = [f"{g:+.4f} (bar {b:.4f}: {v})" for g, b, v in
                  (seed_verdict(em, [r["exact_match"] for r in ref]), seed_verdict(rl, [r["rougeL"] for r in ref]))]
        r0 = rs[0]
        print(f"| {c} | {r0['train_rows']} | {r0['quality_defects']} / {r0['dup_pairs']} / {r0['broken_text']} | "
              f"{mean_range(em)} | {mean_range(rl)} | {mean_range(loss)} | {vs[0]} | {vs[1]} |")
    print("\nPYTHONPATH=. python bench/filter_ablation.py --configs " + " ".join(args.configs) + " --seeds "
          + " ".join(map(str, args.seeds)))


if __name__ == "__main__":
    main()
