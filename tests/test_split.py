"""Leakage-free split: near-duplicate groups stay in one split (checked with MinHash on the
output), labels are stratified, and decontamination drops only real overlaps."""

import json
from collections import Counter
from itertools import combinations

import pytest

from sftpipe.collect import collect
from sftpipe.config import CollectParams, DedupParams, SampleParams, Source, SplitParams
from sftpipe.dedup import find_duplicates
from sftpipe.sample import SOURCES, generate
from sftpipe.schema import full_text
from sftpipe.split import SPLITS, decontaminate, split_records

DP = DedupParams()


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    d = tmp_path_factory.mktemp("split")
    # duplicates left in on purpose: the split must keep each near-duplicate group together
    generate(SampleParams(rows_per_lang=600, seed=11, near_dup_rate=0.08, exact_dup_rate=0.05), d)
    return collect(CollectParams(sources=[Source(path=str(d / f), name=n) for n, f in SOURCES.items()])).records


def test_no_near_duplicate_pair_crosses_splits(records):
    p = SplitParams(decontaminate=False)
    parts, res = split_records(records, p, DP)
    where = {r["id"]: s for s in SPLITS for r in parts[s]}
    rows = [r for s in SPLITS for r in parts[s]]
    # an independent check on the output: every MinHash pair at the grouping threshold, same split
    dup = find_duplicates([full_text(r) for r in rows], DP, threshold=p.group_threshold)
    pairs = dup.pairs[dup.accepted]
    assert len(pairs) > 50, "the fixture must contain near-duplicate pairs for the check to mean anything"
    crossing = [(rows[i]["id"], rows[j]["id"]) for i, j in pairs.tolist() if where[rows[i]["id"]] != where[rows[j]["id"]]]
    assert crossing == []


def test_fractions_are_met_per_label(records):
    parts, _ = split_records(records, SplitParams(decontaminate=False), DP)
    total = Counter(r["label"] for r in records)
    for s, frac in (("train", 0.8), ("validation", 0.1), ("test", 0.1)):
        got = Counter(r["label"] for r in parts[s])
        for label, n in total.items():
            assert abs(got[label] - frac * n) <= max(3, 0.03 * n), (s, label, got[label], n)


def test_split_is_deterministic_and_seeded(records):
    a, _ = split_records(records, SplitParams(), DP)
    b, _ = split_records(records, SplitParams(), DP)
    c, _ = split_records(records, SplitParams(seed=1), DP)
    ids = lambda parts: {s: [r["id"] for r in parts[s]] for s in SPLITS}  # noqa: E731
    assert ids(a) == ids(b) and ids(a) != ids(c)


def rec(i, prompt, reply):
    return {"id": f"t:{i}", "label": None, "source": "t", "meta": {},
            "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}]}


def test_decontamination_drops_copies_of_eval_rows_only():
    q = "Write a short invitation to Anna for a picnic at the park on Monday at 9 am. Sign it as Tom."
    a = ("Dear Anna,\n\nI would like to invite you to a picnic at the park on Monday. We will start at 9 am. "
         "Please bring a blanket. Please let me know if you can come.\n\nBest wishes,\nTom")
    other_q = "Write a short invitation to Leo for a concert at the museum on Friday at 7 pm. Sign it as Iris."
    other_a = ("Dear Leo,\n\nI would like to invite you to a concert at the museum on Friday. We will start at 7 pm. "
               "The band plays for two hours. Please let me know if you can come.\n\nBest wishes,\nIris")
    zh = "请帮我给小明写一份邀请，请对方星期一上午九点到公园参加野餐，落款是小红。"
    train = [rec(0, q, a), rec(1, other_q, other_a), rec(2, zh, "小明：\n\n你好！诚挚邀请你星期一上午九点到公园参加野餐。"),
             rec(3, "把下面的词语倒序排列：苹果、河流、石头", "石头、河流、苹果")]
    evals = [("e:1", "eval_file", q), ("e:2", "eval_file", zh + "\n小明你好")]
    kept, dropped = decontaminate(train, evals, SplitParams(), DP)
    assert {d["id"] for d in dropped} == {"t:0", "t:2"}
    ev = dropped[0]["evidence"]
    assert ev["matched_id"] == "e:1" and ev["overlap"] >= 0.7 and ev["ngram"] in q.lower()
    # the classic "any shared n-gram" rule also flags the row that only shares the template
    _, any_shared = decontaminate(train, [("e:3", "validation", other_q.replace("Leo", "Tom"))],
                                  SplitParams(decontam_min_overlap=0.0), DP)
    assert {d["id"] for d in any_shared} == {"t:1"}


def test_split_ledger_adds_up(records):
    parts, res = split_records(records, SplitParams(), DP)
    out = [r["id"] for s in SPLITS for r in parts[s]] + [d["id"] for d in res.dropped]
    assert Counter(out) == Counter(r["id"] for r in records)
    assert all(d["reason"] == "contamination" for d in res.dropped)
