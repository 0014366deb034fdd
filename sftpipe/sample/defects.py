"""Known defects injected into the sample data, so each filter can be measured.

* exact duplicates: a byte-identical copy of a row under a new id
* near duplicates: a copy with normalization-level changes (case, spacing,
  punctuation, full-width forms) or, for long rows, a small edit near the end
* label flips: the category replaced by a different one
* garbage responses: random characters, keyboard mash, repeated tokens,
  boilerplate refusals/ads, and mojibake
"""

from __future__ import annotations

import random

GARBAGE_TYPES = ("random_chars", "keyboard_mash", "repeated_tokens", "boilerplate", "mojibake")

_BOILER_EN = ["As an AI language model, I cannot provide an answer to this question.",
              "I'm sorry, but I am unable to help with that request at this time.",
              "Click here to subscribe to our newsletter and never miss an update!",
              "This content is not available in your region. Please try again later.",
              "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod."]
_BOILER_ZH = ["作为一个人工智能语言模型，我无法回答这个问题。", "抱歉，我暂时无法提供这方面的帮助。",
              "点击这里关注我们的公众号，获取更多精彩内容！", "该内容在您所在的地区不可用，请稍后再试。",
              "本文转载自网络，如有侵权请联系删除。"]
_KEYS = ["qwertyuiop", "asdfghjkl", "zxcvbnm", "1234567890", "jkl;", "sdf", "hjk", "uiop"]


def garbage(rng: random.Random, kind: str, lang: str, response: str, zh_text: str) -> str:
    """A garbage response of the given kind. ``zh_text`` feeds the mojibake of English rows."""
    if kind == "random_chars":
        if lang == "zh":
            return "".join(chr(rng.randint(0x4E00, 0x9FA5)) for _ in range(rng.randint(12, 40)))
        alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789#@$%&*+=/\\|~^"
        words = ["".join(rng.choice(alphabet) for _ in range(rng.randint(2, 9))) for _ in range(rng.randint(5, 14))]
        return " ".join(words)
    if kind == "keyboard_mash":
        parts = []
        for _ in range(rng.randint(4, 10)):
            row = rng.choice(_KEYS)
            i = rng.randrange(len(row))
            parts.append((row[i:] + row[:i])[: rng.randint(3, len(row))] * rng.randint(1, 2))
        return " ".join(parts) if rng.random() < 0.5 else "".join(parts)
    if kind == "repeated_tokens":
        if lang == "zh":
            unit = rng.choice(["好", "的", "是的", "哈哈", response[:2] or "好"])
            return unit * rng.randint(15, 40)
        unit = rng.choice(["the", "yes", "ok", "and", (response.split() or ["the"])[0]])
        return " ".join([unit] * rng.randint(15, 40))
    if kind == "boilerplate":
        return rng.choice(_BOILER_ZH if lang == "zh" else _BOILER_EN)
    if kind == "mojibake":
        src = response if any(ord(c) > 127 for c in response) else zh_text
        data = src.encode("utf-8")
        if rng.random() < 0.5:
            return data.decode("latin-1")
        return data.decode("gbk", errors="replace")
    raise ValueError(kind)


_FULLWIDTH = {c: chr(ord(c) + 0xFEE0) for c in "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz!?,.:;"}


def near_duplicate(rng: random.Random, text: str, lang: str, long: bool) -> tuple[str, str]:
    """(perturbed text, edit kind). Normalization-level edits, or a small edit near the end of long rows."""
    kinds = ["case", "spacing", "punctuation", "fullwidth"] + (["tail_edit"] * 3 if long else [])
    kind = rng.choice(kinds)
    if kind == "case":
        out = text.upper() if lang == "en" and rng.random() < 0.3 else text.swapcase()
        if out == text:  # no letters to change case of (Chinese): fall back to spacing
            kind, out = "spacing", _spacing(rng, text)
        return out, kind
    if kind == "spacing":
        return _spacing(rng, text), kind
    if kind == "punctuation":
        out = text.translate(str.maketrans({".": "!", "?": "?!", "。": "！", "？": "?", "，": ",", ",": "，"}))
        if out == text:
            out = text + ("!" if lang == "en" else "！")
        return out, kind
    if kind == "fullwidth":
        out = "".join(_FULLWIDTH.get(c, c) for c in text)
        return (out if out != text else _spacing(rng, text)), kind
    # tail_edit: append or replace a few words at the very end
    if lang == "en":
        add = rng.choice([" Thanks a lot!", " See you soon.", " Cheers!", " Hope to see you there."])
    else:
        add = rng.choice(["谢谢！", "不见不散！", "盼复。", "祝好！"])
    return text + add, kind


def _spacing(rng: random.Random, text: str) -> str:
    if " " in text:
        words = text.split(" ")
        i = rng.randrange(len(words))
        words[i] = words[i] + " "
        return " ".join(words) + "  "
    return "  " + text + " \n"


def flip_label(rng: random.Random, label: str, categories: tuple[str, ...]) -> str:
    return rng.choice([c for c in categories if c != label])
