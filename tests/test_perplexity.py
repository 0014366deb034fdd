"""Perplexity scoring (batched == one by one, long/empty rows) and the threshold rules."""

import math

import numpy as np
import pytest

from sftpipe.config import ModelParams, PerplexityParams
from sftpipe.modeling import load_model, load_tokenizer
from sftpipe.perplexity import bounds, encode_for_scoring, perplexity_filter, score_rows


def rec(i, prompt, reply, lang="en", label="a"):
    return {"id": f"s:{i}", "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}],
            "source": "s", "label": label, "meta": {"lang": lang}}


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    mp = ModelParams(name_or_path=str(tiny_model_dir))
    return load_model(mp).eval(), load_tokenizer(mp)


ROWS = [rec(0, "What is 2 + 3?", "2 + 3 = 5."), rec(1, "Translate into Chinese: red cat", "红色的猫", "zh"),
        rec(2, "Reverse: a b c", "c b a " * 40), rec(3, "请把“红色的猫”翻译成英文。", "red cat", "zh"),
        rec(4, "Long prompt " * 300, "short answer")]


@pytest.mark.parametrize("template", ["plain", "chat"])
def test_batched_scores_equal_one_by_one(lm, template):
    model, tok = lm
    p = PerplexityParams(template=template, batch_size=4, max_length=128)
    batched = score_rows(model, tok, ROWS, p)
    single = [score_rows(model, tok, [r], p)[0] for r in ROWS]
    assert np.allclose(batched, single, rtol=1e-4)
    assert all(s is not None and s > 1 for s in batched)


@pytest.mark.parametrize("softcap", [False, True])
def test_scoring_builds_no_kv_cache(lm, softcap, monkeypatch):
    """Scoring reads each row once: a KV cache would only copy every layer's keys and values."""
    model, tok = lm
    if softcap:  # models that post-process logits go through their own forward
        monkeypatch.setattr(model.config, "final_logit_softcapping", 30.0, raising=False)
    caches = []
    hook = model.base_model.register_forward_hook(lambda m, a, out: caches.append(out.past_key_values))
    try:
        assert all(s is not None for s in score_rows(model, tok, ROWS, PerplexityParams(batch_size=2)))
    finally:
        hook.remove()
    assert caches and all(c is None for c in caches)


def test_bf16_precision_loads_bf16_weights_and_scores_close_to_fp32(lm, tiny_model_dir):
    model, tok = lm
    p = PerplexityParams(precision="bf16", batch_size=4, max_length=128)
    model16 = load_model(ModelParams(name_or_path=str(tiny_model_dir)), precision=p.precision).eval()
    assert str(next(model16.parameters()).dtype) == "torch.bfloat16"
    fp32, bf16 = score_rows(model, tok, ROWS, p), score_rows(model16, tok, ROWS, p)
    assert np.allclose(bf16, fp32, rtol=0.05) and not np.allclose(bf16, fp32, rtol=1e-7)
    with pytest.raises(ValueError):
        PerplexityParams(precision="fp8")


def test_long_prompt_is_cut_from_the_left_keeping_the_response(lm):
    _, tok = lm
    p = PerplexityParams(max_length=32)
    ids, scored = encode_for_scoring(tok, ROWS[4], p)
    assert len(ids) == 32 and scored[-1] and tok.decode([t for t, s in zip(ids, scored) if s]) == "short answer"


def test_unscorable_rows_are_dropped_with_a_reason():
    rows = [rec(i, "p", "r") for i in range(3)]
    res = perplexity_filter(rows, [2.0, None, 3.0], PerplexityParams(mad_k=None))
    assert [d["reason"] for d in res.dropped] == ["unscorable"] and len(res.kept) == 2


def test_bounds_rules_and_tightest_wins():
    ppl = np.exp(np.random.default_rng(0).normal(2.0, 0.3, 1000))
    lo, hi, rule = bounds(ppl, PerplexityParams(mad_k=3.0))
    assert rule == {"lower": "mad", "upper": "mad"}
    assert math.isclose(math.log(hi), 2.0 + 3 * 0.3, rel_tol=0.05)
    lo2, hi2, rule2 = bounds(ppl, PerplexityParams(mad_k=3.0, max_ppl=10.0, lower_quantile=0.1))
    assert hi2 == 10.0 and rule2["upper"] == "max_ppl"
    assert lo2 == pytest.approx(np.quantile(ppl, 0.1)) and rule2["lower"] == "lower_quantile"


def test_filter_drops_outliers_per_group_and_keeps_scores():
    rng = np.random.default_rng(1)
    rows = [rec(i, "p", "r", lang="en" if i % 2 else "zh") for i in range(400)]
    scores = list(np.exp(rng.normal(np.where(np.arange(400) % 2, 1.0, 3.0), 0.2)))
    scores[10], scores[11] = 1e5, 1e5            # a zh and an en outlier
    res = perplexity_filter(rows, scores, PerplexityParams(mad_k=4.0, group_by="lang"))
    assert {d["id"] for d in res.dropped} == {"s:10", "s:11"}
    d = res.dropped[0]
    assert d["reason"] == "perplexity_high" and d["evidence"]["rule"] == "mad" and d["evidence"]["ppl"] == 1e5
    assert all("ppl" in r["meta"] and r["meta"]["ppl_group"] in ("en", "zh") for r in res.kept)
    assert set(res.details["bounds"]) == {"en", "zh"}


def test_histogram_of_an_unscored_pass_through_is_empty():
    # perplexity.enabled: false passes rows through unscored: no plot rows, no KeyError
    from sftpipe.ledger import FilterResult
    from sftpipe.perplexity import histogram_rows

    assert histogram_rows(FilterResult(kept=[rec(0, "q", "a")])) == []
