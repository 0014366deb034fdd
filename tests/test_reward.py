"""Reward-model scores with a tiny LlamaForSequenceClassification saved like a hub model: batched
scores equal one-row-at-a-time forward passes, whatever the padding; templates; loading and errors."""

from __future__ import annotations

import copy

import pytest

from sftpipe.config import RewardModelParams
from sftpipe.errors import UserError
from sftpipe.select import reward
from sftpipe.select.reward import encode_for_reward, load_reward_model, render, reward_rows, score_encoded

TOL = 1e-4


def rec(i: int, prompt: str, reply: str, system: str | None = None) -> dict:
    msgs = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": prompt}, {"role": "assistant", "content": reply}]
    return {"id": f"r:{i}", "source": "t", "label": None, "meta": {"lang": "en"}, "messages": msgs}


WORDS = "the cat sat on a mat while seven blue birds sang over the quiet river near old stone houses".split()


def records() -> list[dict]:
    """Rows of many lengths (so batches hold rows of unequal length) and rows ending in special
    tokens that are also used for padding."""
    out = []
    for i in range(16):
        n = 3 + (i * 7) % 23
        out.append(rec(i, f"question {i}: " + " ".join(WORDS[: 1 + i % 5]),
                       " ".join(WORDS[(i + k) % len(WORDS)] for k in range(n)),
                       system="be kind" if i % 3 == 0 else None))
    out.append(rec(16, "end with pad", "this reply ends with the pad token <|pad|>"))
    out.append(rec(17, "end with eos", "this reply ends with the eos token <|endoftext|>"))
    out.append(rec(18, "中文问题", "这是一个中文回答，长度适中。"))
    return out


def save_rm(d, tokenizer, pad_in_config=True, chat_template=True, padding_side="right", num_labels=1):
    """The same tiny reward model (seeded) saved with the given config/tokenizer variations."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                      num_labels=num_labels, pad_token_id=tokenizer.pad_token_id if pad_in_config else None,
                      eos_token_id=tokenizer.eos_token_id, bos_token_id=None)
    model = LlamaForSequenceClassification(cfg)
    with torch.no_grad():                       # spread the scores well beyond the tolerance
        model.score.weight.normal_(0.0, 1.0)
    model.save_pretrained(d, safe_serialization=True)
    tok = copy.deepcopy(tokenizer)
    tok.padding_side = padding_side
    if not chat_template:
        tok.chat_template = None
    tok.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory, tiny_tokenizer):
    return save_rm(tmp_path_factory.mktemp("rm"), tiny_tokenizer)


def params(path, **kw) -> RewardModelParams:
    return RewardModelParams(model=str(path), **{"batch_size": 8, "max_length": 256, **kw})


def one_at_a_time(path, recs, p) -> list[float]:
    """Reference: the model's own forward pass on each row alone (no padding, batch of one)."""
    import torch

    model, tok = load_reward_model(p)
    with torch.inference_mode():
        return [model(input_ids=torch.tensor([encode_for_reward(tok, r, p)])).logits[0, 0].item() for r in recs]


class Spy:
    """Wraps a model's forward to record each batch's shape and padding."""

    def __init__(self, model):
        self.model, self.calls = model, []
        self.orig = model.forward

        def forward(*a, **kw):
            att = kw["attention_mask"]
            self.calls.append((tuple(att.shape), int(att.sum()), int(att.numel())))
            return self.orig(*a, **kw)

        model.forward = forward


@pytest.mark.parametrize("variant", ["pad_in_config", "no_pad_in_config", "left_padding_tokenizer"])
def test_batched_scores_equal_one_row_at_a_time(tmp_path, tiny_tokenizer, variant, monkeypatch):
    d = save_rm(tmp_path, tiny_tokenizer, pad_in_config=variant != "no_pad_in_config",
                padding_side="left" if variant == "left_padding_tokenizer" else "right")
    recs = records()
    p = params(d)
    ref = one_at_a_time(d, recs, p)

    spies = []
    real_load = reward.load_reward_model

    def spying_load(pp):
        model, tok = real_load(pp)
        spies.append(Spy(model))
        return model, tok

    monkeypatch.setattr(reward, "load_reward_model", spying_load)
    got = reward_rows(recs, p)
    assert got == pytest.approx(ref, abs=TOL)
    assert max(ref) - min(ref) > 1000 * TOL                 # the scores really differ between rows
    calls = spies[0].calls
    assert sum(shape[0] for shape, _, _ in calls) == len(recs) and len(calls) < len(recs)
    assert any(shape[0] > 1 and real < total for shape, real, total in calls)   # batches held padding


def test_a_row_ending_in_the_pad_token_is_pooled_as_the_model_pools_it_alone(tmp_path, tiny_tokenizer):
    """Without a pad id in the config, HF reads the last token of a lone row; batching must pad with
    an id that ends no row, or the row ending in '<|pad|>' would be pooled one token early."""
    d = save_rm(tmp_path, tiny_tokenizer, pad_in_config=False)
    p = params(d, template="plain")
    recs = [rec(0, "q", "ends with <|pad|>"), rec(1, "q", "ends with a word"), rec(2, "q", "ends with <|pad|>")]
    model, tok = load_reward_model(p)
    assert all(encode_for_reward(tok, r, p)[-1] == tok.pad_token_id for r in recs[::2])
    ref = one_at_a_time(d, recs, p)
    assert reward_rows(recs, p) == pytest.approx(ref, abs=TOL)
    assert model.config.pad_token_id is None                # the temporary pad id is not left behind
    encoded = [encode_for_reward(tok, r, p) for r in recs]
    score_encoded(model, encoded, 8, tok.pad_token_id)
    assert model.config.pad_token_id is None


def test_scores_are_deterministic_and_in_input_order(rm_dir):
    recs = records()
    p = params(rm_dir, batch_size=5)
    first = reward_rows(recs, p)
    assert reward_rows(recs, p) == first
    shuffled = recs[::-1]
    assert reward_rows(shuffled, p) == pytest.approx(first[::-1], abs=TOL)
    assert all(isinstance(s, float) for s in first)


def test_progress_counts_every_row(rm_dir):
    class P:
        n = 0

        def update(self, k):
            P.n += k

    reward_rows(records(), params(rm_dir, batch_size=4), progress=P())
    assert P.n == len(records())


# ---------------------------------------------------------------------------------------------- templates

def test_auto_template_uses_the_chat_template(rm_dir):
    p = params(rm_dir)
    _, tok = load_reward_model(p)
    r = rec(0, "What is 2 + 3?", "5", system="be brief")
    text, special = render(tok, r, "auto")
    assert text == tok.apply_chat_template(r["messages"], tokenize=False) and not special
    assert "<|im_start|>assistant\n5<|im_end|>" in text
    assert encode_for_reward(tok, r, p) == tok(text, add_special_tokens=False)["input_ids"]
    assert render(tok, r, "plain") == ("be brief\nWhat is 2 + 3?\n5", True)
    plain = params(rm_dir, template="plain")
    assert encode_for_reward(tok, r, plain) == tok("be brief\nWhat is 2 + 3?\n5")["input_ids"]
    recs = records()[:6]
    assert reward_rows(recs, p) != pytest.approx(reward_rows(recs, plain), abs=TOL)


def test_auto_template_falls_back_to_plain_without_a_chat_template(tmp_path, tiny_tokenizer, rm_dir):
    d = save_rm(tmp_path, tiny_tokenizer, chat_template=False)
    recs = records()[:8]
    _, tok = load_reward_model(params(d))
    assert not tok.chat_template
    assert render(tok, recs[1], "auto") == ("question 1: the cat\n" + recs[1]["messages"][-1]["content"], True)
    assert reward_rows(recs, params(d)) == pytest.approx(reward_rows(recs, params(rm_dir, template="plain")),
                                                         abs=TOL)


def test_tool_rows_render_through_the_template(rm_dir):
    p = params(rm_dir)
    _, tok = load_reward_model(p)
    r = {"id": "tool", "source": "t", "meta": {}, "tools": [{"name": "add", "parameters": {"type": "object"}}],
         "messages": [{"role": "user", "content": "add 2 and 3"},
                      {"role": "assistant", "content": "", "tool_calls": [{"name": "add", "arguments": {"a": 2}}]},
                      {"role": "tool", "content": "5", "name": "add"},
                      {"role": "assistant", "content": "It is 5."}]}
    assert render(tok, r, "auto")[0].rstrip().endswith("It is 5.<|im_end|>")
    assert isinstance(reward_rows([r], p)[0], float)


def test_long_rows_keep_their_end(rm_dir):
    p = params(rm_dir, max_length=16, template="plain")
    _, tok = load_reward_model(p)
    r = rec(0, " ".join(WORDS * 3), "the final words of the reply")
    full = tok(render(tok, r, "plain")[0])["input_ids"]
    assert len(full) > 16
    assert encode_for_reward(tok, r, p) == full[-16:]
    assert isinstance(reward_rows([r], p)[0], float)


def test_truncation_keeps_a_leading_bos():
    class Tok:
        chat_template = None
        bos_token_id = 1

        def __call__(self, text, add_special_tokens=True):
            return {"input_ids": ([1] if add_special_tokens else []) + [ord(c) for c in text]}

    p = RewardModelParams(model="x", max_length=8, template="plain")
    ids = encode_for_reward(Tok(), rec(0, "abcdef", "ghijklmnop"), p)
    assert ids == [1] + [ord(c) for c in "jklmnop"]


# ---------------------------------------------------------------------------------------------- loading

def test_missing_model_path_is_one_line_user_error(tmp_path):
    with pytest.raises(UserError) as e:
        reward_rows(records()[:2], params(tmp_path / "nope" / "rm"))
    assert str(e.value) == f"reward model {tmp_path / 'nope' / 'rm'}: no such directory"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match=r"^cannot load tokenizer from .*empty \(local directory\)") as e:
        reward_rows(records()[:2], params(empty))
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="reward_model.model is not set"):
        reward_rows(records()[:2], RewardModelParams())


def test_a_classifier_with_several_outputs_is_refused(tmp_path, tiny_tokenizer):
    d = save_rm(tmp_path, tiny_tokenizer, num_labels=2)
    with pytest.raises(UserError, match=r"has 2 outputs per row; a reward model has exactly 1"):
        reward_rows(records()[:2], params(d))


def test_weights_without_safetensors_are_not_loaded(tmp_path, tiny_tokenizer):
    d = save_rm(tmp_path, tiny_tokenizer)
    (d / "model.safetensors").unlink()
    with pytest.raises(UserError, match=r"^cannot load reward model from .* \(local directory\): ") as e:
        reward_rows(records()[:2], params(d))
    assert "\n" not in str(e.value)


def test_loading_passes_the_safe_flags(rm_dir, monkeypatch):
    import transformers

    seen = {}
    real = transformers.AutoModelForSequenceClassification.from_pretrained

    def spy(path, **kw):
        seen.update(kw)
        return real(path, **{k: v for k, v in kw.items() if k not in ("revision", "token")})

    monkeypatch.setattr(transformers.AutoModelForSequenceClassification, "from_pretrained", spy)
    monkeypatch.setenv("HF_TOKEN", "hf_from_env")
    load_reward_model(params(rm_dir, revision="abc123", trust_remote_code=False))
    assert seen["use_safetensors"] is True and seen["trust_remote_code"] is False
    assert seen["revision"] == "abc123" and seen["token"] == "hf_from_env"
    seen.clear()
    load_reward_model(params(rm_dir, trust_remote_code=True))
    assert seen["trust_remote_code"] is True
