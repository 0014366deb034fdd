"""The clean stage over a JSONL file a chunk of rows at a time, byte-identical to the in-memory path.

:func:`clean_jsonl` writes ``kept.jsonl``, ``dropped.jsonl``, ``details.json`` and the metrics
file with the same bytes as ``clean_records`` + ``ledger.write_filter_outputs`` on the same rows
and params. Cleaning is row by row; what spans rows (per-rule counts, the data card's first
examples of each rule) is carried across chunks by :class:`~sftpipe.clean.records.Cleaner`.
Memory holds one chunk of records and its cleaned rows, the examples and two id tallies; the
kept and ledger rows go to temporary files that are renamed into place only after every input
id went to exactly one of them (:class:`~sftpipe.ledger.FilterWriter`), so a bad line or a
failed check leaves no output file.
"""

from __future__ import annotations

from itertools import islice
from pathlib import Path

from ..config import CleanParams
from ..io import iter_jsonl, write_json
from ..ledger import FilterWriter
from .records import STAGE, Cleaner

__all__ = ["clean_jsonl"]

CHUNK_ROWS = 10_000


def clean_jsonl(inp_path, out_dir, metrics_path, clean_params: CleanParams,
                chunk_rows: int | None = None) -> tuple[dict, dict]:
    """The clean stage from ``inp_path`` (JSONL) to ``out_dir`` and ``metrics_path``, reading
    ``chunk_rows`` (default :data:`CHUNK_ROWS`) records at a time. Returns (metrics, details)."""
    chunk_rows = CHUNK_ROWS if chunk_rows is None else chunk_rows
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    cleaner = Cleaner(clean_params)
    rows = iter_jsonl(inp_path)
    with FilterWriter(STAGE).files(out_dir) as out:
        while chunk := list(islice(rows, chunk_rows)):
            for rec in chunk:
                out.read(rec)
            kept, dropped = cleaner.feed(chunk)
            for rec in kept:
                out.keep(rec)
            for row in dropped:
                out.drop(row)
    details = cleaner.details()
    if details:
        write_json(Path(out_dir) / "details.json", details)
    m = out.counts(cleaner.extra_metrics())
    write_json(metrics_path, m)
    return m, details
