"""Known defects injected into the sample data, so each filter can be measured.

* exact duplicates: a byte-identical copy of a row under a new id
* near duplicates: a copy with normalization-level changes (case, spacing,
  punctuation, full-width forms) or, for long rows, a small edit near the end
* label flips: the category replaced by a different one
* garbage responses: random characters, keyboard mash, repeated tokens,
  boilerplate refusals/ads, and mojibake (irreparable)
* clean defects: the row's own response broken in a way the clean stage can repair
  (mojibake, zero-width and control characters, HTML, whitespace) or given a sentence with
  PII to mask; :func:`clean_defect` returns the broken text and the text `clean` should make
  of it
"""

from __future__ import annotations

import datetime
import html
import ipaddress
import random
import re

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
        # Garbage must stay garbage after the clean stage. UTF-8 read as Latin-1 is exactly what
        # ftfy repairs: an English row would come out of `clean` holding another row's fluent
        # Chinese text, a wrong answer the perplexity filter no longer flags. So both variants are
        # irreparable: UTF-8 read as GBK (ftfy knows no GBK; U+FFFD where bytes did not decode),
        # and that read once more as Latin-1 (ftfy undoes the outer layer only: GBK mojibake is
        # what is left). tests/test_clean.py checks that ftfy leaves both garbage.
        src = response if any(ord(c) > 127 for c in response) else zh_text
        gbk = src.encode("utf-8").decode("gbk", errors="replace")
        if rng.random() < 0.5:
            return gbk.encode("utf-8").decode("latin-1")
        return gbk
    raise ValueError(kind)


_FULLWIDTH = {c: chr(ord(c) + 0xFEE0) for c in "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz!?,.:;"}


def near_duplicate(rng: random.Random, text: str, lang: str, long: bool) -> tuple[str, str]:
    """(perturbed text, edit kind). Normalization-level edits, typos (3% of the characters: what
    word 5-grams miss), or a small edit near the end of long rows."""
    kinds = ["case", "spacing", "punctuation", "fullwidth", "typo", "typo"] + (["tail_edit"] * 3 if long else [])
    kind = rng.choice(kinds)
    if kind == "typo":
        from .dupbench import typo
        return typo(rng, text, 0.03), kind
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


# ------------------------------------------------------------------------------ clean defects

CLEAN_TYPES = ("mojibake", "zero_width", "control_chars", "html", "whitespace", "pii_email", "pii_phone",
               "pii_cn_mobile", "pii_ip", "pii_cn_id", "pii_bank_card")

_CP1252_UNDEFINED = {0x81, 0x8D, 0x8F, 0x90, 0x9D}
# Windows-1252 as browsers decode it: the five bytes it leaves undefined come through as C1 controls.
_CP1252 = [chr(b) if b in _CP1252_UNDEFINED or b < 0x80 else bytes([b]).decode("cp1252") for b in range(256)]
# Controls to sprinkle in: C0 but \t \n \r, DEL, and the C1 controls Windows-1252 leaves undefined
# (the others, \x80-\x9f, are repaired to the Windows-1252 character they stand for, not removed).
_CONTROLS = [chr(c) for c in [*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F, *_CP1252_UNDEFINED]]
_ZERO_WIDTH = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff"]
_EMAIL_DOMAINS = ["gmail.com", "163.com", "qq.com", "outlook.com", "example.org", "mail.example.cn", "yahoo.co.uk"]
_PHONE_FORMATS = ["+1 ### ### ####", "+1 (###) ###-####", "+44 20 #### ####", "+49 30 #### ####", "+81 3-####-####",
                  "+33 # ## ## ## ##", "+852 #### ####", "+61 2 #### ####", "+65 #### ####"]
_CN_MOBILE_FORMATS = ["1@# #### ####", "1@#########", "+86 1@#-####-####", "+861@#########", "1@#-####-####"]
_CN_COUNTIES = ["110101", "110105", "310104", "440106", "440305", "510107", "330106", "320102", "420102", "610113"]
_PII_SENTENCES = {
    "pii_email": (["You can reach me at {}.", "Send the details to {} if you have questions.", "My email is {}."],
                  ["如有问题请发邮件至{}。", "我的邮箱是{}。"]),
    "pii_phone": (["Call me at {} if anything changes.", "My phone number is {}."],
                  ["有事请打电话{}。", "联系电话：{}。"]),
    "pii_cn_mobile": (["My mobile number is {}.", "Text me at {}."], ["我的手机号是{}，欢迎联系。", "手机：{}。"]),
    "pii_ip": (["The server is at {}.", "Our office IP address is {}."], ["服务器地址是{}。", "我的IP是{}。"]),
    "pii_cn_id": (["ID number: {}.", "My resident ID is {}."], ["身份证号：{}。", "我的身份证号码是{}。"]),
    "pii_bank_card": (["Please transfer it to card {}.", "My card number is {}."], ["请转账到银行卡{}。", "卡号：{}。"]),
}
PII_PLACEHOLDER = {"pii_email": "<EMAIL>", "pii_phone": "<PHONE>", "pii_cn_mobile": "<PHONE>", "pii_ip": "<IP>",
                   "pii_cn_id": "<CN_ID>", "pii_bank_card": "<BANK_CARD>"}


def _digits(rng: random.Random, pattern: str) -> str:
    """'#' -> any digit, '@' -> 3-9."""
    return "".join(str(rng.randint(0, 9)) if c == "#" else str(rng.randint(3, 9)) if c == "@" else c
                   for c in pattern)


def cn_id_number(rng: random.Random) -> str:
    """A valid-looking resident ID: county code, birth date, sequence, GB 11643 check character."""
    born = datetime.date(1950, 1, 1) + datetime.timedelta(days=rng.randrange(20000))
    body = rng.choice(_CN_COUNTIES) + born.strftime("%Y%m%d") + f"{rng.randrange(1000):03d}"
    weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
    return body + "10X98765432"[sum(int(d) * w for d, w in zip(body, weights)) % 11]


def card_number(rng: random.Random) -> str:
    """A Luhn-valid card number: UnionPay (62, 16 or 19 digits), Visa (4, 16) or Mastercard (51-55, 16)."""
    prefix, length = rng.choice([("62", 16), ("62", 19), ("4", 16), (str(rng.randint(51, 55)), 16)])
    body = prefix + "".join(str(rng.randint(0, 9)) for _ in range(length - len(prefix) - 1))
    total = 0
    for i, d in enumerate(reversed(body)):   # the check digit will sit right of body: double from the right
        k = int(d) * (2 if i % 2 == 0 else 1)
        total += k - 9 if k > 9 else k
    number = body + str((10 - total % 10) % 10)
    if rng.random() < 0.3:
        number = " ".join(number[i:i + 4] for i in range(0, len(number), 4))
    return number


def public_ip(rng: random.Random) -> str:
    """A globally routable address (private, documentation, shared ranges are not masked, so not drawn)."""
    while True:
        if rng.random() < 0.2:
            ip = ipaddress.IPv6Address((rng.choice([0x2400, 0x2600, 0x2A00, 0x2804]) << 112) | rng.getrandbits(100))
        else:
            ip = ipaddress.IPv4Address(f"{rng.randint(11, 99)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}."
                                       f"{rng.randint(1, 254)}")
        if ip.is_global:
            return ip.compressed


def _pii_value(rng: random.Random, kind: str) -> str:
    if kind == "pii_email":
        user = rng.choice(["john", "anna", "li.wei", "zhang_san", "mike.w", "sara"]) + str(rng.randint(1, 99))
        return f"{user}@{rng.choice(_EMAIL_DOMAINS)}"
    if kind == "pii_phone":
        return _digits(rng, rng.choice(_PHONE_FORMATS))
    if kind == "pii_cn_mobile":
        return _digits(rng, rng.choice(_CN_MOBILE_FORMATS))
    if kind == "pii_ip":
        return public_ip(rng)
    if kind == "pii_cn_id":
        return cn_id_number(rng)
    if kind == "pii_bank_card":
        return card_number(rng)
    raise ValueError(kind)


def mojibake_of(text: str, how: str) -> str:
    """``text``'s UTF-8 bytes read as Latin-1, as Windows-1252, or as Windows-1252 twice over."""
    data = text.encode("utf-8")
    if how == "latin-1":
        return data.decode("latin-1")
    once = "".join(_CP1252[b] for b in data)
    if how == "cp1252":
        return once
    if how == "cp1252_twice":
        return "".join(_CP1252[b] for b in once.encode("utf-8"))
    raise ValueError(how)


def _insert(rng: random.Random, text: str, pieces: list[str]) -> str:
    for p in pieces:
        i = rng.randint(0, len(text))
        text = text[:i] + p + text[i:]
    return text


def _html(rng: random.Random, text: str) -> str:
    out = text
    if rng.random() < 0.5 and re.search(r"[&<>\"']", out):
        out = html.escape(out)
    if rng.random() < 0.5:   # a word (or a few characters of Chinese) in an inline tag
        spans = [m.span() for m in re.finditer(r"[A-Za-z]{3,}|[\u4e00-\u9fff]{2,4}", out)]
        if spans:
            a, b = rng.choice(spans)
            tag = rng.choice(["b", "em", "strong", "span"])
            out = f"{out[:a]}<{tag}>{out[a:b]}</{tag}>{out[b:]}"
    if " " in out and rng.random() < 0.4:
        i = rng.choice([m.start() for m in re.finditer(" ", out)])
        out = out[:i] + "&nbsp;" + out[i + 1:]
    if "\n\n" in out and rng.random() < 0.7:
        out = out.replace("\n\n", rng.choice(["<br><br>", "</p><p>", "</p>\n<p>"]))
    wrap = rng.choice(['<p>{}</p>', '<div class="answer">{}</div>', '<div><p>{}</p></div>',
                       '<span style="color:#333">{}</span>', '<!-- answer --><p>{}</p>'])
    return wrap.format(out)


def _whitespace(rng: random.Random, text: str) -> str:
    out = text
    edits = rng.sample(["trailing", "double", "crlf", "blank", "edges", "nbsp"], 3)
    for e in edits:
        if e == "trailing":
            out = re.sub(r"\r?\n", lambda m: rng.choice(["  ", "\t", " "]) + m.group(), out) + rng.choice(["  ", " \t"])
        elif e == "double" and " " in out:
            spaces = [m.start() for m in re.finditer(r"(?<=\S) (?=\S)", out)]
            for i in sorted(rng.sample(spaces, min(len(spaces), 2)), reverse=True):
                out = out[:i] + rng.choice(["  ", "\t", "   "]) + out[i + 1:]
        elif e == "crlf" and "\n" in out:
            out = out.replace("\n", "\r\n")
        elif e == "blank" and "\n\n" in out:
            out = out.replace("\n\n", "\n\n\n\n", 1)
        elif e == "edges":
            out = rng.choice(["  ", "\n", " \n "]) + out + rng.choice(["\n\n", "   ", " \r\n"])
        elif e == "nbsp" and " " in out:
            spaces = [m.start() for m in re.finditer(r"(?<=\S) (?=\S)", out)]
            i = rng.choice(spaces) if spaces else out.index(" ")
            out = out[:i] + rng.choice(["\u00a0", "\u2009", "\u202f"]) + out[i + 1:]
    return out if out != text else text + "  \r\n"


def clean_defect(rng: random.Random, kind: str, lang: str, response: str) -> tuple[str, str]:
    """(broken response, what the clean stage should make of it). ``mojibake`` needs a response
    with non-ASCII characters (ASCII reads the same in every encoding here)."""
    if kind == "mojibake":
        how = rng.choice(["latin-1", "cp1252", "cp1252_twice", "part"])
        if how == "part":      # one stretch broken, the rest intact (text pasted from two places)
            last = max(k for k, c in enumerate(response) if ord(c) > 127)
            i = rng.randint(0, last)
            return response[:i] + mojibake_of(response[i:], rng.choice(["latin-1", "cp1252"])), response
        return mojibake_of(response, how), response
    if kind == "zero_width":
        return _insert(rng, response, [rng.choice(_ZERO_WIDTH) for _ in range(rng.randint(1, 4))]), response
    if kind == "control_chars":
        if rng.random() < 0.3:    # a terminal colour around the answer
            return f"\x1b[{rng.choice(['1;31', '32', '0;36'])}m{response}\x1b[0m", response
        return _insert(rng, response, [rng.choice(_CONTROLS) for _ in range(rng.randint(1, 3))]), response
    if kind == "html":
        return _html(rng, response), response
    if kind == "whitespace":
        return _whitespace(rng, response), response
    if kind in _PII_SENTENCES:
        en, zh = _PII_SENTENCES[kind]
        template = rng.choice(zh if lang == "zh" else en)
        sep = "" if lang == "zh" else " "
        value = _pii_value(rng, kind)
        if rng.random() < 0.5:
            return response + sep + template.format(value), response + sep + template.format(PII_PLACEHOLDER[kind])
        return template.format(value) + sep + response, template.format(PII_PLACEHOLDER[kind]) + sep + response
    raise ValueError(kind)
