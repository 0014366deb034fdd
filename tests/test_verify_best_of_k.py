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



def test_select_verify_drops_the_rows_the_rules_find_wrong_and_keeps_what_no_rule_reads():
    """select.verify: the same rules as best-of-K, on the training rows' own replies: a wrong answer leaves
    as wrong_answer with the expected answer; right ones carry meta.scores.verified 1; rows no rule reads
    (an invitation, a reply that is a tool call) stay, unscored; kept + dropped = input."""
    from sftpipe.config import SelectParams
    from sftpipe.select.choose import choose

    rng = random.Random(3)
    good = [row(i, it) for i, it in enumerate(items(60))]
    bad_items = [it for it in items(60, seed=1) if quality.applies("wrong_answer", it)][:10]
    bad = [row(100 + i, it, quality.wrong_answer(rng, it)[0]) for i, it in enumerate(bad_items)]
    invitation = {"id": "v:inv", "source": "v", "label": "invitation", "meta": {"lang": "en"},
                  "messages": [{"role": "user", "content": "Write an invitation to the picnic."},
                               {"role": "assistant", "content": "Dear Ann, come to the picnic on Sunday."}]}
    call = {"id": "v:call", "source": "v", "label": "arithmetic", "meta": {"lang": "en"},
            "messages": [{"role": "user", "content": "Tom has 3 apples. Tom gets 4 more. How many now?"},
                         {"role": "assistant", "content": None,
                          "tool_calls": [{"name": "add", "arguments": {"a": 3, "b": 4}}]}]}
    rows = good + bad + [invitation, call]
    res = choose(rows, SelectParams(method="all", verify=True))
    check_accounting("select", [r["id"] for r in rows], [r["id"] for r in res.kept], [d["id"] for d in res.dropped])
    wrong = {d["id"]: d for d in res.dropped}
    assert set(wrong) == {r["id"] for r in bad} and len(wrong) == 10
    for r, it in zip(bad, bad_items):
        d = wrong[r["id"]]
        assert d["reason"] == "wrong_answer" and d["evidence"]["rule"] == it.category
        assert d["evidence"]["expected"] and d["evidence"]["expected"] != r["messages"][-1]["content"]
    kept = {r["id"]: r for r in res.kept}
    verified = [kept[r["id"]]["meta"]["scores"].get("verified") for r in good]
    assert set(verified) <= {1.0, None} and verified.count(1.0) >= 55   # the rules read nearly every prompt
    assert "verified" not in kept["v:inv"]["meta"]["scores"] and "verified" not in kept["v:call"]["meta"]["scores"]
    # off by default; with a budget the method chooses among the rows left
    assert len(choose(rows, SelectParams(method="all")).kept) == len(rows)
    assert {r["id"] for r in choose(rows, SelectParams(method="random", budget=30, verify=True)).kept} <= {
        r["id"] for r in good + [invitation, call]}
