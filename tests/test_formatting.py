"""Loss masks, checked token by token, for every named template, multi-turn and Chinese."""

import pytest

from sftpipe.model.formatting import IGNORE, encode, encode_prompt, pad_batch, segments
from sftpipe.model.templates import apply_template, stop_token_ids

SINGLE_EN = [{"role": "user", "content": "What is the capital of France?"},
             {"role": "assistant", "content": "The capital of France is Paris."}]
MULTI_ZH = [{"role": "system", "content": "你是一个乐于助人的助手。"},
            {"role": "user", "content": "法国的首都是哪里？"},
            {"role": "assistant", "content": "法国的首都是巴黎。"},
            {"role": "user", "content": "那德国呢？"},
            {"role": "assistant", "content": "德国的首都是柏林。"}]


def trained_spans(labels):
    """Maximal runs of positions that carry loss, as (start, end)."""
    spans, start = [], None
    for i, lab in enumerate(labels + [IGNORE]):
        if lab != IGNORE and start is None:
            start = i
        if lab == IGNORE and start is not None:
            spans.append((start, i))
            start = None
    return spans


@pytest.mark.parametrize("messages", [SINGLE_EN, MULTI_ZH], ids=["single_en", "multi_zh"])
def test_response_mask_token_by_token(tok, messages):
    enc = encode(tok, messages, "response")
    replies = [m["content"] for m in messages if m["role"] == "assistant"]
    stops = set(stop_token_ids(tok))
    spans = trained_spans(enc.labels)
    assert len(spans) == len(replies), "one trained span per assistant reply"
    for (a, b), reply in zip(spans, replies):
        # every trained position holds exactly its input token
        assert enc.labels[a:b] == enc.input_ids[a:b]
        # the span is the reply followed by exactly one stop token (EOS / end of turn), which is trained
        assert enc.input_ids[b - 1] in stops
        # (vicuna's prompt ends in "ASSISTANT:", so its reply carries the separating space)
        assert tok.decode(enc.input_ids[a:b - 1]).removeprefix(" ") == reply
    # nothing outside the spans is trained: prompts, system, role markers
    inside = {i for a, b in spans for i in range(a, b)}
    assert all(enc.labels[i] == IGNORE for i in range(len(enc.labels)) if i not in inside)


def test_last_turn_trains_only_the_final_reply(tok):
    enc = encode(tok, MULTI_ZH, "last_turn")
    spans = trained_spans(enc.labels)
    assert len(spans) == 1
    a, b = spans[0]
    assert tok.decode(enc.input_ids[a:b - 1]).removeprefix(" ") == "德国的首都是柏林。"
    assert a == enc.prompt_len


def test_all_tokens_mode_trains_everything(tok):
    enc = encode(tok, MULTI_ZH, "all")
    assert enc.labels == enc.input_ids


def test_generation_prompt_is_the_trained_prefix(tok):
    enc = encode(tok, MULTI_ZH, "response")
    prompt = encode_prompt(tok, MULTI_ZH)
    assert enc.input_ids[: len(prompt)] == prompt
    rendered = tok.apply_chat_template(MULTI_ZH[:-1], tokenize=False, add_generation_prompt=True)
    assert tok.decode(prompt) == rendered


def test_eos_appended_when_template_has_no_stop(tiny_tokenizer):
    import copy

    t = copy.deepcopy(tiny_tokenizer)
    t.chat_template = ("{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
                       "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}")
    enc = encode(t, SINGLE_EN, "response")
    (a, b), = trained_spans(enc.labels)
    assert enc.input_ids[b - 1] == t.eos_token_id and enc.labels[b - 1] == t.eos_token_id


def test_truncation_flags_and_cuts(tok):
    enc = encode(tok, MULTI_ZH, "response", max_length=10)
    assert enc.truncated and len(enc.input_ids) == 10 == len(enc.labels)


def test_pad_equal_to_eos_does_not_mask_eos(tiny_tokenizer):
    import copy

    t = copy.deepcopy(tiny_tokenizer)
    apply_template(t, "alpaca")
    t.pad_token = t.eos_token
    enc = encode(t, SINGLE_EN, "response")
    (a, b), = trained_spans(enc.labels)
    assert enc.labels[b - 1] == t.eos_token_id


def test_an_empty_reply_trains_only_its_end_of_turn_marker(tiny_tokenizer):
    import copy

    t = copy.deepcopy(tiny_tokenizer)
    apply_template(t, "chatml")
    enc = encode(t, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}], "response")
    end = t.convert_tokens_to_ids("<|im_end|>")
    (a, b), = trained_spans(enc.labels)
    assert enc.labels[a:b] == [end] and enc.input_ids[b:] == t("\n", add_special_tokens=False)["input_ids"]


def test_a_template_that_rewrites_earlier_turns_is_refused(tiny_tokenizer):
    import copy

    from sftpipe.errors import UserError

    t = copy.deepcopy(tiny_tokenizer)
    # marks whichever message is last, so rendering more turns changes the text of earlier ones
    t.chat_template = ("{% for m in messages %}{% if loop.last %}LAST {% endif %}{{ m['role'] }}: {{ m['content'] }}\n"
                       "{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}")
    with pytest.raises(UserError) as err:
        encode(t, SINGLE_EN, "response")
    assert str(err.value) == ("chat template is not prefix-stable (rendering a conversation changes earlier turns), "
                              "so response-only masks cannot be built; set model.template to a named template "
                              "(chatml, alpaca, vicuna, zh)")


def test_segments_get_no_special_tokens_from_the_tokenizer(tiny_tokenizer):
    """A tokenizer that adds BOS to every call (LLaMA-style) must not put one before each segment."""
    import copy

    from tokenizers.processors import TemplateProcessing

    plain = copy.deepcopy(tiny_tokenizer)
    apply_template(plain, "chatml")
    bos = copy.deepcopy(plain)
    bos.backend_tokenizer.post_processor = TemplateProcessing(
        single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", plain.convert_tokens_to_ids("<|endoftext|>"))])
    assert bos("hi")["input_ids"][0] == plain.convert_tokens_to_ids("<|endoftext|>")
    for messages in (SINGLE_EN, MULTI_ZH):
        assert encode(bos, messages, "response") == encode(plain, messages, "response")


def test_turns_after_the_last_reply_are_never_trained_under_response(tiny_tokenizer):
    import copy

    t = copy.deepcopy(tiny_tokenizer)
    apply_template(t, "chatml")
    enc = encode(t, SINGLE_EN + [{"role": "user", "content": "Thanks!"}], "response")
    reply = encode(t, SINGLE_EN, "response")
    assert len(enc.input_ids) > len(reply.input_ids) and enc.labels[len(reply.labels):] == \
        [IGNORE] * (len(enc.labels) - len(reply.labels))
    assert enc.labels[:len(reply.labels)] == reply.labels and enc.prompt_len == reply.prompt_len
    # no reply at all: nothing trained, and no prompt before a reply
    alone = encode(t, SINGLE_EN[:1], "response")
    assert alone.input_ids and set(alone.labels) == {IGNORE} and alone.prompt_len == 0


def test_segments_cut_each_reply_after_its_end_of_turn_marker(tiny_tokenizer):
    """The reply keeps its end-of-turn marker; the newline after it and later turns are prompt text. A
    conversation that ends with a reply ends with that reply's tail: no empty trailing segment."""
    import copy

    t = copy.deepcopy(tiny_tokenizer)
    apply_template(t, "chatml")
    prompt = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    reply = "The capital of France is Paris.<|im_end|>"
    assert segments(t, SINGLE_EN) == [(prompt, False), (reply, True), ("\n", False)]
    assert segments(t, SINGLE_EN + [{"role": "user", "content": "Thanks!"}]) == \
        [(prompt, False), (reply, True), ("\n", False), ("<|im_start|>user\nThanks!<|im_end|>\n", False)]


@pytest.mark.parametrize("left", [False, True], ids=["right", "left"])
def test_pad_batch_pads_ids_mask_and_labels_as_long_tensors(left):
    import torch

    ids, att, lab = pad_batch([[1, 2, 3], [4]], 5, [[IGNORE, 2, 3], [4]], left=left)
    short = ([5, 5, 4], [0, 0, 1], [IGNORE, IGNORE, 4]) if left else ([4, 5, 5], [1, 0, 0], [4, IGNORE, IGNORE])
    assert ids.tolist() == [[1, 2, 3], short[0]]
    assert att.tolist() == [[1, 1, 1], short[1]]
    assert lab.tolist() == [[IGNORE, 2, 3], short[2]]
    assert ids.dtype == att.dtype == lab.dtype == torch.long
    ids2, att2, none = pad_batch([[1, 2, 3], [4]], 5, left=left)
    assert none is None and torch.equal(ids2, ids) and torch.equal(att2, att)



def word_level(words: list[str]):
    """A word-level tokenizer with an unknown token: unknown markers map to its id, not to None."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="[UNK]")


def test_stop_ids_are_the_end_of_turn_markers_present_and_never_the_unknown_token(tiny_tokenizer):
    words = ["[UNK]", "</s>", "hi"]
    assert stop_token_ids(word_level(words)) == [1]                       # [UNK] is not a stop
    assert stop_token_ids(word_level(words + ["<|eot_id|>"])) == [1, 3]
    assert stop_token_ids(tiny_tokenizer) == sorted({tiny_tokenizer.eos_token_id,      # byte-level BPE, no unk
                                                     tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")})


def test_encoding_a_row_never_builds_the_whole_vocabulary(tiny_tokenizer, monkeypatch):
    """get_vocab() copies the whole vocabulary into a dict: 70 ms per call at Qwen2's 151,936 tokens.
    Called per row, it made tokenizing 640 rows take 45 s on the H200 machine (the train bench)."""
    import copy

    t = copy.deepcopy(tiny_tokenizer)
    apply_template(t, "chatml")
    monkeypatch.setattr(type(t), "get_vocab", lambda self: pytest.fail("get_vocab() called per row"))
    enc = encode(t, MULTI_ZH, "response")
    (_, b), *_ = reversed(trained_spans(enc.labels))
    assert enc.labels[b - 1] == t.convert_tokens_to_ids("<|im_end|>")
