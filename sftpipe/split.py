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

The stage streams (:func:`split_jsonl`): it holds the rows' ids, labels and group numbers, the
validation and test texts' n-grams, and one record at a time; :func:`split_records` is the same on
a list.
"""

from __future__ import annotations

import hashlib
import random
import sys
from collections import Counter, defaultdict
from pathlib import Path

from .config import DedupParams, SplitParams
from .dedup.clusters import near_duplicate_groups
from .dedup.sketch import normalize, shingles, use_char_shingles
from .io import dumps, iter_jsonl, write_json
from .ledger import FilterResult, IdTally, counts_of, drop, jsonl_outputs
from .schema import full_text
from .twopass import changed, chunks

SPLITS = ("train", "validation", "test")


def assign_splits(records: list[dict], split_params: SplitParams,
                  dedup_params: DedupParams) -> tuple[list[str], list[int]]:
    """(split name per row, group label per row)."""
    groups = near_duplicate_groups([full_text(r) for r in records], dedup_params,
                                   threshold=split_params.group_threshold)
    return assign_groups([r["id"] for r in records], [r.get("label") for r in records], groups, split_params), groups


def assign_groups(ids: list, labels: list, groups, split_params: SplitParams) -> list[str]:
    """The split of each row from its id, label and near-duplicate group (see the module's docstring)."""
    members: dict[int, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        members[int(g)].append(i)
    strata: dict[str, list[list[int]]] = defaultdict(list)
    for g in sorted(members, key=lambda g: members[g][0]):
        idx = members[g]
        counts = Counter(labels[i] or "" for i in idx)
        label = min(counts, key=lambda k: (-counts[k], k)) if split_params.stratify else ""
        strata[label].append(idx)
    fractions = {"train": split_params.train, "validation": split_params.validation, "test": split_params.test}
    out = [""] * len(ids)
    if split_params.order == "hash":
        return _assign_by_hash(ids, strata, fractions, split_params.seed, out)
    rng = random.Random(split_params.seed)
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
    return out


def _group_rank(seed: int, ids: list, idx: list[int]) -> bytes:
    """A seeded hash of the group's smallest id: the same for the group whatever other rows exist."""
    key = min(str(ids[i]) for i in idx)
    return hashlib.blake2b(f"{seed}\x00{key}".encode(), digest_size=8).digest() + key.encode()


def _assign_by_hash(ids: list, strata: dict[str, list[list[int]]], fractions: dict[str, float],
                    seed: int, out: list[str]) -> list[str]:
    """Each label's groups in seeded-hash order, cut at the split shares by the rows before each group:
    test first, then validation, then train. Removing or adding a row upstream moves only the groups at
    the two cuts (and the row's own group), not a reshuffle of the whole label."""
    cuts = (("test", fractions["test"]), ("validation", fractions["test"] + fractions["validation"]))
    for label in sorted(strata):
        grp = sorted(strata[label], key=lambda idx: _group_rank(seed, ids, idx))
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


class Decontaminator:
    """The n-gram index of the reference rows (id, origin, text): :meth:`check` says whether a training
    text overlaps one of them too much.

    Overlap is the share of n-grams two rows have in common, over the smaller row's
    n-gram count (so a train row that contains a whole eval question counts, however
    long its answer). A row is contaminated at ``decontam_min_overlap`` or above;
    ``0`` gives the classic rule "any shared n-gram" (GPT-3's 13-grams), which on
    templated data flags rows that share only boilerplate.
    """

    def __init__(self, references: list[tuple[str, str, str]], split_params: SplitParams, dedup_params: DedupParams):
        self.split_params, self.dedup_params = split_params, dedup_params
        self.refs = [(rid, origin) for rid, origin, _ in references]
        self.ref_grams = [ngrams(text, split_params, dedup_params) for _, _, text in references]
        self.index: dict[str, list[int]] = defaultdict(list)
        for j, grams in enumerate(self.ref_grams):
            for g in grams:
                self.index[g].append(j)

    def check(self, text: str) -> dict | None:
        """The ledger evidence when ``text`` is contaminated (the best-matching reference), else None."""
        grams = ngrams(text, self.split_params, self.dedup_params)
        shared = Counter(j for g in grams for j in self.index.get(g, ()))
        best = None
        for j, n in shared.items():
            score = n / min(len(grams), len(self.ref_grams[j]))
            if score >= self.split_params.decontam_min_overlap and (best is None or (score, -j) > (best[0], -best[1])):
                best = (score, j)
        if best is None:
            return None
        score, j = best
        rid, origin = self.refs[j]
        return {"matched_id": rid, "matched_in": origin, "overlap": round(score, 4), "shared_ngrams": shared[j],
                "ngram": min(grams & self.ref_grams[j]), "min_overlap": self.split_params.decontam_min_overlap}


def decontaminate(train: list[dict], references: list[tuple[str, str, str]], split_params: SplitParams,
                  dedup_params: DedupParams) -> tuple[list[dict], list[dict]]:
    """Drop train rows that overlap one (id, origin, text) reference row too much (:class:`Decontaminator`)."""
    dc = Decontaminator(references, split_params, dedup_params)
    kept, dropped = [], []
    for rec in train:
        hit = dc.check(full_text(rec))
        if hit is None:
            kept.append(rec)
        else:
            dropped.append(drop(rec, "split", "contamination", **hit))
    return kept, dropped


def split_records(records: list[dict], split_params: SplitParams, dedup_params: DedupParams,
                  eval_refs: list[tuple[str, str, str]] = ()) -> tuple[dict[str, list[dict]], FilterResult]:
    """({split: rows}, FilterResult whose kept = all rows kept in any split, dropped = contaminated)."""
    names, groups = assign_splits(records, split_params, dedup_params)
    parts: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for rec, name, g in zip(records, names, groups):
        parts[name].append(_grouped(rec, g))
    dropped: list[dict] = []
    if split_params.decontaminate:
        refs = [(r["id"], s, full_text(r)) for s in ("validation", "test") for r in parts[s]]
        parts["train"], dropped = decontaminate(parts["train"], refs + list(eval_refs), split_params,
                                                dedup_params)
    tally = _Tally()
    for s in SPLITS:
        for r in parts[s]:
            tally.add(s, r.get("label"))
    metrics, details = tally.summary(groups)
    kept = [r for s in SPLITS for r in parts[s]]
    return parts, FilterResult(kept, dropped, metrics, details)


def _grouped(rec: dict, g) -> dict:
    return {**rec, "meta": {**rec["meta"], "split_group": int(g)}}


class _Tally:
    """Rows kept per split and per label: the stage's metrics and details."""

    def __init__(self):
        self.per_label: dict = defaultdict(lambda: dict.fromkeys(SPLITS, 0))

    def add(self, split: str, label) -> None:
        self.per_label[label or "unlabeled"][split] += 1

    def summary(self, groups) -> tuple[dict, dict]:
        sizes = Counter(int(g) for g in groups)
        metrics = {**{s: sum(v[s] for v in self.per_label.values()) for s in SPLITS}, "groups": len(sizes),
                   "multi_row_groups": sum(1 for n in sizes.values() if n > 1)}
        return metrics, {"per_label": dict(sorted(self.per_label.items()))}


def split_jsonl(inp_path, out_dir, metrics_path, split_params: SplitParams, dedup_params: DedupParams,
                eval_refs: list[tuple[str, str, str]] = (), chunk_rows: int = 10_000) -> dict:
    """The stage from a JSONL file, streaming: the rows' ids and labels and their near-duplicate groups
    (``dedup.stream.groups_jsonl``) first; then the validation and test rows' texts, the references of
    decontamination; then every row again, to its split's file or the ledger. Writes train, validation
    and test.jsonl, dropped.jsonl, details.json and the metrics with the bytes of :func:`split_records` +
    the stage's in-memory writes, all four row files published together only if every row went out once.
    Returns the metrics."""
    from .dedup.stream import groups_jsonl

    ids = IdTally()
    row_ids: list = []
    labels: list = []
    for chunk in chunks(inp_path, chunk_rows, ids):
        for rec in chunk:
            row_ids.append(rec["id"])
            lab = rec.get("label")
            labels.append(sys.intern(lab) if isinstance(lab, str) else lab)
    groups = groups_jsonl(inp_path, dedup_params, split_params.group_threshold)
    names = assign_groups(row_ids, labels, groups, split_params)
    del row_ids, labels
    dc = None
    if split_params.decontaminate:
        held = {"validation": [], "test": []}
        for i, rec in enumerate(iter_jsonl(inp_path)):
            if i < len(names) and names[i] in held:
                held[names[i]].append((rec["id"], names[i], full_text(rec)))
        dc = Decontaminator(held["validation"] + held["test"] + list(eval_refs), split_params, dedup_params)
        del held
    out_dir = Path(out_dir)
    tally, seen = _Tally(), IdTally()
    reasons: Counter = Counter()
    paths = [out_dir / f"{s}.jsonl" for s in SPLITS] + [out_dir / "dropped.jsonl"]
    with jsonl_outputs(*paths) as handles:
        for i, rec in enumerate(iter_jsonl(inp_path)):
            if i >= ids.n:
                raise changed("split", inp_path, ids, i + 1)
            seen.add(rec["id"])
            row, name = _grouped(rec, groups[i]), names[i]
            hit = dc.check(full_text(rec)) if dc is not None and name == "train" else None
            if hit is not None:
                row, name = drop(row, "split", "contamination", **hit), "dropped"
                reasons[row["reason"]] += 1
            else:
                tally.add(name, rec.get("label"))
            handles[-1 if name == "dropped" else SPLITS.index(name)].write(dumps(row) + "\n")
        if (seen.n, seen.total) != (ids.n, ids.total):   # every row read is written once, to one file
            raise changed("split", inp_path, ids, seen.n)
    metrics, details = tally.summary(groups)
    write_json(out_dir / "details.json", details)
    m = counts_of(ids.n, ids.n - sum(reasons.values()), reasons, metrics)
    write_json(metrics_path, m)
    return m
