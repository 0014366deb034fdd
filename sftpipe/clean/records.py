"""The clean stage: every message's text repaired and its PII masked, rule by rule.

Rules run in a fixed order, each switched by its ``clean.*`` param:

1. ``mojibake``      ftfy decodes UTF-8 that was read as Latin-1/Windows-1252 back. First, because
                     such text is full of C1 controls and NBSPs the later rules would delete.
   ``mojibake_gbk``  UTF-8 that was read as GBK, decoded back by Python's codecs (off by default:
                     see params.yaml). After ftfy, which undoes a Latin-1 layer read over it.
2. ``newlines``      CRLF, CR, U+2028, U+2029 -> LF.
3. ``html``          known tags stripped, references unescaped, outside code (may yield NBSP,
                     zero-width or control characters, which the next rules handle).
4. ``control_chars`` C0/C1 controls and ANSI escapes removed (\\n and \\t kept).
5. ``zero_width``    zero-width characters removed (before normalization, which they would block).
6. ``unicode``       NFC or NFKC.
7. ``whitespace``    spaces, trailing spaces, blank lines, outside code fences; message stripped.
8. ``pii_*``         e-mail, CN ID, bank card, phone, IP masked, in that order.

A row whose user or assistant turn is empty afterwards is dropped as ``empty_after_clean`` (SFT
needs both sides of every exchange); a system message emptied by cleaning is left out of the
row. Every kept row that changed gets ``meta["clean"]``: the sorted names of the rules that
changed it. The output is a function of the input rows and the params only.

Reasoning (``reasoning_content``) and tool results are text and are cleaned like any message.
Tool-call arguments and tool schemas are structured data a function reads, and are left as
they are (a masked e-mail in a ``send_email`` call would break the call).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict

from ..config import CleanParams
from ..ledger import FilterResult, drop
from ..schema import detect_lang, full_text
from . import markup, pii, text as T

STAGE = "clean"
_DIGIT_OR_AT = re.compile(r"[0-9@]")


def rules(params: CleanParams) -> list[str]:
    """The names of the rules ``params`` switches on, in the order they run."""
    on = [name for name, flag in (("mojibake", params.mojibake), ("mojibake_gbk", params.mojibake_gbk),
                                  ("newlines", params.newlines),
                                  ("html", params.html), ("control_chars", params.control_chars),
                                  ("zero_width", params.zero_width), ("unicode", params.unicode != "none"),
                                  ("whitespace", params.whitespace)) if flag]
    return on + [f"pii_{k}" for k in pii.ORDER if k in params.pii]


def _run(rule: str, text: str, params: CleanParams) -> tuple[str, int]:
    if rule == "mojibake":
        return T.fix_mojibake(text)
    if rule == "mojibake_gbk":
        return T.fix_gbk_mojibake(text)
    if rule == "newlines":
        return T.fix_newlines(text)
    if rule == "html":
        return markup.strip_html(text)
    if rule == "control_chars":
        return T.remove_control_chars(text)
    if rule == "zero_width":
        return T.remove_zero_width(text)
    if rule == "unicode":
        return T.normalize_unicode(text, params.unicode)
    if rule == "whitespace":
        return T.normalize_whitespace(text, params.max_blank_lines)
    if not _DIGIT_OR_AT.search(text):     # every PII kind holds a digit or an "@"
        return text, 0
    return pii.mask_pii(text, rule.removeprefix("pii_"))


def _clean(text: str, params: CleanParams, trace: list | None = None) -> tuple[str, Counter]:
    fired: Counter = Counter()
    for rule in rules(params):
        new, n = _run(rule, text, params)
        if n and new != text:
            fired[rule] += n
            if trace is not None:
                trace.append((rule, text, new))
            text = new
    return text, fired


def clean_text(text: str, params: CleanParams | None = None) -> tuple[str, Counter]:
    """(cleaned text, Counter of rule -> edits). An edit is a character removed, a tag or
    reference, a PII match, a line break replaced; whole-text rules (mojibake, unicode,
    whitespace) count 1. Rules that changed nothing are absent."""
    return _clean(text, params or CleanParams())


# -------------------------------------------------------------------------------------- examples

_SNIPPET = 70


def _visible(s: str) -> str:
    """Invisible characters spelled out, so a snippet shows what was removed."""
    return "".join(c if c.isprintable() or c in "\n\t" else f"<U+{ord(c):04X}>" for c in s)


def snippets(before: str, after: str, context: int = 30) -> tuple[str, str]:
    """The stretch where ``before`` and ``after`` differ, with ``context`` characters around it,
    cut to about 2 * _SNIPPET characters and with invisible characters spelled out."""
    p = 0
    limit = min(len(before), len(after))
    while p < limit and before[p] == after[p]:
        p += 1
    s = 0
    while s < limit - p and before[-1 - s] == after[-1 - s]:
        s += 1
    lo = max(0, p - context)

    def cut(x: str) -> str:
        hi = min(len(x), len(x) - s + context)
        body = _visible(x[lo:hi])
        if len(body) > 2 * _SNIPPET:
            body = body[:_SNIPPET] + " … " + body[-_SNIPPET:]
        return ("…" if lo else "") + body + ("…" if hi < len(x) else "")

    return cut(before), cut(after)


# -------------------------------------------------------------------------------------------- rows

def _relang(rec: dict, new_msgs: list[dict]) -> str | None:
    """The new lang when the old one was the detected one (not given by the source) and the
    repaired text detects differently (mojibake of Chinese reads as Latin letters)."""
    old = rec.get("meta", {}).get("lang")
    if old is None or old != detect_lang(full_text(rec)):
        return None
    new = detect_lang(full_text({"messages": new_msgs}))
    return new if new != old else None


def clean_records(records: list[dict], clean_params: CleanParams) -> FilterResult:
    """Clean every message of every row; see the module docstring for the rules and the drops."""
    cleaner = Cleaner(clean_params)
    kept, dropped = cleaner.feed(records)
    return FilterResult(kept=kept, dropped=dropped, extra_metrics=cleaner.extra_metrics(), details=cleaner.details())


class Cleaner:
    """:func:`clean_records` a chunk of rows at a time: :meth:`feed` the rows in input order, in
    chunks of any size; :meth:`extra_metrics` and :meth:`details` are then those of
    ``clean_records`` over all of them (counts summed, the first ``clean.examples`` examples of
    each rule in row order). Nothing else depends on more than one row."""

    def __init__(self, clean_params: CleanParams):
        self.params = clean_params
        self.rows_by_rule: Counter = Counter()
        self.edits_by_rule: Counter = Counter()
        self.examples: dict[str, list] = defaultdict(list)
        self.rows_changed = self.system_removed = 0

    def feed(self, records) -> tuple[list[dict], list[dict]]:
        """(kept rows, ledger rows) of these records."""
        clean_params, examples, want = self.params, self.examples, self.params.examples
        kept: list[dict] = []
        dropped: list[dict] = []
        for rec in records:
            fired: Counter = Counter()
            new_msgs = []
            changed = False
            for i, m in enumerate(rec["messages"]):
                trace = [] if want else None
                new, c = _clean(m["content"], clean_params, trace)
                fired += c
                new_m = {**m, "content": new}
                if new != m["content"]:
                    changed = True
                if m.get("reasoning_content"):
                    r, c = _clean(m["reasoning_content"], clean_params, trace)
                    fired += c
                    if r != m["reasoning_content"]:
                        changed = True
                        if r.strip():
                            new_m["reasoning_content"] = r
                        else:
                            del new_m["reasoning_content"]
                new_msgs.append(new_m)
                for rule, before, after in trace or ():
                    if len(examples[rule]) < want:
                        b, a = snippets(before, after)
                        ex = {"id": rec["id"], "message": i, "after": a}
                        if not rule.startswith("pii_"):   # the masked value stays out of the data card
                            ex["before"] = b
                        examples[rule].append(ex)
            for rule in fired:
                self.rows_by_rule[rule] += 1
            self.edits_by_rule.update(fired)
            if changed:
                self.rows_changed += 1
            empty = [{"index": i, "role": m["role"]} for i, m in enumerate(new_msgs)
                     if m["role"] in ("user", "assistant") and not m["content"].strip() and not m.get("tool_calls")]
            if empty:
                dropped.append(drop(rec, STAGE, "empty_after_clean", empty_turns=empty,
                                    rules=dict(sorted(fired.items()))))
                continue
            if not changed:
                kept.append(rec)
                continue
            if new_msgs[0]["role"] == "system" and not new_msgs[0]["content"] and rec["messages"][0]["content"]:
                new_msgs = new_msgs[1:]
                self.system_removed += 1
            meta = {**rec.get("meta", {}), "clean": sorted(fired)}
            lang = _relang(rec, new_msgs)
            if lang:
                meta["lang"] = lang
            kept.append({**rec, "messages": new_msgs, "meta": meta})
        return kept, dropped

    def extra_metrics(self) -> dict:
        order = rules(self.params)
        return {"rows_changed": self.rows_changed,
                "rows_changed_by_rule": {r: self.rows_by_rule[r] for r in order if self.rows_by_rule[r]},
                "edits_by_rule": {r: self.edits_by_rule[r] for r in order if self.edits_by_rule[r]},
                "system_messages_removed": self.system_removed}

    def details(self) -> dict:
        order = rules(self.params)
        return {"rules": order, "examples": {r: self.examples[r] for r in order if self.examples.get(r)}}
