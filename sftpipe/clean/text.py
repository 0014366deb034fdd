"""Character-level repairs: mojibake, line breaks, control and zero-width characters, Unicode
normalization, whitespace. Each function takes a string and returns ``(new_text, edits)``, where
``edits`` counts what it changed (characters removed, breaks replaced) or is 1 for whole-text
rewrites (mojibake, normalization, whitespace); 0 means the text came back unchanged.

Code fences (```` ``` ```` or ``~~~`` blocks) are found by :func:`split_fences`; the whitespace rule
and the HTML rule (:mod:`sftpipe.clean.markup`) leave them byte for byte as they are.
"""

from __future__ import annotations

import re
import unicodedata

import ftfy

# ---------------------------------------------------------------------------------------- code fences

_FENCE_OPEN = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")


def _lines(text: str) -> list[str]:
    """Lines with their "\\n" (only "\\n" ends a line here; str.splitlines would also cut at \\x0b,
    \\x1c, U+2028...)."""
    lines = [line + "\n" for line in text.split("\n")]
    lines[-1] = lines[-1][:-1]
    return lines if lines[-1] else lines[:-1]


def split_fences(text: str) -> list[tuple[bool, str]]:
    """Cut ``text`` into (is_code, piece) parts whose concatenation is ``text``.

    A fence opens on a line starting (after at most three spaces) with three or more backticks or
    tildes (a backtick fence's info string holds no backtick) and closes on a line holding only the
    same character, at least as many times. An unclosed fence runs to the end of the text, as in
    CommonMark. The fence lines belong to the code part.
    """
    if "```" not in text and "~~~" not in text:
        return [(False, text)]
    parts: list[tuple[bool, str]] = []
    prose: list[str] = []
    code: list[str] = []
    closer: re.Pattern | None = None
    for line in _lines(text):
        if closer is None:
            m = _FENCE_OPEN.match(line.rstrip("\n"))
            if m and not (m.group(1)[0] == "`" and "`" in m.group(2)):
                if prose:
                    parts.append((False, "".join(prose)))
                    prose = []
                code = [line]
                closer = re.compile(rf"^ {{0,3}}{re.escape(m.group(1)[0])}{{{len(m.group(1))},}}[ \t\r]*$")
            else:
                prose.append(line)
        else:
            code.append(line)
            if closer.match(line.rstrip("\n")):
                parts.append((True, "".join(code)))
                code, closer = [], None
    if closer is not None:
        parts.append((True, "".join(code)))
    if prose:
        parts.append((False, "".join(prose)))
    return [p for p in parts if p[1]]


def map_prose(text: str, fn) -> tuple[str, int]:
    """Apply ``fn(piece) -> (new_piece, edits)`` to the parts of ``text`` outside code fences."""
    parts = split_fences(text)
    out, edits = [], 0
    for is_code, piece in parts:
        if is_code:
            out.append(piece)
        else:
            new, n = fn(piece)
            out.append(new)
            edits += n
    return "".join(out), edits


# ------------------------------------------------------------------------------------------- mojibake

# What ftfy may do here, and what it may not. Only the encoding repair is wanted from it: every other
# fixer either belongs to a rule of our own (so that it can be switched and counted on its own) or
# changes text that is not broken.
#   fix_encoding (+ restore_byte_a0, replace_lossy_sequences, decode_inconsistent_utf8): on, the point.
#   fix_c1_controls: on. A C1 control left over from Windows-1252 text read as Latin-1 ("don\x92t")
#     becomes the character it stood for ("don’t") instead of being deleted by the control rule.
#   unescape_html: off; the html rule does it (switchable, and never inside code).
#   remove_terminal_escapes, remove_control_chars: off; the control_chars rule does it.
#   fix_line_breaks: off; the newlines rule does it.
#   normalization: None; the unicode rule does it (NFC or NFKC, by param).
#   uncurl_quotes: off. Curly quotes are correct typography, and “” ‘’ are the standard quotation
#     marks of Chinese text; straightening them would change clean rows.
#   fix_character_width: off. Full-width Latin letters and digits are common in Chinese text and are
#     what unicode: NFKC is for; a mojibake repair should not fold them.
#   fix_latin_ligatures: off, likewise (NFKC splits ligatures).
#   fix_surrogates: off; collect rejects lone surrogates already.
# Measured with this config (bench/clean_quality.py, the non-ASCII responses of a 2 x 20000-row
# sample, 12665 texts; share repaired exactly):
#   UTF-8 read as Latin-1                                   1.000
#   UTF-8 read as Windows-1252 (undefined bytes as C1)      0.998  (left alone: two-character texts
#   UTF-8 read as Windows-1252 twice                        0.998   such as "æ—§é±¼" = 旧鱼, too little
#                                                                   evidence for ftfy's heuristics)
#   UTF-8 read as Windows-1252, undefined bytes -> U+FFFD   0.158  (the rest repaired around the
#                                                                   lost bytes, "�" left in)
#   UTF-8 read as GBK / Big5 / Shift-JIS                    0.000  (left unchanged: "鏅哄埄" stays)
#   GBK bytes read as Latin-1                               0.000  (37% changed into other wrong
#                                                                   text: ftfy only knows UTF-8)
# A short mojibake tail after correct text ("快速的衬è¡«") is also left alone now and then
# (4 of 289 injected mixed/short rows in that run).
FTFY_CONFIG = ftfy.TextFixerConfig(
    unescape_html=False, remove_terminal_escapes=False, fix_encoding=True, restore_byte_a0=True,
    replace_lossy_sequences=True, decode_inconsistent_utf8=True, fix_c1_controls=True,
    fix_latin_ligatures=False, fix_character_width=False, uncurl_quotes=False, fix_line_breaks=False,
    fix_surrogates=False, remove_control_chars=False, normalization=None, explain=False)


def fix_mojibake(text: str) -> tuple[str, int]:
    """UTF-8 that was decoded as Latin-1 or Windows-1252 (once or more), decoded back by ftfy."""
    if text.isascii():      # nothing a wrong 8-bit decoding could have produced
        return text, 0
    new = ftfy.fix_text(text, FTFY_CONFIG)
    return new, int(new != text)


# UTF-8 read as GBK (ftfy knows no Chinese codecs): "浣犲ソ" is 你好. Python's own codecs undo it: the
# garbled text encoded as GBK gives back the UTF-8 bytes, which must then decode as UTF-8 without an
# error. Text that really is Chinese almost never passes that (its GBK bytes are not UTF-8), and a
# repair must also read as Chinese: every non-ASCII character of the result a CJK ideograph, CJK or
# full-width punctuation, or general punctuation, and the run of at least _GBK_MIN_RUN characters (a
# garbled CJK character is 1.5 GBK characters, so short runs carry too little evidence). Tried on the
# whole text first, then on each run of non-ASCII characters (the text may mix it with correct text
# or characters GBK cannot encode). Bytes lost when the text was read (U+FFFD in it) cannot be
# restored: such a run is left alone.
_GBK_MIN_RUN = 3
_NON_ASCII_RUN = re.compile(r"[^\x00-\x7f]+")
_CHINESE_OK = re.compile(r"[\x00-\x7f\u2000-\u206f\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef]*")


def _from_gbk(run: str) -> str | None:
    """``run`` decoded back when it is UTF-8 that was read as GBK and comes out as Chinese, else None."""
    try:
        back = run.encode("gbk").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return None
    if back == run or not _CHINESE_OK.fullmatch(back) or back.isascii():
        return None
    return back


def fix_gbk_mojibake(text: str) -> tuple[str, int]:
    """UTF-8 that was decoded as GBK, decoded back (runs of at least ``_GBK_MIN_RUN`` non-ASCII
    characters; see above). Returns (text, runs repaired)."""
    if text.isascii():
        return text, 0
    fixed = 0

    def one(m: re.Match) -> str:
        nonlocal fixed
        run = m.group(0)
        back = _from_gbk(run) if len(run) >= _GBK_MIN_RUN else None
        if back is None:
            return run
        fixed += 1
        return back
    if sum(map(len, _NON_ASCII_RUN.findall(text))) >= _GBK_MIN_RUN:
        whole = _from_gbk(text)
        if whole is not None:
            return whole, 1
    new = _NON_ASCII_RUN.sub(one, text)
    return new, fixed


# ------------------------------------------------------------------------------------------- newlines

_BREAKS = re.compile("\r\n|\r|\u2028|\u2029")


def fix_newlines(text: str) -> tuple[str, int]:
    """``\\r\\n``, a lone ``\\r``, LINE SEPARATOR and PARAGRAPH SEPARATOR become ``\\n``."""
    return _BREAKS.subn("\n", text)


# ---------------------------------------------------------------------------------- control characters

# CSI sequences (colours, cursor moves): ESC [ parameters intermediates final-byte, removed whole so
# that no "[31m" is left behind. A lone ESC is removed like any other control (not with the
# character after it: "\x1bA" may be a two-character escape, or a stray ESC before a word).
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")
# Cc without \t \n and \r (\r is the newlines rule's): C0, DEL, C1.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def remove_control_chars(text: str) -> tuple[str, int]:
    if text.isascii() and text.isprintable():
        return text, 0
    text, n = _ANSI.subn("", text)
    text, m = _CONTROL.subn("", text)
    return text, n + m


# --------------------------------------------------------------------------------- zero-width characters

_ZERO_WIDTH = re.compile("[\u200b\u200c\u200d\u2060\ufeff]")
_ZWJ, _ZWNJ = "\u200d", "\u200c"
# Scripts in which ZWJ/ZWNJ change how letters join (Persian and Urdu words, Indic conjuncts):
# there they are part of the spelling.
_JOINING = ((0x0600, 0x08FF), (0x0900, 0x0DFF), (0x1000, 0x109F), (0x1780, 0x18AF), (0xA8E0, 0xA8FF),
            (0xFB50, 0xFDFF), (0xFE70, 0xFEFE))
_EMOJI_MODIFIERS = {"\ufe0f", "\ufe0e"} | {chr(c) for c in range(0x1F3FB, 0x1F400)}


def _in(ch: str, ranges) -> bool:
    o = ord(ch)
    return any(lo <= o <= hi for lo, hi in ranges)


def _pictographic(ch: str) -> bool:
    o = ord(ch)
    return 0x1F000 <= o <= 0x1FAFF or 0x2600 <= o <= 0x27BF or 0x2B00 <= o <= 0x2BFF or 0x2300 <= o <= 0x23FF


def _keeps(text: str, i: int) -> bool:
    """Whether the ZWJ/ZWNJ at ``i`` is part of an emoji sequence or a word of a joining script."""
    ch = text[i]
    if ch not in (_ZWJ, _ZWNJ) or i == 0 or i + 1 >= len(text):
        return False
    j = i - 1
    while j > 0 and text[j] in _EMOJI_MODIFIERS:
        j -= 1
    before, after = text[j], text[i + 1]
    if ch == _ZWJ and _pictographic(before) and _pictographic(after):
        return True
    return _in(before, _JOINING) and _in(after, _JOINING)


def remove_zero_width(text: str) -> tuple[str, int]:
    """ZERO WIDTH SPACE, (NON-)JOINER, WORD JOINER and BOM/ZWNBSP removed; a ZWJ joining two emoji
    (👨‍👩‍👧) or a ZWJ/ZWNJ between letters of Arabic-script or Indic words is kept."""
    if text.isascii():
        return text, 0
    out, last, n = [], 0, 0
    for m in _ZERO_WIDTH.finditer(text):
        i = m.start()
        if _keeps(text, i):
            continue
        out.append(text[last:i])
        last = i + 1
        n += 1
    if not n:
        return text, 0
    out.append(text[last:])
    return "".join(out), n


# --------------------------------------------------------------------------------------------- unicode

def normalize_unicode(text: str, form: str) -> tuple[str, int]:
    """NFC (composes "e" + U+0301 into "é"; nothing else visible changes) or NFKC (also folds
    compatibility forms: full-width "ＡＢＣ１２" to "ABC12", "ﬁ" to "fi", U+3000 to a space, and,
    changing meaning, "10³" to "103"); ``none`` leaves the text alone."""
    if form == "none" or text.isascii() or unicodedata.is_normalized(form, text):
        return text, 0
    return unicodedata.normalize(form, text), 1


# ------------------------------------------------------------------------------------------ whitespace

# NO-BREAK SPACE and the typographic spaces (EN/EM/THIN/HAIR..., NARROW NBSP, MEDIUM MATHEMATICAL,
# OGHAM) become a plain space. U+3000 IDEOGRAPHIC SPACE is kept: it is a full-width character of its
# own in Chinese and Japanese text (two of them indent a paragraph) and, unlike NBSP, rarely comes
# from markup; unicode: NFKC folds it when that is wanted.
_SPACES = {c: " " for c in [0x00A0, 0x1680, *range(0x2000, 0x200B), 0x202F, 0x205F]}
_RUN = re.compile(r"[ \t]{2,}|\t")
_INDENT = re.compile(r"[ \t]*")


def _normalize_prose(piece: str, max_blank: int) -> tuple[str, int]:
    new = piece.translate(_SPACES)
    lines = new.split("\n")
    for k, line in enumerate(lines):
        indent = _INDENT.match(line).end()
        body = line[indent:]
        if body:
            lines[k] = line[:indent] + _RUN.sub(" ", body).rstrip(" \t")
        else:
            lines[k] = ""
    new = "\n".join(lines)
    new = re.sub("\n{%d,}" % (max_blank + 2), "\n" * (max_blank + 1), new)
    return new, int(new != piece)


def normalize_whitespace(text: str, max_blank_lines: int = 1) -> tuple[str, int]:
    """Outside code fences: NBSP-like spaces to " "; after a line's indentation (kept as it is), runs
    of spaces and tabs become one space; trailing spaces and tabs go; runs of more than
    ``max_blank_lines`` blank lines are cut to that many. The message is then stripped of leading and
    trailing spaces, tabs and newlines. Line breaks themselves are kept."""
    new, _ = map_prose(text, lambda p: _normalize_prose(p, max_blank_lines))
    new = new.strip(" \t\n")
    return new, int(new != text)
