"""Files to raw rows: each record of a source, with where it is, before any format is applied.

Files: ``.jsonl``, ``.json`` (an array of records), ``.csv``, ``.parquet``; the first
three also gzip-compressed (``.jsonl.gz``, ``.json.gz``, ``.csv.gz``: decompressed in
memory, line numbers are those of the decompressed text) or zstd-compressed (``.zst``,
through the ``zstandard`` package, as many hub datasets ship). Or a Hugging Face hub dataset id
when the machine has network, optionally pinned to a ``revision``.

File-level problems (missing file, a directory, an empty file, a corrupt or
truncated ``.gz`` file, a JSON array in a ``.jsonl`` file, a CSV without the
needed columns or with a repeated one, invalid UTF-8 in a ``.json``/``.csv`` file,
a syntax error inside a ``.json`` array, an unterminated CSV quote) are fatal
:class:`UserError` s: where the next record starts is unknowable, or the whole
file is of the wrong kind. Row-level problems travel on the row
(:attr:`RawRow.error`); the collect stage quarantines or stops on them, per
``collect.on_error``. That includes what Python's JSON parser
accepts but JSON does not (NaN, Infinity, a key given twice), which would
otherwise end up, or be lost without a word, in the output. A UTF-8 BOM and CRLF
line endings are accepted as if they were not there.

:mod:`sftpipe.collect.formats` turns each raw row into a canonical record.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import RowError, UserError, where
from ..schema import json_type
from .formats import did_you_mean

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
TYPES = (".jsonl", ".json", ".csv", ".parquet")     # by the inner suffix: x.jsonl.gz is a .jsonl
COMPRESSED = (".gz", ".zst")                        # around .jsonl, .json, .csv (parquet compresses itself)
SUPPORTED = ".jsonl, .json, .csv (each also .gz or .zst), or .parquet"


@dataclass
class RawRow:
    """One input record before conversion, with where it came from.

    A record the reader could not parse (malformed JSON, invalid UTF-8, a bad CSV
    row) has ``error`` set, ``data`` None and ``text`` holding the offending text
    (cut to RAW_KEEP characters) for the quarantine.
    """
    data: Any
    path: str
    line: int | None      # 1-based line where the record starts (None for parquet/hub)
    recno: int            # 1-based record number within the source
    error: RowError | None = None
    text: str | None = None


BOM = b"\xef\xbb\xbf"
RAW_KEEP = 4000         # characters of an unparsable line kept for the quarantine


def is_hub_id(path: str) -> bool:
    """Whether ``read_source`` takes ``path`` for a hub dataset id rather than a local file:
    no such file or directory here, ``owner/name`` shaped, and no data-file suffix."""
    return not Path(path).exists() and bool(HUB_ID.match(path)) and not path.lower().endswith(TYPES + COMPRESSED)


def file_type(p: Path) -> tuple[str, str | None]:
    """(inner suffix, compression suffix or None): ``x.jsonl.gz`` -> (".jsonl", ".gz")."""
    suffix = p.suffix.lower()
    if suffix in COMPRESSED:
        return Path(p.stem).suffix.lower(), suffix
    return suffix, None


def read_source(path: str, hub_split: str = "train", revision: str | None = None) -> Iterator[RawRow]:
    """Yield raw rows (some with a row-level ``error``) from a local file or a hub dataset
    (``revision``, a commit hash or tag, is passed to ``datasets.load_dataset``)."""
    p = Path(path)
    if is_hub_id(path):
        yield from _read_hub(path, hub_split, revision)
        return
    if not p.exists():
        raise UserError(f"{path}: file not found")
    if p.is_dir():
        raise UserError(f"{path}: is a directory, expected a data file")
    if p.stat().st_size == 0:
        raise UserError(f"{path}: file is empty (no records)")
    suffix, compression = file_type(p)
    readers = {".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv, ".parquet": _read_parquet}
    if suffix not in readers or (compression and suffix == ".parquet"):
        kind = suffix + (compression or "")
        raise UserError(f"{path}: unsupported file type '{kind}' (use {SUPPORTED})")
    n = 0
    for row in readers[suffix](p):
        n += 1
        yield row
    if n == 0:
        raise UserError(f"{path}: no records found")


class _StrictJSON:
    """Python's JSON parser, made to notice what it accepts but JSON (RFC 8259) does not.

    ``NaN``/``Infinity`` literals, numbers that overflow to infinity, integers too long
    for Python to convert, and a key given twice in one object (the parser would
    silently keep only the last value). Problems are noted rather than raised so that
    a ``.json`` array can go on to its next record; :meth:`decode_at` resets them.
    """

    def __init__(self):
        self.problem: tuple[str, str, str | None] | None = None
        self.decoder = json.JSONDecoder(object_pairs_hook=self._object, parse_constant=self._constant,
                                        parse_float=self._float, parse_int=self._int)

    def _note(self, reason: str, msg: str, field: str | None = None) -> None:
        if self.problem is None:
            self.problem = (reason, msg, field)

    def _object(self, pairs):
        obj = dict(pairs)
        if len(obj) != len(pairs):
            seen = set()
            for k, _ in pairs:
                if k in seen:
                    self._note("duplicate_key", f"key {k!r} appears twice in one object "
                               f"(only one of the values could be kept)", k)
                    break
                seen.add(k)
        return obj

    def _constant(self, name: str):
        self._note("malformed_json", f"{name} is not valid JSON (write null, or the value as a string)")
        return None

    def _float(self, s: str):
        v = float(s)
        if math.isinf(v):
            self._note("malformed_json", f"number {s[:24]} is too large for a 64-bit float")
            return None
        return v

    def _int(self, s: str):
        try:
            return int(s)
        except ValueError:  # longer than sys.get_int_max_str_digits()
            self._note("malformed_json", f"integer with {len(s)} digits is too large")
            return None

    def decode_at(self, text: str, pos: int) -> tuple[Any, int]:
        self.problem = None
        return self.decoder.raw_decode(text, pos)

    def loads(self, text: str) -> Any:
        """Parse a whole string; raises RowError for anything that is not one valid JSON value."""
        try:
            value, end = self.decode_at(text, _skip_ws(text, 0))
        except json.JSONDecodeError as e:
            raise RowError("malformed_json", f"malformed JSON ({e.msg} at column {e.colno})") from None
        except RecursionError:
            raise RowError("malformed_json", "malformed JSON (nested too deeply to parse)") from None
        end = _skip_ws(text, end)
        if end != len(text):
            raise RowError("malformed_json", f"malformed JSON (extra data after the value at column {end + 1}; "
                           f"one record per line)")
        if self.problem:
            raise RowError(*self.problem)
        return value


def read_bytes(p: Path) -> bytes:
    """The file's bytes, decompressed when its name ends in ``.gz`` or ``.zst``; a corrupt or
    truncated archive is a one-line UserError naming the file."""
    raw = p.read_bytes()
    kind = file_type(p)[1]
    if kind is None:
        return raw
    try:
        if kind == ".gz":
            return gzip.decompress(raw)
        return _zstd_decompress(raw)
    except Exception as e:  # gzip: OSError/EOFError/zlib.error; zstandard: ZstdError
        raise _corrupt(p, kind, e) from None


def _zstd_decompress(raw: bytes) -> bytes:
    """Every frame of a zstd file, including frames written without their content size
    (streaming mode); a frame cut short raises (the stream readers return what they have)."""
    import zstandard

    out = []
    while raw:
        dobj = zstandard.ZstdDecompressor().decompressobj()
        out.append(dobj.decompress(raw))
        if not dobj.eof:
            raise EOFError("the last zstd frame is cut short")
        raw = dobj.unused_data
    return b"".join(out)


def _corrupt(p: Path, kind: str, e: BaseException) -> UserError:
    msg = " ".join(str(e).split()) or type(e).__name__
    what = "gzip" if kind == ".gz" else "zstd"
    return UserError(f"{p}: cannot decompress {what} ({msg}); the file is corrupt or truncated")


def _stream_lines(p: Path) -> Iterator[bytes]:
    """The file's lines without their b"\\n", read as they come (a plain or ``.gz`` file is never
    held whole; ``.zst`` is decompressed whole, as :func:`read_bytes` does). A gzip stream that
    breaks part way is the same one-line UserError as :func:`read_bytes` gives."""
    kind = file_type(p)[1]
    if kind == ".zst":
        yield from read_bytes(p).split(b"\n")
        return
    opener = gzip.open if kind == ".gz" else open
    try:
        with opener(p, "rb") as f:
            for line in f:
                yield line[:-1] if line.endswith(b"\n") else line
    except (OSError, EOFError, zlib.error) as e:
        if kind is None:
            raise
        raise _corrupt(p, kind, e) from None


def _jsonl_lines(p: Path) -> Iterator[bytes]:
    """The lines of a .jsonl file, streamed, the leading BOM removed; a file whose first non-blank
    line opens a JSON array is read whole for :func:`_refuse_json_array` (the only case that needs
    the whole text)."""
    lines = _stream_lines(p)
    head: list[bytes] = []
    for line in lines:
        if not head and line.startswith(BOM):
            line = line[len(BOM):]
        head.append(line)
        if line.strip():
            break
    if head and head[-1].lstrip().startswith(b"["):
        lines.close()                    # its open file, before the whole file is read again
        raw = read_bytes(p)
        if raw.startswith(BOM):
            raw = raw[len(BOM):]
        whole = raw.split(b"\n")
        _refuse_json_array(p, raw, whole)
        yield from whole
        return
    yield from head
    yield from lines


def _read_jsonl(p: Path) -> Iterator[RawRow]:
    lines = _jsonl_lines(p)
    dec = _StrictJSON()
    recno = 0
    for lineno, line in enumerate(lines, 1):
        line = line.rstrip(b"\r")
        if line.startswith(BOM):  # files joined with `cat`, each with its own BOM
            line = line[len(BOM):]
        if not line.strip():
            continue
        recno += 1
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            yield _unparsed(RowError("invalid_utf8", f"invalid UTF-8 at byte {e.start} of the line"), p, lineno,
                            recno, line[:RAW_KEEP].decode("utf-8", "backslashreplace"))
            continue
        try:
            data = dec.loads(text)
        except RowError as e:
            yield _unparsed(e, p, lineno, recno, text)
            continue
        yield RawRow(data, str(p), lineno, recno)
    if recno == 0:
        raise UserError(f"{p}: no records found (only blank lines)")


def _refuse_json_array(p: Path, raw: bytes, lines: list[bytes]) -> None:
    """A .jsonl file that holds one JSON array (pretty-printed or on one line) is fatal.

    Quarantining it line by line would report a wall of fragments for what is one
    mistake about the file, so stop with a hint instead. A single line that is an
    array, among object lines, stays a row-level problem (quarantined as bad_type).
    """
    lineno, first = next(((i, ln.rstrip(b"\r")) for i, ln in enumerate(lines, 1) if ln.strip()), (1, b""))
    if not first.lstrip().startswith(b"["):
        return
    try:
        whole = json.loads(raw)
    except (ValueError, RecursionError):
        whole = None
    if not isinstance(whole, list):
        try:
            json.loads(first)
            return  # that line is a complete JSON value on its own: a bad row, not an array file
        except RecursionError:
            return
        except ValueError:
            pass
    compression = file_type(p)[1] or ""
    raise UserError(f"{where(p, lineno)}: found a JSON array, but .jsonl expects one JSON object per line "
                    f"(rename the file to .json{compression})")


def _decode_whole(p: Path, kind: str) -> str:
    """The file as text; a BOM is dropped, invalid UTF-8 is fatal (with the line where it is)."""
    raw = read_bytes(p)
    skip = len(BOM) if raw.startswith(BOM) else 0
    try:
        return raw[skip:].decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, skip + e.start) + 1
        raise UserError(f"{where(p, line)}: invalid UTF-8 at byte {skip + e.start}; a {kind} file must "
                        f"decode as a whole (re-save it as UTF-8)") from None


def _read_json(p: Path) -> Iterator[RawRow]:
    text = _decode_whole(p, ".json")
    dec = _StrictJSON()
    pos = _skip_ws(text, 0)
    if pos >= len(text):
        raise UserError(f"{p}: no records found (only whitespace)")
    if text[pos] != "[":
        # a single object, or JSON lines saved as .json
        try:
            obj, end = dec.decode_at(text, pos)
            end = _skip_ws(text, end)
            if end != len(text):
                raise json.JSONDecodeError("Extra data", text, end)
        except json.JSONDecodeError as e:
            raise UserError(f"{where(p, e.lineno)}: invalid JSON ({e.msg}); a .json file must hold "
                            f"an array of records (use .jsonl for one record per line)") from None
        except RecursionError:
            raise UserError(f"{p}: invalid JSON (nested too deeply to parse)") from None
        if isinstance(obj, dict) and isinstance(obj.get("data"), list):
            if dec.problem:  # the records cannot be told apart any more: refuse the file
                raise UserError(f"{p}: {dec.problem[1]}")
            for i, item in enumerate(obj["data"], 1):
                yield RawRow(item, str(p), None, i)
            return
        raise UserError(f"{p}: expected a JSON array of records at the top level, got {json_type(obj)}")
    line, counted = 1, 0

    def line_at(i: int) -> int:  # positions only move forward: count newlines once
        nonlocal line, counted
        line += text.count("\n", counted, i)
        counted = i
        return line

    pos = _skip_ws(text, pos + 1)
    recno = 0
    while pos < len(text) and text[pos] != "]":
        recno += 1
        try:
            item, end = dec.decode_at(text, pos)
        except json.JSONDecodeError as e:
            raise UserError(f"{where(p, e.lineno, recno)}: invalid JSON ({e.msg})") from None
        except RecursionError:
            raise UserError(f"{where(p, line_at(pos), recno)}: invalid JSON (nested too deeply to parse)") from None
        if dec.problem:
            yield _unparsed(RowError(*dec.problem), p, line_at(pos), recno, text[pos:end])
        else:
            yield RawRow(item, str(p), line_at(pos), recno)
        pos = _skip_ws(text, end)
        if pos < len(text) and text[pos] == ",":
            pos = _skip_ws(text, pos + 1)
        elif pos < len(text) and text[pos] != "]":
            raise UserError(f"{where(p, line_at(pos), recno)}: invalid JSON "
                            f"(expected ',' or ']' after a record)")
    if pos >= len(text):
        raise UserError(f"{where(p, line_at(len(text)))}: invalid JSON (unterminated array)")


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


JSON_COLUMNS = ("messages", "conversations", "history")


def _read_csv(p: Path) -> Iterator[RawRow]:
    text = _decode_whole(p, ".csv")
    if not text.strip():
        raise UserError(f"{p}: no CSV header row (only whitespace)")
    # Split lines on \n, \r and \r\n only. str.splitlines() would also split on
    # U+2028, \x85, \x0c..., cutting a row in two inside an unquoted field.
    lines = io.StringIO(text, newline="").readlines()
    # A record longer than the default 128 KiB field limit is for collect.max_chars to judge.
    csv.field_size_limit(max(csv.field_size_limit(), len(text) + 1))
    reader = csv.reader(lines, strict=True)
    dec = _StrictJSON()
    header: list[str] | None = None
    end = recno = 0
    while True:
        start = end + 1              # physical line where the next row starts
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            end = reader.line_num
            if "end of data" in str(e):
                raise UserError(f"{where(p, start)}: unterminated quoted field (a missing closing quote "
                                f"would swallow every later row)") from None
            if header is None:
                raise UserError(f"{where(p, start)}: malformed CSV header ({e})") from None
            recno += 1
            yield _unparsed(RowError("bad_csv_row", f"malformed CSV quoting ({e})"), p, start, recno,
                            "".join(lines[start - 1:end]))
            continue
        end = reader.line_num
        if not row or (len(row) == 1 and not row[0].strip() and (header is None or len(header) > 1)):
            continue                 # blank line
        if header is None:
            header = row
            _check_csv_header(p, start, header)
            continue
        recno += 1
        raw = "".join(lines[start - 1:end])
        if len(row) > len(header):
            yield _unparsed(RowError("bad_csv_row", f"{len(row)} values for {len(header)} columns"), p, start,
                            recno, raw)
            continue
        if len(row) < len(header):
            yield _unparsed(RowError("missing_field", f"row has {len(row)} value(s) for {len(header)} columns, so "
                                     f"'{header[len(row)]}' is missing", header[len(row)]), p, start, recno, raw)
            continue
        # A line break inside a quoted field is written with the file's line ending.
        data = {k: v.replace("\r\n", "\n") for k, v in zip(header, row)}
        bad = None
        for key in JSON_COLUMNS:
            if data.get(key):
                try:
                    data[key] = dec.loads(data[key])
                except RowError as e:
                    bad = _unparsed(RowError(e.reason, f"column holds {e}", key), p, start, recno, raw)
                    break
        if bad:
            yield bad
            continue
        yield RawRow({k: v for k, v in data.items() if v != "" or k in ("input", "output", "instruction")},
                     str(p), start, recno)


def _check_csv_header(p: Path, line: int, header: list[str]) -> None:
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup:
        raise UserError(f"{where(p, line)}: CSV header repeats column(s) {dup} (only one value per row "
                        f"could be kept)")
    if not ({"instruction", "output"} <= set(header) or "messages" in header or "conversations" in header):
        hints = [f"'{h}' meant to be '{w}'" for w in ("instruction", "output")
                 if w not in header and (h := did_you_mean(header, w))]
        raise UserError(f"{where(p, line)}: CSV header {header} lacks the columns of a known format "
                        f"(instruction+output, messages, or conversations)"
                        + (f"; is {' and '.join(hints)}?" if hints else ""))


def _read_parquet(p: Path) -> Iterator[RawRow]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(p)
    except Exception as e:  # pyarrow raises several types for corrupt files
        msg = " ".join(str(e).split())  # one line, whatever pyarrow's message holds
        raise UserError(f"{p}: cannot read parquet ({type(e).__name__}: {msg})") from None
    for i, row in enumerate(table.to_pylist(), 1):
        yield RawRow(row, str(p), None, i)


def _read_hub(repo_id: str, split: str, revision: str | None = None) -> Iterator[RawRow]:
    try:
        import datasets

        ds = datasets.load_dataset(repo_id, split=split, revision=revision)
    except Exception as e:  # offline, unknown id, gated...
        raise UserError(f"{repo_id}: cannot load hub dataset ({type(e).__name__}: {str(e).splitlines()[0]}); "
                        f"no network? use a local file instead") from None
    for i, row in enumerate(ds, 1):
        yield RawRow(row, f"hf://{repo_id}:{split}", None, i)


def _unparsed(err: RowError, p: Path, line: int, recno: int, text: str) -> RawRow:
    return RawRow(None, str(p), line, recno, error=err, text=text[:RAW_KEEP])
