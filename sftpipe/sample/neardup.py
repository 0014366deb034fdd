"""Generated English and Chinese texts with near-duplicate variants (dedup benches and tests).

Texts are alpaca-sized: English 60-80 words, Chinese 100-150 characters. Words
(characters) are drawn from a Zipf-like distribution over a fixed vocabulary
(the sample data's word lists plus generated pseudo-words / common CJK
characters), cut into sentences with punctuation; about a third of the rows
start or end with a stock phrase shared by many rows, so unrelated rows share
some shingles, as real SFT data does.

A *variant* copies a row and edits it: each token (English word / Chinese
character) is substituted, deleted or followed by an insertion with
probability ``rate``; half the variants also get surface noise that
normalization removes (case, spacing, punctuation, full-width forms). With
5-gram shingles, ``rate`` from 0 to ~0.15 spans Jaccard from 1 down to ~0.2.

Everything is a pure function of the seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import vocab as V

_FUNCTION_EN = ("the of and to a in is that it for was on are as with be at by this have from or "
                "an they which one you were all we her she there been his when can more if will "
                "each about how up out them then many some so these would other into has two like "
                "him see time could no make than first way who its now find long down day did get "
                "come made may part over new also after use only our most very where just know").split()
_SYLL = ("ba be bi bo bu da de di do du fa fe fi fo ga ge gi go ka ke ki ko ku la le li lo lu ma me mi "
         "mo mu na ne ni no nu pa pe pi po ra re ri ro ru sa se si so su ta te ti to tu va ve vi vo "
         "za ze zi zo ar er ir or an en in on al el il ol").split()
_OPEN_EN = ["Sure, here is a short answer to your question.", "Great question! Let me explain step by step.",
            "Here is what you need to know about this topic.", "Certainly. The short version is below.",
            "Thanks for asking, this comes up often.", "Below is a brief overview with the key points.",
            "Of course! I will keep it simple and clear.", "Happy to help with that request."]
_CLOSE_EN = ["I hope this helps, let me know if you have more questions.",
             "Feel free to ask if anything is unclear.", "Good luck, and have a wonderful day!",
             "Let me know if you would like more detail on any part.",
             "That covers the main points for now.", "Please reach out again if you need anything else."]
_OPEN_ZH = ["当然可以，下面是简要的回答。", "这是一个很好的问题，我来一步一步解释。", "好的，以下是你需要了解的要点。",
            "感谢提问，这个问题很常见。", "没问题，我会尽量说得简单明了。", "下面给出一个简短的概述。"]
_CLOSE_ZH = ["希望这些信息对你有帮助。", "如果还有其他问题，欢迎继续提问。", "祝你一切顺利！",
             "如需更多细节，请随时告诉我。", "以上就是主要内容，供你参考。"]
_FULLWIDTH = {c: chr(ord(c) + 0xFEE0) for c in "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ,.!?"}
_LATIN_IN_ZH = ["AI", "Python", "app", "GPS", "Wi-Fi", "5G", "CPU", "DNA"]


def _zipf(n: int, s: float = 1.05) -> np.ndarray:
    w = 1.0 / (np.arange(n) + 2.7) ** s
    return w / w.sum()


class _Vocab:
    def __init__(self):
        rng = np.random.default_rng(20240607)         # fixed: the vocabulary never changes
        words = list(dict.fromkeys(_FUNCTION_EN + [w.lower() for lst in (
            V.NAMES_EN, [o[0] for o in V.OBJECTS], [a[0] for a in V.ADJ], [n[0] for n in V.NOUN],
            V.THINGS_EN, V.POS_EN, V.NEG_EN, V.REVERSE_WORDS_EN) for x in lst for w in x.split()]))
        seen = set(words)
        while len(words) < 6000:
            w = "".join(rng.choice(_SYLL, rng.integers(2, 5)))
            if w not in seen:
                seen.add(w)
                words.append(w)
        self.en = np.array(words, dtype=object)
        self.en_p = _zipf(len(words))
        sample_zh = "".join(x for lst in (V.NAMES_ZH, [o[2] for o in V.OBJECTS], V.THINGS_ZH, V.POS_ZH,
                                          V.NEG_ZH, V.REVERSE_WORDS_ZH) for x in lst)
        common = "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可她里后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两长"
        chars = list(dict.fromkeys(common + sample_zh))
        extra = rng.permutation(np.arange(0x4E00, 0x9FA6))[:3000]
        chars += [chr(c) for c in extra.tolist() if chr(c) not in set(chars)]
        self.zh = np.array(chars, dtype=object)
        self.zh_p = _zipf(len(chars))


_VOCAB: _Vocab | None = None


def _vocab() -> _Vocab:
    global _VOCAB
    if _VOCAB is None:
        _VOCAB = _Vocab()
    return _VOCAB


def _token_rows(rng: np.random.Generator, n: int, tokens: list[str], probs, lo: int, hi: int) -> list[list[str]]:
    """n rows of lo..hi tokens each, drawn from ``tokens`` with ``probs``."""
    lens = rng.integers(lo, hi + 1, n)
    idx = rng.choice(len(tokens), size=int(lens.sum()), p=probs).tolist()
    ends = np.cumsum(lens).tolist()
    return [[tokens[k] for k in idx[end - length:end]] for end, length in zip(ends, lens.tolist())]


def english_texts(rng: np.random.Generator, n: int) -> list[str]:
    v = _vocab()
    rows = _token_rows(rng, n, v.en, v.en_p, 60, 80)
    extras = rng.random((n, 4))
    out = []
    for i, words in enumerate(rows):
        sents, j = [], 0
        while j < len(words):
            k = min(len(words), j + int(rng.integers(6, 17)))
            s = words[j:k]
            if len(s) > 6 and extras[i, 3] < 0.5:
                s[len(s) // 2] += ","
            if extras[i, 2] < 0.15:
                s[-1] = str(int(rng.integers(2, 2000)))
            sents.append(" ".join(s).capitalize() + ".")
            j = k
        if extras[i, 0] < 0.3:
            sents.insert(0, _OPEN_EN[int(rng.integers(len(_OPEN_EN)))])
        if extras[i, 1] < 0.3:
            sents.append(_CLOSE_EN[int(rng.integers(len(_CLOSE_EN)))])
        out.append(" ".join(sents))
    return out


def chinese_texts(rng: np.random.Generator, n: int) -> list[str]:
    v = _vocab()
    rows = _token_rows(rng, n, v.zh, v.zh_p, 100, 150)
    extras = rng.random((n, 3))
    out = []
    for i, chars in enumerate(rows):
        parts, j = [], 0
        while j < len(chars):
            k = min(len(chars), j + int(rng.integers(8, 26)))
            parts.append("".join(chars[j:k]) + ("。" if rng.random() < 0.5 else "，"))
            j = k
        if extras[i, 2] < 0.2:
            parts.insert(int(rng.integers(len(parts))), _LATIN_IN_ZH[int(rng.integers(len(_LATIN_IN_ZH)))])
        text = "".join(parts)[:-1] + "。"
        if extras[i, 0] < 0.3:
            text = _OPEN_ZH[int(rng.integers(len(_OPEN_ZH)))] + text
        if extras[i, 1] < 0.3:
            text += _CLOSE_ZH[int(rng.integers(len(_CLOSE_ZH)))]
        out.append(text)
    return out


def _surface_noise(rng: np.random.Generator, text: str, lang: str) -> str:
    kind = int(rng.integers(4))
    if kind == 0:
        return text.upper() if lang == "en" else text.replace("，", ",")
    if kind == 1:
        return "  " + text.replace(" ", "  ", 3) + " \n" if lang == "en" else text.replace("。", "。 ") + "  "
    if kind == 2:
        return text.replace(".", "!") if lang == "en" else text.replace("。", "！")
    return "".join(_FULLWIDTH.get(c, c) for c in text)


def variant(rng: np.random.Generator, text: str, lang: str, rate: float) -> str:
    """An edited copy of ``text`` (see the module docstring)."""
    v = _vocab()
    toks = text.split(" ") if lang == "en" else list(text)
    pool, pool_p = (v.en, v.en_p) if lang == "en" else (v.zh, v.zh_p)
    u = rng.random(len(toks))
    ops = rng.integers(0, 3, len(toks))
    out = []
    for t, x, op in zip(toks, u.tolist(), ops.tolist()):
        if x >= rate:
            out.append(t)
        elif op == 0:
            out.append(pool[rng.choice(len(pool), p=pool_p)])
        elif op == 1:
            out.extend([t, pool[rng.choice(len(pool), p=pool_p)]])
        # op == 2: deleted
    new = (" " if lang == "en" else "").join(out)
    if rng.random() < 0.5:
        new = _surface_noise(rng, new, lang)
    return new if new != text else new + (" ok" if lang == "en" else "好")


@dataclass
class BenchData:
    texts: list[str]
    langs: list[str]        # "en" / "zh"
    origin: list[int]       # index of the row a variant was made from (-1 for originals)
    rate: list[float]       # edit rate of a variant (0 for originals)


def generate(n_rows: int, seed: int = 0, zh_share: float = 0.5, dup_share: float = 0.1,
             max_rate: float = 0.04, chain: float = 0.2) -> BenchData:
    """``n_rows`` texts, ``dup_share`` of them variants (edit rate uniform in [0, max_rate]).

    A variant is made from an original, or with probability ``chain`` from an
    earlier variant (chains of edits). Rows come out shuffled.
    """
    rng = np.random.default_rng(seed)
    n_var = int(round(n_rows * dup_share))
    n_orig = n_rows - n_var
    n_zh = int(round(n_orig * zh_share))
    texts = english_texts(rng, n_orig - n_zh) + chinese_texts(rng, n_zh)
    langs = ["en"] * (n_orig - n_zh) + ["zh"] * n_zh
    origin, rate = [-1] * n_orig, [0.0] * n_orig
    for _ in range(n_var):
        if len(texts) > n_orig and rng.random() < chain:
            src = int(rng.integers(n_orig, len(texts)))
        else:
            src = int(rng.integers(n_orig))
        r = float(rng.uniform(0.0, max_rate))
        texts.append(variant(rng, texts[src], langs[src], r))
        langs.append(langs[src])
        origin.append(src)
        rate.append(r)
    perm = rng.permutation(n_rows)
    inv = np.empty(n_rows, dtype=np.int64)
    inv[perm] = np.arange(n_rows)
    return BenchData(texts=[texts[i] for i in perm.tolist()], langs=[langs[i] for i in perm.tolist()],
                     origin=[int(inv[origin[i]]) if origin[i] >= 0 else -1 for i in perm.tolist()],
                     rate=[rate[i] for i in perm.tolist()])


# ---------------------------------------------------------------------------
# Ground truth: exact Jaccard on the reference shingles (strings, not hashes)


def shingle_sets(texts: list[str], dedup_params) -> list[set[str]]:
    """Each text's set of shingles (strings) under DedupParams ``dedup_params``, by the reference code."""
    from ..dedup.sketch import normalize, shingles, use_char_shingles
    out = []
    for t in texts:
        norm = normalize(t, dedup_params.normalize)
        char = use_char_shingles(norm, dedup_params.shingle)
        out.append(set(shingles(norm, char, dedup_params.char_ngram if char else dedup_params.word_ngram)))
    return out


def true_pairs(sets: list[set[str]], threshold: float) -> dict[tuple[int, int], float]:
    """All pairs (i < j) whose exact Jaccard is >= threshold, with that Jaccard.

    Intersections of all pairs sharing a shingle come from one sparse product.
    """
    from scipy import sparse
    ids: dict[str, int] = {}
    rows, cols = [], []
    for i, s in enumerate(sets):
        for sh in s:
            rows.append(i)
            cols.append(ids.setdefault(sh, len(ids)))
    n = len(sets)
    x = sparse.csr_matrix((np.ones(len(rows), dtype=np.int32), (rows, cols)), shape=(n, max(len(ids), 1)))
    inter = sparse.triu(x @ x.T, k=1).tocoo()
    sizes = np.array([len(s) for s in sets], dtype=np.int64)
    jac = inter.data / (sizes[inter.row] + sizes[inter.col] - inter.data)
    keep = jac >= threshold
    return {(int(i), int(j)): float(v) for i, j, v in zip(inter.row[keep], inter.col[keep], jac[keep])}


def components(n: int, pairs) -> np.ndarray:
    """Smallest member index of each node's connected component."""
    from ..dedup.lsh import union_find
    e = np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)
    return union_find(n, e)


def same_component_pairs(comp: np.ndarray) -> set[tuple[int, int]]:
    groups: dict[int, list[int]] = {}
    for i, c in enumerate(comp.tolist()):
        groups.setdefault(c, []).append(i)
    return {(a, b) for g in groups.values() if len(g) > 1 for k, a in enumerate(g) for b in g[k + 1:]}


def precision_recall(found: set, truth: set) -> tuple[float, float]:
    tp = len(found & truth)
    return (tp / len(found) if found else 1.0), (tp / len(truth) if truth else 1.0)
