"""Rule verifiers scored against the sample generator's own truth, and best-of-K selection."""

from __future__ import annotations

import random

import pytest

from sftpipe.create.best_of_k import best_of_k
from sftpipe.create.verify import verify
from sftpipe.ledger import check_accounting
from sftpipe.sample import quality, tasks

VERIFIED = ("arithmetic", "translation", "sentiment", "reverse", "capital")


def row(i, item, reply=None):
    return {"id": f"v:{i}", "source": "v", "label": item.category, "meta": {"lang": item.lang},
            "messages": [{"role": "user", "content": item.prompt},
                         {"role": "assistant", "content": item.response if reply is None else reply}]}


def items(n=400, seed=0):
    rng = random.Random(seed)
    gens = [getattr(tasks, c) for c in VERIFIED]
    return [gens[i % len(gens)](rng, "en" if i % 2 else "zh") for i in range(n)]


def test_every_correct_sample_answer_passes_and_every_injected_wrong_answer_fails():
    rng = random.Random(1)
    checked = wrong_checked = 0
    for i, it in enumerate(items()):
        v = verify(row(i, it), it.response)
        assert v.ok is not False, (it.prompt, it.response, v)      # a correct answer is never called wrong
        checked += v.ok is True
        if quality.applies("wrong_answer", it):
            bad, _ = quality.wrong_answer(rng, it)
            w = verify(row(i, it), bad)
            assert w.ok is not True, (it.prompt, bad, w)               # an injected wrong answer never passes
            wrong_checked += w.ok is False
    assert checked >= 380 and wrong_checked >= 300                     # the rules read nearly every prompt


@pytest.mark.parametrize("prompt,reply,ok", [
    ("Tom has 3 apples. Tom gets 4 more. How many apples does Tom have now?", "3 + 4 = 7. Tom has 7 apples.", True),
    ("Tom has 9 pens and gives 4 away. How many pens are left?", "9 - 4 = 5. There are 5 pens left.", True),
    ("Tom has 9 pens and gives 4 away. How many pens are left?", "9 - 4 = 13.", False),
    ("小明有8个苹果，丢了3个。还剩几个苹果？", "8-3=5，还剩5个苹果。", True),
    ("Tom has 9 pens and gives 4 away. How many pens are left?", "five", False),
])
def test_arithmetic_rule(prompt, reply, ok):
    assert verify({"label": "arithmetic", "messages": [{"role": "user", "content": prompt}]}, reply).ok is ok


def test_capital_rule_rejects_a_second_capital_and_unknown_rows_are_unverifiable():
    rec = {"label": "capital", "messages": [{"role": "user", "content": "What is the capital of Japan?"}]}
    assert verify(rec, "The capital of Japan is Tokyo.").ok is True
    assert verify(rec, "Tokyo or Paris.").ok is False
    assert verify({**rec, "label": "invitation"}, "anything").ok is None
    assert verify({**rec, "label": None}, "anything").ok is None


def test_best_of_k_keeps_the_first_verified_candidate_and_rejects_the_rest_with_evidence():
    its = items(30)
    recs = [row(i, it) for i, it in enumerate(its)]
    rng = random.Random(3)
    results, expect = [], {}
    for i, it in enumerate(its):
        bad = quality.wrong_answer(rng, it)[0] if quality.applies("wrong_answer", it) else it.response + " no"
        if i % 3 == 0:          # no candidate right
            results.append({"replies": [bad, bad], "error": None})
        elif i % 3 == 1:        # the second of three is right
            results.append({"replies": [bad, it.response, it.response + ""], "error": None})
            expect[recs[i]["id"]] = 1
        else:                   # the request failed
            results.append({"replies": None, "error": "http 500 (6 tries)"})
    res = best_of_k(recs, results)
    check_accounting("best_of_k", [r["id"] for r in recs], [r["id"] for r in res.kept], [d["id"] for d in res.dropped])
    assert {r["id"]: r["meta"]["best_of_k"]["chosen"] for r in res.kept} == expect
    for r in res.kept:
        assert r["messages"][-1]["content"] == its[int(r["id"].split(":")[1])].response
        assert r["meta"]["best_of_k"]["passed"] == 2
    reasons = {d["id"]: d["reason"] for d in res.dropped}
    assert set(reasons.values()) == {"no_passing_candidate", "generation_failed"}
    nop = [d for d in res.dropped if d["reason"] == "no_passing_candidate"]
    assert all(d["evidence"]["verdicts"] == [False, False] and d["evidence"]["expected"] for d in nop)
    assert res.extra_metrics["kept_verified"] == len(expect)


def test_scores_break_ties_among_verified_and_unverifiable_rows_follow_the_param():
    rec = {"id": "x", "source": "s", "label": "invitation", "meta": {},
           "messages": [{"role": "user", "content": "Invite Anna"}, {"role": "assistant", "content": "ref"}]}
    res = best_of_k([rec], [{"replies": ["a", "b", "c"]}], scores=[[0.1, 0.9, 0.5]])
    assert res.kept[0]["messages"][-1]["content"] == "b" and res.kept[0]["meta"]["best_of_k"]["ok"] is None
    assert best_of_k([rec], [{"replies": ["a"]}], unverifiable="drop").dropped[0]["reason"] == "unverifiable"
    low = best_of_k([rec], [{"replies": ["a"]}], scores=[[0.1]], min_score=0.5)
    assert low.dropped[0]["reason"] == "below_min_score"

