"""The sample's quality defects (sftpipe.sample.quality), template redundancy and category imbalance:
each present at its rate, recorded in truth, and bad in the way truth says."""

import json
import random
import re
from collections import Counter

import pytest

from sftpipe.config import CollectParams, SampleParams, Source
from sftpipe.collect.sources import collect
from sftpipe.errors import UserError
from sftpipe.sample import SOURCES, category_counts, clean_rows, generate
from sftpipe.sample import quality as Q
from sftpipe.sample import vocab as V
from sftpipe.sample.tasks import CATEGORIES, GENERATORS, WEIGHTS

PARAMS = SampleParams(rows_per_lang=1200, seed=21)
CJK = re.compile(r"[\u4e00-\u9fff]")
LATIN = re.compile(r"[A-Za-z]")
SENTIMENT_TEMPLATE_0 = {"en": "What is the sentiment of this review?", "zh": "判断下面这条评论的情感倾向："}


def _truth(d):
    return [json.loads(x) for x in (d / "truth.jsonl").read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """(counts, truth by id, collected rows by id) of PARAMS, read back through collect."""
    d = tmp_path_factory.mktemp("quality_sample")
    counts = generate(PARAMS, d)
    res = collect(CollectParams(sources=[Source(path=str(d / f), name=n) for n, f in SOURCES.items()]))
    assert not res.quarantine              # defect rows are valid rows: every loader takes them
    truth = {t["id"]: t for t in _truth(d)}
    by_id = {r["id"]: r for r in res.records}
    assert set(by_id) == set(truth)
    return counts, truth, by_id


def _of(truth, kind):
    return [t for t in truth.values() if t["defect"] == kind]


def _base_rows(truth):
    """Chat rows before the duplicate copies (what the rates are shares of)."""
    return [t for t in truth.values() if t["category"] in CATEGORIES and t["defect"] not in ("exact_dup", "near_dup")]


def test_each_kind_at_its_rate_and_disjoint_from_other_defects(sample):
    counts, truth, _ = sample
    k = round(PARAMS.quality_defect_rate * len(_base_rows(truth)))
    per_kind = Counter(t["defect"] for t in truth.values() if t["defect"] in Q.QUALITY_TYPES)
    assert sum(per_kind.values()) == k
    assert set(per_kind) == set(Q.QUALITY_TYPES)
    assert max(per_kind.values()) - min(per_kind.values()) <= 1       # split evenly
    assert all(counts[kind] == per_kind[kind] for kind in Q.QUALITY_TYPES)
    for t in truth.values():
        if t["defect"] in Q.QUALITY_TYPES:
            assert t["expected"].strip() and t["category"] in CATEGORIES
        if t["defect"] in ("exact_dup", "near_dup"):    # copies are made of rows with no defect
            assert truth[t["of"]]["defect"] is None


def test_quality_rows_keep_their_label_and_prompt(sample):
    _, truth, by_id = sample
    for i, t in truth.items():
        if t["defect"] in Q.QUALITY_TYPES:
            r = by_id[i]
            assert r["label"] == t["category"]
            assert r["messages"][-1]["role"] == "assistant" and r["messages"][-1]["content"] != t["expected"]


def _arith(text):
    m = re.match(r"(\d+) ?([+-]) ?(\d+) ?= ?(\d+)", text)
    a, op, b, c = int(m[1]), m[2], int(m[3]), int(m[4])
    return a, op, b, c


def test_wrong_answers_are_wrong_and_plausible(sample):
    _, truth, by_id = sample
    rows = _of(truth, "wrong_answer")
    assert len({t["category"] for t in rows}) >= 5
    capitals = {c[1]: c for c in V.CAPITALS} | {c[3]: c for c in V.CAPITALS}
    for t in rows:
        got, want, lang = by_id[t["id"]]["messages"][-1]["content"], t["expected"], t["lang"]
        assert got != want
        cat = t["category"]
        if cat == "arithmetic":
            a, op, b, c = _arith(got)
            right = a + b if op == "+" else a - b
            assert c != right and abs(c - right) <= 2 and c >= 0
            assert _arith(want) == (a, op, b, right)
            assert t["wrong_answer"] == ("sum" if op == "+" else "difference")
            assert got.count(str(c)) >= 2        # the wrong result stated consistently
        elif cat == "capital":
            pat = r"The capital of (.+) is (.+)\." if lang == "en" else r"(.+)的首都是(.+)。"
            (country, cap), (country2, right_cap) = re.fullmatch(pat, got).groups(), re.fullmatch(pat, want).groups()
            assert country == country2 and cap != right_cap
            assert cap in capitals and capitals[cap] != capitals[right_cap]     # a real capital, another country's
        elif cat == "sentiment":
            labels = {"en": {"positive", "negative"}, "zh": {"正面", "负面"}}[lang]
            assert {got, want} == labels
        elif cat == "translation":
            if lang == "en":
                phrases = {a + n for _, a in V.ADJ for _, n in V.NOUN}
            else:
                phrases = {f"{a} {n}" for a, _ in V.ADJ for n, _ in V.NOUN}
            assert got in phrases and want in phrases
        elif cat == "reverse":
            split = re.compile(r", |、| ")
            assert sorted(split.split(got)) == sorted(split.split(want))
        elif cat == "invitation":
            assert t["wrong_answer"] in ("invitation_day", "invitation_time", "invitation_place")
            assert got.split("\n")[0] == want.split("\n")[0] and got.split("\n")[-1] == want.split("\n")[-1]


def test_truncated_is_a_strict_prefix_cut_mid_way(sample):
    _, truth, by_id = sample
    rows = _of(truth, "truncated")
    assert rows
    for t in rows:
        got, want = by_id[t["id"]]["messages"][-1]["content"], t["expected"]
        assert want.startswith(got) and 0 < len(got) < len(want)
        assert 0.3 <= len(got) / len(want) <= 0.7 and t["kept_share"] == round(len(got) / len(want), 2)
        assert not got[-1].isspace() and got[-1] not in ".,;:!?，。！？；：、"
        if not CJK.search(want):                       # Latin text: cut between words
            assert want[len(got)].isspace()
        assert not (got[-1].isdigit() and want[len(got)].isdigit())


def test_off_topic_response_belongs_to_another_category_in_the_same_language(sample):
    _, truth, by_id = sample
    rows = _of(truth, "off_topic")
    assert rows
    for t in rows:
        donor = truth[t["response_from"]]
        assert t["response_category"] == donor["category"] != t["category"]
        assert donor["lang"] == t["lang"]
        if donor["defect"] is None:   # the donor's own response, as generated
            assert by_id[t["id"]]["messages"][-1]["content"] == by_id[donor["id"]]["messages"][-1]["content"]


def test_wrong_language_answers_in_the_other_script(sample):
    _, truth, by_id = sample
    rows = _of(truth, "wrong_language")
    assert len({t["category"] for t in rows}) >= 4 and all(t["category"] != "translation" for t in rows)
    for t in rows:
        got, want = by_id[t["id"]]["messages"][-1]["content"], t["expected"]
        assert t["response_lang"] == {"en": "zh", "zh": "en"}[t["lang"]]
        if t["lang"] == "en":
            assert CJK.search(got) and not LATIN.search(got) and not CJK.search(want)
        else:
            assert LATIN.search(got) and not CJK.search(got) and CJK.search(want)


def test_wrong_language_is_the_same_answer():
    """Made with the task's builders: the same numbers, capital, label or words."""
    rng = random.Random(0)
    for lang in ("en", "zh"):
        for _ in range(30):
            item = GENERATORS["arithmetic"](rng, lang)
            assert _arith(Q.wrong_language(item))[3] == _arith(item.response)[3]
            item = GENERATORS["capital"](rng, lang)
            entry = next(c for c in V.CAPITALS if c[0] == item.key[1])
            assert entry[1 if lang == "zh" else 3] in Q.wrong_language(item)
    item = GENERATORS["reverse"](random.Random(1), "en")
    zh = Q.wrong_language(item)
    assert [V.REVERSE_WORDS_EN[V.REVERSE_WORDS_ZH.index(w)] for w in re.split("、| ", zh)] == \
        list(reversed(item.key[1]))


def test_padded_contains_the_correct_response_and_filler_in_the_rows_language(sample):
    _, truth, by_id = sample
    rows = _of(truth, "padded")
    assert rows
    for t in rows:
        got, want = by_id[t["id"]]["messages"][-1]["content"], t["expected"]
        assert want in got
        filler = got.replace(want, "")
        assert len(re.findall(r"[.!?。！？]", filler)) >= 3            # several sentences
        if t["lang"] == "en":
            assert not CJK.search(filler) and len(filler) > 80
        else:
            assert not LATIN.search(filler) and len(filler) > 30


def test_template_redundancy_is_measurable_from_truth(sample):
    _, truth, by_id = sample
    cat = PARAMS.redundant_category
    base = [t for t in _base_rows(truth) if t["category"] == cat]
    flagged = [t for t in base if t.get("template_redundant")]
    assert abs(len(flagged) / len(base) - PARAMS.redundant_template_share) < 0.05
    assert not any(t.get("template_redundant") for t in truth.values() if t["category"] != cat)
    for t in flagged:
        prompts = [m["content"] for m in by_id[t["id"]]["messages"] if m["role"] == "user"]
        assert any(p.startswith(SENTIMENT_TEMPLATE_0[t["lang"]]) for p in prompts)
    # the share of that template among the category's prompts: a third by chance, far more here
    firsts = [by_id[t["id"]]["messages"][-2]["content"] for t in base]
    on_t0 = sum(any(p.startswith(s) for s in SENTIMENT_TEMPLATE_0.values()) for p in firsts)
    assert on_t0 / len(base) > 0.65


def test_redundancy_changes_only_the_prompts_of_flagged_rows():
    """The same tasks either way (the rewrite replays the generator's draws): only the prompts of
    the flagged rows differ. (Later draws, such as a near duplicate's edit of a prompt, may differ.)"""
    a = clean_rows(SampleParams(rows_per_lang=300, redundant_template_share=0.5), random.Random(4))
    b = clean_rows(SampleParams(rows_per_lang=300, redundant_template_share=0.0), random.Random(4))
    assert len(a) == len(b) and not any(r.get("template_redundant") for r in b)
    assert sum(bool(r.get("template_redundant")) for r in a) > 50
    for x, y in zip(a, b):
        assert (x["slots"], x["label"], x["lang"]) == (y["slots"], y["label"], y["lang"])
        assert [m for m in x["messages"] if m["role"] != "user"] == [m for m in y["messages"] if m["role"] != "user"]
        if not x.get("template_redundant"):
            assert x["messages"] == y["messages"]
        else:
            assert x["label"] == "sentiment"


def test_imbalance_over_represents_the_category_and_keeps_the_total(sample):
    counts, truth, _ = sample
    per_cat = Counter(t["category"] for t in _base_rows(truth))
    share = per_cat["sentiment"] / sum(per_cat.values())
    w = {c: WEIGHTS[c] * PARAMS.imbalance.get(c, 1.0) for c in CATEGORIES}
    assert share == pytest.approx(w["sentiment"] / sum(w.values()), abs=0.02)      # 3 x 0.2 / 1.4 = 0.43
    assert share > 2 * max(v for c, v in per_cat.items() if c != "sentiment") / sum(per_cat.values())
    assert counts["per_category"] == dict(sorted(Counter(t["category"] for t in truth.values()
                                                         if t["category"] in CATEGORIES).items()))
    expect = category_counts(PARAMS)
    assert sum(expect.values()) == pytest.approx(PARAMS.rows_per_lang, abs=3)
    none = category_counts(PARAMS.model_copy(update={"imbalance": {}}))
    assert none == {c: round(PARAMS.rows_per_lang * WEIGHTS[c]) for c in CATEGORIES}
    two = category_counts(PARAMS.model_copy(update={"imbalance": {"arithmetic": 2.0, "capital": 2.0}}))
    assert two["arithmetic"] > none["arithmetic"] and two["capital"] > none["capital"]
    assert two["sentiment"] < none["sentiment"]


def test_generation_is_deterministic(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    p = SampleParams(rows_per_lang=150, quality_defect_rate=0.3, imbalance={"reverse": 2.0},
                     redundant_category="arithmetic")
    generate(p, a)
    generate(p, b)
    for f in list(SOURCES.values()) + ["truth.jsonl"]:
        assert (a / f).read_bytes() == (b / f).read_bytes()


def test_rates_zero_give_no_such_rows_and_leave_the_rest_alone(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    generate(SampleParams(rows_per_lang=200, quality_defect_rate=0.15), a)
    generate(SampleParams(rows_per_lang=200, quality_defect_rate=0.0), b)
    ta, tb = _truth(a), _truth(b)
    assert sum(t["defect"] in Q.QUALITY_TYPES for t in ta) > 40
    assert not any(t["defect"] in Q.QUALITY_TYPES for t in tb)
    assert [t["id"] for t in ta] == [t["id"] for t in tb]
    for x, y in zip(ta, tb):
        if x["defect"] in Q.QUALITY_TYPES:
            assert y["defect"] is None and y["category"] == x["category"]
        else:
            assert x == y
    c = tmp_path / "c"
    generate(SampleParams(rows_per_lang=200, quality_defect_rate=0.0, redundant_template_share=0.0,
                          imbalance={}), c)
    tc = _truth(c)
    assert not any(t["defect"] in Q.QUALITY_TYPES or t.get("template_redundant") for t in tc)
    items = Counter()        # task items per language and category (a two-turn row holds two)
    for t in _base_rows({t["id"]: t for t in tc}):
        items[t["lang"], t["category"]] += len(t["slots"].split(";"))
    assert all(items[lang, cat] == round(200 * WEIGHTS[cat]) for lang in ("en", "zh") for cat in CATEGORIES)


def test_bad_imbalance_is_reported():
    from sftpipe.config import parse_params
    import yaml
    from pathlib import Path

    data = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    data["sample"]["imbalance"] = {"sentiment": 0}
    with pytest.raises(UserError, match="sample.imbalance"):
        parse_params(data)
    data["sample"]["imbalance"] = {"poetry": 2.0}
    with pytest.raises(UserError, match="sample.imbalance"):
        parse_params(data)
