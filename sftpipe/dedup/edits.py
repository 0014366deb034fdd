"""Typo-level copies: a character signature, an edit-distance check, and a slot check.

Word 5-gram Jaccard cannot see a copy with a few typos: a 2% character edit
rate touches most 5-word windows. This pass works on characters instead:

1. **signature**: every row's normalized text (the same normalization as the
   word pass) is cut into character n-grams (``dedup.edits.ngram``, 3 by
   default) whatever its language, and sketched by *one-permutation hashing*:
   each n-gram's 32-bit hash falls in one of ``bins`` bins by its top bits, and
   each bin keeps its smallest hash. Empty bins borrow the next non-empty bin's
   value (circularly), mixed with the distance, so short rows still have a
   full signature. Two rows agree in a bin with probability about the Jaccard
   of their n-gram sets, as with MinHash, but the cost is one pass over the
   n-grams instead of one pass per permutation: an English row has ~5x more
   character n-grams than word 5-grams, and per-permutation MinHash over them
   would be several times slower than the whole word pass.
2. **candidates**: LSH banding of that signature (``bands`` x ``rows``; 32 x 4
   finds a pair at n-gram Jaccard 0.5 with probability 0.87, at 0.6 with
   0.99), the same banding code as the word pass.
3. **edit check**: a candidate is a copy when the normalized Levenshtein
   similarity of the two normalized texts, ``1 - distance / max(len)``,
   reaches ``min_similarity`` (rapidfuzz, bit-parallel C++). A copy with 8% of
   its characters edited keeps a similarity of about 0.9 whatever its length,
   while its n-gram Jaccard falls to ~0.3 when the row is short.
4. **slot check** (:func:`slot_change`, applied by the caller to every near
   pair, word pass included): two rows of one template that differ in a slot
   are different examples (``18 + 15`` vs ``18 + 16``, ``capital of Kenya`` vs
   ``capital of Peru``) however similar they are. A pair is kept apart when its
   numbers differ, or when the edit script replaces a whole word (at least half
   of the word's letters, two or more) or a run of two or more CJK characters
   on both sides. Typos are short: one or two characters, a swapped pair,
   an inserted or deleted character or word, which the check lets through.
   The trade-off, measured by ``bench/dedup_quality.py``: a copy whose typos
   hit the same short word twice (``cat`` -> ``cta`` -> ``xta``) reads as a
   substituted word and is kept apart; a one-character slot (``王明`` vs
   ``李明``) reads as a typo and merges.
"""

from __future__ import annotations

import re
from functools import lru_cache

import numpy as np
from rapidfuzz.distance import OSA, Levenshtein
from rapidfuzz.process import cpdist

from .sketch import MAX_HASH, _F32, _fmix

_DIGITS = re.compile(r"\d+")
_CJK_CHAR = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f]")
_MIX = np.uint32(0x9E3779B9)
_POLY = np.uint32(0x01000193)       # FNV-1a's 32-bit prime


def oph_signatures(rows: np.ndarray, hashes: np.ndarray, n: int, bins: int) -> np.ndarray:
    """One-permutation-hashing signatures, shape (bins, n) uint32; ``bins`` a power of two.

    ``rows``/``hashes``: the row and 32-bit hash of every n-gram (duplicates are fine). A row
    without n-grams keeps MAX_HASH in every bin.
    """
    if bins & (bins - 1) or bins < 2:
        raise ValueError(f"bins must be a power of two >= 2, got {bins}")
    shift = np.uint32(32 - (bins.bit_length() - 1))
    flat = np.full(n * bins, MAX_HASH, dtype=np.uint32)
    if len(hashes):
        idx = rows.astype(np.int64) * bins + (hashes >> shift).astype(np.int64)
        np.minimum.at(flat, idx, hashes)
    sig = np.ascontiguousarray(flat.reshape(n, bins).T)     # (bins, n): a bin's values are contiguous
    empty = sig == MAX_HASH
    n_empty = empty.sum(axis=0)
    partial = np.flatnonzero((n_empty > 0) & (n_empty < bins))
    if len(partial):
        if len(partial) == n:
            _densify(sig, empty)
        else:
            part = sig[:, partial]
            _densify(part, empty[:, partial])
            sig[:, partial] = part
    return sig


def char_ngram_hashes(cps: np.ndarray, lens: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, 32-bit hash) of every character position of a code point batch: the hash of the
    n-gram starting there, or MAX_HASH where no full n-gram starts (a row's last n-1).

    The hash is a polynomial over the n code points, computed with n shifted vector
    operations over the whole batch, so no per-n-gram spans are built (the span hashing
    of the word pass costs ~3x more here). A row shorter than n gives one n-gram, the
    whole row; an empty row gives none. MAX_HASH entries leave OPH bins empty, which is
    cheaper than dropping them here.
    """
    lens = np.asarray(lens, dtype=np.int64)
    T = len(cps)
    if T == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.uint32)
    c = np.zeros(T + n, dtype=np.uint32)
    c[:T] = cps
    h = np.full(T, n, dtype=np.uint32)    # 32-bit arithmetic: half the memory traffic of 64
    for k in range(n):                    # positions near a row's end mix in the next row: masked below
        np.multiply(h, _POLY, out=h)
        np.add(h, c[k:k + T], out=h)
    _fmix(h, _F32, inplace=True)
    ends = np.cumsum(lens)
    for k in range(1, n):                 # the last n-1 positions of a row start no full n-gram
        h[(ends - k)[lens >= k]] = MAX_HASH
    short = np.flatnonzero((lens > 0) & (lens < n))
    if len(short):                        # a short row: one n-gram, the row alone (zero-padded)
        first = ends[short] - lens[short]
        hs = np.full(len(short), n, dtype=np.uint32)
        for k in range(n):
            hs *= _POLY
            hs += np.where(k < lens[short], c[np.minimum(first + k, T)], np.uint32(0))
        _fmix(hs, _F32, inplace=True)
        h[first] = hs
    return np.repeat(np.arange(len(lens)), lens), h


def _densify(sig: np.ndarray, empty: np.ndarray) -> None:
    """Fill, in place, each empty bin from the next non-empty bin below it (circularly), the
    value mixed with the distance so that borrowed values differ from the lender's own.
    ``sig``: (bins, m), every column with at least one non-empty bin. The running minimum goes
    down axis 0 (one bin's columns per vector step); only the empty bins are gathered and mixed."""
    bins, m = sig.shape
    here = np.arange(bins, dtype=np.int16)[:, None]
    pos = np.where(empty, np.int16(2 * bins), here)                  # int16: a quarter of the traffic
    ahead = np.minimum.accumulate(np.concatenate([pos, pos + np.int16(bins)])[::-1], axis=0)
    at = np.flatnonzero(empty)
    nxt = ahead[:bins - 1:-1].ravel()[at].astype(np.int64)   # next non-empty bin at or after, < 2*bins
    row, col = np.divmod(at, m)
    src = sig[nxt % bins, col]
    sig[row, col] = _fmix(src ^ ((nxt - row).astype(np.uint32) * _MIX), _F32, inplace=True)


def digit_keys(cps: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Per row of a code point batch, a 64-bit key of its sequence of ASCII digit runs (0: none).

    Rows whose digit runs (``\\d+``, what :func:`slot_change` compares first) are equal get equal
    keys: every ASCII digit lies inside one of those runs, so the ASCII runs follow from them. The
    typo pass puts the key in its band keys when the slot check is on, since the check keeps every
    pair whose numbers differ apart; a collision only leaves such a pair to the check.
    """
    lens = np.asarray(lens, dtype=np.int64)
    out = np.zeros(len(lens), dtype=np.uint64)
    cps = np.asarray(cps)
    pos = np.flatnonzero((cps >= 48) & (cps <= 57))
    if not len(pos):
        return out
    row = np.searchsorted(np.cumsum(lens), pos, side="right")
    # a run starts where the previous digit is not the previous character of the same row
    start = np.ones(len(pos), dtype=bool)
    start[1:] = (pos[1:] != pos[:-1] + 1) | (row[1:] != row[:-1])
    tok = (cps[pos].astype(np.uint64) - np.uint64(47)) + np.uint64(16) * start
    first = np.flatnonzero(np.r_[True, row[1:] != row[:-1]])
    rank = np.arange(len(pos)) - np.repeat(first, np.diff(np.r_[first, len(pos)]))
    with np.errstate(over="ignore"):
        h = np.add.reduceat(tok * np.power(np.uint64(0x100000001B3), rank.astype(np.uint64)), first)
        h ^= np.diff(np.r_[first, len(pos)]).astype(np.uint64)     # the number of digits
        h ^= h >> np.uint64(33)
        h *= np.uint64(0xFF51AFD7ED558CCD)
        h ^= h >> np.uint64(33)
    out[row[first]] = h | np.uint64(1)
    return out


def edit_similarity(a: list[str], b: list[str]) -> np.ndarray:
    """Normalized Levenshtein similarity ``1 - d / max(len)`` of each pair (a[k], b[k])."""
    if not a:
        return np.zeros(0)
    return np.asarray(cpdist(a, b, scorer=Levenshtein.normalized_similarity, workers=1), dtype=np.float64)


_NOT_CONTENT = re.compile(r"[\W_]+")   # \w is str.isalnum() plus "_"


def _content(s: str) -> int:
    """Letters (any script) and digits in ``s``."""
    return len(s) - sum(map(len, _NOT_CONTENT.findall(s)))


@lru_cache(maxsize=1 << 16)
def _latin(ch: str) -> bool:
    """A letter of a space-separated script (not CJK, not a digit: numbers are compared apart)."""
    return ch.isalpha() and not _CJK_CHAR.match(ch)


def _widen(text: str, i: int, j: int) -> tuple[int, int]:
    """text[i:j] grown to the whole words it touches (a CJK character is a word of its own)."""
    while i > 0 and _latin(text[i - 1]) and (i == j or i >= len(text) or _latin(text[i]) or text[i].isspace()):
        i -= 1
    while j < len(text) and _latin(text[j]) and (j == i or _latin(text[j - 1]) or text[j - 1].isspace()):
        j += 1
    return i, j


def _cjk_near(text: str, i: int, j: int) -> bool:
    """A CJK character just before ``text[i:j]`` or just after it: a space there splits no word
    (Chinese has none), so edits on both sides of it are one change (旅 行 -> 服 务)."""
    return bool((i > 0 and _CJK_CHAR.match(text[i - 1])) or (j < len(text) and _CJK_CHAR.match(text[j])))


def change_blocks(a: str, b: str, gap: int = 1) -> tuple[list[tuple[str, str]], bool]:
    """The changes between two texts, as (part of a, part of b) with spaces removed, and
    whether one CJK character replaces another in two places (``小娟`` -> ``小红`` twice).

    Character edits (Levenshtein opcodes) at most ``gap`` equal characters apart form one
    block, grown on each side to whole words, so a word split or joined by a typo (``ca t``,
    ``thecat``) or two swapped characters compare as one string with their original.
    """
    spans: list[list[int]] = []
    subs: set[tuple[str, str]] = set()
    repeated = False
    for tag, i1, i2, j1, j2 in Levenshtein.opcodes(a, b):
        if tag == "equal":
            continue
        if tag == "replace":
            for x, y in zip(a[i1:i2], b[j1:j2]):
                if _CJK_CHAR.match(x) and _CJK_CHAR.match(y):
                    repeated |= (x, y) in subs
                    subs.add((x, y))
        if (spans and i1 - spans[-1][1] <= gap and j1 - spans[-1][3] <= gap
                and (not a[spans[-1][1]:i1].isspace() or _cjk_near(a, spans[-1][1], i1))):
            spans[-1][1], spans[-1][3] = i2, j2
        else:
            spans.append([i1, i2, j1, j2])
    blocks: list[list[int]] = []
    for i1, i2, j1, j2 in spans:
        (i1, i2), (j1, j2) = _widen(a, i1, i2), _widen(b, j1, j2)
        if blocks and (i1 <= blocks[-1][1] or j1 <= blocks[-1][3]):
            blocks[-1][1], blocks[-1][3] = max(i2, blocks[-1][1]), max(j2, blocks[-1][3])
        else:
            blocks.append([i1, i2, j1, j2])
    return [("".join(a[i1:i2].split()), "".join(b[j1:j2].split())) for i1, i2, j1, j2 in blocks], repeated


@lru_cache(maxsize=1)
def _content_classes() -> np.ndarray:
    """Per code point: bit 0 ``str.isalnum()`` (what :func:`_content` counts: ``\\w`` but ``_``),
    bit 1 category Nd (what ``\\d`` matches)."""
    from .sketch import _every_char, _tables
    alnum = np.fromiter(map(str.isalnum, _every_char()), dtype=bool, count=len(_tables().digit))
    return alnum.view(np.uint8) | (_tables().digit.view(np.uint8) << np.uint8(1))


def text_stats(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per text, at once: :func:`_content` (letters and digits) and whether it has a ``\\d``
    digit. What :func:`slot_change` would otherwise find with two regex scans of each text."""
    from .sketch import _encode, _row_sums
    cps, lens = _encode(texts)
    cls = _content_classes()[cps]
    return _row_sums(cls & np.uint8(1), lens), _row_sums(cls >> np.uint8(1), lens) > 0


def slot_change(a: str, b: str, max_indel: float = 0.1, max_cjk: float = 0.08,
                stats: tuple | None = None) -> str | None:
    """Why two normalized texts are different examples, or None if they may be copies.

    From :func:`change_blocks`:

    * ``"number"``: their digit runs differ;
    * ``"substitution"``: a block differs (OSA distance: a swap of neighbours is one edit) by 3
      or more edits and at least half its length, or is replaced outright (2+ edits, as many as
      its length): ``kenya``/``peru``, ``green``/``red``, ``书``/``课程``; while ``teh``/``the``,
      ``eh``/``the``, one changed CJK character pass as typos;
    * ``"repeated"``: the same change occurs twice (a slot filled in the prompt and again in the
      response: ``小娟``/``小红`` in both), which random typos do not do;
    * ``"insertion"``: whole tokens inserted or deleted add up to more than ``max_indel`` of
      the shorter text's letters (single characters aside).

    ``stats``: (content of a, content of b, a has a digit, b has a digit) from :func:`text_stats`,
    which saves two regex scans of each whole text; the answer is the same.
    """
    if a == b:
        return None                        # equal once normalized: case, spacing, punctuation, width
    if (stats is None or stats[2] or stats[3]) and _DIGITS.findall(a) != _DIGITS.findall(b):
        return "number"
    seen = set()
    indel = cjk_changed = 0
    blocks, cjk_subs = change_blocks(a, b)
    if cjk_subs:
        return "repeated"
    for sa, sb in blocks:
        if not sa or not sb:
            c = _content(sa + sb)
            if c > 1 or _CJK_CHAR.search(sa + sb):
                if (sa, sb) in seen:
                    return "repeated"          # 笔/铅笔 in prompt and response
                seen.add((sa, sb))
            indel += c if c > 1 else 0
            continue
        if sa == sb:
            continue
        if sa in sb or sb in sa:
            # a whole word inserted or deleted next to a kept one ("reading room" -> "room"),
            # which the block grew over: an insertion of the difference, not a substitution
            c = abs(_content(sa) - _content(sb))
            if (sa, sb) in seen and c > 1:
                return "repeated"
            seen.add((sa, sb))
            indel += c if c > 1 else 0
            continue
        d = OSA.distance(sa, sb)
        longest = max(len(sa), len(sb))
        if _CJK_CHAR.search(sa + sb):
            grown = abs(len(sa) - len(sb))
            if grown >= 2:
                # no spaces: a changed character and a word of 2+ characters appended or
                # prepended to it meet in one block (伞 -> 衣谢谢). The growth counts as
                # inserted; the rest is the shorter side against the longer one's start or end
                short, long_ = sorted((sa, sb), key=len)
                indel += grown
                d = min(OSA.distance(short, long_[:len(short)]), OSA.distance(short, long_[-len(short):]))
                longest = len(short)
            elif d >= 3:
                return "substitution"
            if d >= 2:
                if d >= longest:
                    return "substitution"      # every character replaced: 课程/手机, 书/游戏
                cjk_changed += d
        elif d >= 3 or (d >= 2 and 2 * d >= longest):
            return "substitution"
        if (sa, sb) in seen:
            return "repeated"
        seen.add((sa, sb))
    if not (cjk_changed or indel):
        return None
    short = min(_content(a), _content(b)) if stats is None else min(stats[0], stats[1])
    if cjk_changed > max_cjk * short:
        return "substitution"
    if indel > max_indel * short:
        return "insertion"
    return None
