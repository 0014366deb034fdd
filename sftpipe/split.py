"""Leakage-free train/validation/test split, then decontamination of the training rows.

Rows are first grouped: near-duplicates at ``split.group_threshold`` (MinHash,
lower than the dedup threshold, so even looser paraphrase-level pairs stay
together) form one group, and a group never straddles two splits. Groups are
stratified by (majority) label; within a label they are ordered by a seeded hash of
their first id and cut at the target shares (``split.order: hash``), so a row's split
does not depend on which other rows reached the stage: a filter change upstream moves
only the groups at the cuts. ``order: shuffle`` (before) dealt a seeded shuffle to the
split furthest below its share, which reshuffled most of the test rows whenever one
row upstream came or went.

Decontamination then drops training rows whose n-grams (words, or characters for
Chinese) overlap a validation/test row or a row of a user-supplied eval file by
at least ``decontam_min_overlap``; the ledger names the matching row, the overlap
and a shared n-gram.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter, defaultdict

from .config import DedupParams, SplitParams
from .dedup.clusters import near_duplicate_groups
from .dedup.sketch import normalize, shingles, use_char_shingles
from .ledger import FilterResult, drop
from .schema import full_text

SPLITS = ("train", "validation", "test")


def assign_splits(records: list[dict], split_params: SplitParams,
                  dedup_params: DedupParams) -> tuple[list[str], list[int]]:
    """(split name per row, group label per row)."""
    groups = near_duplicate_groups([full_text(r) for r in records], dedup_params,
                                   threshold=split_params.group_threshold)
    members: dict[int, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        members[g].append(i)
    strata: dict[str, list[list[int]]] = defaultdict(list)
    for g in sorted(members, key=lambda g: members[g][0]):
        idx = members[g]
        labels = Counter(records[i].get("label") or "" for i in idx)
        label = min(labels, key=lambda k: (-labels[k], k)) if split_params.stratify else ""
        strata[label].append(idx)
    rng = random.Random(split_params.seed)
    fractions = {"train": split_params.train, "validation": split_params.validation, "test": split_params.test}
    out = [""] * len(records)
    if split_params.order == "hash":
        return _assign_by_hash(records, strata, fractions, split_params.seed, out), groups
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


def _group_rank(seed: int, records: list[dict], idx: list[int]) -> bytes:
    """A seeded hash of the group's smallest id: the same for the group whatever other rows exist."""
    key = min(str(records[i]["id"]) for i in idx)
    return hashlib.blake2b(f"{seed}\x00{key}".encode(), digest_size=8).digest() + key.encode()


def _assign_by_hash(records: list[dict], strata: dict[str, list[list[int]]], fractions: dict[str, float],
                    seed: int, out: list[str]) -> list[str]:
    """Each label's groups in seeded-hash order, cut at the split shares by the rows before each group:
    test first, then validation, then train. Removing or adding a row upstream moves only the groups at
    the two cuts (and the row's own group), not a reshuffle of the whole label."""
    cuts = (("test", fractions["test"]), ("validation", fractions["test"] + fractions["validation"]))
    for label in sorted(strata):
        grp = sorted(strata[label], key=lambda idx: _group_rank(seed, records, idx))
        n = sum(len(g) for g in grp)
        before = 0
        for idx in grp:
            target = next((name for name, upto in cuts if before < upto * n), "train")
            before += len(idx)
            for i in idx:
                out[i] = target
    return out


def ngrams(text: str, split_params: SplitParams, dedup_params: DedupParams) -> set[str]:
    """The row's n-grams, cut the way dedup cuts shingles (same normalization, same word-or-character
    choice per row), at the decontamination lengths: word n-grams, or character n-grams for CJK rows;
    a text shorter than n gives itself."""
    norm = normalize(text, dedup_params.normalize)
    char_mode = use_char_shingles(norm, dedup_params.shingle)
    n = split_params.decontam_char_ngram if char_mode else split_params.decontam_ngram
    return set(shingles(norm, char_mode, n))


def decontaminate(train: list[dict], references: list[tuple[str, str, str]], split_params: SplitParams,
                  dedup_params: DedupParams) -> tuple[list[dict], list[dict]]:
    """Drop train rows that overlap one (id, origin, text) reference row too much.

    Overlap is the share of n-grams two rows have in common, over the smaller row's
    n-gram count (so a train row that contains a whole eval question counts, however
    long its answer). A row is contaminated at ``decontam_min_overlap`` or above;
    ``0`` gives the classic rule "any shared n-gram" (GPT-3's 13-grams), which on
    templated data flags rows that share only boilerplate.
    """
    ref_grams = [ngrams(text, split_params, dedup_params) for _, _, text in references]
    index: dict[str, list[int]] = defaultdict(list)
    for j, grams in enumerate(ref_grams):
        for g in grams:
            index[g].append(j)
    kept, dropped = [], []
    for rec in train:
        grams = ngrams(full_text(rec), split_params, dedup_params)
        shared = Counter(j for g in grams for j in index.get(g, ()))
        best = None
        for j, n in shared.items():
            score = n / min(len(grams), len(ref_grams[j]))
            if score >= split_params.decontam_min_overlap and (best is None or (score, -j) > (best[0], -best[1])):
                best = (score, j)
        if best is None:
            kept.append(rec)
            continue
        score, j = best
        rid, origin, _ = references[j]
        example = min(grams & ref_grams[j])
        dropped.append(drop(rec, "split", "contamination", matched_id=rid, matched_in=origin,
                            overlap=round(score, 4), shared_ngrams=shared[j], ngram=example,
                            min_overlap=split_params.decontam_min_overlap))
    return kept, dropped


def split_records(records: list[dict], split_params: SplitParams, dedup_params: DedupParams,
                  eval_refs: list[tuple[str, str, str]] = ()) -> tuple[dict[str, list[dict]], FilterResult]:
    """({split: rows}, FilterResult whose kept = all rows kept in any split, dropped = contaminated)."""
    names, groups = assign_splits(records, split_params, dedup_params)
    parts: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for rec, name, g in zip(records, names, groups):
        parts[name].append({**rec, "meta": {**rec["meta"], "split_group": g}})
    dropped: list[dict] = []
    if split_params.decontaminate:
        refs = [(r["id"], s, full_text(r)) for s in ("validation", "test") for r in parts[s]]
        parts["train"], dropped = decontaminate(parts["train"], refs + list(eval_refs), split_params,
                                                dedup_params)
    per_label: dict = defaultdict(lambda: dict.fromkeys(SPLITS, 0))
    for s in SPLITS:
        for r in parts[s]:
            per_label[r.get("label") or "unlabeled"][s] += 1
    sizes = Counter(groups)
    metrics = {**{s: len(parts[s]) for s in SPLITS}, "groups": len(sizes),
               "multi_row_groups": sum(1 for n in sizes.values() if n > 1)}
    kept = [r for s in SPLITS for r in parts[s]]
    return parts, FilterResult(kept, dropped, metrics, {"per_label": dict(sorted(per_label.items()))})
