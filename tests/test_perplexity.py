"""Perplexity scoring (batched == one by one, long/empty rows) and the threshold rules."""

import math

import numpy as np
import pytest

from sftpipe.config import ModelParams, PerplexityParams
from sftpipe.model.loading import load_model, load_tokenizer
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


def direct_ppl(model, ids, scored):
    """exp of the model's own mean loss over the scored tokens (transformers shifts the labels itself)."""
    import torch

    labels = torch.tensor([t if s else -100 for t, s in zip(ids, scored)])
    with torch.inference_mode():
        return math.exp(model(input_ids=torch.tensor([ids]), labels=labels[None]).loss.item())


@pytest.mark.parametrize("mode", ["response", "full"])
@pytest.mark.parametrize("template", ["plain", "chat"])
def test_batched_scores_equal_the_models_own_loss_row_by_row(lm, template, mode):
    model, tok = lm
    p = PerplexityParams(template=template, mode=mode, batch_size=4, max_length=128)
    batched = score_rows(model, tok, ROWS, p)
    for r, score in zip(ROWS, batched):
        ids, scored = encode_for_scoring(tok, r, p)
        assert score == pytest.approx(direct_ppl(model, ids, scored), rel=1e-4), r["id"]
    assert len(set(np.round(batched, 3))) == len(ROWS)


def test_scores_follow_what_the_model_has_learned(lookup_model_dir):
    """On the lookup model a learned reply scores near 1; the same reply under another prompt does not."""
    from lookup_model import lookup_rows

    mp = ModelParams(name_or_path=str(lookup_model_dir))
    model, tok = load_model(mp).eval(), load_tokenizer(mp)
    rows = lookup_rows()
    swapped = [{**r, "messages": [r["messages"][0], rows[(i + 1) % len(rows)]["messages"][1]]}
               for i, r in enumerate(rows)]
    p = PerplexityParams(template="chat", batch_size=8)
    learned, wrong = score_rows(model, tok, rows, p), score_rows(model, tok, swapped, p)
    assert max(learned) < 1.1 and min(wrong) > 2  # neighbouring replies share words ("The capital of ...")


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
    med = np.median(np.log(ppl))
    sigma = 1.4826 * np.median(np.abs(np.log(ppl) - med))          # the robust sigma, ~0.3 here
    assert math.log(lo) == pytest.approx(med - 3 * sigma) and math.log(hi) == pytest.approx(med + 3 * sigma)
    assert math.isclose(math.log(lo), 2.0 - 3 * 0.3, rel_tol=0.1) and math.isclose(math.log(hi), 2.0 + 3 * 0.3, rel_tol=0.05)
    lo2, hi2, rule2 = bounds(ppl, PerplexityParams(mad_k=3.0, max_ppl=10.0, lower_quantile=0.1))
    assert hi2 == 10.0 and rule2["upper"] == "max_ppl"
    assert lo2 == pytest.approx(np.quantile(ppl, 0.1)) and rule2["lower"] == "lower_quantile"


def test_filter_drops_outliers_per_group_and_keeps_scores():
    """en sits around ppl e^1, zh around e^3. An en row at e^2 and a zh row at e^2 are ordinary for the
    pooled rows (median ~e^2) but far outside their own language: only per-group bounds drop them."""
    rng = np.random.default_rng(1)
    rows = [rec(i, "p", "r", lang="en" if i % 2 else "zh") for i in range(400)]
    scores = list(np.exp(rng.normal(np.where(np.arange(400) % 2, 1.0, 3.0), 0.2)))
    scores[11], scores[10] = math.exp(2.0), math.exp(2.0)    # en too high, zh too low
    res = perplexity_filter(rows, scores, PerplexityParams(mad_k=4.0, group_by="lang"))
    assert {d["id"]: d["reason"] for d in res.dropped} == {"s:11": "perplexity_high", "s:10": "perplexity_low"}
    d = next(d for d in res.dropped if d["id"] == "s:11")
    assert d["evidence"]["rule"] == "mad" and d["evidence"]["group"] == "en"
    assert d["evidence"]["ppl"] == pytest.approx(math.exp(2.0), rel=1e-4) and d["evidence"]["ppl"] > d["evidence"]["upper"]
    assert all("ppl" in r["meta"] and r["meta"]["ppl_group"] in ("en", "zh") for r in res.kept)
    assert set(res.details["bounds"]) == {"en", "zh"}
    assert res.details["bounds"]["en"]["upper"] < res.details["bounds"]["zh"]["lower"]
    pooled = perplexity_filter(rows, scores, PerplexityParams(mad_k=4.0, group_by="none"))
    assert not pooled.dropped  # the same rows, pooled: nothing stands out


def test_histogram_of_an_unscored_pass_through_is_empty():
    # perplexity.enabled: false passes rows through unscored: no plot rows, no KeyError
    from sftpipe.ledger import FilterResult
    from sftpipe.perplexity import histogram_rows

    assert histogram_rows(FilterResult(kept=[rec(0, "q", "a")])) == []
