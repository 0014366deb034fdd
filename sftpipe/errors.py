"""Errors that reach the user as one line, never as a traceback wall."""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input, params or environment.

    The CLI prints ``error: <message>`` and exits non-zero, without a traceback
    (set ``SFTPIPE_DEBUG=1`` to see one). Build the message with :func:`where`
    so it names the file, the line or record, and the field.
    """

    exit_code = 2


class AccountingError(UserError):
    """Kept + dropped rows of a stage do not add up to its input."""

    exit_code = 3


class RowError(Exception):
    """A problem confined to one input row: quarantined or fatal, per ``collect.on_error``."""

    def __init__(self, reason: str, message: str, field: str | None = None):
        super().__init__(message)
        self.reason = reason
        self.field = field


def where(path: str | None = None, line: int | None = None, record: int | str | None = None,
          field: str | None = None) -> str:
    """Format a location like ``data/x.jsonl:12 [record 3] field 'messages[1].role'``."""
    out = str(path) if path else ""
    if line is not None:
        out += f":{line}"
    if record is not None:
        out += f" [record {record}]"
    if field:
        out += f" field '{field}'"
    return out.strip()
