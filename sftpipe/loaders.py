"""Read every supported input into the canonical schema, once.

Files: ``.jsonl``, ``.json`` (an array of records), ``.csv``, ``.parquet``; or a
Hugging Face hub dataset id when the machine has network. Formats, detected per
record unless a source pins one:

* alpaca:   ``instruction``, optional ``input``, ``output``, optional ``system``
            and ``history`` (a list of ``[user, assistant]`` pairs)
* sharegpt: ``conversations: [{"from": "human"|"gpt"|"system", "value": ...}]``
* openai:   ``messages: [{"role": ..., "content": str | [{"type": "text", "text": ...}]}]``

File-level problems (missing file, a directory, an empty file, a JSON array in a
``.jsonl`` file, a CSV without the needed columns or with a repeated one, invalid
UTF-8 in a ``.json``/``.csv`` file, a syntax error inside a ``.json`` array, an
unterminated CSV quote) are fatal :class:`UserError` s: where the next record
starts is unknowable, or the whole file is of the wrong kind. Row-level problems
raise :class:`RowError`; the collect stage quarantines or stops on them, per
``collect.on_error``. That includes what Python's JSON parser accepts but JSON
does not (NaN, Infinity, a key given twice), which would otherwise end up, or be
lost without a word, in the output. A UTF-8 BOM and CRLF line endings are
accepted as if they were not there.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import RowError, UserError, where
from .schema import json_type, make_record

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "bot": "assistant", "model": "assistant", "chatgpt": "assistant", "system": "system"}
KNOWN_FIELDS = {"id", "instruction", "input", "output", "system", "history", "conversations", "messages",
                "label", "category"}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class RawRow:
    """One input record before conversion, with where it came from."""
    data: Any
    path: str
    line: int | None      # 1-based line where the record starts (None for parquet/hub)
    recno: int            # 1-based record number within the source


# ----------------------------------------------------------------------------- readers

BOM = b"\xef\xbb\xbf"
RAW_KEEP = 4000         # characters of an unparsable line kept for the quarantine


def read_source(path: str, hub_split: str = "train") -> Iterator[RawRow | RowError]:
    """Yield raw rows (or row-level errors) from a local file or a hub dataset."""
    p = Path(path)
    if not p.exists():
        if HUB_ID.match(path) and not path.endswith((".json", ".jsonl", ".csv", ".parquet")):
            yield from _read_hub(path, hub_split)
            return
        raise UserError(f"{path}: file not found")
    if p.is_dir():
        raise UserError(f"{path}: is a directory, expected a data file")
    if p.stat().st_size == 0:
        raise UserError(f"{path}: file is empty (no records)")
    suffix = p.suffix.lower()
    readers = {".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv, ".parquet": _read_parquet}
    if suffix not in readers:
        raise UserError(f"{path}: unsupported file type '{suffix}' (use .jsonl, .json, .csv or .parquet)")
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


def _read_jsonl(p: Path) -> Iterator[RawRow | RowError]:
    raw = p.read_bytes()
    if raw.startswith(BOM):
        raw = raw[len(BOM):]
    lines = raw.split(b"\n")
    _refuse_json_array(p, raw, lines)
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
            yield _row_error("invalid_utf8", f"invalid UTF-8 at byte {e.start} of the line", p, lineno, recno,
                             raw=line[:RAW_KEEP].decode("utf-8", "backslashreplace"))
            continue
        try:
            data = dec.loads(text)
        except RowError as e:
            e.path, e.line, e.recno, e.raw = str(p), lineno, recno, text[:RAW_KEEP]
            yield e
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
    raise UserError(f"{where(p, lineno)}: found a JSON array, but .jsonl expects one JSON object per line "
                    f"(rename the file to .json)")


def _decode_whole(p: Path, kind: str) -> str:
    """The file as text; a BOM is dropped, invalid UTF-8 is fatal (with the line where it is)."""
    raw = p.read_bytes()
    skip = len(BOM) if raw.startswith(BOM) else 0
    try:
        return raw[skip:].decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, skip + e.start) + 1
        raise UserError(f"{where(p, line)}: invalid UTF-8 at byte {skip + e.start}; a {kind} file must "
                        f"decode as a whole (re-save it as UTF-8)") from None


def _read_json(p: Path) -> Iterator[RawRow | RowError]:
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
            yield _row_error(*dec.problem[:2], p, line_at(pos), recno, field=dec.problem[2],
                             raw=text[pos:min(end, pos + RAW_KEEP)])
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


def _read_csv(p: Path) -> Iterator[RawRow | RowError]:
    try:
        text = p.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(f"{p}: invalid UTF-8 at byte {e.start}") from None
    lines = text.splitlines(keepends=True)
    reader = csv.DictReader(lines)
    header = reader.fieldnames or []
    if not ({"instruction", "output"} <= set(header) or "messages" in header or "conversations" in header):
        raise UserError(f"{where(p, 1)}: CSV header {header} lacks the columns of a known format "
                        f"(instruction+output, messages, or conversations)")
    recno, start = 0, 2
    for row in reader:
        recno += 1
        line = start
        start = reader.line_num + 1
        if None in row:
            yield _row_error("bad_csv_row", f"{len(header) + len(row[None])} values for {len(header)} columns",
                             p, line, recno)
            continue
        missing = [k for k, v in row.items() if v is None]
        if missing:
            yield _row_error("missing_field", "row has fewer values than the header", p, line, recno,
                             field=missing[0])
            continue
        for key in ("messages", "conversations", "history"):
            if row.get(key):
                try:
                    row[key] = json.loads(row[key])
                except json.JSONDecodeError as e:
                    yield _row_error("malformed_json", f"column holds malformed JSON ({e.msg})", p, line, recno,
                                     field=key)
                    break
        else:
            yield RawRow({k: v for k, v in row.items() if v != "" or k in ("input", "output", "instruction")},
                         str(p), line, recno)


def _read_parquet(p: Path) -> Iterator[RawRow]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(p)
    except Exception as e:  # pyarrow raises several types for corrupt files
        msg = " ".join(str(e).split())  # one line, whatever pyarrow's message holds
        raise UserError(f"{p}: cannot read parquet ({type(e).__name__}: {msg})") from None
    for i, row in enumerate(table.to_pylist(), 1):
        yield RawRow(row, str(p), None, i)


def _read_hub(repo_id: str, split: str) -> Iterator[RawRow]:
    try:
        import datasets

        ds = datasets.load_dataset(repo_id, split=split)
    except Exception as e:  # offline, unknown id, gated...
        raise UserError(f"{repo_id}: cannot load hub dataset ({type(e).__name__}: {str(e).splitlines()[0]}); "
                        f"no network? use a local file instead") from None
    for i, row in enumerate(ds, 1):
        yield RawRow(row, f"hf://{repo_id}:{split}", None, i)


def _row_error(reason: str, msg: str, p, line, recno, field: str | None = None,
               raw: str | None = None) -> RowError:
    e = RowError(reason, msg, field)
    e.path, e.line, e.recno, e.raw = str(p), line, recno, raw
    return e


# ----------------------------------------------------------------------------- formats

def detect_format(data: dict) -> str:
    if "messages" in data:
        return "openai"
    if "conversations" in data:
        return "sharegpt"
    if "instruction" in data or "output" in data:
        return "alpaca"
    raise RowError("unknown_format", f"cannot tell the format from fields {sorted(data)[:8]} "
                   f"(expected instruction/output, conversations, or messages)")


def _need_str(data: dict, key: str, required: bool = True) -> str:
    if key not in data or data[key] is None:
        if required:
            raise RowError("missing_field", f"missing field '{key}'", key)
        return ""
    v = data[key]
    if not isinstance(v, str):
        raise RowError("bad_type", f"'{key}' must be a string, got {type(v).__name__}", key)
    return v


def alpaca_messages(data: dict) -> list[dict]:
    instruction = _need_str(data, "instruction")
    inp = _need_str(data, "input", required=False)
    output = _need_str(data, "output")
    system = _need_str(data, "system", required=False)
    msgs = [{"role": "system", "content": system}] if system.strip() else []
    history = data.get("history") or []
    if not isinstance(history, list):
        raise RowError("bad_type", "'history' must be a list of [user, assistant] pairs", "history")
    for i, pair in enumerate(history):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise RowError("bad_type", "each history item must be a [user, assistant] pair of strings",
                           f"history[{i}]")
        msgs += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    prompt = f"{instruction}\n\n{inp}" if instruction.strip() and inp.strip() else (instruction + inp)
    if not prompt.strip():
        raise RowError("empty_content", "empty instruction (and input)", "instruction")
    if not output.strip():
        raise RowError("empty_content", "empty output", "output")
    return msgs + [{"role": "user", "content": prompt}, {"role": "assistant", "content": output}]


def sharegpt_messages(data: dict) -> list[dict]:
    turns = data.get("conversations")
    if not isinstance(turns, list):
        raise RowError("bad_type", f"'conversations' must be a list, got {type(turns).__name__}", "conversations")
    msgs = []
    system = data.get("system")
    if isinstance(system, str) and system.strip():
        msgs.append({"role": "system", "content": system})
    for i, t in enumerate(turns):
        if not isinstance(t, dict):
            raise RowError("bad_type", "each turn must be an object", f"conversations[{i}]")
        who = t.get("from", t.get("role"))
        if who not in SHAREGPT_ROLES:
            raise RowError("unknown_role", f"unknown role {who!r}", f"conversations[{i}].from")
        value = t.get("value", t.get("content"))
        if not isinstance(value, str):
            raise RowError("bad_type", f"turn text must be a string, got {type(value).__name__}",
                           f"conversations[{i}].value")
        msgs.append({"role": SHAREGPT_ROLES[who], "content": value})
    return msgs


def openai_messages(data: dict) -> list[dict]:
    turns = data.get("messages")
    if not isinstance(turns, list):
        raise RowError("bad_type", f"'messages' must be a list, got {type(turns).__name__}", "messages")
    msgs = []
    for i, t in enumerate(turns):
        if not isinstance(t, dict):
            raise RowError("bad_type", "each message must be an object", f"messages[{i}]")
        content = t.get("content")
        if isinstance(content, list):  # content parts
            texts = []
            for j, part in enumerate(content):
                if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                    raise RowError("bad_type", "only text content parts are supported",
                                   f"messages[{i}].content[{j}]")
                texts.append(part["text"])
            content = "".join(texts)
        msgs.append({"role": t.get("role"), "content": content})
    return msgs


CONVERTERS = {"alpaca": alpaca_messages, "sharegpt": sharegpt_messages, "openai": openai_messages}


def to_record(raw: RawRow, source: str, fmt: str = "auto", label_field: str | None = None,
              max_chars: int = 100_000, default_system: str | None = None) -> dict:
    """Convert one raw row to a canonical record (raises RowError)."""
    data = raw.data
    if not isinstance(data, dict):
        raise RowError("bad_type", f"record must be a JSON object, got {type(data).__name__}")
    fmt = detect_format(data) if fmt == "auto" else fmt
    messages = CONVERTERS[fmt](data)
    if default_system and messages and messages[0].get("role") != "system":
        messages = [{"role": "system", "content": default_system}] + messages
    size = sum(len(m["content"]) for m in messages if isinstance(m.get("content"), str))
    if size > max_chars:
        raise RowError("too_long", f"record has {size} characters, above collect.max_chars={max_chars}")
    label = _label(data, label_field)
    orig = data.get("id")
    if orig is not None and not isinstance(orig, (str, int)):
        raise RowError("bad_type", f"'id' must be a string or integer, got {type(orig).__name__}", "id")
    rid = f"{source}:{orig}" if orig not in (None, "") else f"{source}:#{raw.recno}"
    meta = {k: v for k, v in data.items()
            if k not in KNOWN_FIELDS and k != label_field and isinstance(v, (str, int, float, bool))}
    meta["format"] = fmt
    if raw.line is not None:
        meta["line"] = raw.line
    return make_record(rid, messages, source, label, meta)


def _label(data: dict, label_field: str | None):
    if label_field:
        if label_field not in data:
            raise RowError("missing_field", f"missing label field '{label_field}'", label_field)
        v = data[label_field]
    else:
        v = data.get("label", data.get("category"))
    if v is not None and not isinstance(v, (str, int)):
        raise RowError("bad_type", f"label must be a string, got {type(v).__name__}", label_field or "label")
    return v
