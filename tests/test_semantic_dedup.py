"""Semantic dedup: paraphrases found, templated near-misses kept apart, determinism, errors."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import numpy as np
import pytest

from sftpipe.dedup import semantic
from sftpipe.dedup.semantic import SemanticParams, semantic_pairs
from sftpipe.errors import UserError
from sftpipe.sample import dupbench


def rec(rid, prompt, response):
    return {"id": rid, "source": "t", "label": None, "meta": {},
            "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]}


@pytest.fixture(scope="module")
def bench():
    return dupbench.generate(n_per_lang=300, n_long=40, n_typo=10, n_para=40, seed=3)


@pytest.fixture(scope="module")
def found(bench):
    pairs, cos = semantic_pairs(bench.records, SemanticParams())
    return pairs, cos


def paraphrase_pairs(b):
    orig = {t["group"]: i for i, t in enumerate(b.truth) if t["kind"] == "original"}
    return {tuple(sorted((i, orig[t["group"]]))) for i, t in enumerate(b.truth) if t["kind"] == "paraphrase"}


def test_paraphrases_found_precisely(bench, found):
    pairs, cos = found
    got = set(map(tuple, pairs.tolist()))
    para = paraphrase_pairs(bench)
    for lang in ("en", "zh"):
        mine = {p for p in para if bench.truth[p[0]]["lang"] == lang}
        assert len(mine & got) / len(mine) >= 0.8, lang
    assert len(got & bench.dup_pairs()) / len(got) >= 0.99
    assert not got & bench.one_slot_pairs()
    # the output contract: int64 (m, 2), i < j, sorted, one cosine per pair
    assert pairs.dtype == np.int64 and pairs.shape[1] == 2 and len(cos) == len(pairs)
    assert (pairs[:, 0] < pairs[:, 1]).all()
    assert np.array_equal(pairs, pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))])
    assert (cos >= SemanticParams().threshold - 1e-6).all() and (cos <= 1.0).all()


def _first(b, category, lang, pred=lambda r: True):
    return next(i for i, t in enumerate(b.truth) if t["kind"] == "original" and t["category"] == category
                and t["lang"] == lang and pred(b.records[i]))


def test_same_answer_other_slot_not_paired(bench):
    """Near-misses whose ANSWERS are equal: the answer rule alone would pair them."""
    b = bench
    records = list(b.records)
    # subtraction answers do not name the person: "12 - 4 = 8. There are 8 marbles left."
    i = _first(b, "arithmetic", "en", lambda r: " - " in semantic.answer_text(r))
    name = b.truth[i]["key"][5]
    other = "Zed" if name != "Zed" else "Quinn"
    p = semantic.request_text(records[i])
    records.append(rec("swap-name", p.replace(name, other), semantic.answer_text(records[i])))
    # the same label for another review in the same template: one sentence more, which is
    # template-like (40% of the reviews end with it), so only the task-input rule sees it
    j = _first(b, "sentiment", "en", lambda r: semantic.answer_text(r) == "positive")
    review = b.truth[j]["key"][1]
    tail = " I would recommend it."
    other = review[:-len(tail)] if review.endswith(tail) else review + tail
    records.append(rec("other-review", semantic.request_text(records[j]).replace(review, other), "positive"))
    # and the same review under another of the sample's templates: a paraphrase, which must be found
    other_tpl = [f'What is the sentiment of this review? "{review}"',
                 f"Classify the review as positive or negative: {review}",
                 f"Is the following review positive or negative?\n{review}"]
    del other_tpl[b.truth[j]["key"][2]]
    records.append(rec("same-review", other_tpl[0], "positive"))
    pairs, _ = semantic_pairs(records, SemanticParams())
    got = set(map(tuple, pairs.tolist()))
    n = len(b.records)
    assert (i, n) not in got
    assert (j, n + 1) not in got
    assert (j, n + 2) in got


def test_deterministic(bench, found):
    again, cos = semantic_pairs(bench.records, SemanticParams())
    assert np.array_equal(again, found[0]) and np.array_equal(cos, found[1])
    X1 = semantic.embed(["a b c", "x y z", "a b c"] * 4, seed=7)
    X2 = semantic.embed(["a b c", "x y z", "a b c"] * 4, seed=7)
    assert np.array_equal(X1, X2) and np.array_equal(X1[0], X1[2])
    assert np.allclose(np.linalg.norm(X1, axis=1), 1.0, atol=1e-5)


def test_empty_and_single_row():
    for records in ([], [rec("a", "What is 2+2?", "4")]):
        pairs, cos = semantic_pairs(records, SemanticParams())
        assert pairs.shape == (0, 2) and pairs.dtype == np.int64 and cos.shape == (0,)
    assert semantic.embed([]).shape[0] == 0
    assert semantic.embed(["only one"]).shape[0] == 1


def test_two_rows_with_nothing_shared_not_paired():
    records = [rec("a", "Capital of France?", "Paris."), rec("b", "Where is the Eiffel Tower?", "Paris.")]
    pairs, _ = semantic_pairs(records, SemanticParams())
    assert len(pairs) == 0


def test_sentence_transformers_missing_is_one_clear_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)       # import fails as if not installed
    with pytest.raises(UserError, match="pip install sentence-transformers") as e:
        semantic.embed(["a", "b"], method="sentence_transformers", model="any/model")
    assert "\n" not in str(e.value)


def test_bad_method_and_missing_model_dir(tmp_path):
    with pytest.raises(UserError, match="unknown method"):
        semantic.embed(["a"], method="word2vec")
    with pytest.raises(UserError, match="not a local directory"):
        semantic.embed(["a"], method="base_model", model=str(tmp_path / "nope"))
    with pytest.raises(UserError, match="semantic.model"):
        semantic.embed(["a"], method="base_model")
    with pytest.raises(UserError, match="semantic.method"):
        SemanticParams(method="bert")


def test_base_model_embeddings(tiny_model_dir):
    texts = ["The capital of Kenya is Nairobi.", "7 - 3 = 4", "The capital of Kenya is Nairobi."]
    X = semantic.embed(texts, method="base_model", model=str(tiny_model_dir))
    assert X.shape[0] == 3 and X.dtype == np.float32
    assert np.allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(X[0], X[2])
    assert np.array_equal(X, semantic.embed(texts, method="base_model", model=str(tiny_model_dir)))


def test_params_from_any_attribute_object(bench):
    """A pydantic-like section with the same attribute names works (config.py will hold it)."""
    ns = SimpleNamespace(**{**SemanticParams().__dict__, "label_rows": 5})
    pairs, _ = semantic_pairs(bench.records[:200], ns)
    ref, _ = semantic_pairs(bench.records[:200], SemanticParams())
    assert np.array_equal(pairs, ref)


def test_helpers():
    assert semantic.normalize_text("A, b  c！") == semantic.normalize_text("abc") == "abc"
    assert semantic.task_input('How do you say "red cat" in Chinese?') == "redcat"
    assert semantic.task_input("Classify the review: The food was great.") == "thefoodwasgreat"
    assert semantic.task_input("这条评论是正面还是负面的？“饭菜很好。”") == "饭菜很好"
    assert semantic.task_input("What is the capital of Kenya?") == ""
    assert semantic.numbers("Tom has 03 apples and ４ pears") == ("3", "4")
    ev = semantic.evidence([rec("a", "Classify: good", "positive")] * 2, np.array([[0, 1]]))
    assert ev[0]["answer"] == "positive" and ev[0]["numbers"] == []


def test_answer_blocks_miss_no_pair_the_rule_allows(bench):
    """The blocks are exact: every pair of rows that passes the rule when all pairs are compared (no blocks)
    is found, and nothing else."""
    p = SemanticParams()
    records = bench.records[:700]
    requests = [semantic.request_text(r) for r in records]
    answers = [semantic.answer_text(r) for r in records]
    texts = [semantic.embedded_text(q, a, p.field) for q, a in zip(requests, answers)]
    X = semantic.embed(texts, seed=p.seed, dims=p.dims)
    askers: dict = {}
    for q, a in zip(requests, answers):
        askers.setdefault(semantic.normalize_text(a), set()).add(semantic.normalize_text(q))
    content = semantic._Templates(requests, p).content(requests, np.arange(len(requests)))
    want = set()
    for i in range(len(records)):
        for j in range(i + 1, len(records)):
            a = semantic.normalize_text(answers[i])
            if a != semantic.normalize_text(answers[j]) or float(X[i] @ X[j]) < p.threshold:
                continue
            if (semantic.numbers(requests[i]), semantic.numbers(answers[i])) != \
                    (semantic.numbers(requests[j]), semantic.numbers(answers[j])):
                continue
            if len(askers[a]) >= p.label_rows:
                inp = semantic.task_input(requests[i])
                if semantic._units(inp) < p.min_input_units or inp != semantic.task_input(requests[j]):
                    continue
            if content[i][1] <= content[j][0] and content[j][1] <= content[i][0]:
                want.add((i, j))
    pairs, _ = semantic_pairs(records, p)
    assert len(want) > 20 and set(map(tuple, pairs.tolist())) == want
