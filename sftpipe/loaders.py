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


JSON_COLUMNS = ("messages", "conversations", "history")


def _read_csv(p: Path) -> Iterator[RawRow | RowError]:
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
            yield _row_error("bad_csv_row", f"malformed CSV quoting ({e})", p, start, recno,
                             raw="".join(lines[start - 1:end])[:RAW_KEEP])
            continue
        end = reader.line_num
        if not row or (len(row) == 1 and not row[0].strip() and (header is None or len(header) > 1)):
            continue                 # blank line
        if header is None:
            header = row
            _check_csv_header(p, start, header)
            continue
        recno += 1
        raw = "".join(lines[start - 1:end])[:RAW_KEEP]
        if len(row) > len(header):
            yield _row_error("bad_csv_row", f"{len(row)} values for {len(header)} columns", p, start, recno, raw=raw)
            continue
        if len(row) < len(header):
            yield _row_error("missing_field", f"row has {len(row)} value(s) for {len(header)} columns, so "
                             f"'{header[len(row)]}' is missing", p, start, recno, field=header[len(row)], raw=raw)
            continue
        # A line break inside a quoted field is written with the file's line ending.
        data = {k: v.replace("\r\n", "\n") for k, v in zip(header, row)}
        bad = None
        for key in JSON_COLUMNS:
            if data.get(key):
                try:
                    data[key] = dec.loads(data[key])
                except RowError as e:
                    bad = _row_error(e.reason, f"column holds {e}", p, start, recno, field=key, raw=raw)
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
                 if w not in header and (h := _did_you_mean(header, w))]
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
#
# Converters tag each message with "_src": (input field, its role key, its content key),
# so a problem the schema finds in canonical ``messages[i]`` is reported at the
# field of the input that holds it (``conversations[2].value``, ``output``...).
# make_record copies only role and content, so the tag never reaches the output.

FIELD_ALIASES = {"instruction": ("prompt", "question", "query", "instructions"),
                 "output": ("response", "answer", "completion", "target", "outputs", "reply"),
                 "conversations": ("conversation", "dialog", "dialogue", "turns"),
                 "messages": ("message", "chat")}


def _did_you_mean(keys, wanted: str) -> str | None:
    """An unknown key that is probably ``wanted`` under another name, or misspelled."""
    unknown = [k for k in keys if isinstance(k, str) and k not in KNOWN_FIELDS]
    for k in unknown:
        if k.lower() in FIELD_ALIASES.get(wanted, ()):
            return k
    close = difflib.get_close_matches(wanted, unknown, n=1, cutoff=0.8)
    return close[0] if close else None


def detect_format(data: dict) -> str:
    if "messages" in data:
        return "openai"
    if "conversations" in data:
        return "sharegpt"
    if "instruction" in data or "output" in data:
        return "alpaca"
    hints = [(k, w) for w in ("instruction", "output", "conversations", "messages")
             if (k := _did_you_mean(data, w))]
    hint = "".join(f"; is '{k}' meant to be '{w}'?" for k, w in hints[:2])
    raise RowError("unknown_format", f"cannot tell the format from fields {sorted(data)[:8]} "
                   f"(expected instruction/output, conversations, or messages{hint})",
                   hints[0][0] if hints else None)


def _need_str(data: dict, key: str, required: bool = True) -> str:
    if key not in data:
        if required:
            k = _did_you_mean(data, key)
            hint = f" (is '{k}' meant to be '{key}'?)" if k else ""
            raise RowError("missing_field", f"missing field '{key}'{hint}", key)
        return ""
    v = data[key]
    if v is None:
        if required:
            raise RowError("bad_type", f"'{key}' is null, expected a string", key)
        return ""
    if not isinstance(v, str):
        raise RowError("bad_type", f"'{key}' must be a string, got {json_type(v)}", key)
    return v


def alpaca_messages(data: dict) -> list[dict]:
    instruction = _need_str(data, "instruction")
    inp = _need_str(data, "input", required=False)
    output = _need_str(data, "output")
    system = _need_str(data, "system", required=False)
    msgs = [{"role": "system", "content": system, "_src": ("system", None, None)}] if system.strip() else []
    history = data.get("history") or []
    if not isinstance(history, list):
        raise RowError("bad_type", "'history' must be a list of [user, assistant] pairs", "history")
    for i, pair in enumerate(history):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise RowError("bad_type", "each history item must be a [user, assistant] pair of strings",
                           f"history[{i}]")
        msgs += [{"role": "user", "content": pair[0], "_src": (f"history[{i}][0]", None, None)},
                 {"role": "assistant", "content": pair[1], "_src": (f"history[{i}][1]", None, None)}]
    # instruction and input, blank parts left out (a whitespace-only instruction adds nothing)
    prompt = "\n\n".join(x for x in (instruction, inp) if x.strip())
    if not prompt.strip():
        raise RowError("empty_content", "empty instruction (and input)", "instruction")
    if not output.strip():
        raise RowError("empty_content", "empty output", "output")
    return msgs + [{"role": "user", "content": prompt, "_src": ("instruction", None, None)},
                   {"role": "assistant", "content": output, "_src": ("output", None, None)}]


def sharegpt_messages(data: dict) -> list[dict]:
    if "conversations" not in data:
        raise RowError("missing_field", "missing field 'conversations'", "conversations")
    turns = data["conversations"]
    if not isinstance(turns, list):
        raise RowError("bad_type", f"'conversations' must be a list, got {json_type(turns)}", "conversations")
    msgs = []
    system = data.get("system")
    if isinstance(system, str) and system.strip():
        msgs.append({"role": "system", "content": system, "_src": ("system", None, None)})
    for i, t in enumerate(turns):
        if not isinstance(t, dict):
            raise RowError("bad_type", f"each turn must be an object, got {json_type(t)}", f"conversations[{i}]")
        role_key = "from" if "from" in t else "role"
        text_key = "value" if "value" in t else "content"
        who = t.get(role_key)
        if who is None:
            raise RowError("missing_field", "turn has no 'from' (or 'role')", f"conversations[{i}].from")
        if not isinstance(who, str):
            raise RowError("bad_type", f"role must be a string, got {json_type(who)}", f"conversations[{i}].{role_key}")
        if who not in SHAREGPT_ROLES:
            raise RowError("unknown_role", f"unknown role {who!r} (expected one of {', '.join(SHAREGPT_ROLES)})",
                           f"conversations[{i}].{role_key}")
        value = t.get(text_key)
        if not isinstance(value, str):
            raise RowError("bad_type", f"turn text must be a string, got {json_type(value)}",
                           f"conversations[{i}].{text_key}")
        msgs.append({"role": SHAREGPT_ROLES[who], "content": value,
                     "_src": (f"conversations[{i}]", role_key, text_key)})
    return msgs


def openai_messages(data: dict) -> list[dict]:
    if "messages" not in data:
        raise RowError("missing_field", "missing field 'messages'", "messages")
    turns = data["messages"]
    if not isinstance(turns, list):
        raise RowError("bad_type", f"'messages' must be a list, got {json_type(turns)}", "messages")
    msgs = []
    for i, t in enumerate(turns):
        if not isinstance(t, dict):
            raise RowError("bad_type", f"each message must be an object, got {json_type(t)}", f"messages[{i}]")
        for key in ("tool_calls", "function_call"):
            if t.get(key):
                raise RowError("unsupported_content", f"{key} are not supported (text-only SFT)",
                               f"messages[{i}].{key}")
        content = t.get("content")
        if isinstance(content, list):  # content parts
            texts = []
            for j, part in enumerate(content):
                if isinstance(part, dict) and part.get("type") not in (None, "text"):
                    raise RowError("unsupported_content", f"content part of type {part.get('type')!r} is not "
                                   f"supported (text only)", f"messages[{i}].content[{j}]")
                if not (isinstance(part, dict) and isinstance(part.get("text"), str)):
                    raise RowError("bad_type", "each content part must be {\"type\": \"text\", \"text\": <string>}",
                                   f"messages[{i}].content[{j}]")
                texts.append(part["text"])
            content = "".join(texts)
        msgs.append({"role": t.get("role"), "content": content, "_src": (f"messages[{i}]", "role", "content")})
    return msgs


CONVERTERS = {"alpaca": alpaca_messages, "sharegpt": sharegpt_messages, "openai": openai_messages}

_CANONICAL_FIELD = re.compile(r"^messages\[(\d+)\](?:\.(role|content))?(.*)$")


def _input_field(field: str | None, messages: list[dict]) -> str | None:
    """Map a canonical field (``messages[3].content``, ``meta.x``) to the input's own name for it."""
    if field and field.startswith("meta."):
        return field[len("meta."):]
    m = _CANONICAL_FIELD.match(field or "")
    if not m or int(m.group(1)) >= len(messages) or not isinstance(messages[int(m.group(1))], dict):
        return field
    src = messages[int(m.group(1))].get("_src")
    if not src:
        return field
    prefix, role_key, text_key = src
    key = {"role": role_key, "content": text_key}.get(m.group(2) or "")
    return prefix + (f".{key}" if key else "") + m.group(3)


def to_record(raw: RawRow, source: str, fmt: str = "auto", label_field: str | None = None,
              max_chars: int = 100_000, default_system: str | None = None) -> dict:
    """Convert one raw row to a canonical record (raises RowError)."""
    data = raw.data
    if not isinstance(data, dict):
        raise RowError("bad_type", f"record must be a JSON object, got {json_type(data)}")
    fmt = detect_format(data) if fmt == "auto" else fmt
    messages = CONVERTERS[fmt](data)
    if default_system and messages and messages[0].get("role") != "system":
        messages = [{"role": "system", "content": default_system,
                     "_src": ("collect.default_system", None, None)}] + messages
    size = sum(len(m["content"]) for m in messages if isinstance(m.get("content"), str))
    if size > max_chars:
        raise RowError("too_long", f"record has {size} characters, above collect.max_chars={max_chars}")
    label = _label(data, label_field)
    orig = data.get("id")
    if orig is not None and (isinstance(orig, bool) or not isinstance(orig, (str, int))):
        raise RowError("bad_type", f"'id' must be a string or integer, got {json_type(orig)}", "id")
    rid = f"{source}:{orig}" if orig not in (None, "") else f"{source}:#{raw.recno}"
    meta = {k: v for k, v in data.items()
            if k not in KNOWN_FIELDS and k != label_field and isinstance(v, (str, int, float, bool))}
    meta["format"] = fmt
    if raw.line is not None:
        meta["line"] = raw.line
    try:
        return make_record(rid, messages, source, label, meta)
    except RowError as e:
        e.field = _input_field(e.field, messages)
        raise


def _label(data: dict, label_field: str | None):
    if label_field:
        if label_field not in data:
            raise RowError("missing_field", f"missing label field '{label_field}'", label_field)
        v = data[label_field]
    else:
        v = data.get("label", data.get("category"))
    if v is not None and (isinstance(v, bool) or not isinstance(v, (str, int))):
        raise RowError("bad_type", f"label must be a string, got {json_type(v)}", label_field or "label")
    return v
