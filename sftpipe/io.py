"""Atomic, deterministic file output and JSONL input.

Every file a stage writes goes through :func:`atomic_path`: it is written to a
temporary sibling, flushed to disk and renamed into place, so a killed stage
never leaves a half-written file that DVC would record. JSON is written with
sorted keys and ``ensure_ascii=False`` so the same rows give the same bytes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .errors import UserError, where


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # another user's process
        return True
    return True


def sweep_stale(folder: str | os.PathLike, prefix: str) -> list[Path]:
    """Remove the entries of ``folder`` named ``<prefix><pid>.<anything>`` whose process is gone: the
    temporaries of a run killed before its cleanup could run (SIGKILL, a power cut). A live process's
    (a concurrent run, or an unrelated process that reused the pid) are left alone. Returns what went."""
    gone = []
    folder = Path(folder)
    if not folder.is_dir():
        return gone
    for entry in folder.iterdir():
        if not entry.name.startswith(prefix):
            continue
        pid = entry.name[len(prefix):].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            gone.append(entry)
    return gone


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path; on success rename it to ``path`` (file or directory).

    The temporary lives in a sibling folder ``.<name>.<pid>.<random>``, removed on success and on an
    error; a run killed outright cannot remove it, so the next write of the same path sweeps the
    siblings whose process is gone (:func:`sweep_stale`): a killed 10M-row stage leaves no gigabytes
    behind for good."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(path.parent, f".{path.name}.")
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", dir=path.parent)) / path.name
    try:
        yield tmp
        if tmp.is_file():
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


# Line breaks to str.splitlines() and many JSONL readers, which JSON leaves raw in strings when
# ensure_ascii is off (the other ones, below U+0020, it escapes anyway)
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def dumps(obj: Any) -> str:
    """One JSON line: readable UTF-8, keys sorted, and no character any reader takes for a line break."""
    return json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":")).translate(_LINE_BREAKS)


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> int:
    """Atomically write rows as JSON lines; returns the row count."""
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as fh:
        for row in rows:
            fh.write(dumps(row))
            fh.write("\n")
            n += 1
    return n


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, ensure_ascii=False, sort_keys=True, indent=2) + "\n",
                       encoding="utf-8")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_csv(path: str | os.PathLike, header: list[str], rows: Iterable[Iterable[Any]]) -> None:
    """Plot-ready CSV (DVC plots read it), written atomically."""
    import csv

    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSONL file the pipeline wrote itself (internal, trusted format)."""
    return list(iter_jsonl(path))


def iter_jsonl(path: str | os.PathLike) -> Iterator[dict]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found (did the previous stage run?)")
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{where(path, lineno)}: invalid JSON ({e.msg})") from None
