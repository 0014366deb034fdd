"""Collect: every source into one canonical dataset, bad rows quarantined with a reason.

:func:`check_declared_sources` keeps ``dvc repro`` honest: DVC cannot take the list
``collect.sources`` as dependencies, so every local source must lie inside a path the
collect stage declares in ``dvc.yaml`` (``data/sources/`` for a user's own files).
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..config import CollectParams
from ..errors import RowError, UserError, where
from .formats import to_record
from .readers import RawRow, is_hub_id, read_source

log = logging.getLogger(__name__)

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
    for i, src in enumerate(params.sources):
        name = src.source_name
        n_ok = n_bad = 0
        if is_hub_id(src.path):
            if src.revision is None:
                log.warning("hub dataset %s has no revision: it can change upstream, so this run is not "
                            "reproducible by hash (pin collect.sources[%d].revision to a commit hash)", src.path, i)
        elif src.revision is not None:
            raise UserError(f"collect.sources[{i}].revision: {src.path} is a local file; revision applies to "
                            f"hub datasets only (git or DVC versions local files; remove it)")
        for row in read_source(src.path, src.hub_split, src.revision):
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


def check_declared_sources(params: CollectParams, dvc_file: str | Path = "dvc.yaml", stage: str = "collect") -> None:
    """Fail unless every local source lies inside (or is) a dependency of ``stage`` in ``dvc_file``.

    DVC hashes only declared deps, so a source outside them could change while ``dvc repro``
    says "up to date". Hub ids are skipped (their ``revision`` param pins them). Nothing is
    checked when the file cannot be read or has no such stage: that pipeline is not this one.
    Paths are compared both as written (normalised, so a source that is a symlink into the
    DVC cache still counts as inside its folder) and resolved (symlinks followed).
    """
    dvc_file = Path(dvc_file)
    try:
        spec = yaml.safe_load(dvc_file.read_text(encoding="utf-8"))
        st = spec["stages"][stage]
        raw_deps = st.get("deps") or []
        if not isinstance(raw_deps, list):
            return
        base = dvc_file.parent / str(st.get("wdir", "."))
    except (OSError, UnicodeDecodeError, yaml.YAMLError, KeyError, TypeError, AttributeError):
        return
    deps = []
    for d in raw_deps:
        for path in (d if isinstance(d, dict) else [d]):   # a dep may be written as {path: {...}}
            if isinstance(path, str) and "${" not in path and "://" not in path:
                deps.append(path)
    dep_paths = [(_lexical(base / d), (base / d).resolve()) for d in deps]
    for i, src in enumerate(params.sources):
        if is_hub_id(src.path):
            continue
        lexical, resolved = _lexical(Path(src.path)), Path(src.path).resolve()
        if any(_inside(lexical, lex) or _inside(resolved, res) for lex, res in dep_paths):
            continue
        raise UserError(f"collect.sources[{i}].path: {src.path} is not inside any dependency of the {stage} stage "
                        f"in {dvc_file} ({', '.join(deps) or 'none'}), so dvc repro would not notice it change; "
                        f"move it under data/sources/ or add its path to the {stage} stage's deps in {dvc_file}")


def _lexical(p: Path) -> Path:
    return Path(os.path.normpath(os.path.abspath(p)))


def _inside(path: Path, dep: Path) -> bool:
    return path == dep or dep in path.parents
