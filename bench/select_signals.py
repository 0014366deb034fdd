"""How well does each score single out each injected quality defect? ROC AUC against the truth.

Reads the train split ``dvc repro`` left (``data/split/train.jsonl``: ``meta.ifd`` and ``meta.ppl``
from the perplexity stage) and ``data/raw/truth.jsonl``. For each quality defect kind, the rows of
that kind are the positives and defect-free rows the negatives; AUC 0.5 is chance, 1.0 a perfect
ranking (higher score = more likely defective).

    PYTHONPATH=. python bench/select_signals.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    from sklearn.metrics import roc_auc_score

    from sftpipe.io import read_jsonl
    from sftpipe.sample.quality import QUALITY_TYPES
    from sftpipe.select.scores import cheap_signals

    truth = {r["id"]: r for r in read_jsonl("data/raw/truth.jsonl")}
    rows = read_jsonl("data/split/train.jsonl")
    signals = {"ifd": lambda r: r["meta"].get("ifd"), "ppl": lambda r: r["meta"].get("ppl"),
               "length": lambda r: cheap_signals(r)["length"]}
    print("| defect | rows | " + " | ".join(f"AUC {k}" for k in signals) + " |")
    print("|---|---|" + "---|" * len(signals))
    for kind in QUALITY_TYPES:
        cells, n = [], 0
        for get in signals.values():
            pts = [(get(r), truth.get(r["id"], {}).get("defect") == kind) for r in rows
                   if truth.get(r["id"], {}).get("defect") in (None, kind) and get(r) is not None]
            n = sum(y for _, y in pts)
            cells.append(f"{roc_auc_score([y for _, y in pts], [x for x, _ in pts]):.3f}" if 0 < n < len(pts) else "-")
        print(f"| {kind} | {n} | " + " | ".join(cells) + " |")
    print(json.dumps({"train_rows": len(rows)}))


if __name__ == "__main__":
    main()
