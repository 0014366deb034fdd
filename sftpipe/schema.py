"""The one record schema that flows through the pipeline.

A record is a plain dict::

    {"id": "alpaca_en:17",              # unique across the whole dataset
     "messages": [{"role": "system"|"user"|"assistant"|"tool", "content": str, ...}, ...],
     "source": "alpaca_en",             # the collect source it came from
     "label": "arithmetic" | None,      # optional category
     "meta": {"lang": "en", ...},       # scalars added by loaders and stages
     "tools": [...]}                    # only when the row declares tools (see below)

Tool use and reasoning (keys present only when used, so a plain chat row has none):

* ``tools``: function schemas ``{"name", "description", "parameters": <JSON schema>}``;
* an assistant message may carry ``tool_calls: [{"name", "arguments": {...}, "id"?}]``
  (arguments parsed, a JSON object) and ``reasoning_content`` (its thinking; a
  ``<think>...</think>`` block that opens the content is moved here);
* a ``tool`` message holds one tool's output, linked to its call by ``tool_call_id``
  and/or ``name``.

Turns: user -> assistant; an assistant with calls -> tool result(s) -> assistant;
the conversation ends with an assistant turn. A call must name a declared tool
and give its required arguments; a tool result must answer a call.

Loaders convert every input format into this once (see :mod:`sftpipe.collect`);
later stages only read and annotate ``meta``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .errors import RowError

ROLES = ("system", "user", "assistant", "tool")
_THINK = re.compile(r"^\s*<think>(.*?)</think>\s*", re.S)

_SURROGATE = re.compile(r"[\ud800-\udfff]")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af]")
_LETTER = re.compile(r"[^\W\d_]")


def json_type(value: Any) -> str:
    """The JSON name of a value's type, for messages a user can act on ('array', not 'list')."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "array", tuple: "array", dict: "object"}.get(type(value), type(value).__name__)


def check_encodable(text: str, field: str | None) -> None:
    """Raise a RowError for a lone UTF-16 surrogate (e.g. from a JSON escape like "\\ud83d").

    Python accepts such strings, but they cannot be written as UTF-8: left in, they
    would crash the output writer after the whole stage had run.
    """
    m = _SURROGATE.search(text)
    if m:
        raise RowError("invalid_unicode", f"lone surrogate U+{ord(m.group()):04X} at character {m.start()} "
                       f"(a broken \\u escape; not encodable as UTF-8)", field)


def cjk_ratio(text: str) -> float:
    """Share of letters that are CJK ideographs/kana/hangul (0 for text with no letters)."""
    letters = len(_LETTER.findall(text))
    return len(_CJK.findall(text)) / letters if letters else 0.0


CJK_RATIO = 0.3   # a text whose letters are at least this share CJK is Chinese (lang, char n-grams)


def detect_lang(text: str) -> str:
    """'zh' when CJK characters make up at least 30% of the letters, else 'en'."""
    return "zh" if cjk_ratio(text) >= CJK_RATIO else "en"


def make_record(rid: str, messages: list[dict], source: str, label: Any = None,
                meta: dict | None = None, tools: list | None = None) -> dict:
    """Validate and build a canonical record (raises :class:`RowError`)."""
    tools = validate_tools(tools)
    msgs = validate_messages(messages, tools)
    meta = dict(meta or {})
    check_encodable(rid, "id")
    if isinstance(label, str):
        check_encodable(label, "label")
    for k, v in meta.items():
        check_encodable(k, f"meta.{k}")
        if isinstance(v, str):
            check_encodable(v, f"meta.{k}")
    meta.setdefault("lang", detect_lang(full_text({"messages": msgs})))
    if label is not None and not isinstance(label, (str, int)):
        raise RowError("bad_label", f"label must be a string, got {json_type(label)}", "label")
    rec = {"id": rid, "messages": msgs, "source": source,
           "label": None if label is None or label == "" else str(label), "meta": meta}
    if tools:
        rec["tools"] = tools
    return rec


def parse_arguments(args: Any, field: str) -> dict:
    """Tool-call arguments as a JSON object: a dict as is, a string parsed as JSON."""
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except ValueError as e:
            raise RowError("bad_arguments", f"tool-call arguments are not valid JSON ({e})", field) from None
    if not isinstance(args, dict):
        raise RowError("bad_arguments", f"tool-call arguments must be a JSON object, got {json_type(args)}", field)
    return args


def validate_tools(tools: Any) -> list[dict] | None:
    """Function schemas ``{"name", "description"?, "parameters"?}``; OpenAI's
    ``{"type": "function", "function": {...}}`` wrapper is taken off."""
    if tools is None or tools == []:
        return None
    if not isinstance(tools, list):
        raise RowError("bad_tools", f"tools must be a list of function schemas, got {json_type(tools)}", "tools")
    out = []
    for i, t in enumerate(tools):
        if isinstance(t, dict) and isinstance(t.get("function"), dict):
            t = t["function"]
        if not isinstance(t, dict) or not isinstance(t.get("name"), str) or not t["name"].strip():
            raise RowError("bad_tools", "each tool must be an object with a string 'name'", f"tools[{i}]")
        params = t.get("parameters")
        if params is not None and not isinstance(params, dict):
            raise RowError("bad_tools", f"'parameters' must be a JSON schema object, got {json_type(params)}",
                           f"tools[{i}].parameters")
        req = (params or {}).get("required", [])
        if not isinstance(req, list) or not all(isinstance(r, str) for r in req):
            raise RowError("bad_tools", "'parameters.required' must be a list of argument names",
                           f"tools[{i}].parameters.required")
        out.append(t)
    names = [t["name"] for t in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise RowError("bad_tools", f"tool {dup[0]!r} is declared twice", "tools")
    return out


def _tool_calls(calls: Any, i: int, tools: list[dict] | None) -> list[dict]:
    if not isinstance(calls, list) or not calls:
        raise RowError("bad_tool_call", f"tool_calls must be a non-empty list, got {json_type(calls)}",
                       f"messages[{i}].tool_calls")
    schemas = {t["name"]: t for t in tools or ()}
    out = []
    for j, c in enumerate(calls):
        f = f"messages[{i}].tool_calls[{j}]"
        if not isinstance(c, dict) or not isinstance(c.get("name"), str) or not c["name"].strip():
            raise RowError("bad_tool_call", "a tool call must be an object with a string 'name'", f)
        name = c["name"]
        args = parse_arguments(c.get("arguments", {}), f + ".arguments")
        if name not in schemas:
            have = f"declared: {', '.join(sorted(schemas))}" if schemas else "the row declares no tools"
            raise RowError("undeclared_tool", f"call to {name!r}, a function the row's tools do not declare "
                           f"({have})", f + ".name")
        required = (schemas[name].get("parameters") or {}).get("required", [])
        missing = [r for r in required if r not in args]
        if missing:
            raise RowError("missing_argument", f"call to {name!r} lacks required argument(s) {missing}",
                           f + ".arguments")
        call = {"name": name, "arguments": args}
        if c.get("id") not in (None, ""):
            if not isinstance(c["id"], str):
                raise RowError("bad_tool_call", f"a tool call id must be a string, got {json_type(c['id'])}",
                               f + ".id")
            call["id"] = c["id"]
        out.append(call)
    return out


def _canonical_message(m: Any, i: int, tools: list[dict] | None) -> dict:
    if not isinstance(m, dict):
        raise RowError("bad_messages", f"message must be an object, got {json_type(m)}", f"messages[{i}]")
    role, content = m.get("role"), m.get("content")
    if role not in ROLES:
        raise RowError("unknown_role", f"unknown role {role!r} (expected one of {', '.join(ROLES)})",
                       f"messages[{i}].role")
    calls = m.get("tool_calls") if role == "assistant" else None
    if content is None and calls:
        content = ""
    if not isinstance(content, str):
        raise RowError("bad_type", f"content must be a string, got {json_type(content)}", f"messages[{i}].content")
    check_encodable(content, f"messages[{i}].content")
    out = {"role": role, "content": content}
    if role == "assistant":
        reasoning = m.get("reasoning_content")
        if reasoning is None:
            think = _THINK.match(content)
            if think:
                reasoning, out["content"] = think.group(1).strip(), content[think.end():]
        elif not isinstance(reasoning, str):
            raise RowError("bad_type", f"reasoning_content must be a string, got {json_type(reasoning)}",
                           f"messages[{i}].reasoning_content")
        if reasoning and reasoning.strip():
            check_encodable(reasoning, f"messages[{i}].reasoning_content")
            out["reasoning_content"] = reasoning
        if calls is not None:
            out["tool_calls"] = _tool_calls(calls, i, tools)
    elif role == "tool":
        for key in ("tool_call_id", "name"):
            v = m.get(key)
            if v not in (None, ""):
                if not isinstance(v, str):
                    raise RowError("bad_type", f"{key} must be a string, got {json_type(v)}", f"messages[{i}].{key}")
                out[key] = v
    return out


def validate_messages(messages: Any, tools: list[dict] | None = None) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise RowError("bad_messages", "messages must be a non-empty list", "messages")
    out = [_canonical_message(m, i, tools) for i, m in enumerate(messages)]
    for i, m in enumerate(out):
        if m["role"] == "system" and i != 0:
            raise RowError("bad_turn_order", "a system message may only come first", f"messages[{i}].role")
    if not any(m["role"] != "system" for m in out):
        raise RowError("no_assistant", "conversation has no user/assistant turns", "messages")
    _check_turns(out)
    for i, m in enumerate(out):
        if m["role"] in ("user", "assistant") and not m["content"].strip() and not m.get("tool_calls"):
            raise RowError("empty_content", f"empty {m['role']} message", f"messages[{i}].content")
    return out


def _check_turns(msgs: list[dict]) -> None:
    """user -> assistant -> (user | tool results -> assistant) ..., ending with an assistant."""
    prev = None            # role of the previous non-system turn; "call" for an assistant with tool_calls
    pending: list[dict] = []   # calls not yet answered by a tool message
    turn = 0
    for i, m in enumerate(msgs):
        role = m["role"]
        if role == "system":
            continue
        if role == "tool":
            if prev not in ("call", "tool") or not pending:
                raise RowError("orphan_tool_result", "a tool message with no tool call before it to answer",
                               f"messages[{i}]")
            j = _answered_call(m, pending)
            if j is None:
                raise RowError("orphan_tool_result", f"tool message ({_link(m)}) answers none of the pending calls "
                               f"({', '.join(_link(c) for c in pending)})", f"messages[{i}]")
            pending.pop(j)
            prev = "tool"
        elif role == "user":
            if prev in ("call", "tool"):
                raise RowError("bad_turn_order", f"turn {turn} is user, but " + (
                    "the tool call before it has no tool result" if prev == "call" else
                    "tool results are followed by the assistant's turn"), "messages")
            if prev == "user":
                raise RowError("bad_turn_order", "turns must alternate user/assistant starting with user; "
                               f"turn {turn} is user", "messages")
            prev = "user"
        else:  # assistant
            if prev not in ("user", "tool"):
                raise RowError("bad_turn_order", "turns must alternate user/assistant starting with user; "
                               f"turn {turn} is assistant", "messages")
            prev = "call" if m.get("tool_calls") else "assistant"
            pending = list(m.get("tool_calls", ()))
        turn += 1
    if prev in ("user", "tool"):
        raise RowError("no_assistant", "conversation never ends with an assistant turn", "messages")
    if prev is None:
        raise RowError("bad_turn_order", "turns must alternate user/assistant starting with user", "messages")


def _link(m: dict) -> str:
    return " ".join(f"{k}={m[k]!r}" for k in ("id", "tool_call_id", "name") if m.get(k)) or "unnamed"


def _answered_call(tool_msg: dict, pending: list[dict]) -> int | None:
    """Index of the pending call a tool message answers: by id, else by name, else the next one."""
    tid, name = tool_msg.get("tool_call_id"), tool_msg.get("name")
    if tid:
        hit = [j for j, c in enumerate(pending) if c.get("id") == tid]
        if hit:
            return hit[0]
        if any(c.get("id") for c in pending):
            return None
    if name:
        hit = [j for j, c in enumerate(pending) if c["name"] == name]
        return hit[0] if hit else None
    return 0


def message_text(m: dict) -> str:
    """What the filters read of one message: its reasoning, its text and its tool calls as
    ``name {json arguments}``; just the content for a plain message."""
    calls = m.get("tool_calls")
    reasoning = m.get("reasoning_content")
    if not calls and not reasoning:
        return m["content"]
    parts = [reasoning] if reasoning else []
    if m["content"]:
        parts.append(m["content"])
    parts += [f"{c['name']} {json.dumps(c['arguments'], ensure_ascii=False, sort_keys=True)}" for c in calls or ()]
    return "\n".join(parts)


def prompt_text(rec: dict) -> str:
    """System, user and tool-result turns, joined by newlines."""
    return "\n".join(m["content"] for m in rec["messages"] if m["role"] != "assistant")


def response_text(rec: dict) -> str:
    """Assistant turns (reasoning, text and tool calls), joined by newlines."""
    return "\n".join(message_text(m) for m in rec["messages"] if m["role"] == "assistant")


def full_text(rec: dict) -> str:
    return "\n".join(message_text(m) for m in rec["messages"])


def text_of(rec: dict, field: str) -> str:
    """Text used by the filters: 'prompt', 'response' or 'all'."""
    return {"prompt": prompt_text, "response": response_text, "all": full_text}[field](rec)


def last_turn_split(rec: dict) -> tuple[list[dict], str]:
    """(messages before the last assistant turn, the last assistant turn's text)."""
    msgs = rec["messages"]
    return msgs[:-1], message_text(msgs[-1])
