"""Cheap rules that catch garbage replies a reference LM scores as ordinary text.

A perplexity filter flags text its reference LM finds surprising. Some garbage is not surprising:
a word repeated forty times is very predictable, mojibake of Chinese is a run of valid Han characters
(to a byte-level tokenizer, as predictable as any other), and a canned refusal is fluent. Measured on
a user's own rows (bench/reference_lm.py), a reference LM fitted on them caught random characters and
missed these. Each rule looks at the assistant replies only (a prompt may quote anything), is one line
of evidence in the ledger, and is off when its param is null/false/empty:

* ``repetitive``: at least ``repetition`` of the reply's unit 3-grams (units: words, and Han
  characters one by one, in any mix) repeat an earlier 3-gram, over ``min_units`` units or more (Gopher's
  duplicate n-gram rule, on units). "and and and ..." and "是的是的..." score ~0.95; prose, code and
  lists of similar lines stay far below (a share of word 3-grams does not fall with length the way a
  type-token ratio does).
* ``lossy_decoding``: U+FFFD, the character a decoder writes for bytes it could not decode: the text
  lost bytes somewhere upstream and cannot be repaired (the clean stage repairs what can be).
* ``rare_han``: more than ``rare_han`` of the reply's Han characters (``min_han`` or more) are rare:
  outside both common sets, GB2312 level 1 (the 3,755 most frequent simplified characters) and Big5's
  frequent set (5,401 traditional ones); a full-width Latin letter (ａ-ｚ, Ａ-Ｚ) directly beside a Han
  character counts as a rare one too (full-width English text alone is not Chinese, and passes). UTF-8 Chinese read as GBK pairs each character's lead byte (E4-E9) with a
  continuation byte, which gives a rare character 72% of the time (276 of the 384 such pairs) and
  full-width letters where a GBK row A3 forms; running Chinese text in either script is almost all
  common characters (the sample's 200 pretraining paragraphs: none flagged, all of their mojibake
  flagged, tests/test_text_rules.py).
* ``canned_phrase``: the reply contains one of ``phrases`` (case-insensitive): replies a chat model
  gives when it does not answer ("as an AI language model").
* ``repeated_reply``: the same last reply (``min_units`` units or more; case and spacing aside) answers at
  least ``repeated_reply`` different requests, none of which it has much to do with: at most
  ``reply_overlap`` of its distinct units occur in the request. A canned reply outside the phrase list
  ("Click here to subscribe ...") is fluent, so no LM finds it surprising, but it is the same text under
  unrelated requests; the same answer to paraphrases of one question ("蒙古的首都是乌兰巴托。" to three
  phrasings) shares its subject with each of them and stays. The one rule that reads across rows: the
  perplexity stage reads the replies in its scoring pass (:func:`reply_key`) and counts them (:func:`repeated_replies`)
  and applies it to rows no other rule or bound cut.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter, defaultdict
from functools import lru_cache

from .config import TextRulesParams

# the Han blocks (CJK Unified Ideographs, Extension A), once for _is_han and the unit regex
(_HAN_LO, _HAN_HI), (_EXT_A_LO, _EXT_A_HI) = _HAN_BLOCKS = (("\u4e00", "\u9fff"), ("\u3400", "\u4dbf"))
_HAN = "".join(f"{lo}-{hi}" for lo, hi in _HAN_BLOCKS)
_UNIT = re.compile(rf"[{_HAN}]|[^\W{_HAN}]+")


def _is_han(c: str) -> bool:
    return _HAN_LO <= c <= _HAN_HI or _EXT_A_LO <= c <= _EXT_A_HI


def _fullwidth_letter(c: str) -> bool:
    return "\uff21" <= c <= "\uff3a" or "\uff41" <= c <= "\uff5a"


def _beside_han(text: str, k: int) -> bool:
    return (k > 0 and _is_han(text[k - 1])) or (k + 1 < len(text) and _is_han(text[k + 1]))


@lru_cache(maxsize=65536)
def common_han(c: str) -> bool:
    """In GB2312 level 1 (lead bytes B0-D7) or Big5's frequent characters (lead bytes A4-C6)."""
    try:
        if 0xB0 <= c.encode("gb2312")[0] <= 0xD7:
            return True
    except UnicodeEncodeError:
        pass
    try:
        return 0xA4 <= c.encode("big5")[0] <= 0xC6
    except UnicodeEncodeError:
        return False


def units(text: str) -> list[str]:
    """Han characters one by one (Chinese has no spaces to split on) and every other run of letters and
    digits as a word, lowercased: one rule for Chinese, English and text that mixes them, so no share of
    Han characters decides how a reply is cut."""
    return _UNIT.findall(text.lower())


def replies(rec: dict) -> list[str]:
    return [m["content"] for m in rec.get("messages", [])
            if m.get("role") == "assistant" and isinstance(m.get("content"), str) and m["content"]]


def check_text(text: str, p: TextRulesParams) -> tuple[str, dict] | None:
    """The first rule ``text`` fails, with its evidence, or None."""
    if p.replacement_char and "\ufffd" in text:
        return "lossy_decoding", {"replacement_chars": text.count("\ufffd")}
    if p.rare_han is not None:
        han = [c for k, c in enumerate(text) if _is_han(c) or (_fullwidth_letter(c) and _beside_han(text, k))]
        if len(han) >= p.min_han:
            rare = sum(_fullwidth_letter(c) or not common_han(c) for c in han) / len(han)
            if rare > p.rare_han:
                return "rare_han", {"rare_share": round(rare, 3), "han": len(han)}
    if p.repetition is not None:
        u = units(text)
        if len(u) >= p.min_units:   # the schema keeps it >= 4: two 3-grams at least
            grams = list(zip(u, u[1:], u[2:]))
            counts = Counter(grams)
            share = 1 - len(counts) / len(grams)   # occurrences after each 3-gram's first
            if share >= p.repetition:
                top = counts.most_common(1)[0][0]
                return "repetitive", {"repeated_3gram_share": round(share, 3), "units": len(u),
                                      "most_common": " ".join(top)[:40]}
    if p.phrases:
        low = text.lower()
        for phrase in p.phrases:
            if phrase.lower() in low:
                return "canned_phrase", {"phrase": phrase}
    return None


def check_record(rec: dict, p: TextRulesParams) -> tuple[str, dict] | None:
    """The first rule any assistant reply of ``rec`` fails (evidence names the reply's index), or None."""
    for k, text in enumerate(replies(rec)):
        hit = check_text(text, p)
        if hit is not None:
            reason, ev = hit
            return reason, {**ev, "reply": k}
    return None


def reply_key(rec: dict, p: TextRulesParams) -> tuple[bytes, bytes] | None:
    """(digest of the last reply, case and spacing aside; digest of the request) when the ``repeated_reply``
    rule reads the row: a reply of ``min_units`` units or more sharing at most ``reply_overlap`` of its
    distinct units with the request (everything before it). None otherwise, or when the rule is off."""
    if not p.enabled or p.repeated_reply is None:
        return None
    msgs = rec.get("messages", [])
    last = max((k for k, m in enumerate(msgs) if m.get("role") == "assistant"), default=None)
    if last is None or not isinstance(msgs[last].get("content"), str):
        return None
    u = units(msgs[last]["content"])
    if len(u) < p.min_units:
        return None
    request = "\n".join(m["content"] for m in msgs[:last] if isinstance(m.get("content"), str))
    distinct = set(u)
    if len(distinct & set(units(request))) > p.reply_overlap * len(distinct):
        return None
    text = " ".join(msgs[last]["content"].lower().split())   # case and spacing aside, the same characters:
    # units alone would merge "Just like assertTrue(a <= b)" with "... (a >= b)"
    return (hashlib.blake2b(text.encode(), digest_size=16).digest(),
            hashlib.blake2b(request.encode(), digest_size=16).digest())


def repeated_replies(keys: list[tuple[bytes, bytes] | None], p: TextRulesParams) -> list[int | None]:
    """Per row (``keys`` from :func:`reply_key`): the number of different requests its reply answers, where
    that reaches ``repeated_reply``; else None."""
    if p.repeated_reply is None:
        return [None] * len(keys)
    requests: dict[bytes, set] = defaultdict(set)
    for k in keys:
        if k is not None:
            requests[k[0]].add(k[1])
    return [None if k is None or len(requests[k[0]]) < p.repeated_reply else len(requests[k[0]]) for k in keys]
