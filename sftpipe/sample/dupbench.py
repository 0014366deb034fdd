"""A duplicate benchmark with user-level ground truth, English and Chinese.

What a reader calls a duplicate, made on purpose, so that dedup is scored
against the injection and never against its own similarity measure:

* **typo copies**: a row copied with character edits (substitution by a nearby
  key or a similar-looking / random CJK character, deletion, doubled letter,
  inserted punctuation, swapped neighbours) at a given share of its
  characters, in prompt and response alike. Digits are never edited: a changed
  number makes a different example (``18 + 15`` vs ``18 + 16``), so rows whose
  numbers differ are never duplicates, here or in dedup;
* **paraphrases**: the same request in other words with the same answer: the
  sample's task generators (:mod:`sftpipe.sample.tasks`) replayed with the same
  slots (country, numbers, review, names...) and another prompt template;
* **templated near-misses (NOT duplicates)**: rows from one template that
  differ in a slot (``capital of Kenya`` vs ``capital of Peru``, another name,
  another review). Every original shares its template with many others, and
  :func:`one_slot_pairs` lists the pairs that differ in exactly one slot, the
  hardest negatives.

Originals are the six sample task families, plus long alpaca-sized rows
(:mod:`sftpipe.sample.neardup`) so that long texts are covered too. Rows are
canonical records (``id``, ``messages``, ``source``); ``truth`` gives, per row,
its group (rows of one group are duplicates of each other) and what it is.
Everything is a pure function of the seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from . import neardup
from .tasks import CATEGORIES, GENERATORS, WEIGHTS

RATES = (0.02, 0.05, 0.08)
_KEYS = ["qwertyuiop", "asdfghjkl", "zxcvbnm"]
_NEAR = {}
for _r, _row in enumerate(_KEYS):
    for _c, _ch in enumerate(_row):
        _NEAR[_ch] = "".join(_KEYS[rr][cc] for rr in range(max(0, _r - 1), min(3, _r + 2))
                             for cc in range(max(0, _c - 1), _c + 2) if cc < len(_KEYS[rr]) and _KEYS[rr][cc] != _ch)
_PUNCT_EN = ",.;'-!"
_PUNCT_ZH = "，。、；！"


def _is_cjk(ch: str) -> bool:
    return "\u4e00" <= ch <= "\u9fff"


def typo(rng: random.Random, text: str, rate: float) -> str:
    """``text`` with about ``rate`` of its characters edited (never digits); always changed."""
    zh = neardup._vocab().zh
    out: list[str] = []
    chars = list(text)
    i = 0
    edits = 0
    while i < len(chars):
        ch = chars[i]
        if ch.isdigit() or rng.random() >= rate or (ch == "\n"):
            out.append(ch)
            i += 1
            continue
        edits += 1
        op = rng.randrange(5)
        cjk = _is_cjk(ch)
        if op == 0:                                    # substitution
            if cjk:
                out.append(zh[rng.randrange(min(len(zh), 800))])
            elif ch.lower() in _NEAR:
                sub = rng.choice(_NEAR[ch.lower()])
                out.append(sub.upper() if ch.isupper() else sub)
            else:
                out.append(rng.choice(_PUNCT_ZH if cjk else _PUNCT_EN) if not ch.isalpha() else ch)
        elif op == 1:                                  # deletion
            pass
        elif op == 2:                                  # doubled character (a stuck key)
            out.extend([ch, ch])
        elif op == 3:                                  # inserted punctuation
            out.extend([ch, rng.choice(_PUNCT_ZH if cjk else _PUNCT_EN)])
        else:                                          # swapped with the next character
            if i + 1 < len(chars) and not chars[i + 1].isdigit() and chars[i + 1] != "\n":
                out.extend([chars[i + 1], ch])
                i += 1
            else:
                out.append(ch)
        i += 1
    new = "".join(out)
    if new == text:                                    # nothing fired (short text, low rate)
        pos = next((k for k, c in enumerate(text) if c.isalpha() or _is_cjk(c)), None)
        new = text + "." if pos is None else text[:pos] + text[pos] * 2 + text[pos + 1:]
    return new


@dataclass
class Bench:
    records: list[dict]
    truth: list[dict]       # per row: group, kind (original|typo|paraphrase|long), lang, rate, category, key

    def dup_pairs(self) -> set[tuple[int, int]]:
        """Every pair (i < j) of rows in one group: what dedup should join."""
        groups: dict[int, list[int]] = {}
        for i, t in enumerate(self.truth):
            groups.setdefault(t["group"], []).append(i)
        return {(a, b) for g in groups.values() if len(g) > 1 for k, a in enumerate(g) for b in g[k + 1:]}

    def one_slot_pairs(self) -> set[tuple[int, int]]:
        """Pairs of originals with the same category, language and template that differ in
        exactly one slot: the hardest rows that must stay apart."""
        by_tpl: dict[tuple, list[int]] = {}
        for i, t in enumerate(self.truth):
            if t["kind"] == "original":
                k = t["key"]
                by_tpl.setdefault((t["category"], k[0], k[-1], len(k)), []).append(i)
        out = set()
        for rows in by_tpl.values():
            for a_pos, a in enumerate(rows):
                ka = self.truth[a]["key"]
                for b in rows[a_pos + 1:]:
                    kb = self.truth[b]["key"]
                    if sum(x != y for x, y in zip(ka, kb)) == 1:
                        out.add((a, b))
        return out


    def score(self, component) -> "Score":
        """Score a clustering (per row: a cluster label) against the injected truth.

        Recall per (kind, lang, rate) counts each copy against its own original (two copies
        of one original are counted through it); precision is over every pair of rows put in
        one cluster, so a wrong merge of two clusters costs all their cross pairs.
        """
        found = neardup.same_component_pairs(np.asarray(component))
        truth = self.dup_pairs()
        recall: dict[tuple, list[int]] = {}
        for i, j in truth:
            ti, tj = self.truth[i], self.truth[j]
            if ti["kind"] != "original" and tj["kind"] != "original":
                continue
            t = tj if ti["kind"] == "original" else ti
            cell = recall.setdefault((t["kind"], t["lang"], t["rate"]), [0, 0])
            cell[0] += (i, j) in found
            cell[1] += 1
        one = self.one_slot_pairs()
        return Score(recall={k: (a, b) for k, (a, b) in sorted(recall.items())},
                     precision=len(found & truth) / len(found) if found else 1.0,
                     false_pairs=len(found - truth), one_slot_merged=len(found & one), one_slot_pairs=len(one))


@dataclass
class Score:
    recall: dict            # (kind, lang, rate) -> (found, total)
    precision: float        # share of same-cluster pairs that are true duplicates
    false_pairs: int
    one_slot_merged: int    # templated near-misses (one slot differs) put in one cluster
    one_slot_pairs: int

    def rate(self, kind: str, lang: str | None = None, rate: float | None = None) -> float:
        """Pooled recall over the cells that match."""
        cells = [v for (k, la, r), v in self.recall.items() if k == kind and lang in (None, la)
                 and rate in (None, r)]
        total = sum(b for _, b in cells)
        return sum(a for a, _ in cells) / total if total else float("nan")


def _record(rid: str, prompt: str, response: str) -> dict:
    return {"id": rid, "source": "dupbench",
            "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]}


def _replay(state, category: str, lang: str, template: int):
    """The item drawn from rng ``state``, and the same item (same slots) with prompt ``template``."""
    rng = random.Random()
    rng.setstate(state)
    item = GENERATORS[category](rng, lang)
    rng.setstate(state)
    return item, GENERATORS[category](rng, lang, template)


_N_TEMPLATES = {"arithmetic": 3, "translation": 3, "sentiment": 3, "reverse": 2, "capital": 5, "invitation": 3}


def generate(n_per_lang: int = 1500, n_long: int = 400, n_typo: int = 120, n_para: int = 150,
             seed: int = 0, langs=("en", "zh")) -> Bench:
    """Originals (``n_per_lang`` task rows + ``n_long`` long rows per language), ``n_typo`` typo
    copies per language and rate, ``n_para`` paraphrases per language; rows shuffled."""
    rng = random.Random(seed)
    rows: list[tuple[str, str]] = []
    truth: list[dict] = []
    states: list[tuple] = []               # (rng state, category, lang) of each task original
    for lang in langs:
        seen: set = set()
        cats = list(CATEGORIES)
        weights = [WEIGHTS[c] for c in cats]
        made, tries = 0, 0
        while made < n_per_lang and tries < 50 * n_per_lang:
            tries += 1
            cat = rng.choices(cats, weights)[0]
            state = rng.getstate()
            item = GENERATORS[cat](rng, lang)
            if item.key[:-1] in seen:      # one original per slot combination: other templates are paraphrases
                continue
            seen.add(item.key[:-1])
            truth.append({"group": len(rows), "kind": "original", "lang": lang, "rate": 0.0, "category": cat,
                          "key": list(item.key)})
            states.append((state, cat, lang, len(rows)))
            rows.append((item.prompt, item.response))
            made += 1
        np_rng = np.random.default_rng(rng.randrange(1 << 30))
        texts = neardup.english_texts(np_rng, n_long) if lang == "en" else neardup.chinese_texts(np_rng, n_long)
        for text in texts:
            cut = text.find(". ") + 1 if lang == "en" else text.find("。") + 1
            cut = cut if 0 < cut < len(text) - 1 else len(text) // 3
            truth.append({"group": len(rows), "kind": "original", "lang": lang, "rate": 0.0, "category": "long",
                          "key": [lang, "long", len(rows)]})
            rows.append((text[:cut].strip(), text[cut:].strip()))
    originals = list(range(len(rows)))
    for lang in langs:
        pool = [i for i in originals if truth[i]["lang"] == lang]
        for rate in RATES:
            for src in rng.sample(pool, n_typo):
                p, r = rows[src]
                truth.append({**truth[src], "kind": "typo", "rate": rate})
                rows.append((typo(rng, p, rate), typo(rng, r, rate)))
        task_states = [s for s in states if s[2] == lang]
        for state, cat, _, src in rng.sample(task_states, n_para):
            t_old = truth[src]["key"][-1]
            t_new = rng.choice([t for t in range(_N_TEMPLATES[cat]) if t != t_old])
            item, para = _replay(state, cat, lang, t_new)
            assert item.prompt == rows[src][0] and para.key[:-1] == item.key[:-1] and para.key[-1] == t_new, cat
            truth.append({**truth[src], "kind": "paraphrase", "key": list(para.key)})
            rows.append((para.prompt, para.response))
    order = list(range(len(rows)))
    rng.shuffle(order)
    records = [_record(f"b{new:06d}", *rows[old]) for new, old in enumerate(order)]
    return Bench(records=records, truth=[truth[old] for old in order])
