"""Vectorized text normalization, shingling and MinHash, bit-identical to datasketch.

Everything here works on a *batch* of texts at once with numpy, instead of one
``datasketch.MinHash`` per row fed one shingle at a time:

* the batch is concatenated into one array of Unicode code points, normalized
  through lookup tables (punctuation, digits, whitespace) and cut into word or
  character n-gram *spans*;
* each span is hashed with :func:`shingle_hash` (a 64-bit polynomial hash over
  the code points, finalized to 32 bits), computed for all spans together from
  one prefix sum;
* signatures follow datasketch 2.x's default "affine32" scheme exactly: the
  32-bit shingle hash goes through the MurmurHash3 32-bit finalizer, then each
  permutation k maps it to ``a_k * h + b_k`` in uint32 arithmetic, with
  ``(a, b)`` drawn from ``np.random.RandomState(seed)`` as datasketch does. So
  ``datasketch.MinHash(num_perm, seed, hashfunc=shingle_hash)`` updated with the
  strings of :func:`shingles` gives the same hash values (tests check this).

The plain-Python functions :func:`normalize`, :func:`shingles` and
:func:`shingle_hash` are the reference definitions; the batch code must agree
with them, and the tests compare the two on many inputs.

Results depend on the Unicode database of the running Python (NFKC, categories),
which is fixed per Python version, never on the process or the run.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..schema import _CJK, _LETTER, CJK_RATIO, cjk_ratio

_N_CP = 0x110000
_MASK64 = (1 << 64) - 1
# Polynomial base (odd, so it is invertible modulo 2**64) and its inverse.
_P = 0x9E3779B97F4A7C15
_PINV = pow(_P, -1, 1 << 64)
_LEN_MIX = 0xD6E8FEB86659FD93        # adds the length, so "\0a" and "a" differ
_F64 = (33, 0xFF51AFD7ED558CCD, 33, 0xC4CEB9FE1A85EC53, 33)   # MurmurHash3 fmix64
_F32 = (16, 0x85EBCA6B, 13, 0xC2B2AE35, 16)                   # MurmurHash3 fmix32
MAX_HASH = np.uint32(0xFFFFFFFF)     # an empty MinHash holds this everywhere
CJK_CHAR_MODE = CJK_RATIO            # auto shingling: char n-grams when cjk_ratio >= this


# ---------------------------------------------------------------------------
# Reference (plain Python) definitions


@lru_cache(maxsize=1)
def _punct_translation() -> dict:
    return {cp: " " for cp in np.flatnonzero(_tables().punct).tolist()}


_DIGIT_RE = re.compile(r"\d")          # for str patterns: Unicode category Nd


def _prenormalize(text: str, nfkc: bool, lowercase: bool) -> str:
    if nfkc:
        text = unicodedata.normalize("NFKC", text)
    if lowercase:
        text = text.lower()
    return text


def normalize(text: str, rules) -> str:
    """Normalize ``text`` for near-duplicate detection (``rules``: :class:`NormalizeParams`).

    In order, each step switched by its param: NFKC (full-width forms become
    ASCII), lowercase, punctuation and symbols (Unicode P* and S*) to spaces,
    decimal digits to ``0``, whitespace runs to one space and stripped.
    """
    text = _prenormalize(text, rules.nfkc, rules.lowercase)
    if rules.punctuation:
        text = text.translate(_punct_translation())
    if rules.digits:
        text = _DIGIT_RE.sub("0", text)
    if rules.whitespace:
        text = " ".join(text.split())
    return text


def use_char_shingles(normalized: str, shingle: str = "auto") -> bool:
    """Whether a normalized text is shingled by characters (CJK) rather than words."""
    if shingle != "auto":
        return shingle == "char"
    return cjk_ratio(normalized) >= CJK_CHAR_MODE


def shingles(normalized: str, char_mode: bool, n: int) -> list[str]:
    """The shingles of a normalized text, in order (duplicates kept).

    Word mode: spans of ``n`` consecutive whitespace-separated tokens (the text
    between the first token's start and the last token's end). Character mode:
    every ``n`` consecutive characters. A text with fewer than ``n`` tokens
    (characters) gives one shingle spanning all of them; a text with no
    non-whitespace character gives none.
    """
    if not normalized.strip():
        return []
    if char_mode:
        if len(normalized) <= n:
            return [normalized]
        return [normalized[i:i + n] for i in range(len(normalized) - n + 1)]
    toks = [(m.start(), m.end()) for m in re.finditer(r"\S+", normalized)]
    if len(toks) <= n:
        return [normalized[toks[0][0]:toks[-1][1]]]
    return [normalized[toks[i][0]:toks[i + n - 1][1]] for i in range(len(toks) - n + 1)]


def _fmix64_int(h: int) -> int:
    s1, m1, s2, m2, s3 = _F64
    h ^= h >> s1
    h = (h * m1) & _MASK64
    h ^= h >> s2
    h = (h * m2) & _MASK64
    return h ^ (h >> s3)


def shingle_hash(shingle: str) -> int:
    """Deterministic 32-bit hash of a shingle: the MinHash ``hashfunc``.

    ``sum(ord(c_j) * P**(L-1-j)) + L * K`` modulo 2**64, through MurmurHash3's
    64-bit finalizer, top 32 bits. A polynomial hash so that the batch code can
    compute it for every span of a text from one prefix sum.
    """
    h = 0
    for ch in shingle:
        h = (h * _P + ord(ch)) & _MASK64
    h = (h + len(shingle) * _LEN_MIX) & _MASK64
    return _fmix64_int(h) >> 32


# ---------------------------------------------------------------------------
# Lookup tables over all code points (built once per process, ~0.3 s)


@dataclass(frozen=True)
class _Tables:
    category: np.ndarray  # int16 code of the general category, names in `categories`
    categories: list
    punct: np.ndarray    # bool: Unicode category P* or S*
    digit: np.ndarray    # bool: category Nd (what re's \d matches)
    space: np.ndarray    # bool: str.isspace() (what str.split() and \s split on)
    letter: np.ndarray   # bool: matched by schema._LETTER
    cjk: np.ndarray      # bool: matched by schema._CJK


def _mark(pattern: re.Pattern, every: str) -> np.ndarray:
    out = np.zeros(_N_CP, dtype=bool)
    out[[m.start() for m in pattern.finditer(every)]] = True
    return out


def _every_char() -> str:
    return np.arange(_N_CP, dtype="<u4").tobytes().decode("utf-32-le", "surrogatepass")


@lru_cache(maxsize=1)
def _tables() -> _Tables:
    every = _every_char()
    cats = list(map(unicodedata.category, every))
    names = sorted(set(cats))
    code = np.fromiter(map({c: i for i, c in enumerate(names)}.__getitem__, cats), dtype=np.int16, count=_N_CP)
    punct = np.isin(code, [i for i, c in enumerate(names) if c[0] in "PS"])
    digit = code == names.index("Nd")
    return _Tables(category=code, categories=names, punct=punct, digit=digit,
                   space=_mark(re.compile(r"\s"), every), letter=_mark(_LETTER, every), cjk=_mark(_CJK, every))


@lru_cache(maxsize=1)
def _composes_second() -> frozenset:
    """Characters that can be the second half of a canonical composition."""
    out = set(range(0x1161, 0x1176)) | set(range(0x11A8, 0x11C3))     # Hangul V and T jamo
    for x in range(_N_CP):
        d = unicodedata.decomposition(chr(x))
        if d and not d.startswith("<"):
            parts = d.split()
            if len(parts) == 2:
                first, second = (chr(int(h, 16)) for h in parts)
                if unicodedata.normalize("NFC", first + second) == chr(x):
                    out.add(ord(second))
    return frozenset(out)


@lru_cache(maxsize=4)
def _pre_table(nfkc: bool, lowercase: bool) -> tuple[np.ndarray, np.ndarray]:
    """NFKC (+ lowercase) as a per-character table, and where that is exact.

    ``ok[c]`` holds when NFKC(c) is one character d that has no decomposition,
    combining class 0 and never completes a composition, and (with lowercase)
    d.lower() is one character and d is not capital sigma (context-dependent).
    For a string of such characters, NFKC(s).lower() is ``table`` applied to
    each character: NFKD works character by character, nothing reorders (all
    class 0) and nothing composes (no second half). Strings with any other
    character go through Python's unicodedata.
    """
    t = _tables()
    table = np.arange(_N_CP, dtype=np.uint32)
    ok = np.ones(_N_CP, dtype=bool)
    if not (nfkc or lowercase):
        return table, ok
    second = _composes_second()
    # unassigned, private-use and surrogate code points map to themselves
    plain = np.isin(t.category, [t.categories.index(c) for c in ("Cn", "Co", "Cs") if c in t.categories])
    for x in np.flatnonzero(~plain).tolist():
        d = unicodedata.normalize("NFKC", chr(x)) if nfkc else chr(x)
        good = len(d) == 1
        if good and nfkc:
            good = (not unicodedata.decomposition(d) and not 0xAC00 <= ord(d) <= 0xD7A3
                    and unicodedata.combining(d) == 0 and ord(d) not in second)
        if good and lowercase:
            if d == "\u03a3":
                good = False
            else:
                d = d.lower()
                good = len(d) == 1
        if good:
            table[x] = ord(d)
        else:
            ok[x] = False
    return table, ok


@lru_cache(maxsize=4)
def _fold_table(punct: bool, digits: bool) -> np.ndarray:
    t = _tables()
    table = np.arange(_N_CP, dtype=np.uint32)
    if punct:
        table[t.punct] = ord(" ")
    if digits:
        table[t.digit] = ord("0")
    return table


_POW: list[np.ndarray] = [np.ones(1, np.uint64), np.ones(1, np.uint64)]   # P**k, P**-k


def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """P**k and P**-k modulo 2**64 for k < n (cached, grown by doubling)."""
    if len(_POW[0]) < n:
        size = max(n, 2 * len(_POW[0]), 1 << 16)
        for i, base in enumerate((_P, _PINV)):
            arr = np.full(size, base, dtype=np.uint64)
            arr[0] = 1
            _POW[i] = np.cumprod(arr, dtype=np.uint64)     # wraps modulo 2**64
    return _POW[0], _POW[1]


def _fmix(h: np.ndarray, consts, inplace: bool = False) -> np.ndarray:
    """MurmurHash3's finalizer (fmix32 or fmix64 by ``consts``) of every element. ``inplace``
    overwrites ``h`` instead of a copy; either way one scratch buffer, no temporary per step."""
    dt = h.dtype.type
    s1, m1, s2, m2, s3 = (dt(c) for c in consts)
    if not inplace:
        h = h.copy()
    tmp = np.empty_like(h)
    for shift, mult in ((s1, m1), (s2, m2), (s3, None)):
        np.right_shift(h, shift, out=tmp)
        np.bitwise_xor(h, tmp, out=h)
        if mult is not None:
            np.multiply(h, mult, out=h)
    return h


# ---------------------------------------------------------------------------
# Batch path

_SPACE = np.uint32(ord(" "))


def _starts(lens: np.ndarray) -> np.ndarray:
    out = np.zeros(len(lens) + 1, dtype=np.int64)
    np.cumsum(lens, out=out[1:])
    return out


@dataclass
class Batch:
    """A batch of normalized texts as one code point array."""
    cps: np.ndarray      # uint32, all texts concatenated
    lens: np.ndarray     # int64 code points per text
    collapsed: bool = False   # whitespace runs already collapsed: " " is the only space left

    def space(self) -> np.ndarray:
        """Per code point: whitespace (``str.isspace``)."""
        return self.cps == _SPACE if self.collapsed else _tables().space[self.cps]

    @property
    def starts(self) -> np.ndarray:
        return _starts(self.lens)

    def texts(self) -> list[str]:
        s = self.starts.tolist()
        whole = self.cps.astype("<u4").tobytes().decode("utf-32-le", "surrogatepass")   # one decode, then slices
        return [whole[a:b] for a, b in zip(s[:-1], s[1:])]


def _encode(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    lens = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    cps = np.frombuffer("".join(texts).encode("utf-32-le", "surrogatepass"), dtype="<u4").astype(np.uint32)
    return cps, lens


_BAD = np.uint32(1 << 31)          # _packed_table: the table is not exact for this character
_SPACE_BIT = np.uint32(1 << 30)    # _packed_table: it maps to whitespace
_CP_BITS = np.uint32((1 << 21) - 1)


@lru_cache(maxsize=8)
def _packed_table(nfkc: bool, lowercase: bool, fold: tuple[bool, bool] | None) -> np.ndarray:
    """Per code point, one uint32: what ``_pre_table`` (then ``_fold_table`` with ``fold``) maps it
    to in bits 0-20, ``_SPACE_BIT`` when that is whitespace, ``_BAD`` when the table is not exact
    for it. One lookup per code point where three tables took three."""
    table, ok = _pre_table(nfkc, lowercase)
    if fold is not None:
        table = _fold_table(*fold)[table]
    space = np.where(_tables().space[table], _SPACE_BIT, np.uint32(0))
    return (table | space | np.where(ok, np.uint32(0), _BAD)).astype(np.uint32)


def _prenormalize_batch(texts: list[str], nfkc: bool, lowercase: bool,
                        fold: tuple[bool, bool] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Code points of ``_prenormalize`` of each text (by table where exact, else in Python), with
    ``fold`` (punctuation, digits) ``_fold_table`` applied as well; and which of them are whitespace."""
    cps, lens = _encode(texts)
    if not len(cps):
        return cps, lens, np.zeros(0, dtype=bool)
    v = _packed_table(nfkc, lowercase, fold)[cps]
    bad_pos = np.flatnonzero(v >= _BAD)
    space = (v & _SPACE_BIT).astype(bool)
    cps = v & _CP_BITS
    if not len(bad_pos):
        return cps, lens, space
    n = len(lens)
    starts = _starts(lens)
    bad_rows = sorted_unique(np.searchsorted(starts, bad_pos, side="right") - 1).tolist()
    segments, spaces, prev = [], [], 0
    lens = lens.copy()
    for i in bad_rows:
        fixed = _prenormalize(texts[i], nfkc, lowercase)
        segments.append(cps[starts[prev]:starts[i]])
        spaces.append(space[starts[prev]:starts[i]])
        fixed_cps = np.frombuffer(fixed.encode("utf-32-le", "surrogatepass"), dtype="<u4").astype(np.uint32)
        if fold is not None:
            fixed_cps = _fold_table(*fold)[fixed_cps]
        segments.append(fixed_cps)
        spaces.append(_tables().space[fixed_cps])
        lens[i] = len(fixed)
        prev = i + 1
    segments.append(cps[starts[prev]:starts[n]])
    spaces.append(space[starts[prev]:starts[n]])
    return np.concatenate(segments).astype(np.uint32, copy=False), lens, np.concatenate(spaces)


def _collapse(cps: np.ndarray, lens: np.ndarray, space: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Whitespace runs to one space, none at either end of a row ("".join(t.split()))."""
    starts = _starts(lens)
    solid = ~space
    keep = np.empty_like(solid)
    keep[0] = False
    keep[1:] = solid[:-1]                  # a space survives right after a non-space...
    keep[starts[:-1][lens > 0]] = False    # ...of the same row
    keep &= space
    keep |= solid
    # ...unless it is the last character kept in its row (a trailing space)
    kept_at = np.flatnonzero(keep)
    new_starts = np.searchsorted(kept_at, starts)
    new_lens = np.diff(new_starts)
    last = kept_at[new_starts[1:][new_lens > 0] - 1]
    trailing = last[space[last]]
    keep[trailing] = False
    out = np.where(space, _SPACE, cps)[keep]
    new_lens[np.searchsorted(starts, trailing, side="right") - 1] -= 1
    return out, new_lens


def normalize_batch(texts: list[str], rules) -> Batch:
    """:func:`normalize` for many texts at once; agrees with it text by text."""
    folds = rules.punctuation or rules.digits
    cps, lens, space = _prenormalize_batch(texts, rules.nfkc, rules.lowercase,
                                           (rules.punctuation, rules.digits) if folds else None)
    if rules.whitespace and len(cps):
        cps, lens = _collapse(cps, lens, space)
        return Batch(cps, lens, collapsed=True)
    return Batch(cps, lens)


def char_mode_rows(b: Batch, shingle: str) -> np.ndarray:
    """Per row: shingle by characters? (``auto``: cjk_ratio of the normalized text >= 0.3)."""
    if shingle != "auto":
        return np.full(len(b.lens), shingle == "char")
    cls = _letter_classes()[b.cps]
    letters = _row_sums(cls & np.uint8(1), b.lens)
    cjk = _row_sums(cls >> np.uint8(1), b.lens)
    return (letters > 0) & (cjk >= CJK_CHAR_MODE * letters)


@lru_cache(maxsize=1)
def _letter_classes() -> np.ndarray:
    """Per code point: bit 0 a letter (``_Tables.letter``), bit 1 CJK (``_Tables.cjk``): one
    lookup where two boolean tables took two."""
    t = _tables()
    return t.letter.view(np.uint8) | (t.cjk.view(np.uint8) << np.uint8(1))


def _row_sums(values: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Sum of ``values`` (small unsigned ints) inside each row, 0 for an empty row: one
    ``reduceat`` pass, no cumulative array the length of the batch."""
    out = np.zeros(len(lens), dtype=np.int64)
    rows = np.flatnonzero(lens > 0)
    if len(rows):
        out[rows] = np.add.reduceat(values, _starts(lens)[rows], dtype=np.int64)
    return out


def shingle_spans(b: Batch, char_mode: np.ndarray, word_n: int, char_n: int):
    """(row, start, end) of every shingle of every row, as in :func:`shingles`."""
    n = len(b.lens)
    starts = b.starts
    solid = ~b.space()
    # word tokens: maximal runs of non-space characters within a row
    first = np.zeros(len(solid), dtype=bool)
    first[1:] = ~solid[:-1]
    first[starts[:-1][b.lens > 0]] = True
    first &= solid
    last = np.zeros(len(solid), dtype=bool)
    last[:-1] = ~solid[1:]
    last[starts[1:][b.lens > 0] - 1] = True
    last &= solid
    tok_s = np.flatnonzero(first)
    tok_e = np.flatnonzero(last) + 1
    first_tok = np.searchsorted(tok_s, starts[:-1])
    ntok = np.searchsorted(tok_s, starts[1:]) - first_tok
    rid = np.arange(n)
    m_word = np.where(~char_mode & (ntok > 0), np.maximum(ntok - word_n + 1, 1), 0)
    r_w = np.repeat(rid, m_word)
    k_w = np.arange(len(r_w)) - np.repeat(np.cumsum(m_word) - m_word, m_word)
    a = first_tok[r_w] + k_w
    s_w = tok_s[a]
    e_w = tok_e[np.minimum(a + word_n, first_tok[r_w] + ntok[r_w]) - 1]
    # character n-grams, for rows with at least one non-space character
    m_char = np.where(char_mode & (ntok > 0), np.maximum(b.lens - char_n + 1, 1), 0)
    r_c = np.repeat(rid, m_char)
    s_c = np.arange(len(r_c)) - np.repeat(np.cumsum(m_char) - m_char, m_char) + starts[r_c]
    e_c = s_c + np.minimum(char_n, b.lens[r_c])
    return (np.concatenate([r_w, r_c]), np.concatenate([s_w, s_c]), np.concatenate([e_w, e_c]))


def span_hashes(b: Batch, s: np.ndarray, e: np.ndarray) -> np.ndarray:
    """:func:`shingle_hash` of every span ``cps[s:e]`` (uint32), all at once.

    With prefix[i] = sum_{j<i} c_j * P**-j (mod 2**64), the polynomial of
    cps[s:e] is (prefix[e] - prefix[s]) * P**(e-1).
    """
    if not len(s):
        return np.zeros(0, dtype=np.uint32)
    T = len(b.cps)
    ppow, pinv = _powers(T + 1)
    prefix = np.zeros(T + 1, dtype=np.uint64)
    np.cumsum(np.multiply(b.cps, pinv[:T], dtype=np.uint64), out=prefix[1:])
    h = prefix[e] - prefix[s]
    h *= ppow[e - 1]
    h += (e - s).astype(np.uint64) * np.uint64(_LEN_MIX)
    return (_fmix(h, _F64) >> np.uint64(32)).astype(np.uint32)


@lru_cache(maxsize=8)
def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) of datasketch's affine32 scheme: same RandomState draws, a odd."""
    rs = np.random.RandomState(seed)
    a = rs.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = rs.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    a.flags.writeable = False
    b.flags.writeable = False
    return a, b


def sorted_unique(a: np.ndarray) -> np.ndarray:
    """Sorted distinct values. (numpy 2.4's np.unique hashes, and is ~100x slower
    than sorting on arrays of mostly distinct integers.)"""
    a = np.sort(a)
    if len(a) > 1:
        a = a[np.concatenate([[True], a[1:] != a[:-1]])]
    return a


def unique_per_row(rows: np.ndarray, hashes: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct hashes of each row: (flat uint32, offsets int64 of length n+1)."""
    key = sorted_unique((rows.astype(np.uint64) << np.uint64(32)) | hashes.astype(np.uint64))
    flat = (key & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount((key >> np.uint64(32)).astype(np.int64), minlength=n), out=offsets[1:])
    return flat, offsets


_BLOCK = 1 << 17   # hashes per block in signatures(): the working buffer stays in L2


def signatures(flat: np.ndarray, offsets: np.ndarray, num_perm: int, seed: int) -> np.ndarray:
    """MinHash signatures, permutation-major: shape (num_perm, rows), uint32.

    Column i equals ``datasketch.MinHash(num_perm, seed, hashfunc=shingle_hash)``
    updated with row i's shingles; a row with no shingle keeps MAX_HASH.
    """
    a, b = permutations(num_perm, seed)
    n = len(offsets) - 1
    out = np.full((num_perm, n), MAX_HASH, dtype=np.uint32)
    hv = _fmix(flat.astype(np.uint32, copy=True), _F32, inplace=True)
    nonempty = np.flatnonzero(offsets[1:] > offsets[:-1])
    buf = np.empty(min(_BLOCK, len(hv)) or 1, dtype=np.uint32)
    i = 0
    while i < len(nonempty):
        # rows nonempty[i:j] whose hashes fit one block (at least one row)
        lo = offsets[nonempty[i]]
        j = int(np.searchsorted(offsets[nonempty + 1], lo + len(buf), side="right"))
        j = max(j, i + 1)
        rows = nonempty[i:j]
        hi = offsets[rows[-1] + 1]
        x = hv[lo:hi]
        seg = offsets[rows] - lo
        if len(x) > len(buf):
            buf = np.empty(len(x), dtype=np.uint32)
        w = buf[:len(x)]
        res = np.empty((num_perm, len(rows)), dtype=np.uint32)
        for k in range(num_perm):
            np.multiply(x, a[k], out=w)
            w += b[k]
            np.minimum.reduceat(w, seg, out=res[k])
        out[:, rows] = res
        i = j
    return out


@dataclass
class Sketches:
    """Per-row shingle sets and MinHash signatures of a list of texts."""
    sig: np.ndarray          # (num_perm, rows) uint32
    flat: np.ndarray         # all rows' distinct shingle hashes, sorted within a row
    offsets: np.ndarray      # row i's hashes are flat[offsets[i]:offsets[i+1]]
    char_mode: np.ndarray    # bool per row
    edit_sig: np.ndarray | None = None   # (bins, rows) character signature (sftpipe.dedup.edits)
    norm: list[str] | None = None        # normalized texts, for the edit and slot checks
    digit_key: np.ndarray | None = None  # per row: key of its digit runs, with edit_sig (edits.digit_keys)

    @property
    def sizes(self) -> np.ndarray:
        return np.diff(self.offsets)

    def set_of(self, i: int) -> np.ndarray:
        return self.flat[self.offsets[i]:self.offsets[i + 1]]


def sketch_batch(texts: list[str], norm, shingle: str, word_n: int, char_n: int,
                 num_perm: int, seed: int, edit_ngram: int = 0, edit_bins: int = 0,
                 keep_norm: bool = False) -> Sketches:
    """Normalize, shingle, hash and MinHash a batch of raw texts; with ``edit_bins``, also the
    character signature of :mod:`sftpipe.dedup.edits`; with it or ``keep_norm``, the normalized
    texts (the edit and slot checks compare them)."""
    b = normalize_batch(texts, norm)
    char_mode = char_mode_rows(b, shingle)
    rows, s, e = shingle_spans(b, char_mode, word_n, char_n)
    flat, offsets = unique_per_row(rows, span_hashes(b, s, e), len(texts))
    out = Sketches(signatures(flat, offsets, num_perm, seed), flat, offsets, char_mode)
    if edit_bins:
        from .edits import char_ngram_hashes, digit_keys, oph_signatures
        rows, hashes = char_ngram_hashes(b.cps, b.lens, edit_ngram)
        out.edit_sig = oph_signatures(rows, hashes, len(texts), edit_bins)
        out.digit_key = digit_keys(b.cps, b.lens)
    if edit_bins or keep_norm:
        out.norm = b.texts()
    return out
