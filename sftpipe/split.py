"""Leakage-free train/validation/test split, then decontamination of the training rows.

Rows are first grouped: near-duplicates at ``split.group_threshold`` (MinHash,
lower than the dedup threshold, so even looser paraphrase-level pairs stay
together) form one group, and a group never straddles two splits. Groups are
stratified by (majority) label and dealt out, in a seeded shuffle, to the split
furthest below its target share, so each label lands close to 80/10/10.

Decontamination then drops training rows that share an n-gram (words, or
characters for Chinese) with a validation/test row or with a user-supplied
eval file; the ledger names the matching row and the shared n-gram.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict

from .config import DedupParams, SplitParams
from .dedup import near_duplicate_groups, normalize
from .ledger import FilterResult, drop
from .schema import cjk_ratio, full_text

SPLITS = ("train", "validation", "test")


def assign_splits(records: list[dict], p: SplitParams, dp: DedupParams) -> tuple[list[str], list[int]]:
    """(split name per row, group label per row)."""
    groups = near_duplicate_groups([full_text(r) for r in records], dp, threshold=p.group_threshold)
    members: dict[int, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        members[g].append(i)
    strata: dict[str, list[list[int]]] = defaultdict(list)
    for g in sorted(members, key=lambda g: members[g][0]):
        idx = members[g]
        labels = Counter(records[i].get("label") or "" for i in idx)
        label = min(labels, key=lambda k: (-labels[k], k)) if p.stratify else ""
        strata[label].append(idx)
    rng = random.Random(p.seed)
    fractions = {"train": p.train, "validation": p.validation, "test": p.test}
    out = [""] * len(records)
    for label in sorted(strata):
        grp = strata[label]
        rng.shuffle(grp)
        n = sum(len(g) for g in grp)
        filled = dict.fromkeys(SPLITS, 0)
        for idx in grp:
            target = max(SPLITS, key=lambda s: (fractions[s] * n - filled[s], -SPLITS.index(s)))
            filled[target] += len(idx)
            for i in idx:
                out[i] = target
    return out, groups


def ngrams(text: str, p: SplitParams, dp: DedupParams) -> set[str]:
    """Word n-grams, or character n-grams for Chinese (no spaces); short texts give themselves."""
    norm = normalize(text, dp.normalize)
    if cjk_ratio(text) >= 0.3:
        units, n, sep = [c for c in norm if not c.isspace()], p.decontam_char_ngram, ""
    else:
        units, n, sep = norm.split(), p.decontam_ngram, " "
    if not units:
        return set()
    if len(units) < n:
        return {sep.join(units)}
    return {sep.join(units[i:i + n]) for i in range(len(units) - n + 1)}


def decontaminate(train: list[dict], references: list[tuple[str, str, str]], p: SplitParams,
                  dp: DedupParams) -> tuple[list[dict], list[dict]]:
    """Drop train rows sharing an n-gram with any (id, origin, text) reference row."""
    index: dict[str, tuple[str, str]] = {}
    for rid, origin, text in references:
        for g in ngrams(text, p, dp):
            index.setdefault(g, (rid, origin))
    kept, dropped = [], []
    for rec in train:
        hit = next((g for g in sorted(ngrams(full_text(rec), p, dp)) if g in index), None)
        if hit is None:
            kept.append(rec)
        else:
            rid, origin = index[hit]
            dropped.append(drop(rec, "split", "contamination", matched_id=rid, matched_in=origin, ngram=hit,
                                n=p.decontam_char_ngram if cjk_ratio(hit) >= 0.3 else p.decontam_ngram))
    return kept, dropped


def split_records(records: list[dict], p: SplitParams, dp: DedupParams,
                  eval_refs: list[tuple[str, str, str]] = ()) -> tuple[dict[str, list[dict]], FilterResult]:
    """({split: rows}, FilterResult whose kept = all rows kept in any split, dropped = contaminated)."""
    names, groups = assign_splits(records, p, dp)
    parts: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for rec, name, g in zip(records, names, groups):
        parts[name].append({**rec, "meta": {**rec["meta"], "split_group": g}})
    dropped: list[dict] = []
    if p.decontaminate:
        refs = [(r["id"], s, full_text(r)) for s in ("validation", "test") for r in parts[s]]
        parts["train"], dropped = decontaminate(parts["train"], refs + list(eval_refs), p, dp)
    per_label: dict = defaultdict(lambda: dict.fromkeys(SPLITS, 0))
    for s in SPLITS:
        for r in parts[s]:
            per_label[r.get("label") or "unlabeled"][s] += 1
    sizes = Counter(groups)
    metrics = {**{s: len(parts[s]) for s in SPLITS}, "groups": len(sizes),
               "multi_row_groups": sum(1 for n in sizes.values() if n > 1)}
    kept = [r for s in SPLITS for r in parts[s]]
    return parts, FilterResult(kept, dropped, metrics, {"per_label": dict(sorted(per_label.items()))})
