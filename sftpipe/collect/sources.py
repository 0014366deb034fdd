"""Collect: every source into one canonical dataset, bad rows quarantined with a reason."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..config import CollectParams
from ..errors import RowError, UserError, where
from .formats import to_record
from .readers import RawRow, read_source

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


def _quarantine_row(err: RowError, source: str, row: RawRow) -> dict:
    # raw: the offending text for rows that never parsed, else the parsed record as
    # JSON (so it can be fixed and fed back in), cut to a preview; path and line
    # locate the full original.
    if row.error is not None:
        text = row.text or ""
    else:
        try:
            text = json.dumps(row.data, ensure_ascii=False)
        except (TypeError, ValueError):  # parquet/hub values JSON cannot hold
            text = repr(row.data)
    return {"source": source, "path": row.path, "line": row.line, "record": row.recno, "reason": err.reason,
            "field": _safe(err.field), "message": _safe(str(err)), "raw": _safe(text[:RAW_PREVIEW]),
            "raw_truncated": len(text) > RAW_PREVIEW}


def _safe(text: str | None) -> str | None:
    """Lone surrogates (the reason some rows are quarantined) as visible escapes, so the
    quarantine file and the error line can still be written as UTF-8."""
    if text is None:
        return None
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def collect(params: CollectParams, progress=None) -> CollectResult:
    """Read all sources; raise UserError on fatal problems, or on any row problem under on_error=fail."""
    res = CollectResult()
    seen: dict[str, str] = {}
    for src in params.sources:
        name = src.name or Path(src.path).stem
        n_ok = n_bad = 0
        for row in read_source(src.path, src.hub_split):
            if src.limit is not None and n_ok >= src.limit:
                break
            err = row.error
            if err is None:
                try:
                    rec = to_record(row, name, src.format, src.label_field, params.max_chars, params.default_system)
                    if rec["id"] in seen:
                        raise RowError("duplicate_id", f"duplicate id {rec['id']!r} (first seen at {seen[rec['id']]})",
                                       "id")
                    seen[rec["id"]] = where(row.path, row.line, None if row.line else row.recno)
                    res.records.append(rec)
                    n_ok += 1
                    if progress is not None:
                        progress.update(1)
                    continue
                except RowError as e:
                    err = e
            loc = where(row.path, row.line, None if row.line else row.recno, err.field)
            if params.on_error == "fail":
                raise UserError(_safe(f"{loc}: {err} (collect.on_error=fail; set it to quarantine to skip bad rows)"))
            res.quarantine.append(_quarantine_row(err, name, row))
            n_bad += 1
        res.per_source[name] = {"kept": n_ok, "quarantined": n_bad}
    if not res.records:
        # Nothing is written when this is raised, so say here what the quarantine would hold.
        if not res.quarantine:
            raise UserError("collect: no records in any source")
        q = res.quarantine[0]
        first = where(q["path"], q["line"], None if q["line"] else q["record"], q["field"])
        raise UserError(f"collect: no valid records in any source; all {len(res.quarantine)} row(s) quarantined "
                        f"({', '.join(f'{k}={v}' for k, v in res.metrics()['quarantined_by_reason'].items())}); "
                        f"first: {first}: {q['message']}")
    return res
