"""HTML remnants: tags of real HTML elements stripped, character references unescaped.

The tags are found by the standard library's :class:`html.parser.HTMLParser`, which knows what
a tag is (``a < b and c > d`` has none; ``<b>`` needs a letter right after ``<``). Its findings are
then filtered, because SFT text is full of things that parse as tags but are not HTML:

* only names of HTML elements count, written all lower or all upper case: ``List<int>``,
  ``Map<String, Object>``, ``Vec<T>`` and ``<EMAIL>`` (our own placeholder) stay;
* an attribute list must look like one: every attribute has a value or is a known boolean
  attribute, so ``if a<b and c>d`` (tag "b" with attributes "and", "c") stays;
* a start tag without attributes is taken only for void elements (``<br>``, ``<hr>``, ``<img>``),
  for elements that are often left unclosed (``<p>``, ``<li>``, table cells), or when the same
  element's end tag follows: a usage line such as ``SELECT * FROM <table>`` or ``cp <source>``
  keeps its placeholder;
* end tags (``</div>``) and comments always count; ``<?php ... ?>`` and other processing
  instructions, CDATA and unknown declarations are kept.

Block-level tags become a line break (the whitespace rule then trims the blank lines), inline tags
disappear, ``<script>``/``<style>`` go with their contents. Character references are unescaped only
when they end in ";" (``&amp;`` ``&#39;`` ``&#x4e2d;`` ``&nbsp;``): HTML5 also accepts some names
without it, which would turn a URL's ``?a=1&copy=2`` into ``?a=1©=2``. Tags are stripped before
references are unescaped, so an escaped tag (``&lt;div&gt;``) ends up as the text ``<div>``.

Nothing inside code fences or inline code spans (```` `...` ````) is touched.
"""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

from .text import map_prose

_BLOCK = {"address", "article", "aside", "blockquote", "body", "br", "center", "dd", "details", "div", "dl",
          "dt", "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "head", "header",
          "hr", "html", "li", "nav", "ol", "p", "pre", "section", "summary", "table", "tbody", "tfoot", "thead",
          "title", "tr", "ul", "caption", "noscript"}
_INLINE = {"a", "abbr", "b", "bdi", "bdo", "big", "cite", "code", "del", "dfn", "em", "font", "i", "iframe", "img",
           "ins", "kbd", "q", "s", "samp", "small", "span", "strike", "strong", "sub", "sup", "tt", "u", "wbr",
           "td", "th", "script", "style", "meta", "link"}
# Deliberately absent although they are HTML: names that are also common words in code and usage
# lines (object, param, data, time, var, input, option, select, label, source, template, main, mark).
_KNOWN = _BLOCK | _INLINE
_VOID = {"br", "hr", "img", "wbr", "meta", "link"}
_OFTEN_UNCLOSED = {"p", "li", "td", "th", "tr", "dd", "dt"}
_CELL = {"td", "th"}
_RAW_TEXT = {"script", "style"}
_BOOLEAN_ATTRS = {"allowfullscreen", "async", "autofocus", "checked", "controls", "default", "defer",
                  "disabled", "hidden", "loop", "multiple", "muted", "nowrap", "open", "readonly", "required",
                  "reversed", "selected"}
_CHARREF = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
_INLINE_CODE = re.compile(r"(`+)[^`\n]+?\1(?!`)")


class _TagFinder(HTMLParser):
    """Records where each tag, comment and declaration is (offsets into the text), nothing else."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.text = text
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self.events: list[tuple[str, str, int, int, list]] = []  # (kind, name, start, end, attrs)

    def _offset(self) -> int:
        line, col = self.getpos()
        return self.line_starts[line - 1] + col

    def _start(self, tag, attrs):
        start = self._offset()
        raw = self.get_starttag_text() or ""
        if self.text.startswith(raw, start) and raw:
            self.events.append(("start", tag, start, start + len(raw), attrs))

    handle_starttag = _start
    handle_startendtag = _start

    def handle_endtag(self, tag):
        start = self._offset()
        end = self.text.find(">", start)
        if self.text.startswith("</", start) and end > 0:
            self.events.append(("end", tag, start, end + 1, []))

    def handle_comment(self, data):
        start = self._offset()
        if self.text.startswith("<!--", start):
            end = self.text.find("-->", start + 4)
            if end > 0:
                self.events.append(("comment", "", start, end + 3, []))

    def handle_decl(self, decl):
        start = self._offset()
        end = self.text.find(">", start)
        if decl.lower().startswith("doctype") and end > 0:
            self.events.append(("comment", "", start, end + 1, []))


def _raw_name(text: str, start: int) -> str:
    m = re.match(r"</?([A-Za-z][A-Za-z0-9]*)", text[start:start + 40])
    return m.group(1) if m else ""


def _is_tag(text: str, ev, closed: set[str]) -> bool:
    kind, name, start, _, attrs = ev
    if kind == "comment":
        return True
    raw = _raw_name(text, start)
    if name not in _KNOWN or not (raw.islower() or raw.isupper()):
        return False
    if kind == "end":
        return True
    if attrs:
        return all(v is not None or k in _BOOLEAN_ATTRS for k, v in attrs)
    return name in _VOID or name in _OFTEN_UNCLOSED or name in closed


def _strip_tags(text: str) -> tuple[str, int]:
    if "<" not in text:
        return text, 0
    finder = _TagFinder(text)
    try:
        finder.feed(text)
        finder.close()
    except Exception:  # the parser is lenient; never let odd text stop the stage
        return text, 0
    events = sorted(finder.events, key=lambda e: e[2])
    closed = {e[1] for e in events if e[0] == "end" and e[1] in _KNOWN}
    cuts: list[tuple[int, int, str]] = []
    raw_from = None
    for ev in events:
        kind, name, start, end, _ = ev
        if raw_from is not None:            # inside <script>/<style>: drop through its end tag
            if kind == "end" and name == raw_from[1]:
                cuts.append((raw_from[0], end, ""))
                raw_from = None
            continue
        if cuts and start < cuts[-1][1]:
            continue
        if not _is_tag(text, ev, closed):
            continue
        if kind == "start" and name in _RAW_TEXT and name in closed:
            raw_from = (start, name)
            continue
        repl = "\n" if name in _BLOCK else (" " if name in _CELL else "")
        cuts.append((start, end, repl))
    if not cuts:
        return text, 0
    out, last = [], 0
    for start, end, repl in cuts:
        out.append(text[last:start])
        out.append(repl)
        last = end
    out.append(text[last:])
    return "".join(out), len(cuts)


def _unescape(text: str) -> tuple[str, int]:
    n = 0

    def one(m: re.Match) -> str:
        nonlocal n
        new = html.unescape(m.group())
        if new != m.group():
            n += 1
        return new

    if "&" not in text:
        return text, 0
    return _CHARREF.sub(one, text), n


def _outside_inline_code(piece: str, fn) -> tuple[str, int]:
    out, last, edits = [], 0, 0
    for m in _INLINE_CODE.finditer(piece):
        new, n = fn(piece[last:m.start()])
        out += [new, m.group()]
        edits += n
        last = m.end()
    new, n = fn(piece[last:])
    out.append(new)
    return "".join(out), edits + n


def _prose(piece: str) -> tuple[str, int]:
    piece, n = _strip_tags(piece)
    piece, m = _unescape(piece)
    return piece, n + m


def strip_html(text: str) -> tuple[str, int]:
    """Tags stripped and character references unescaped outside code; edits = tags + references."""
    if "<" not in text and "&" not in text:
        return text, 0
    return map_prose(text, lambda p: _outside_inline_code(p, _prose))
