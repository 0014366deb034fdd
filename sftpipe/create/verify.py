"""Rule verifiers: is a reply to one of the sample's tasks correct? Computed from the prompt alone.

The sample's task families have checkable answers (sftpipe/sample/tasks.py), so a candidate reply
can be judged without a reference reply or a model:

* ``arithmetic``: the two numbers of the prompt and its verb (gets/buys/found vs gives/lost/took;
  得到/买/找到 vs 送给/丢了/拿走) give the result; the reply's first ``= N`` must state it;
* ``translation``: the phrase of the prompt is looked up in the sample's bilingual dictionary; the
  reply, without punctuation and case, must be its translation;
* ``sentiment``: the review's words of known polarity (all positive or all negative) give the label;
  the reply must be exactly that label (positive/negative, 正面/负面);
* ``reverse``: the listed words, reversed, must be the reply's words in order;
* ``capital``: the country's capital must be in the reply, and no other capital.

A reply to anything else (invitations, tool calls, a user's own rows), or to a prompt the rule
cannot read, gets ``ok = None``: unverifiable, not wrong. :func:`verify` returns the verdict with
the expected answer, the evidence a ledger keeps.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from ..sample import vocab as V
from ..schema import last_turn_split, prompt_text

_PUNCT = re.compile(r"[\s\.,!?;:\"'“”‘’。，！？；：、]+")
_MINUS_EN = re.compile(r"\b(gives?|lost|took)\b")
_MINUS_ZH = ("送给", "丢了", "拿走")


@dataclass(frozen=True)
class Verdict:
    ok: bool | None             # None: no rule applies, or the prompt could not be read
    rule: str                   # the rule applied (the task family), or why none was
    expected: str | None = None

    def evidence(self) -> dict:
        return {"ok": self.ok, "rule": self.rule, "expected": self.expected}


def _norm(text: str) -> str:
    return _PUNCT.sub(" ", text).strip().lower()


def _is_zh(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)


def arithmetic(prompt: str, reply: str) -> Verdict:
    nums = [int(n) for n in re.findall(r"\d+", prompt)]
    if len(nums) != 2:
        return Verdict(None, "arithmetic: not two numbers in the prompt")
    a, b = nums
    minus = any(w in prompt for w in _MINUS_ZH) if _is_zh(prompt) else bool(_MINUS_EN.search(prompt))
    c = a - b if minus else a + b
    m = re.search(r"=\s*(-?\d+)", reply)
    return Verdict(m is not None and int(m.group(1)) == c, "arithmetic", str(c))


@lru_cache(maxsize=1)
def _phrases() -> tuple[dict, dict]:
    en_zh = {f"{a} {n}": f"{az}{nz}" for a, az in V.ADJ for n, nz in V.NOUN}
    return en_zh, {zh: en for en, zh in en_zh.items()}


def translation(prompt: str, reply: str) -> Verdict:
    en_zh, zh_en = _phrases()
    if _is_zh(prompt) and not re.search(r"[A-Za-z]{2}", prompt):
        hits = [zh for zh in zh_en if zh in prompt]
        table = zh_en
    else:
        low = prompt.lower()
        hits = [en for en in en_zh if re.search(rf"\b{re.escape(en)}\b", low)]
        table = en_zh
    if not hits:
        return Verdict(None, "translation: no dictionary phrase in the prompt")
    phrase = max(hits, key=len)
    expected = table[phrase]
    return Verdict(_norm(reply).replace(" ", "") == _norm(expected).replace(" ", "")
                   if _is_zh(expected) else _norm(reply) == _norm(expected), "translation", expected)


def sentiment(prompt: str, reply: str) -> Verdict:
    zh = _is_zh(prompt)
    pos = sum(w in prompt for w in (V.POS_ZH if zh else V.POS_EN))
    neg = sum(w in prompt for w in (V.NEG_ZH if zh else V.NEG_EN))
    if (pos > 0) == (neg > 0):
        return Verdict(None, "sentiment: no clear polarity words in the review")
    expected = ("正面" if pos else "负面") if zh else ("positive" if pos else "negative")
    return Verdict(_norm(reply) == expected, "sentiment", expected)


def reverse(prompt: str, reply: str) -> Verdict:
    parts = re.split(r"[:：]", prompt, maxsplit=1)
    if len(parts) != 2:
        return Verdict(None, "reverse: no word list in the prompt")
    words = [w for w in re.split(r"[,\s、，]+", parts[1]) if w]
    if len(words) < 2:
        return Verdict(None, "reverse: no word list in the prompt")
    expected = list(reversed(words))
    got = [w for w in re.split(r"[,\s、，。.]+", reply) if w]
    return Verdict(got == expected, "reverse", " ".join(expected))


def capital(prompt: str, reply: str) -> Verdict:
    zh = _is_zh(prompt)
    for country, cap, country_zh, cap_zh in V.CAPITALS:
        if (country_zh in prompt) if zh else re.search(rf"\b{re.escape(country)}\b", prompt):
            expected = cap_zh if zh else cap
            others = [c for _, c_en, _, c_zh in V.CAPITALS for c in ((c_zh,) if zh else (c_en,))
                      if c != expected and c not in expected]
            ok = expected in reply and not any(o in reply for o in others)
            return Verdict(ok, "capital", expected)
    return Verdict(None, "capital: no known country in the prompt")


RULES = {"arithmetic": arithmetic, "translation": translation, "sentiment": sentiment,
         "reverse": reverse, "capital": capital}


def verify(rec: dict, reply: str) -> Verdict:
    """The verdict on ``reply`` as the answer to ``rec``'s last user turn, by ``rec``'s label."""
    rule = RULES.get(rec.get("label") or "")
    if rule is None:
        return Verdict(None, f"no rule for label {rec.get('label')!r}")
    history, _ = last_turn_split(rec) if rec["messages"][-1]["role"] == "assistant" else (rec["messages"], "")
    users = [m for m in history if m["role"] == "user"]
    prompt = users[-1]["content"] if users else prompt_text({"messages": history})
    return rule(prompt, reply)
