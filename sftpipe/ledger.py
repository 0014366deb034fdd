"""Kept rows plus a ledger of dropped rows, with the arithmetic checked.

Every filtering stage returns a :class:`FilterResult`. :func:`write_filter_outputs`
checks that each input id lands exactly once in kept or dropped (kept + dropped
== input) before anything is written, then writes both files and the counts.
A dropped row keeps its whole record, so nothing is ever lost: the ledger is
enough to restore it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .errors import AccountingError
from .io import write_json, write_jsonl


@dataclass
class FilterResult:
    kept: list[dict]
    dropped: list[dict] = field(default_factory=list)   # ledger rows, see drop()
    extra_metrics: dict = field(default_factory=dict)   # scalars for the stage's DVC metrics file
    details: dict = field(default_factory=dict)         # anything bigger, written to <out>/details.json


def drop(rec: dict, stage: str, reason: str, **evidence) -> dict:
    """A ledger row: the id, why it was dropped, the evidence, and the record itself."""
    return {"id": rec["id"], "stage": stage, "reason": reason, "evidence": evidence, "record": rec}


def check_accounting(stage: str, input_ids: list[str], kept_ids: list[str], dropped_ids: list[str]) -> None:
    """Raise AccountingError unless every input id appears exactly once in kept + dropped."""
    out = Counter(kept_ids) + Counter(dropped_ids)
    inp = Counter(input_ids)
    if out == inp:
        return
    missing = sorted((inp - out).elements())
    extra = sorted((out - inp).elements())
    raise AccountingError(
        f"{stage}: kept ({len(kept_ids)}) + dropped ({len(dropped_ids)}) != input ({len(input_ids)}); "
        f"lost ids {missing[:5]}{'...' if len(missing) > 5 else ''}, "
        f"unexpected/duplicated ids {extra[:5]}{'...' if len(extra) > 5 else ''}")


def counts(n_in: int, result: FilterResult) -> dict:
    reasons = Counter(d["reason"] for d in result.dropped)
    return {"rows_in": n_in, "kept": len(result.kept), "dropped": len(result.dropped),
            "dropped_by_reason": dict(sorted(reasons.items())), **result.extra_metrics}


def write_filter_outputs(stage: str, inputs: list[dict], result: FilterResult, out_dir: str | Path,
                         metrics_path: str | Path, write_kept: bool = True) -> dict:
    """Check the ledger arithmetic, then write kept.jsonl (unless the stage writes its own
    partition of the kept rows), dropped.jsonl and the metrics file."""
    check_accounting(stage, [r["id"] for r in inputs], [r["id"] for r in result.kept],
                     [d["id"] for d in result.dropped])
    out_dir = Path(out_dir)
    if write_kept:
        write_jsonl(out_dir / "kept.jsonl", result.kept)
    write_jsonl(out_dir / "dropped.jsonl", result.dropped)
    if result.details:
        write_json(out_dir / "details.json", result.details)
    m = counts(len(inputs), result)
    write_json(metrics_path, m)
    return m
