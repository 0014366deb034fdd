"""Self-instruct (sftpipe.create.self_instruct): deterministic requests from seed tasks, parsing of
generator replies, the novelty filter (ROUGE-L below 0.7 against every seed and every candidate
kept before, MinHash near duplicates) whose prefilter never changes the result, and the whole loop
against a real local OpenAI-compatible server with a garbage reply, a failed request and a copy."""

from __future__ import annotations

import hashlib
import json
import random

import pytest

from openai_server import FakeOpenAI
from sftpipe.config import EndpointParams, GenerationParams, ModelParams
from sftpipe.create.self_instruct import (CjkTokenizer, filter_novel, instruction_row, parse_instructions, rouge_l,
                                          self_instruct, self_instruct_requests)
from sftpipe.ledger import check_accounting
from sftpipe.sample.tasks import CATEGORIES, GENERATORS


def seed_rows(lang: str, n: int, start: int = 0) -> list[dict]:
    out = []
    for i in range(start, start + n):
        it = GENERATORS[CATEGORIES[i % len(CATEGORIES)]](random.Random(f"seed:{i}"), lang)
        out.append({"id": f"seed-{lang}-{i}", "messages": [{"role": "user", "content": it.prompt},
                                                           {"role": "assistant", "content": it.response}],
                    "source": "sample", "label": it.category, "meta": {"lang": lang}})
    return out


def accounted(res, candidates) -> None:
    check_accounting("self_instruct", [c["id"] if isinstance(c, dict) else instruction_row(c)["id"] for c in candidates],
                     [r["id"] for r in res.kept], [d["id"] for d in res.dropped])


def outcome(res) -> list:
    """Everything the filter decided, comparable across runs."""
    return sorted([(r["id"], "kept", None) for r in res.kept] +
                  [(d["id"], d["reason"], json.dumps(d["evidence"], sort_keys=True)) for d in res.dropped])


# ---------------------------------------------------------------------------------------------- parsing

def test_parse_numbered_lists_with_preamble_closing_remark_and_multi_line_items():
    reply = ("Sure! Here are three new instructions:\n\n"
             "1. Write a haiku about autumn.\n"
             "2) \"Is this review positive or negative?\"\n"
             "   The soup was cold.\n"
             "3.  Instruction: List three uses of a brick.\n"
             "\nI hope these help!")
    assert parse_instructions(reply) == ["Write a haiku about autumn.",
                                         "\"Is this review positive or negative?\"\nThe soup was cold.",
                                         "List three uses of a brick."]
    assert parse_instructions("一、写一首关于秋天的诗。\n二、“把下面的句子翻译成英文：我很好。”\n3、说出三种水果。") == [
        "写一首关于秋天的诗。", "把下面的句子翻译成英文：我很好。", "说出三种水果。"]
    assert parse_instructions("Task 1: Name a planet.\nTask 2: Name a river.") == ["Name a planet.", "Name a river."]
    assert parse_instructions("- Name a color\n* Name a fruit\n• 说出一种动物") == [
        "Name a color", "Name a fruit", "说出一种动物"]


def test_parse_plain_lines_and_empty_replies():
    assert parse_instructions("Name a planet.\n\n  'Describe the sea.'  \n") == ["Name a planet.", "Describe the sea."]
    assert parse_instructions("3 apples and 4 pears: how many fruits?") == ["3 apples and 4 pears: how many fruits?"]
    assert parse_instructions("") == [] and parse_instructions(None) == [] and parse_instructions(" \n\n ") == []
    assert parse_instructions("1.\n2.\n") == ["1.", "2."]        # bare markers are no items: plain lines


# ---------------------------------------------------------------------------------------------- requests

def test_requests_are_deterministic_per_language_and_stable_as_more_are_asked():
    seeds = seed_rows("en", 20) + seed_rows("zh", 20)
    a = self_instruct_requests(seeds, n_prompts=5, examples_per_prompt=4, seed=3, lang="en")
    assert a == self_instruct_requests(seeds, n_prompts=5, examples_per_prompt=4, seed=3, lang="en")
    assert self_instruct_requests(seeds, n_prompts=8, examples_per_prompt=4, seed=3, lang="en")[:5] == a
    b = self_instruct_requests(seeds, n_prompts=5, examples_per_prompt=4, seed=4, lang="en")
    assert [r["meta"]["self_instruct"]["examples"] for r in a] != [r["meta"]["self_instruct"]["examples"] for r in b]
    by_id = {s["id"]: s["messages"][0]["content"] for s in seeds}
    for r in a:
        ex = r["meta"]["self_instruct"]["examples"]
        assert len(ex) == len(set(ex)) == 4 and all(e.startswith("seed-en-") for e in ex)
        prompt = r["messages"][0]["content"]
        for j, e in enumerate(ex):
            assert f"{j + 1}. {by_id[e]}" in prompt
        assert "Write 1 new instruction(s)" in prompt and r["messages"][0]["role"] == "user"
    zh = self_instruct_requests(seeds, n_prompts=2, examples_per_prompt=30, seed=3, lang="zh", n_new=3)
    assert all(len(r["meta"]["self_instruct"]["examples"]) == 20 for r in zh)     # all there are
    assert "请写出3条" in zh[0]["messages"][0]["content"] and zh[0]["id"] == "si-req:zh:0"
    own = self_instruct_requests(["Name a planet.", "Name a river."], n_prompts=1, examples_per_prompt=2, seed=0,
                                 lang="en", template="Examples:\n{examples}\nOne more:")
    assert own[0]["messages"][0]["content"] in ("Examples:\n1. Name a planet.\n2. Name a river.\nOne more:",
                                                "Examples:\n1. Name a river.\n2. Name a planet.\nOne more:")
    with pytest.raises(ValueError, match="no seed instruction in language 'zh'"):
        self_instruct_requests(seed_rows("en", 3), n_prompts=1, lang="zh")
    with pytest.raises(ValueError, match="examples"):
        self_instruct_requests(seeds, n_prompts=1, lang="en", template="no slot here")


# ---------------------------------------------------------------------------------------------- novelty

def test_the_rouge_threshold_boundary():
    seed = "alpha bravo charlie delta echo foxtrot golf hotel india juliet"
    words = seed.split()
    seven = " ".join(words[:7] + ["x1", "x2", "x3"])          # LCS 7 of 10 + 10 tokens: F = 0.7 exactly
    six = " ".join(words[:6] + ["y1", "y2", "y3", "y4"])      # F = 0.6
    assert rouge_l(seed, seven) == pytest.approx(0.7) and rouge_l(seed, six) == pytest.approx(0.6)
    res = filter_novel([seven, six], [seed], rouge_threshold=0.7)
    assert [r["messages"][0]["content"] for r in res.kept] == [six]        # 0.7 is not below 0.7
    (d,) = res.dropped
    assert d["reason"] == "too_similar" and d["evidence"]["nearest_id"] == "existing:0"
    assert d["evidence"]["rouge_l"] == pytest.approx(0.7)
    res = filter_novel([seven, six], [seed], rouge_threshold=0.70001)
    assert len(res.kept) == 2
    res = filter_novel([seven, six], [seed], rouge_threshold=0.6)
    assert res.kept == [] and {d["reason"] for d in res.dropped} == {"too_similar"}


def test_novelty_reasons_in_english_and_chinese_and_kept_candidates_join_the_pool():
    seeds = [{"id": "s-en", "messages": [{"role": "user", "content": "What is the capital of France?"}]},
             {"id": "s-zh", "messages": [{"role": "user", "content": "请把“红色的猫”翻译成英文。"}]}]
    cands = ["Write a short poem about the winter sea and the wind.",   # kept
             "write a short poem about   the winter sea and the wind.",  # duplicate (case, spaces)
             "What is the capital of France?",                           # a seed, copied
             "what is the capital of france",                            # a seed, nearly copied
             "请把“红色的狗”翻译成英文。",                                  # one character changed
             "用三句话描述秋天的景色。",                                     # kept (Chinese)
             "Write a short poem about the winter sea and the rain.",    # close to the kept one
             "Hi?", "", "%%% ???", "x" * 61]
    res = filter_novel(cands, seeds, min_chars=5, max_chars=60)
    accounted(res, cands)
    reasons = {d["record"]["messages"][0]["content"]: (d["reason"], d["evidence"]) for d in res.dropped}
    assert [r["messages"][0]["content"] for r in res.kept] == [cands[0], cands[5]]
    assert reasons[cands[1]][0] == "duplicate" and reasons[cands[1]][1]["of"] == instruction_row(cands[0])["id"]
    for c in cands[2:4]:
        assert reasons[c][0] == "too_similar" and reasons[c][1]["nearest_id"] == "s-en"
        assert reasons[c][1]["rouge_l"] == 1.0
    assert reasons[cands[4]][0] == "too_similar" and reasons[cands[4]][1]["nearest_id"] == "s-zh"
    assert 0.85 < reasons[cands[4]][1]["rouge_l"] < 1
    assert reasons[cands[6]][0] == "too_similar" and reasons[cands[6]][1]["nearest_id"] == res.kept[0]["id"]
    assert reasons["Hi?"][0] == "too_short" and reasons["x" * 61][0] == "too_long"
    assert reasons[""][0] == "empty" and reasons["%%% ???"][0] == "empty"
    kept = res.kept[1]
    assert kept["id"] == "si:" + hashlib.sha1(cands[5].encode()).hexdigest()[:12]
    assert kept["source"] == "self_instruct" and kept["meta"]["lang"] == "zh" and len(kept["messages"]) == 1


def random_texts(rng: random.Random, n: int) -> list[str]:
    """Short texts over a small vocabulary (English words and CJK characters), so that many pairs
    come near the threshold; some are edits of earlier ones."""
    en = "the a cat dog sees runs big red on in blue sky".split()
    zh = list("猫狗看跑大红的在蓝天")
    out = []
    for _ in range(n):
        if out and rng.random() < 0.4:
            toks = _tokens(rng.choice(out))
            for _ in range(rng.randint(0, 3)):
                op = rng.random()
                if op < 0.4 and toks:
                    toks.pop(rng.randrange(len(toks)))
                elif op < 0.7:
                    toks.insert(rng.randint(0, len(toks)), rng.choice(en + zh))
                elif toks:
                    i, j = rng.randrange(len(toks)), rng.randrange(len(toks))
                    toks[i], toks[j] = toks[j], toks[i]
        else:
            toks = [rng.choice(en if rng.random() < 0.6 else zh) for _ in range(rng.randint(1, 12))]
        out.append(" ".join(toks))
    return out


def _tokens(text: str) -> list[str]:
    return CjkTokenizer().tokenize(text)


def test_the_rouge_bound_holds_and_the_prefilter_never_changes_the_result():
    rng = random.Random(0)
    texts = random_texts(rng, 400)
    for a, b in zip(texts[::2], texts[1::2]):          # ROUGE-L F <= 2|A ∩ B| / (|A| + |B|)
        ta, tb = _tokens(a), _tokens(b)
        inter = sum(min(ta.count(t), tb.count(t)) for t in set(ta))
        assert rouge_l(a, b) <= 2 * inter / max(len(ta) + len(tb), 1) + 1e-12
    existing, cands = texts[:150], texts[150:] + [texts[3], texts[160].upper()]
    for threshold in (0.4, 0.55, 0.7, 0.9):
        fast = filter_novel(cands, existing, rouge_threshold=threshold, min_chars=1, chunk=64)
        slow = filter_novel(cands, existing, rouge_threshold=threshold, min_chars=1, prefilter=False)
        assert outcome(fast) == outcome(slow)
        reasons = [d["reason"] for d in fast.dropped]
        assert reasons.count("too_similar") > 10 and len(fast.kept) > 5, threshold
        assert fast.details["rouge_scored_pairs"] < slow.details["rouge_scored_pairs"]
        accounted(fast, cands)


def test_minhash_near_duplicates_that_rouge_l_misses():
    """Two long sentences swapped: the longest common subsequence covers one of them (ROUGE-L ~0.5),
    while nearly all word 5-grams are shared (the dedup stage's MinHash + exact Jaccard check)."""
    s1 = ("Describe in detail how a small village prepares for the yearly harvest festival, including the food, "
          "the music, the decorations and the games that children play in the main square")
    s2 = ("then explain how the same village cleans up afterwards, who organizes the volunteers, where the "
          "leftover food goes and how the decorations are stored until the next year comes around again")
    seed = f"{s1}, {s2}."
    swapped = f"{s2}, {s1}."
    assert rouge_l(seed, swapped) < 0.7
    assert filter_novel([swapped], [seed], max_chars=1000).kept != []
    res = filter_novel([swapped, "Name three planets of the solar system."], [seed], max_chars=1000, near_dup=True)
    assert [r["messages"][0]["content"] for r in res.kept] == ["Name three planets of the solar system."]
    (d,) = res.dropped
    assert d["reason"] == "near_duplicate" and d["evidence"]["nearest_id"] == "existing:0"
    assert d["evidence"]["similarity"] >= 0.8 and d["evidence"]["signature"] == "minhash"


# ---------------------------------------------------------------------------------------------- the loop

def test_self_instruct_against_a_real_server_with_garbage_a_failure_and_a_copied_seed(tmp_path):
    seeds = seed_rows("en", 12) + seed_rows("zh", 12)
    copied = seeds[2]["messages"][0]["content"]
    reqs = self_instruct_requests(seeds, n_prompts=4, examples_per_prompt=5, seed=1, lang="en")
    prompts = [r["messages"][0]["content"] for r in reqs]
    canned = {prompts[0]: "Here are new instructions:\n1. Write a haiku about the sea.\n"
                          f"2. List three uses of a paperclip.\n3. {copied}\n\nHope this helps!",
              prompts[1]: "%%%% #### ????",
              prompts[3]: "1. Write a haiku about the sea.\n2. 用三句话描述秋天的景色。\n3. \"Explain why the sky is blue.\""}

    def reply(body):
        return canned[body["messages"][-1]["content"]]

    def faults(n, body, attempt):
        return "500" if body["messages"][-1]["content"] == prompts[2] else None

    ep = EndpointParams(base_url="", model="gen", concurrency=2, timeout=5.0, max_retries=1, backoff=0.0)
    with FakeOpenAI(reply=reply, faults=faults, models=("gen",)) as srv:
        gp = GenerationParams(backend="openai", openai=ep.model_copy(update={"base_url": srv.url}), k=1,
                              temperature=1.0, cache_dir=str(tmp_path / "cache"))
        res = self_instruct(seeds, gp, ModelParams(), n_prompts=4, examples_per_prompt=5, seed=1, lang="en")
        assert sorted(b["messages"][-1]["content"] for b in srv.requests) == sorted(prompts + [prompts[2]])
        n = srv.count
        again = self_instruct(seeds, gp, ModelParams(), n_prompts=4, examples_per_prompt=5, seed=1, lang="en")
        assert srv.count - n == 2                    # the cache answers all but the failed request
    assert outcome(again) == outcome(res)

    texts = [r["messages"][0]["content"] for r in res.kept]
    assert texts == ["Write a haiku about the sea.", "List three uses of a paperclip.", "用三句话描述秋天的景色。",
                     "Explain why the sky is blue."]
    got = {d["record"]["messages"][0]["content"]: d for d in res.dropped}
    assert got[copied]["reason"] == "too_similar" and got[copied]["evidence"]["nearest_id"] == seeds[2]["id"]
    assert got["%%%% #### ????"]["reason"] == "empty"
    assert got["Write a haiku about the sea."]["reason"] == "duplicate"
    assert len(res.dropped) == 3
    candidates = [r["id"] for r in res.kept] + [d["id"] for d in res.dropped]
    check_accounting("self_instruct", candidates, [r["id"] for r in res.kept], [d["id"] for d in res.dropped])
    first = res.kept[0]
    assert first["id"] == "si:" + hashlib.sha1(b"Write a haiku about the sea.").hexdigest()[:12]
    assert first["source"] == "self_instruct" and first["messages"] == [{"role": "user", "content": texts[0]}]
    assert first["meta"]["self_instruct"] == {"from_request": 0, "request_id": "si-req:en:0", "reply": 0, "item": 0,
                                              "examples": reqs[0]["meta"]["self_instruct"]["examples"]}
    assert res.kept[2]["meta"]["self_instruct"]["from_request"] == 3 and res.kept[2]["meta"]["lang"] == "zh"
    m = res.extra_metrics
    assert (m["requests"], m["requests_failed"], m["replies"], m["candidates"], m["novel"]) == (4, 1, 3, 7, 4)
    assert res.details["errors"]["si-req:en:2"].startswith("http 500")
