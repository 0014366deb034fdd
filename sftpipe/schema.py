"""The one record schema that flows through the pipeline.

A record is a plain dict::

    {"id": "alpaca_en:17",              # unique across the whole dataset
     "messages": [{"role": "system"|"user"|"assistant", "content": str}, ...],
     "source": "alpaca_en",             # the collect source it came from
     "label": "arithmetic" | None,      # optional category
     "meta": {"lang": "en", ...}}       # scalars added by loaders and stages

Loaders convert every input format into this once (see :mod:`sftpipe.collect`);
later stages only read and annotate ``meta``.
"""

from __future__ import annotations

import re
from typing import Any

from .errors import RowError

ROLES = ("system", "user", "assistant")

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
                meta: dict | None = None) -> dict:
    """Validate and build a canonical record (raises :class:`RowError`)."""
    msgs = validate_messages(messages)
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
    return {"id": rid, "messages": msgs, "source": source,
            "label": None if label is None or label == "" else str(label), "meta": meta}


def validate_messages(messages: Any) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise RowError("bad_messages", "messages must be a non-empty list", "messages")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise RowError("bad_messages", f"message must be an object, got {json_type(m)}",
                           f"messages[{i}]")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise RowError("unknown_role", f"unknown role {role!r} (expected one of {', '.join(ROLES)})",
                           f"messages[{i}].role")
        if not isinstance(content, str):
            raise RowError("bad_type", f"content must be a string, got {json_type(content)}",
                           f"messages[{i}].content")
        check_encodable(content, f"messages[{i}].content")
        if role == "system" and i != 0:
            raise RowError("bad_turn_order", "a system message may only come first", f"messages[{i}].role")
        out.append({"role": role, "content": content})
    convo = [m for m in out if m["role"] != "system"]
    if not convo:
        raise RowError("no_assistant", "conversation has no user/assistant turns", "messages")
    for i, m in enumerate(convo):
        expected = "user" if i % 2 == 0 else "assistant"
        if m["role"] != expected:
            raise RowError("bad_turn_order",
                           f"turns must alternate user/assistant starting with user; turn {i} is {m['role']}",
                           "messages")
    if convo[-1]["role"] != "assistant":
        raise RowError("no_assistant", "conversation never ends with an assistant turn", "messages")
    for i, m in enumerate(out):
        if m["role"] != "system" and not m["content"].strip():
            raise RowError("empty_content", f"empty {m['role']} message", f"messages[{i}].content")
    return out


def prompt_text(rec: dict) -> str:
    """System and user turns, joined by newlines."""
    return "\n".join(m["content"] for m in rec["messages"] if m["role"] != "assistant")


def response_text(rec: dict) -> str:
    """Assistant turns, joined by newlines."""
    return "\n".join(m["content"] for m in rec["messages"] if m["role"] == "assistant")


def full_text(rec: dict) -> str:
    return "\n".join(m["content"] for m in rec["messages"])


def text_of(rec: dict, field: str) -> str:
    """Text used by the filters: 'prompt', 'response' or 'all'."""
    return {"prompt": prompt_text, "response": response_text, "all": full_text}[field](rec)


def last_turn_split(rec: dict) -> tuple[list[dict], str]:
    """(messages before the last assistant turn, last assistant content)."""
    msgs = rec["messages"]
    return msgs[:-1], msgs[-1]["content"]
