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
from ..io import dumps, write_json
from ..ledger import jsonl_outputs
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
        return _metrics(len(self.records), Counter(q["reason"] for q in self.quarantine), self.per_source)


@dataclass
class CollectStats:
    """What :func:`iter_collect` counts as it goes: enough for the metrics file and the
    "no valid records" error, without the rows."""
    kept: int = 0
    reasons: Counter = field(default_factory=Counter)      # quarantine reason -> rows
    per_source: dict = field(default_factory=dict)
    first_quarantined: dict | None = None

    def metrics(self) -> dict:
        return _metrics(self.kept, self.reasons, self.per_source)


def _metrics(kept: int, reasons: Counter, per_source: dict) -> dict:
    quarantined = sum(reasons.values())
    return {"rows_in": kept + quarantined, "kept": kept, "quarantined": quarantined,
            "quarantined_by_reason": dict(sorted(reasons.items())), "per_source": per_source}


class _SeenIds:
    """Every id collected so far and where it was first seen, for the duplicate_id message.

    The place is packed into one int (the path's number, whether it is a line or a record
    number, and that number) rather than kept as a string: at 10M rows the ids are most of it.
    """
    _BITS = 40

    def __init__(self):
        self._ids: dict = {}
        self._path_no: dict[str, int] = {}
        self._paths: list[str] = []

    def first(self, rid) -> str | None:
        code = self._ids.get(rid)
        if code is None:
            return None
        n, is_line = code & ((1 << self._BITS) - 1), code >> self._BITS & 1
        return where(self._paths[code >> (self._BITS + 1)], n if is_line else None, None if is_line else n)

    def add(self, rid, row: RawRow) -> None:
        k = self._path_no.setdefault(row.path, len(self._paths))
        if k == len(self._paths):
            self._paths.append(row.path)
        is_line = 1 if row.line else 0
        self._ids[rid] = (k << (self._BITS + 1)) | (is_line << self._BITS) | (row.line if is_line else row.recno)


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
    stats = CollectStats(per_source=res.per_source)
    for ok, row in iter_collect(params, progress, stats):
        (res.records if ok else res.quarantine).append(row)
    return res


def iter_collect(params: CollectParams, progress=None, stats: CollectStats | None = None):
    """(True, record) for each record and (False, quarantine row) for each bad row, in source
    order, as the sources are read: what :func:`collect` gathers, one row at a time. ``stats``
    counts them as they go. The errors are :func:`collect`'s; "no valid records" is raised after
    the last row."""
    stats = CollectStats() if stats is None else stats
    seen = _SeenIds()
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
                    first = seen.first(rec["id"])
                    if first is not None:
                        raise RowError("duplicate_id", f"duplicate id {rec['id']!r} (first seen at {first})", "id")
                    seen.add(rec["id"], row)
                    n_ok += 1
                    stats.kept += 1
                    if progress is not None:
                        progress.update(1)
                    yield True, rec
                    continue
                except RowError as e:
                    err = e
            loc = where(row.path, row.line, None if row.line else row.recno, err.field)
            if params.on_error == "fail":
                raise UserError(_safe(f"{loc}: {err} (collect.on_error=fail; set it to quarantine to skip bad rows)"))
            q = _quarantine_row(err, name, row)
            stats.reasons[q["reason"]] += 1
            if stats.first_quarantined is None:
                stats.first_quarantined = q
            n_bad += 1
            yield False, q
        stats.per_source[name] = {"kept": n_ok, "quarantined": n_bad}
    if not stats.kept:
        # Nothing is written when this is raised, so say here what the quarantine would hold.
        q = stats.first_quarantined
        if q is None:
            raise UserError("collect: no records in any source")
        first = where(q["path"], q["line"], None if q["line"] else q["record"], q["field"])
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(stats.reasons.items()))
        raise UserError(f"collect: no valid records in any source; all {sum(stats.reasons.values())} row(s) "
                        f"quarantined ({reasons}); first: {first}: {q['message']}")


def collect_to(params: CollectParams, data_path, quarantine_path, metrics_path, progress=None) -> dict:
    """The collect stage's files, written as the rows are read: ``data_path`` and
    ``quarantine_path`` (JSONL) and the metrics (returned too), with the bytes
    :func:`collect` + ``io.write_jsonl`` + ``io.write_json`` give, without holding the records.

    Both JSONL files are written to temporary siblings and renamed into place only once every
    source has been read, so an error leaves neither. What is held is the ids seen (for
    duplicate_id) and what the reader holds: :mod:`sftpipe.collect.readers` reads ``.jsonl`` and
    ``.jsonl.gz`` line by line, but other local files whole (bytes, or text for ``.json``/``.csv``;
    a parquet file as a list of rows) before it yields their rows, so memory follows the largest such
    source file, not the records.
    """
    stats = CollectStats()
    with jsonl_outputs(data_path, quarantine_path) as (fd, fq):
        for ok, row in iter_collect(params, progress, stats):
            fh = fd if ok else fq
            fh.write(dumps(row))
            fh.write("\n")
    m = stats.metrics()
    write_json(metrics_path, m)
    return m


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
