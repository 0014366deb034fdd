"""Record formats to canonical messages: alpaca, ShareGPT and OpenAI, detected per record.

* alpaca:   ``instruction``, optional ``input``, ``output``, optional ``system``
            and ``history`` (a list of ``[user, assistant]`` pairs)
* sharegpt: ``conversations: [{"from": "human"|"gpt"|"system", "value": ...}]``; tool use as
            LLaMA-Factory writes it: ``function_call`` turns whose value is the call's JSON
            (``{"name", "arguments"}``, or a list of them for parallel calls), ``observation``
            turns holding the tool's output, and a ``tools`` field (a list, or that list as a
            JSON string)
* openai:   ``messages: [{"role": ..., "content": str | [{"type": "text", "text": ...}]}]``;
            assistant ``tool_calls`` (``{"id", "type": "function", "function": {"name",
            "arguments": <JSON string>}}``) or a legacy ``function_call``, ``tool`` (or legacy
            ``function``) messages, and ``tools`` (or legacy ``functions``)

Reasoning comes from a turn's ``reasoning_content`` (or ``reasoning``) field or from a
``<think>...</think>`` block that opens an assistant turn; the schema keeps it in one
field, ``reasoning_content``.

:func:`to_record` converts one :class:`~sftpipe.collect.readers.RawRow` into the
canonical schema or raises :class:`RowError` naming the input's own field.
"""

from __future__ import annotations

import difflib
import json
import re
from typing import TYPE_CHECKING

from ..errors import RowError
from ..schema import json_type, make_record, parse_arguments

if TYPE_CHECKING:
    from .readers import RawRow

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "bot": "assistant", "model": "assistant", "chatgpt": "assistant", "system": "system",
                  "function_call": "assistant", "observation": "tool", "tool": "tool", "function": "tool"}
KNOWN_FIELDS = {"id", "instruction", "input", "output", "system", "history", "conversations", "messages",
                "label", "category", "tools", "functions"}

# Converters tag each message with "_src": (input field, its role key, its content key),
# so a problem the schema finds in canonical ``messages[i]`` is reported at the
# field of the input that holds it (``conversations[2].value``, ``output``...).
# make_record copies only the schema's keys, so the tag never reaches the output.

FIELD_ALIASES = {"instruction": ("prompt", "question", "query", "instructions"),
                 "output": ("response", "answer", "completion", "target", "outputs", "reply"),
                 "conversations": ("conversation", "dialog", "dialogue", "turns"),
                 "messages": ("message", "chat")}


def did_you_mean(keys, wanted: str) -> str | None:
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
    if isinstance(data.get("text"), str):
        raise RowError("pretraining_text", "a plain 'text' row has no prompt/response pair; SFT needs "
                       "instruction/output, conversations or messages (plain text belongs in a pretraining "
                       "corpus)", "text")
    hints = [(k, w) for w in ("instruction", "output", "conversations", "messages")
             if (k := did_you_mean(data, w))]
    hint = "".join(f"; is '{k}' meant to be '{w}'?" for k, w in hints[:2])
    raise RowError("unknown_format", f"cannot tell the format from fields {sorted(data)[:8]} "
                   f"(expected instruction/output, conversations, or messages{hint})",
                   hints[0][0] if hints else None)


def _need_str(data: dict, key: str, required: bool = True) -> str:
    if key not in data:
        if required:
            k = did_you_mean(data, key)
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
        src = (f"conversations[{i}]", role_key, text_key)
        if who == "function_call":
            calls = _sharegpt_calls(value, f"conversations[{i}].{text_key}")
            prev = msgs[-1] if msgs else None
            if prev and prev["role"] == "assistant" and "tool_calls" not in prev:
                prev["tool_calls"] = calls    # "gpt" text then its call: one assistant turn
                continue
            msgs.append({"role": "assistant", "content": "", "tool_calls": calls, "_src": src})
            continue
        msg = {"role": SHAREGPT_ROLES[who], "content": value, "_src": src}
        _take_reasoning(t, msg, f"conversations[{i}]")
        msgs.append(msg)
    _link_results(msgs)
    return msgs


def _sharegpt_calls(value: str, field: str) -> list[dict]:
    """A function_call turn's value: ``{"name", "arguments"}`` or a list of them, as JSON."""
    try:
        data = json.loads(value)
    except ValueError as e:
        raise RowError("bad_tool_call", f"function_call value is not valid JSON ({e})", field) from None
    calls = data if isinstance(data, list) else [data]
    if not calls or not all(isinstance(c, dict) for c in calls):
        raise RowError("bad_tool_call", 'function_call value must be {"name": ..., "arguments": {...}} '
                       "or a list of them", field)
    return [_call(c, field) for c in calls]


def _call(c: dict, field: str) -> dict:
    """One call from any of the common spellings, arguments parsed (raises RowError)."""
    fn = c.get("function") if isinstance(c.get("function"), dict) else c
    name = fn.get("name")
    if not isinstance(name, str) or not name.strip():
        raise RowError("bad_tool_call", "a tool call has no function name", field)
    args = fn.get("arguments", fn.get("parameters", {}))
    out = {"name": name, "arguments": parse_arguments(args, field)}
    if c.get("id") not in (None, ""):
        out["id"] = c["id"]
    return out


def _take_reasoning(turn: dict, msg: dict, field: str) -> None:
    for key in ("reasoning_content", "reasoning", "thinking"):
        v = turn.get(key)
        if v is None:
            continue
        if not isinstance(v, str):
            raise RowError("bad_type", f"'{key}' must be a string, got {json_type(v)}", f"{field}.{key}")
        msg["reasoning_content"] = v
        return


def _link_results(msgs: list[dict]) -> None:
    """Name each tool result after its call when the calls before it are answered in order
    and the result does not say which call it answers."""
    calls: list[dict] = []
    k = 0
    for m in msgs:
        if m["role"] == "assistant":
            calls, k = list(m.get("tool_calls") or ()), 0
        elif m["role"] == "tool":
            if k < len(calls) and not m.get("name") and not m.get("tool_call_id"):
                c = calls[k]
                if c.get("id"):
                    m["tool_call_id"] = c["id"]
                m["name"] = c["name"]
            k += 1


def _tools(data: dict) -> list | None:
    """The row's ``tools`` (or legacy ``functions``), parsed when stored as a JSON string."""
    key = "tools" if "tools" in data else "functions"
    tools = data.get(key)
    if isinstance(tools, str):
        if not tools.strip():
            return None
        try:
            tools = json.loads(tools)
        except ValueError as e:
            raise RowError("bad_tools", f"'{key}' is a string but not valid JSON ({e})", key) from None
    if tools is not None and not isinstance(tools, list):
        raise RowError("bad_tools", f"'{key}' must be a list of function schemas, got {json_type(tools)}", key)
    return tools


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
        role = t.get("role")
        if role == "function":              # the legacy name of a tool result
            role = "tool"
        if role == "tool" and isinstance(content, (dict, list)):
            content = json.dumps(content, ensure_ascii=False)   # a structured tool output, as JSON text
        msg = {"role": role, "content": content, "_src": (f"messages[{i}]", "role", "content")}
        calls = t.get("tool_calls")
        if not calls and isinstance(t.get("function_call"), dict):
            calls = [t["function_call"]]
        if calls:
            if not isinstance(calls, list):
                raise RowError("bad_tool_call", f"tool_calls must be a list, got {json_type(calls)}",
                               f"messages[{i}].tool_calls")
            msg["tool_calls"] = []
            for j, c in enumerate(calls):
                if not isinstance(c, dict):
                    raise RowError("bad_tool_call", f"a tool call must be an object, got {json_type(c)}",
                                   f"messages[{i}].tool_calls[{j}]")
                msg["tool_calls"].append(_call(c, f"messages[{i}].tool_calls[{j}].function.arguments"))
        for key in ("tool_call_id", "name"):
            if role == "tool" and t.get(key) not in (None, ""):
                msg[key] = t[key]
        _take_reasoning(t, msg, f"messages[{i}]")
        msgs.append(msg)
    _link_results(msgs)
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
    tools = _tools(data)
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
        return make_record(rid, messages, source, label, meta, tools)
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
