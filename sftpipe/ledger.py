"""Kept rows plus a ledger of dropped rows, with the arithmetic checked.

Every filtering stage returns a :class:`FilterResult`. :func:`write_filter_outputs`
checks that each input id lands exactly once in kept or dropped (kept + dropped
== input) before anything is written, then writes both files and the counts.
A dropped row keeps its whole record, so nothing is ever lost: the ledger is
enough to restore it. A stage that streams writes through :class:`FilterWriter`, which
checks the same arithmetic on id tallies (:class:`IdTally`) before it publishes either file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .errors import AccountingError
from .io import atomic_path, dumps, write_json, write_jsonl


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
    return counts_of(n_in, len(result.kept), Counter(d["reason"] for d in result.dropped), result.extra_metrics)


def counts_of(n_in: int, n_kept: int, reasons: Counter, extra: dict) -> dict:
    """:func:`counts` from the numbers alone (``reasons``: dropped rows per reason)."""
    return {"rows_in": n_in, "kept": n_kept, "dropped": sum(reasons.values()),
            "dropped_by_reason": dict(sorted(reasons.items())), **extra}


_MASK = (1 << 64) - 1


class IdTally:
    """A multiset of ids in two numbers: how many, and the sum of their 64-bit BLAKE2b hashes
    (of the id as JSON) mod 2**64. Equal multisets give equal tallies; a lost, extra or
    repeated id changes the count or, but for a ~2**-64 chance, the sum."""

    __slots__ = ("n", "total")

    def __init__(self):
        self.n = self.total = 0

    def add(self, rid) -> None:
        h = hashlib.blake2b(dumps(rid).encode("utf-8", "surrogatepass"), digest_size=8).digest()
        self.n += 1
        self.total = (self.total + int.from_bytes(h, "little")) & _MASK


@contextlib.contextmanager
def no_new_dirs_on_error(*paths: str | os.PathLike) -> Iterator[None]:
    """The folders the block makes for ``paths`` (their missing parents) are removed again, when
    empty, if it raises: a stage that streams into ``io.atomic_path`` files and then fails
    leaves no trace, not even its output folder, as one that writes only at the end. (Here
    rather than in sftpipe/io.py, which most stages declare as a DVC dependency.)"""
    missing = set()
    for p in paths:
        d = Path(p).absolute().parent
        while not d.exists():
            missing.add(d)
            d = d.parent
    try:
        yield
    except BaseException:
        for d in sorted(missing, key=lambda x: len(x.parts), reverse=True):
            with contextlib.suppress(OSError):
                d.rmdir()
        raise


@contextlib.contextmanager
def jsonl_outputs(*paths: str | os.PathLike) -> Iterator[list]:
    """One text handle per path, for JSONL rows written as they come: each writes to a temporary
    sibling that is renamed into place only if the block ends without an error; on an error no
    file is published and no folder the block made is left (:func:`no_new_dirs_on_error`)."""
    with no_new_dirs_on_error(*paths), contextlib.ExitStack() as stack:
        yield [stack.enter_context(open(stack.enter_context(atomic_path(p)), "w", encoding="utf-8", newline="\n"))
               for p in paths]


class FilterWriter:
    """kept.jsonl and dropped.jsonl written row by row, as a streaming stage produces them.

    ``read(rec)`` each input row, ``keep(rec)`` each kept row and ``drop(row)`` each ledger row;
    both files are written to temporary siblings and renamed into place when :meth:`files`'
    block ends, and only if every input id went out exactly once (:class:`IdTally`): otherwise
    AccountingError, as :func:`write_filter_outputs` raises, and neither file is published.
    """

    def __init__(self, stage: str):
        self.stage = stage
        self.inputs, self.kept, self.dropped = IdTally(), IdTally(), IdTally()
        self.reasons: Counter = Counter()
        self._fk = self._fd = None

    @contextlib.contextmanager
    def files(self, out_dir: str | Path):
        out_dir = Path(out_dir)
        with jsonl_outputs(out_dir / "kept.jsonl", out_dir / "dropped.jsonl") as (self._fk, self._fd):
            yield self
            self.check()

    def read(self, rec: dict) -> None:
        self.inputs.add(rec["id"])

    def keep(self, rec: dict) -> None:
        self.kept.add(rec["id"])
        self._fk.write(dumps(rec))
        self._fk.write("\n")

    def drop(self, row: dict) -> None:
        self.dropped.add(row["id"])
        self.reasons[row["reason"]] += 1
        self._fd.write(dumps(row))
        self._fd.write("\n")

    def check(self) -> None:
        k, d, i = self.kept, self.dropped, self.inputs
        if k.n + d.n != i.n or (k.total + d.total) & _MASK != i.total:
            raise AccountingError(f"{self.stage}: kept ({k.n}) + dropped ({d.n}) != input ({i.n}), or the ids "
                                  f"written are not the ids read")

    def counts(self, extra: dict) -> dict:
        """The metrics :func:`counts` gives for the same rows."""
        return counts_of(self.inputs.n, self.kept.n, self.reasons, extra)


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
