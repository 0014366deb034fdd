"""Instruction augmentation (sftpipe.create.augment): rule-based variants in English and Chinese that
never reproduce one of the sample's own prompt templates (the augmentation experiment tests on a
held-out one) and keep what the answer depends on; deterministic draws with a ledger over every
candidate; rule validation; model-based paraphrases against a real local OpenAI-compatible server."""

from __future__ import annotations

import json
import random

import pytest
import yaml

from openai_server import FakeOpenAI
from sftpipe.config import EndpointParams, GenerationParams, ModelParams
from sftpipe.create.augment import (DEFAULT_RULES, augment_rows, clean_reply, paraphrase_prompts, render_variants,
                                    validate_rules)
from sftpipe.create.verify import verify
from sftpipe.ledger import check_accounting
from sftpipe.sample.tasks import CATEGORIES, GENERATORS, SYSTEM

N_TEMPLATES = {"capital": 5, "reverse": 2}     # the others have 3 prompt templates per language


def sample_items(category: str, lang: str, s: int):
    """The same task item (same slots) rendered with every one of the sample's own templates."""
    return [GENERATORS[category](random.Random(f"aug-test:{s}"), lang, template=t)
            for t in range(N_TEMPLATES.get(category, 3))]


def row(rid: str, prompt: str, reply: str, lang: str, label=None, system: bool = False) -> dict:
    msgs = ([{"role": "system", "content": SYSTEM[lang]}] if system else []) + [
        {"role": "user", "content": prompt}, {"role": "assistant", "content": reply}]
    return {"id": rid, "messages": msgs, "source": "test", "label": label, "meta": {"lang": lang}}


def sample_rows(n_per: int = 3) -> list[dict]:
    out = []
    for cat in CATEGORIES:
        for lang in ("en", "zh"):
            for s in range(n_per):
                it = GENERATORS[cat](random.Random(f"rows:{cat}:{lang}:{s}"), lang)
                out.append(row(f"{cat}-{lang}-{s}", it.prompt, it.response, lang, cat, system=s == 1))
    return out


def dumps(rows) -> str:
    return json.dumps(rows, ensure_ascii=False, sort_keys=True)


# ---------------------------------------------------------------------------------------------- rules

def test_default_rules_are_valid_plain_data_that_round_trips_through_yaml():
    validate_rules(DEFAULT_RULES)
    back = yaml.safe_load(yaml.safe_dump(DEFAULT_RULES, allow_unicode=True, sort_keys=False))
    assert back == DEFAULT_RULES
    assert len({r["name"] for r in DEFAULT_RULES}) == len(DEFAULT_RULES)
    families = {(r["name"].rsplit("_", 2)[0], r["lang"]) for r in DEFAULT_RULES if not r["name"].startswith("format")}
    expected = {(c, lang) for c in ("arithmetic_add", "arithmetic_sub", "translation", "sentiment", "reverse", "capital",
                                    "invitation") for lang in ("en", "zh")}
    assert families == expected
    assert all(2 <= len(r["templates"]) <= 3 for r in DEFAULT_RULES)


@pytest.mark.parametrize("category", CATEGORIES)
def test_every_sample_template_gets_new_wordings_never_a_sample_one_and_the_answer_still_holds(category):
    """The held-out-template guarantee: for the same slots, no variant of any default rule equals
    any of the sample's own templates; and the unchanged reply still answers the variant: the rule
    verifiers, which read the prompt, give the variant the original's verdict (True, or None where
    the original is unreadable too: a review with "unpleasant" holds the positive word "pleasant")."""
    compiled = validate_rules(DEFAULT_RULES)
    n_variants = n_verified = 0
    for lang in ("en", "zh"):
        for s in range(30):
            items = sample_items(category, lang, s)
            own = {it.prompt for it in items}
            assert len(own) == len(items)
            for it in items:
                base = verify(row("o", it.prompt, it.response, lang, category), it.response)
                assert base.ok is not False
                variants = render_variants(it.prompt, compiled, lang)
                family = [v for v in variants if not v[0].startswith("format")]
                assert family, (lang, it.prompt)                  # every template is covered ...
                assert len({name for name, _, _ in family}) == 1   # ... by exactly one family rule
                assert len(variants) == len(family) + 2           # plus the two generic format variants
                for name, _, text in variants:
                    n_variants += 1
                    assert text not in own, (name, text)
                    assert text != it.prompt
                    if category != "invitation":
                        verdict = verify(row("v", text, it.response, lang, category), it.response)
                        assert verdict.ok == base.ok, (name, text, verdict, base)
                        n_verified += verdict.ok is True
                    else:   # the letter's slots are all still asked for
                        i = 0 if lang == "en" else 1
                        for part in (it.key[5], it.key[6], it.key[1][i], it.key[2][i], it.key[3][i], it.key[4][i]):
                            assert part in text, (name, text, part)
    assert n_variants > 200
    assert category == "invitation" or n_verified > 0.9 * n_variants


def test_a_chinese_translation_item_is_also_asked_as_zhong_yi_ying():
    compiled = validate_rules(DEFAULT_RULES)
    texts = {t for _, _, t in render_variants("请把“红色的猫”翻译成英文。", compiled, "zh")}
    assert "中译英：红色的猫" in texts and "“红色的猫”的英文是什么？" in texts
    en = {t for _, _, t in render_variants("Translate into Chinese: red cat", compiled, "en")}
    assert 'What is "red cat" in Chinese?' in en
    assert not any("中译英" in t for t in en)   # a language's rules stay with its rows


@pytest.mark.parametrize("rules, needle", [
    ([{"name": "r1", "pattern": "^(?P<x>.+$", "templates": ["{x}"]}], "bad regex"),
    ([{"name": "r2", "pattern": "^(?P<x>.+)$", "templates": ["Q: {y}"]}], "slot {y}"),
    ([{"name": "r3", "pattern": "^(?P<x>.+)$", "templates": ["Q: {x"]}], "not a valid format string"),
    ([{"name": "r4", "pattern": "^(?P<x>.+)$", "templates": []}], "non-empty list"),
    ([{"name": "r5", "pattern": "^(?P<x>.+)$", "templates": ["{x}"], "lang": "fr"}], "lang"),
    ([{"name": "r6", "pattern": "^(?P<x>.+)$", "templates": ["{x}"], "tmpl": 1}], "unknown key"),
    ([{"name": "r7", "pattern": "(?P<x>.+)", "templates": ["{x}"]},
      {"name": "r7", "pattern": "(?P<x>.+)", "templates": ["{x}"]}], "used twice"),
])
def test_a_bad_rule_is_refused_with_one_line_naming_it(rules, needle):
    with pytest.raises(ValueError) as e:
        validate_rules(rules)
    msg = str(e.value)
    assert needle in msg and repr(rules[-1]["name"]) in msg and "\n" not in msg


def test_literal_braces_and_optional_groups_render():
    rules = [{"name": "braces", "pattern": r"^Say (?P<x>\w+)(?P<bang>!)?$", "templates": ["{{json}}: {x}{bang}"]}]
    assert render_variants("Say hi", rules) == [("braces", 0, "{json}: hi")]
    assert render_variants("Say hi!", rules) == [("braces", 0, "{json}: hi!")]
    assert render_variants("say hi", rules) == []          # the whole instruction must match


# ---------------------------------------------------------------------------------------------- rows

def test_augment_rows_is_deterministic_accounted_and_changes_only_the_instruction():
    records = sample_rows()
    multi = row("multi", "hello", "hi", "en")
    multi["messages"] += [{"role": "user", "content": "What is the capital of France?"},
                          {"role": "assistant", "content": "The capital of France is Paris."}]
    records.append(multi)
    rows, res = augment_rows(records, DEFAULT_RULES, per_row=2, seed=7)
    again, res2 = augment_rows(records, DEFAULT_RULES, per_row=2, seed=7)
    assert dumps(rows) == dumps(again) and dumps(res.dropped) == dumps(res2.dropped)

    cand = [r["id"] for r in res.kept] + [d["id"] for d in res.dropped]
    check_accounting("augment", cand, [r["id"] for r in res.kept], [d["id"] for d in res.dropped])
    assert res.extra_metrics["candidates"] == len(cand) and res.extra_metrics["variants"] == len(res.kept)
    assert len(res.kept) == 2 * len(records)                  # every row has >= 2 distinct new wordings
    assert sum(res.extra_metrics["per_rule"].values()) == len(res.kept)
    assert res.extra_metrics["rows_without_rule"] == 0

    by_id = {r["id"]: r for r in records}
    assert [r["id"] for r in rows if "augmented_from" not in r["meta"]] == [r["id"] for r in records]
    for v in res.kept:
        src = by_id[v["meta"]["augmented_from"]]
        assert v["id"].startswith(src["id"] + "~aug")
        assert v["meta"]["augment_rule"] in {r["name"] for r in DEFAULT_RULES}
        assert v["label"] == src["label"] and v["meta"]["lang"] == src["meta"]["lang"]
        changed = [i for i, (a, b) in enumerate(zip(src["messages"], v["messages"])) if a != b]
        user_idx = max(i for i, m in enumerate(src["messages"]) if m["role"] == "user")
        assert changed == [user_idx]                          # only the last user turn; reply, system kept
        assert v["messages"][-1] == src["messages"][-1]
    assert [m["content"] for m in by_id["multi"]["messages"]] == [     # the input is not modified
        "hello", "hi", "What is the capital of France?", "The capital of France is Paris."]

    # a different seed draws different variants; per_row 1 takes the first draw of per_row 2
    other, _ = augment_rows(records, DEFAULT_RULES, per_row=2, seed=8)
    assert [r["messages"] for r in other] != [r["messages"] for r in rows]
    one, res1 = augment_rows(records, DEFAULT_RULES, per_row=1, seed=7)
    assert {r["id"] for r in res1.kept} < {r["id"] for r in res.kept}
    only, _ = augment_rows(records, DEFAULT_RULES, per_row=1, seed=7, keep_original=False)
    assert dumps(only) == dumps(res1.kept)


def test_same_as_original_and_duplicate_variants_are_in_the_ledger():
    rules = [{"name": "echo", "pattern": r"^(?P<x>.+)$", "templates": ["{x}", "Q: {x}", "Q: {x}"]}]
    records = [row(f"r{i}", f"tell me fact number {i}", "ok", "en") for i in range(6)]
    rows, res = augment_rows(records, rules, per_row=5, seed=0)
    assert len(res.kept) == 6 and all(r["messages"][-2]["content"].startswith("Q: ") for r in res.kept)
    reasons = sorted(d["reason"] for d in res.dropped)
    assert reasons == ["duplicate_variant"] * 6 + ["same_as_original"] * 6
    for d in res.dropped:
        assert d["evidence"]["rule"] == "echo" and d["stage"] == "augment"
        if d["reason"] == "duplicate_variant":
            assert d["evidence"]["of"] in {r["id"] for r in res.kept}
    check_accounting("augment", [r["id"] for r in res.kept] + [d["id"] for d in res.dropped],
                     [r["id"] for r in res.kept], [d["id"] for d in res.dropped])
    # the draw order depends on the seed: which of the two "Q:" templates is kept moves
    picks = {s: tuple(r["meta"]["augment_template"] for r in augment_rows(records, rules, per_row=5, seed=s)[1].kept)
             for s in range(4)}
    assert len(set(picks.values())) > 1


def test_rows_no_rule_matches_are_counted_and_pass_through():
    family_only = [r for r in DEFAULT_RULES if not r["name"].startswith("format")]
    records = [row("joke", "Tell me a joke.", "No.", "en"), row("cap", "What is the capital of Peru?", "Lima.", "en")]
    rows, res = augment_rows(records, family_only, per_row=3, seed=1)
    assert res.extra_metrics["rows_without_rule"] == 1
    assert [r["meta"]["augmented_from"] for r in res.kept] == ["cap"] * 3
    assert rows[0] is records[0] and rows[1] is records[1]
    with pytest.raises(ValueError, match="per_row"):
        augment_rows(records, family_only, per_row=-1, seed=1)


# ---------------------------------------------------------------------------------------------- model

def test_clean_reply_takes_off_labels_and_quotes():
    assert clean_reply('  Paraphrase: "Name the capital of Peru."\n') == "Name the capital of Peru."
    assert clean_reply("“秘鲁的首都叫什么？”") == "秘鲁的首都叫什么？"
    assert clean_reply('"a" and "b"') == '"a" and "b"'


def oa(url: str, tmp_path, k: int) -> GenerationParams:
    ep = EndpointParams(base_url=url, model="para", concurrency=2, timeout=5.0, max_retries=1, backoff=0.0)
    return GenerationParams(backend="openai", openai=ep, cache_dir=str(tmp_path / "cache"), k=k, temperature=0.9)


EN = "Tom has 3 apples. Tom gets 4 more. How many apples does Tom have now?"
ZH = "请把“红色的猫”翻译成英文。"
FAIL = "Name the capital city of Peru."
REPLIES = {
    EN: ["Paraphrase: Tom starts with 3 apples and is given 4 more. How many apples does Tom have?",  # kept
         EN,                                                                                          # same
         "   ",                                                                                        # empty
         "Bananas are yellow and rich in potassium, which everybody knows.",                          # unrelated
         "Tom has 5 apples. Tom gets 4 more. How many apples does Tom have now?",                     # numbers
         "Tom starts with 3 apples and is given 4 more. How many apples does Tom have?"],             # duplicate
    ZH: ["把“红色的猫”译成英语。", "红色的猫", "红色的猫用英语怎么说呢？", "“红色的猫”的英文是什么？这句话需要翻译成英文，请给出翻译的结果，"
         "并且解释一下每个字的意思，再造一个句子，然后说明它的用法和语法，最后总结一下。", "", "把“红色的猫”译成英语。"],
}


def test_model_paraphrases_are_checked_and_accounted_against_a_real_server(tmp_path):
    records = [row("en1", EN, "3 + 4 = 7. Tom has 7 apples.", "en", "arithmetic"),
               row("zh1", ZH, "red cat", "zh", "translation", system=True),
               row("fail", FAIL, "The capital of Peru is Lima.", "en", "capital")]

    def reply(body):
        prompt = body["messages"][-1]["content"]
        return next(v for k, v in REPLIES.items() if k in prompt)

    def faults(n, body, attempt):
        return "500" if FAIL in body["messages"][-1]["content"] else None

    with FakeOpenAI(reply=reply, faults=faults, models=("para",)) as srv:
        res = paraphrase_prompts(records, oa(srv.url, tmp_path, k=6), ModelParams(), cache_dir=tmp_path / "cache")
        asked = srv.count
        prompts = [b["messages"][-1]["content"] for b in srv.requests]
        again = paraphrase_prompts(records, oa(srv.url, tmp_path, k=6), ModelParams(), cache_dir=tmp_path / "cache")
        assert srv.count - asked == 2            # only the failed request is asked again (1 retry)
    assert dumps(again.kept) == dumps(res.kept) and dumps(again.dropped) == dumps(res.dropped)
    assert any("Rewrite the following instruction" in p and EN in p for p in prompts)
    assert any(p.startswith("用不同的说法改写") and ZH in p for p in prompts)

    got = {d["id"]: d["reason"] for d in res.dropped} | {r["id"]: "kept" for r in res.kept}
    assert got == {"en1~augm0": "kept", "en1~augm1": "same_as_original", "en1~augm2": "empty",
                   "en1~augm3": "not_a_paraphrase", "en1~augm4": "changed_numbers", "en1~augm5": "duplicate_variant",
                   "zh1~augm0": "kept", "zh1~augm1": "not_a_paraphrase", "zh1~augm2": "kept",
                   "zh1~augm3": "not_a_paraphrase", "zh1~augm4": "empty", "zh1~augm5": "duplicate_variant"}
    ev = {d["id"]: d["evidence"] for d in res.dropped}
    assert ev["en1~augm3"]["rouge_l"] < 0.2
    assert ev["zh1~augm1"]["length_ratio"] < 0.3 and ev["zh1~augm3"]["length_ratio"] > 3
    assert ev["en1~augm4"] == {"original": ["3", "4"], "reply": ["4", "5"]}
    kept = {r["id"]: r for r in res.kept}
    assert kept["en1~augm0"]["messages"][0]["content"].startswith("Tom starts with 3 apples")
    assert kept["zh1~augm0"]["messages"][0]["role"] == "system"
    assert kept["zh1~augm0"]["messages"][1]["content"] == "把“红色的猫”译成英语。"
    assert kept["zh1~augm0"]["messages"][2] == records[1]["messages"][2]
    assert kept["zh1~augm0"]["meta"] == {"lang": "zh", "augmented_from": "zh1", "augment_rule": "model",
                                               "augment_template": 0}
    assert res.extra_metrics["requests_failed"] == 1 and res.details["errors"]["fail"].startswith("http 500")
    assert res.extra_metrics["candidates"] == 12
    check_accounting("augment", list(got), [r["id"] for r in res.kept], [d["id"] for d in res.dropped])
