"""Two passes over a JSONL file, for a filtering stage that must see every row before it decides.

A perplexity bound is a quantile of every row's score; cleanlab needs every labelled row's text to
fit out-of-fold probabilities. Such a stage reads its input once, a chunk of records at a time, and
keeps only the compact facts it decides on (a score, a group key, one text per row); it decides;
then :func:`route` reads the file again and sends each record, completed with what was decided, to
``kept.jsonl`` or to the ledger. Memory holds the facts and one chunk of records, never the whole
input or its outputs, and the output bytes are those of the in-memory path (kept and ledger rows in
input order, both files published only after the accounting checked out).

The second pass checks that it reads the rows the first one read (the same ids, the same number):
a file rewritten between the passes fails the stage instead of mixing two inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path

from .errors import AccountingError
from .io import iter_jsonl
from .ledger import FilterWriter, IdTally

KEEP, DROP = "keep", "drop"


def chunks(path: str | Path, chunk_rows: int, ids: IdTally | None = None) -> Iterator[list[dict]]:
    """The records of ``path`` in lists of at most ``chunk_rows``; each id is added to ``ids``."""
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    rows = iter_jsonl(path)
    while chunk := list(islice(rows, chunk_rows)):
        if ids is not None:
            for rec in chunk:
                ids.add(rec["id"])
        yield chunk


def count_rows(path: str | Path) -> int:
    """Non-blank lines of a JSONL file (progress totals), read as bytes without parsing."""
    with open(path, "rb") as fh:
        return sum(1 for line in fh if line.strip())


def route(stage: str, path: str | Path, out_dir: str | Path, first_pass: IdTally | None,
          decide: Callable[[int, dict], tuple[str, dict]]) -> FilterWriter:
    """The second pass: ``decide(i, record)`` for the i-th row of ``path`` gives ``(KEEP, row)`` or
    ``(DROP, ledger_row)``; the rows are written to ``out_dir``'s kept.jsonl and dropped.jsonl in input
    order. Nothing is published unless every row read went out once and the rows read are the rows of
    ``first_pass`` (None: a stage that decides nothing ahead reads the file once, with nothing to compare).
    Returns the writer (its ``counts`` give the stage's metrics)."""
    with FilterWriter(stage).files(out_dir) as out:
        for i, rec in enumerate(iter_jsonl(path)):
            if first_pass is not None and i >= first_pass.n:
                raise changed(stage, path, first_pass, out.inputs.n + 1)
            out.read(rec)
            kind, row = decide(i, rec)
            if kind == KEEP:
                out.keep(row)
            elif kind == DROP:
                out.drop(row)
            else:
                raise ValueError(f"{stage}: decide gave {kind!r}, not {KEEP!r} or {DROP!r}")
        if first_pass is not None and (out.inputs.n, out.inputs.total) != (first_pass.n, first_pass.total):
            raise changed(stage, path, first_pass, out.inputs.n)
    return out


def changed(stage: str, path, first_pass: IdTally, n_second: int) -> AccountingError:
    """The error of a file whose rows in a later pass (``n_second``, ``+``: more to come) are not the first's."""
    return AccountingError(f"{stage}: {path} changed while the stage read it ({first_pass.n} rows in the first "
                           f"pass, {n_second}{'+' if n_second > first_pass.n else ''} in the second, or other ids)")
