"""Collect: every source into one canonical dataset, bad rows quarantined with a reason."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .config import CollectParams
from .errors import RowError, UserError, where
from .loaders import RawRow, read_source, to_record

RAW_PREVIEW = 2000


@dataclass
class CollectResult:
    records: list[dict] = field(default_factory=list)
    quarantine: list[dict] = field(default_factory=list)
    per_source: dict = field(default_factory=dict)

    def metrics(self) -> dict:
        reasons = Counter(q["reason"] for q in self.quarantine)
        return {"rows_in": len(self.records) + len(self.quarantine), "kept": len(self.records),
                "quarantined": len(self.quarantine), "quarantined_by_reason": dict(sorted(reasons.items())),
                "per_source": self.per_source}


def _quarantine_row(err: RowError, source: str, path: str, line, recno, raw) -> dict:
    text = raw if isinstance(raw, str) else repr(raw)
    return {"source": source, "path": path, "line": line, "record": recno, "reason": err.reason,
            "field": err.field, "message": str(err), "raw": text[:RAW_PREVIEW]}


def collect(params: CollectParams, progress=None) -> CollectResult:
    """Read all sources; raise UserError on fatal problems, or on any row problem under on_error=fail."""
    res = CollectResult()
    seen: dict[str, str] = {}
    for src in params.sources:
        name = src.name or Path(src.path).stem
        n_ok = n_bad = 0
        for item in read_source(src.path, src.hub_split):
            if src.limit is not None and n_ok >= src.limit:
                break
            if isinstance(item, RowError):
                err, path, line, recno, raw = item, item.path, item.line, item.recno, None
            else:
                path, line, recno, raw = item.path, item.line, item.recno, item.data
                try:
                    rec = to_record(item, name, src.format, src.label_field, params.max_chars,
                                    params.default_system)
                    if rec["id"] in seen:
                        raise RowError("duplicate_id", f"duplicate id {rec['id']!r} (first seen at {seen[rec['id']]})",
                                       "id")
                    seen[rec["id"]] = where(path, line, None if line else recno)
                    res.records.append(rec)
                    n_ok += 1
                    if progress is not None:
                        progress.update(1)
                    continue
                except RowError as e:
                    err = e
            loc = where(path, line, None if line else recno, err.field)
            if params.on_error == "fail":
                raise UserError(f"{loc}: {err} (collect.on_error=fail; set it to quarantine to skip bad rows)")
            res.quarantine.append(_quarantine_row(err, name, path, line, recno, raw))
            n_bad += 1
        res.per_source[name] = {"kept": n_ok, "quarantined": n_bad}
    if not res.records:
        raise UserError("collect: no valid records in any source "
                        f"({len(res.quarantine)} quarantined; see data/collected/quarantine.jsonl)")
    return res
