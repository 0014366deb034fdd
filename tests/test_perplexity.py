"""Perplexity scoring (batched == one by one, long/empty rows) and the threshold rules."""

import math

import numpy as np
import pytest

from sftpipe.config import ModelParams, PerplexityParams
from sftpipe.ledger import FilterResult, drop
from sftpipe.model.formatting import IGNORE, encode
from sftpipe.model.loading import load_model, load_tokenizer
from sftpipe.perplexity import (_batches, _ifd_encoding, bounds, encode_for_scoring, group_key, histogram_rows,
                                ifd_rows, perplexity_filter, plot_groups, score_rows, scoring_unit)
from sftpipe.schema import prompt_text, response_text


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
    p = PerplexityParams(template=template, mode=mode, batch_size=4, max_length=128, unit="token")
    batched = score_rows(model, tok, ROWS, p)
    for r, score in zip(ROWS, batched):
        ids, scored = encode_for_scoring(tok, r, p)
        assert score == pytest.approx(direct_ppl(model, ids, scored), rel=1e-4), r["id"]
    assert len(set(np.round(batched, 3))) == len(ROWS)


def test_per_byte_perplexity_is_the_same_loss_over_the_replys_utf8_bytes(lm):
    """unit: byte spreads a reply's summed loss over its UTF-8 bytes: the byte count here is the reply text's
    own (English and Chinese, 3 bytes a Han character), not one taken from the tokens."""
    model, tok = lm
    p = PerplexityParams(batch_size=4, max_length=128, unit="byte")
    per_token, per_byte = score_rows(model, tok, ROWS, p.model_copy(update={"unit": "token"})), score_rows(model, tok, ROWS, p)
    checked = 0
    for r, t, b in zip(ROWS, per_token, per_byte):
        ids, scored = encode_for_scoring(tok, r, p)
        if scored[0] or len(ids) >= p.max_length:
            continue    # the reply lost tokens to the cut (or its first token, which nothing predicts)
        n_tokens, n_bytes = sum(scored), len(r["messages"][-1]["content"].encode("utf-8"))
        assert math.log(b) == pytest.approx(math.log(t) * n_tokens / n_bytes, rel=1e-6), r["id"]
        checked += 1
    assert checked >= 3


def test_per_byte_perplexity_does_not_read_random_characters_as_ordinary_text(lm):
    """Random characters tokenize into many short tokens, each only fairly unlikely: per token they can score
    like a fluent reply, per byte they cost what they are (more loss for every byte)."""
    import random

    model, tok = lm
    rng = random.Random(0)
    noise = " ".join("".join(rng.choice("qwxzjkvbpy0123456789#@") for _ in range(rng.randint(2, 6))) for _ in range(12))
    rows = [rec(0, "What is 2 + 3?", "2 + 3 = 5."), rec(1, "What is 2 + 3?", noise)]
    fluent, garbage = score_rows(model, tok, rows, PerplexityParams(unit="byte"))
    fluent_t, garbage_t = score_rows(model, tok, rows, PerplexityParams(unit="token"))
    assert garbage / fluent > garbage_t / fluent_t
    assert garbage > fluent
    assert score_rows(model, tok, rows, PerplexityParams()) == [fluent_t, garbage_t]   # auto, given a model: tokens


def test_auto_unit_is_bytes_for_a_fitted_reference_and_tokens_for_a_model():
    assert scoring_unit(PerplexityParams(), "fit") == "byte" and scoring_unit(PerplexityParams(), "model") == "token"
    for unit in ("token", "byte"):
        assert {scoring_unit(PerplexityParams(unit=unit), k) for k in ("fit", "model")} == {unit}


def test_ifd_is_the_same_whichever_unit_the_perplexity_pass_used(lm):
    """IFD reuses the perplexity pass's scores as its numerator; per byte they are converted back first, so
    the ratio of two losses over the same reply tokens does not depend on the unit."""
    model, tok = lm
    by_unit = {}
    for unit in ("token", "byte"):
        p = PerplexityParams(batch_size=4, max_length=128, unit=unit)
        by_unit[unit] = ifd_rows(model, tok, ROWS, p, score_rows(model, tok, ROWS, p))
    assert by_unit["byte"] == pytest.approx(by_unit["token"], rel=1e-9)
    assert by_unit["token"] == pytest.approx(ifd_rows(model, tok, ROWS, PerplexityParams(batch_size=4, max_length=128)),
                                             rel=1e-9)


def test_the_lm_head_runs_in_chunks_with_the_same_scores(lm, monkeypatch):
    """A 152k-word vocabulary at batch 512 put 43 GiB of fp32 logits on an H100 at once (out of memory):
    the head now runs over at most LOGITS_CHUNK_ELEMENTS logits at a time. Forced down to 3 positions a
    chunk, every score must be what one chunk gives, and the head must really have run chunk by chunk."""
    import sftpipe.perplexity as P

    model, tok = lm
    p = PerplexityParams(batch_size=4, max_length=128)
    whole = score_rows(model, tok, ROWS, p)
    head = model.get_output_embeddings()
    widths = []
    hook = head.register_forward_hook(lambda mod, inp, out: widths.append(out.shape[0]))
    try:
        monkeypatch.setattr(P, "LOGITS_CHUNK_ELEMENTS", 3 * head.weight.shape[0])
        chunked = score_rows(model, tok, ROWS, p)
    finally:
        hook.remove()
    assert chunked == pytest.approx(whole, rel=1e-6)
    assert max(widths) == 3 and len(widths) > 20


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
    # neighbouring replies share words ("The capital of ..."), so a wrong reply is not far above 1 either:
    # 1.64 at the least with the tokenizer's tag tokens (the model's random start moved with its vocab)
    assert max(learned) < 1.1 and min(wrong) > 1.5


def direct_nll(model, ids, scored):
    return math.log(direct_ppl(model, ids, scored))


@pytest.mark.parametrize("template,reuse", [("plain", True), ("plain", False), ("chat", False)])
def test_ifd_is_the_conditioned_loss_over_the_loss_alone(lm, template, reuse):
    """IFD = mean loss of the response given the prompt / mean loss of the same response tokens alone
    (after a newline), each checked against the model's own loss row by row; reusing the perplexity
    pass's scores gives the same values as computing them again."""
    model, tok = lm
    p = PerplexityParams(batch_size=3, max_length=128, template=template)
    cond = score_rows(model, tok, ROWS, p) if reuse else None
    ifd = ifd_rows(model, tok, ROWS, p, cond)
    for r, got in zip(ROWS, ifd):
        with_prompt, alone = _ifd_encoding(tok, r, p, True), _ifd_encoding(tok, r, p, False)
        body = [t for t, s in zip(*alone) if s]
        assert [t for t, s in zip(*with_prompt) if s][-len(body):] == body   # the same response tokens
        want = direct_nll(model, *with_prompt) / direct_nll(model, *alone)
        assert got == pytest.approx(want, rel=1e-4), r["id"]
    if template == "chat":  # chat perplexity scores (every assistant part) are not reused
        assert ifd_rows(model, tok, ROWS, p, score_rows(model, tok, ROWS, p)) == pytest.approx(ifd, rel=1e-4)


def test_ifd_flags_responses_the_prompt_does_not_explain(lookup_model_dir):
    """On the lookup model a learned reply is far easier given its prompt (IFD well below 1); the same
    reply under another prompt is not (IFD near or above 1): what off-topic rows look like."""
    from lookup_model import lookup_rows

    mp = ModelParams(name_or_path=str(lookup_model_dir))
    model, tok = load_model(mp).eval(), load_tokenizer(mp)
    rows = lookup_rows()
    swapped = [{**r, "messages": [r["messages"][0], rows[(i + 1) % len(rows)]["messages"][1]]}
               for i, r in enumerate(rows)]
    p = PerplexityParams(batch_size=8, template="chat")   # the layout it learned
    good, bad = ifd_rows(model, tok, rows, p), ifd_rows(model, tok, swapped, p)
    assert max(good) < min(bad)
    assert np.median(good) < 0.5 < np.median(bad)


def test_filter_records_ifd_in_meta():
    rows = [rec(i, "q", "a") for i in range(3)]
    res = perplexity_filter(rows, [2.0, 3.0, None], PerplexityParams(mad_k=None), ifd=[0.512344, None, None])
    meta = {r["id"]: r["meta"] for r in res.kept + [d["record"] for d in res.dropped]}
    assert meta["s:0"]["ifd"] == 0.51234 and meta["s:1"]["ifd"] is None and "ifd" in meta["s:2"]
    assert "ifd" not in perplexity_filter(rows, [2.0, 3.0, 4.0], PerplexityParams()).kept[0]["meta"]


def test_rows_whose_prompt_does_not_help_are_dropped_above_max_ifd():
    """Cherry LLM's misaligned rows: IFD above 1 means the reply is less likely given its prompt than
    alone. Above max_ifd -> ifd_high with the IFD as evidence; at or below, or unknown, or max_ifd null:
    kept. A perplexity bound wins over the IFD cap."""
    rows = [rec(i, "q", f"answer {i}") for i in range(5)]
    ifd = [0.4, 1.0, 1.2, None, 1.5]
    res = perplexity_filter(rows, [3.0, 3.0, 3.0, 3.0, 100.0], PerplexityParams(mad_k=None, max_ppl=50.0), ifd=ifd)
    reasons = {d["id"]: (d["reason"], d["evidence"].get("ifd")) for d in res.dropped}
    assert reasons == {"s:2": ("ifd_high", 1.2), "s:4": ("perplexity_high", None)}
    assert [r["id"] for r in res.kept] == ["s:0", "s:1", "s:3"]
    off = perplexity_filter(rows, [3.0] * 5, PerplexityParams(mad_k=None, max_ifd=None), ifd=ifd)
    assert not off.dropped


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
    assert histogram_rows(FilterResult(kept=[rec(0, "q", "a")])) == []
    assert plot_groups(FilterResult(kept=[rec(0, "q", "a")])) == {}


class Ticks:
    """A progress bar that records its updates."""

    def __init__(self):
        self.updates = []

    def update(self, n):
        self.updates.append(n)


@pytest.mark.parametrize("lengths, batch_size, expected", [
    ([10] * 5, 2, [[0, 1], [2, 3], [4]]),             # batch_size caps equal-length rows
    ([9, 11], 8, [[0, 1]]),                           # padding exactly 10% of the real tokens: still one batch
    ([10, 10, 12, 15], 8, [[0, 1], [2], [3]]),        # 12 would pad 3 x 12 > 1.1 x 32; 15 after 12: 30 > 1.1 x 27
    ([], 4, []),
], ids=["batch_size", "pad_at_limit", "pad_over_limit", "empty"])
def test_batches_close_at_batch_size_or_when_padding_exceeds_a_tenth(lengths, batch_size, expected):
    assert _batches(list(range(len(lengths))), lengths, batch_size) == expected


def test_batches_hold_row_indices_in_the_given_order():
    assert _batches([2, 0, 1], [10, 10, 5], 4) == [[2], [0, 1]]   # 5 then 10: 2 x 10 > 1.1 x 15


def test_score_rows_ticks_progress_once_per_batch_of_at_most_batch_size(lm):
    model, tok = lm
    rows = [rec(i, "same prompt", "same reply") for i in range(5)] + [rec(5, "p", "")]
    ticks = Ticks()
    scores = score_rows(model, tok, rows, PerplexityParams(batch_size=2), ticks)
    assert ticks.updates == [1, 2, 2, 1]   # the empty reply sorts first (shortest) and is counted, unscored
    assert scores[5] is None and len(set(scores[:5])) == 1 and scores[0] > 1


def test_scores_on_an_accelerator_equal_cpu_scores(lm):
    import copy

    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    model, tok = lm
    p = PerplexityParams(batch_size=4, max_length=128)
    gpu = score_rows(copy.deepcopy(model).to("cuda"), tok, ROWS, p)
    assert gpu == pytest.approx(score_rows(model, tok, ROWS, p), rel=1e-3)


def test_scores_on_an_accelerator_are_the_same_bits_on_a_rerun(lm):
    """data/perplexity holds the scores, so a rerun must give the same bits: on an H100 the per-row sums
    in GPU atomics differed for half of 2,048 rows between two runs (bench/score_gpu.py --rerun-check)."""
    import copy

    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    model, tok = lm
    gpu = copy.deepcopy(model).to("cuda")
    rows = [dict(r, id=f"{r['id']}-{k}") for k in range(40) for r in ROWS]
    p = PerplexityParams(batch_size=64, max_length=128)
    first = score_rows(gpu, tok, rows, p)
    torch.empty(10**7, device="cuda")     # another allocator state for the second run
    assert score_rows(gpu, tok, rows, p) == first


def test_a_model_that_softcaps_its_logits_is_scored_with_its_own_forward(tiny_tokenizer):
    """Gemma-2 soft-caps the logits after the LM head: the scores must be the model's own loss."""
    import torch
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(0)
    model = Gemma2ForCausalLM(Gemma2Config(
        vocab_size=len(tiny_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, final_logit_softcapping=2.0,
        initializer_range=0.5)).eval()   # large logits, so the cap at 2 changes them a lot
    p = PerplexityParams(batch_size=4, max_length=128)
    for r, score in zip(ROWS, score_rows(model, tiny_tokenizer, ROWS, p)):
        assert score == pytest.approx(direct_ppl(model, *encode_for_scoring(tiny_tokenizer, r, p)), rel=1e-4), r["id"]


def test_the_lm_head_runs_only_on_scored_positions(lm):
    model, tok = lm
    p = PerplexityParams(batch_size=8, max_length=128)
    seen = []
    hook = model.get_output_embeddings().register_forward_hook(lambda m, a, out: seen.append(tuple(a[0].shape)))
    try:
        score_rows(model, tok, ROWS, p)
    finally:
        hook.remove()
    # one (positions, hidden) input per batch, one position per scored next token: no prompt, no padding
    assert seen and all(len(shape) == 2 for shape in seen)
    assert sum(n for n, _ in seen) == sum(sum(encode_for_scoring(tok, r, p)[1][1:]) for r in ROWS)


def two_turns():
    return {"id": "t:0", "source": "t", "label": "a", "meta": {"lang": "en"},
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"},
                         {"role": "assistant", "content": "Paris."}, {"role": "user", "content": "And Germany?"},
                         {"role": "assistant", "content": "Berlin."}]}


def test_encode_for_scoring_plain_templates(tiny_tokenizer):
    tok, r = tiny_tokenizer, two_turns()

    def ids(text):
        return tok(text, add_special_tokens=False)["input_ids"]

    # the prompt is the system and user turns
    pre, body = ids("Be brief.\nCapital of France?\nAnd Germany?\n"), ids("Berlin.")
    assert encode_for_scoring(tok, r, PerplexityParams(mode="response")) == \
        (pre + body, [False] * len(pre) + [True] * len(body))
    full = ids(prompt_text(r) + "\n" + response_text(r))
    assert encode_for_scoring(tok, r, PerplexityParams(mode="full")) == (full, [True] * len(full))


def test_encode_for_scoring_chat_templates(tiny_tokenizer):
    tok, r = tiny_tokenizer, two_turns()
    last, every = encode(tok, r["messages"], "last_turn"), encode(tok, r["messages"], "all")
    assert encode_for_scoring(tok, r, PerplexityParams(template="chat", mode="response")) == \
        (last.input_ids, [lab != IGNORE for lab in last.labels])
    assert encode_for_scoring(tok, r, PerplexityParams(template="chat", mode="full")) == \
        (every.input_ids, [True] * len(every.input_ids))
    assert 0 < sum(lab != IGNORE for lab in last.labels) < len(last.labels)


def test_encode_for_scoring_adds_no_special_tokens(tiny_tokenizer):
    """A tokenizer that adds BOS to every call (LLaMA-style) scores the same ids as one that does not."""
    import copy

    from tokenizers.processors import TemplateProcessing

    bos, bos_id = copy.deepcopy(tiny_tokenizer), tiny_tokenizer.convert_tokens_to_ids("<|endoftext|>")
    bos.backend_tokenizer.post_processor = TemplateProcessing(single="<|endoftext|> $A",
                                                              special_tokens=[("<|endoftext|>", bos_id)])
    assert bos("hi")["input_ids"][0] == bos_id
    for mode in ("response", "full"):
        p = PerplexityParams(mode=mode)
        assert encode_for_scoring(bos, two_turns(), p) == encode_for_scoring(tiny_tokenizer, two_turns(), p)


@pytest.mark.parametrize("group_by, expected", [
    ("none", "all"), ("lang", "zh"), ("source", "s"), ("label", "a"), ("lang+source", "zh/s"),
    ("label+lang", "a/zh"), ("lang+source+label", "zh/s/a"),
])
def test_group_key_joins_the_keys_in_order(group_by, expected):
    assert group_key(rec(0, "p", "r", lang="zh"), group_by) == expected


def test_group_key_names_missing_language_and_label():
    r = rec(0, "p", "r")
    for meta, label in (({}, None), ({"lang": None}, ""), ({"lang": ""}, None)):
        missing = {**r, "meta": meta, "label": label}
        assert group_key(missing, "lang+label") == "unknown/unlabeled"
    no_label = {k: v for k, v in r.items() if k != "label"}
    assert group_key(no_label, "label") == "unlabeled" and group_key(no_label, "none") == "all"


def test_bounds_without_rules_are_open_and_each_rule_names_itself():
    ppl = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    none = {"lower": None, "upper": None}
    assert bounds(ppl, PerplexityParams(mad_k=None)) == (0.0, math.inf, none)
    assert bounds(ppl, PerplexityParams(mad_k=None, min_ppl=0.5)) == \
        (0.5, math.inf, {"lower": "min_ppl", "upper": None})
    assert bounds(ppl, PerplexityParams(mad_k=None, lower_quantile=0.25, upper_quantile=0.75)) == \
        (2.0, 4.0, {"lower": "lower_quantile", "upper": "upper_quantile"})
    # the tightest rule wins on each side
    assert bounds(ppl, PerplexityParams(mad_k=None, lower_quantile=0.25, min_ppl=2.5, upper_quantile=0.75,
                                        max_ppl=4.5)) == (2.5, 4.0, {"lower": "min_ppl", "upper": "upper_quantile"})
    # no scores: only the absolute limits apply
    assert bounds(np.array([]), PerplexityParams(lower_quantile=0.1, min_ppl=1.5, max_ppl=9.0)) == \
        (1.5, 9.0, {"lower": "min_ppl", "upper": "max_ppl"})


def test_mad_needs_ten_scores_and_a_spread():
    ppl = np.exp([0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 5.0])
    open_ = (0.0, math.inf, {"lower": None, "upper": None})
    assert bounds(ppl[:9], PerplexityParams(mad_k=1.0)) == open_         # nine scores: no MAD rule
    assert bounds(ppl, PerplexityParams(mad_k=None)) == open_            # MAD off
    lo, hi, rule = bounds(ppl, PerplexityParams(mad_k=1.0))              # median 1, MAD 0.5
    assert rule == {"lower": "mad", "upper": "mad"}
    assert lo == pytest.approx(math.exp(1 - 1.4826 * 0.5)) and hi == pytest.approx(math.exp(1 + 1.4826 * 0.5))
    assert bounds(np.full(10, 3.0), PerplexityParams(mad_k=1.0)) == open_   # no spread: no MAD rule


def test_filter_ledger_evidence_and_bounds_for_each_side():
    rows = [rec(i, "p", "r") for i in range(4)]
    res = perplexity_filter(rows, [1.5, 5.0, 50.0, None], PerplexityParams(mad_k=None, min_ppl=2.0, max_ppl=20.0, group_by="lang"))
    ev = {"lower": 2.0, "upper": 20.0, "group": "en"}
    assert [{k: v for k, v in d.items() if k != "record"} for d in res.dropped] == [
        {"id": "s:0", "stage": "perplexity", "reason": "perplexity_low",
         "evidence": {"ppl": 1.5, **ev, "rule": "min_ppl"}},
        {"id": "s:2", "stage": "perplexity", "reason": "perplexity_high",
         "evidence": {"ppl": 50.0, **ev, "rule": "max_ppl"}},
        {"id": "s:3", "stage": "perplexity", "reason": "unscorable", "evidence": {"ppl": None, **ev}}]
    assert [r["meta"] for r in res.kept] == [{"lang": "en", "ppl": 5.0, "ppl_group": "en"}]
    assert res.details == {"bounds": {"en": {"lower": 2.0, "upper": 20.0, "lower_rule": "min_ppl",
                                             "upper_rule": "max_ppl"}}}
    assert res.extra_metrics == {"median_ppl": 5.0, "groups": 1}


def scored_row(i, ppl, group):
    r = rec(i, "p", "r")
    return {**r, "meta": {**r["meta"], "ppl": ppl, "ppl_group": group}}


def test_histogram_rows_count_kept_and_dropped_per_group_and_log10_bin():
    res = FilterResult(
        kept=[scored_row(0, 1.0, "en"), scored_row(1, 10.0, "en"), scored_row(2, 10.0, "en"),
              scored_row(3, 100.0, "zh")],
        dropped=[drop(scored_row(4, 1000.0, "en"), "perplexity", "perplexity_high"),
                 drop(scored_row(5, 100.0, "zh"), "perplexity", "perplexity_low"),
                 drop(scored_row(6, None, "en"), "perplexity", "unscorable")])
    # log10 0..3 in 4 bins of 0.75: centres 0.375, 1.125, 1.875, 2.625
    assert histogram_rows(res, bins=4) == [["en", 0.375, 1, 0], ["en", 1.125, 2, 0], ["en", 2.625, 0, 1],
                                           ["zh", 1.875, 1, 1]]
    # 40 bins of 0.075 (+ 1e-9 / 40, which rounds the half-way centres up)
    assert [row[1] for row in histogram_rows(res)] == [0.038, 1.013, 2.963, 1.988]


def test_plot_groups_lists_every_scored_row_with_its_groups_bounds():
    rows = [rec(0, "p", "r"), rec(1, "p", "r"), rec(2, "p", "r"), rec(3, "p", "r", lang="zh"),
            rec(4, "p", "r", lang="zh")]
    scores = [2.0, 5.0, 50.0, 3.0, None]
    res = perplexity_filter(rows, scores, PerplexityParams(mad_k=None, min_ppl=2.5, max_ppl=20.0, group_by="lang"))
    assert plot_groups(res) == {"en": {"scores": [5.0, 2.0, 50.0], "lower": 2.5, "upper": 20.0},
                                "zh": {"scores": [3.0], "lower": 2.5, "upper": 20.0}}
    # no rule: lower 0 means no lower cut (None), and no upper cut
    res = perplexity_filter(rows, scores, PerplexityParams(mad_k=None, group_by="none"))
    assert plot_groups(res) == {"all": {"scores": [2.0, 5.0, 50.0, 3.0], "lower": None, "upper": None}}


def test_pii_placeholders_are_not_scored(tiny_tokenizer):
    """No model has seen <PHONE>: scored in, it made masked rows look like garbage."""
    from sftpipe.perplexity import without_placeholders

    masked = rec(0, "联系方式？", "联系电话：<PHONE>，邮箱 <EMAIL>。")
    plain = rec(1, "联系方式？", "联系电话：，邮箱 。")
    assert without_placeholders(masked)["messages"] == plain["messages"]
    on, off = PerplexityParams(), PerplexityParams(skip_placeholders=False)
    assert encode_for_scoring(tiny_tokenizer, masked, on) == encode_for_scoring(tiny_tokenizer, plain, on)
    assert encode_for_scoring(tiny_tokenizer, masked, off) != encode_for_scoring(tiny_tokenizer, plain, off)
    untouched = rec(2, "a <b> c", "x < y")
    assert without_placeholders(untouched) is untouched
