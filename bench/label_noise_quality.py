"""Label-noise detection against known flips: the sample data with 10% of labels flipped (seeded).

    python bench/label_noise_quality.py                     # 2 x 2400 rows, 10% flips, ~1 min
    python bench/label_noise_quality.py --rows-per-lang 10000 --flip 0.2

Prints precision, recall and F1 of the detected set against the truly flipped rows, for each
cleanlab ``filter_by`` and for the flag action, next to a trivial baseline (flag every row whose
label disagrees with the out-of-fold argmax) computed from the same probabilities.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import sample_records  # noqa: E402
from sftpipe.config import LabelNoiseParams, SampleParams  # noqa: E402
from sftpipe.label_noise import label_noise_records  # noqa: E402


def prf(found: set, true: set) -> tuple[float, float, float]:
    tp = len(found & true)
    p = tp / len(found) if found else 0.0
    r = tp / len(true) if true else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows-per-lang", type=int, default=2400)
    ap.add_argument("--flip", type=float, default=0.10)
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        rows = sample_records(SampleParams(rows_per_lang=args.rows_per_lang, label_flip_rate=args.flip,
                                           seed=args.seed, exact_dup_rate=0, near_dup_rate=0, garbage_rate=0), d)
        truth = {json.loads(x)["id"]: json.loads(x) for x in (Path(d) / "truth.jsonl").read_text().splitlines()}
    flips = {i for i, t in truth.items() if t["defect"] == "label_flip"}
    print(f"{len(rows)} rows, {len(flips)} flipped labels ({args.flip:.0%}, seed {args.seed})\n")
    print("| filter_by | action | precision | recall | F1 | oof accuracy | s |\n|---|---|---|---|---|---|---|")
    for filter_by in ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning", "predicted_neq_given"):
        for action in ("drop", "flag") if filter_by == "prune_by_noise_rate" else ("drop",):
            t = time.perf_counter()
            res = label_noise_records(rows, LabelNoiseParams(filter_by=filter_by, action=action))
            found = {d["id"] for d in res.dropped} | {r["id"] for r in res.kept if r["meta"].get("label_issue")}
            p, r, f = prf(found, flips)
            print(f"| {filter_by} | {action} | {p:.3f} | {r:.3f} | {f:.3f} | "
                  f"{res.extra_metrics['oof_accuracy']:.3f} | {time.perf_counter() - t:.1f} |")
    print("\n(predicted_neq_given is the trivial baseline: every row whose label differs from the argmax)")


if __name__ == "__main__":
    main()
