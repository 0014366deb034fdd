"""Tool use and reasoning: loaders, validation, templates and loss masks, token by token."""

import copy
import json

import pytest

from sftpipe.collect.formats import to_record
from sftpipe.collect.readers import RawRow
from sftpipe.errors import RowError
from sftpipe.model.formatting import IGNORE, encode, segments
from sftpipe.model.templates import apply_template, parse_reply, stop_token_ids
from sftpipe.schema import full_text, prompt_text, response_text
from test_formatting import trained_spans

ADD = {"name": "add", "description": "Add two integers",
       "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                      "required": ["a", "b"]}}
WEATHER = {"name": "get_weather", "description": "天气",
           "parameters": {"type": "object",
                          "properties": {"city": {"type": "string"},
                                         "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                          "required": ["city"]}}


def openai_row(**over):
    row = {"messages": [
        {"role": "system", "content": "Use the tools."},
        {"role": "user", "content": "What is 48213 + 99127?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"a": 48213, "b": 99127}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "{\"sum\": 147340}"},
        {"role": "assistant", "content": "48213 + 99127 = 147340.", "reasoning_content": "The tool added them."}],
        "tools": [{"type": "function", "function": ADD}, {"type": "function", "function": WEATHER}]}
    row.update(over)
    return row


def sharegpt_row():
    """LLaMA-Factory's convention: function_call / observation turns, tools as a JSON string."""
    return {"conversations": [
        {"from": "human", "value": "北京和上海的天气怎么样？"},
        {"from": "function_call", "value": json.dumps(
            [{"name": "get_weather", "arguments": {"city": "北京"}},
             {"name": "get_weather", "arguments": {"city": "上海", "unit": "celsius"}}], ensure_ascii=False)},
        {"from": "observation", "value": '{"temp": 3}'},
        {"from": "observation", "value": '{"temp": 9}'},
        {"from": "gpt", "value": "<think>两个城市分别查询。</think>北京3度，上海9度。"}],
        "tools": json.dumps([WEATHER, ADD], ensure_ascii=False)}


def load(data, source="s"):
    return to_record(RawRow(data, "f.jsonl", 1, 1), source)


def reason_of(data):
    with pytest.raises(RowError) as e:
        load(data)
    return e.value.reason, e.value.field


# --- loaders -------------------------------------------------------------------------------------

def test_openai_tool_row_to_canonical():
    rec = load(openai_row())
    assert rec["tools"] == [ADD, WEATHER]                       # the OpenAI wrapper is taken off
    call = rec["messages"][2]
    assert call == {"role": "assistant", "content": "", "tool_calls": [
        {"name": "add", "arguments": {"a": 48213, "b": 99127}, "id": "c1"}]}   # arguments parsed
    assert rec["messages"][3] == {"role": "tool", "content": "{\"sum\": 147340}", "tool_call_id": "c1"}
    assert rec["messages"][4]["reasoning_content"] == "The tool added them."


def test_sharegpt_tool_row_parallel_calls_and_think():
    rec = load(sharegpt_row())
    assert [m["role"] for m in rec["messages"]] == ["user", "assistant", "tool", "tool", "assistant"]
    assert [c["arguments"] for c in rec["messages"][1]["tool_calls"]] == [{"city": "北京"},
                                                                         {"city": "上海", "unit": "celsius"}]
    # results linked to their calls by name, in order
    assert [m.get("name") for m in rec["messages"][2:4]] == ["get_weather", "get_weather"]
    final = rec["messages"][4]
    assert final["reasoning_content"] == "两个城市分别查询。" and final["content"] == "北京3度，上海9度。"
    assert rec["meta"]["lang"] == "zh"


def test_sharegpt_text_then_call_is_one_assistant_turn():
    row = {"conversations": [{"from": "human", "value": "Add 2 and 3"},
                             {"from": "gpt", "value": "Let me add them."},
                             {"from": "function_call", "value": '{"name": "add", "arguments": {"a": 2, "b": 3}}'},
                             {"from": "observation", "value": "5"}, {"from": "gpt", "value": "5"}],
           "tools": [ADD]}
    msgs = load(row)["messages"]
    assert msgs[1]["content"] == "Let me add them." and msgs[1]["tool_calls"][0]["name"] == "add"


def test_legacy_openai_function_call_and_functions():
    row = {"messages": [{"role": "user", "content": "2+3?"},
                        {"role": "assistant", "content": None,
                         "function_call": {"name": "add", "arguments": '{"a": 2, "b": 3}'}},
                        {"role": "function", "name": "add", "content": {"result": 5}},
                        {"role": "assistant", "content": "5"}], "functions": [ADD]}
    rec = load(row)
    assert rec["messages"][1]["tool_calls"] == [{"name": "add", "arguments": {"a": 2, "b": 3}}]
    assert rec["messages"][2] == {"role": "tool", "content": '{"result": 5}', "name": "add"}


def test_plain_rows_keep_their_exact_shape():
    rec = load({"instruction": "hi", "output": "yo"})
    assert "tools" not in rec and rec["messages"] == [{"role": "user", "content": "hi"},
                                                      {"role": "assistant", "content": "yo"}]


@pytest.mark.parametrize("mutate, reason, field", [
    (lambda r: r["messages"][2]["tool_calls"][0]["function"].update(arguments='{"a": 1,'),
     "bad_arguments", "messages[2].tool_calls[0].function.arguments"),
    (lambda r: r["messages"][2]["tool_calls"][0]["function"].update(arguments="[1, 2]"),
     "bad_arguments", "messages[2].tool_calls[0].function.arguments"),
    (lambda r: r["messages"][2]["tool_calls"][0]["function"].update(name="multiply"),
     "undeclared_tool", "messages[2].tool_calls[0].name"),
    (lambda r: r["messages"][2]["tool_calls"][0]["function"].update(arguments='{"a": 1}'),
     "missing_argument", "messages[2].tool_calls[0].arguments"),
    (lambda r: r["messages"].pop(2), "orphan_tool_result", "messages[2]"),
    (lambda r: r["messages"][3].update(tool_call_id="c9"), "orphan_tool_result", "messages[3]"),
    (lambda r: r["messages"].pop(3), "bad_turn_order", "messages"),       # a call never answered
    (lambda r: r.update(tools=[{"description": "no name"}]), "bad_tools", "tools[0]"),
    (lambda r: r.update(tools="[{"), "bad_tools", "tools"),
])
def test_tool_row_problems_are_quarantined_with_a_reason(mutate, reason, field):
    row = openai_row()
    mutate(row)
    assert reason_of(row) == (reason, field)


def test_sharegpt_call_problems_name_the_turn():
    row = sharegpt_row()
    row["conversations"][1]["value"] = "get_weather(北京)"
    assert reason_of(row) == ("bad_tool_call", "conversations[1].value")
    row = sharegpt_row()
    row["conversations"].insert(1, {"from": "observation", "value": "x"})
    assert reason_of(row)[0] == "orphan_tool_result"


def test_pretraining_text_row_is_refused_with_why():
    with pytest.raises(RowError, match="SFT needs") as e:
        load({"text": "Once upon a time."})
    assert e.value.reason == "pretraining_text"


def test_filters_read_calls_and_reasoning_as_text():
    rec = load(openai_row())
    resp = response_text(rec)
    assert 'add {"a": 48213, "b": 99127}' in resp and "The tool added them." in resp
    assert "147340" in prompt_text(rec)                           # the tool result is input
    assert "get_weather" not in full_text(rec)                   # schemas are not row text


# --- templates and masks -------------------------------------------------------------------------

def _check_mask(tok, rec, reasoning="train"):
    enc = encode(tok, rec["messages"], "response", tools=rec.get("tools"), reasoning=reasoning)
    stops = set(stop_token_ids(tok))
    got = trained_spans(enc.labels)
    replies = [m for m in rec["messages"] if m["role"] == "assistant"]
    assert len(got) == len(replies)
    trained_text = []
    for (a, b), m in zip(got, replies):
        assert enc.labels[a:b] == enc.input_ids[a:b] and enc.input_ids[b - 1] in stops
        text = tok.decode(enc.input_ids[a:b - 1])
        trained_text.append(text)
        for c in m.get("tool_calls", ()):
            assert parse_reply(text)["calls"][0]["name"] == c["name"]
        assert m["content"] in text
        if m.get("reasoning_content"):
            assert (m["reasoning_content"] in text) == (reasoning == "train")
    untrained = tok.decode([t for t, lab in zip(enc.input_ids, enc.labels) if lab == IGNORE])
    for m in rec["messages"]:
        if m["role"] == "tool":                                    # tool outputs: never trained
            assert m["content"] in untrained and not any(m["content"] in t for t in trained_text)
    for t in rec["tools"]:                                         # the schemas: input only
        assert t["name"] in untrained and not any(f"{t['name']}(" in x for x in trained_text)
    return enc, trained_text


@pytest.mark.parametrize("row", [openai_row, sharegpt_row], ids=["en_single_call", "zh_parallel_calls"])
def test_tool_masks_token_by_token(tok, row):
    rec = load(row())
    _, trained = _check_mask(tok, rec)
    calls = [parse_reply(t)["calls"] for t in trained]
    expected = [[{"name": c["name"], "arguments": c["arguments"]} for c in m.get("tool_calls", ())]
                for m in rec["messages"] if m["role"] == "assistant"]
    assert calls == expected                                       # the calls read back exactly


def test_reasoning_masked_or_dropped(tok):
    rec = load(sharegpt_row())
    enc_train, _ = _check_mask(tok, rec, "train")
    enc_mask, _ = _check_mask(tok, rec, "mask")
    enc_drop, _ = _check_mask(tok, rec, "drop")
    assert enc_mask.input_ids == enc_train.input_ids                # same input, less loss
    assert sum(x != IGNORE for x in enc_mask.labels) < sum(x != IGNORE for x in enc_train.labels)
    assert len(enc_drop.input_ids) < len(enc_train.input_ids)
    assert "两个城市" not in tok.decode(enc_drop.input_ids)


def test_multi_turn_tool_conversation(tok):
    rec = load(openai_row())
    rec["messages"] += [{"role": "user", "content": "And 1 + 2?"},
                        {"role": "assistant", "content": "", "tool_calls": [{"name": "add", "arguments": {"a": 1, "b": 2}}]},
                        {"role": "tool", "content": "{\"sum\": 3}", "name": "add"},
                        {"role": "assistant", "content": "3."}]
    _check_mask(tok, rec)


def test_chatml_renders_with_generation_markers(tiny_tokenizer):
    t = copy.deepcopy(tiny_tokenizer)
    apply_template(t, "chatml")
    rec = load(openai_row())
    from sftpipe.model.formatting import chat_messages, chat_tools
    out = t.apply_chat_template(chat_messages(rec["messages"]), tools=chat_tools(rec["tools"]), tokenize=True,
                                return_dict=True, return_assistant_tokens_mask=True)
    mask = out["assistant_masks"]
    ids = out["input_ids"]
    assistant = t.decode([i for i, m in zip(ids, mask) if m])
    assert '<tool_call>{"name": "add", "arguments": {"a": 48213, "b": 99127}}</tool_call>' in assistant
    assert "147340<" not in assistant.replace("= 147340.", "")       # the tool output is not assistant text


def test_built_in_tokenizer_has_one_token_per_markup_tag_and_decoding_keeps_it(tiny_tokenizer):
    from sftpipe.model.templates import MARKUP_TOKENS
    text = '<think>\nx\n</think>\n<tools>\nadd\n</tools>\n<tool_call>{"name": "add"}</tool_call>'
    ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    pieces = [tiny_tokenizer.decode([i]) for i in ids]
    for tag in MARKUP_TOKENS:
        assert pieces.count(tag) == 1, tag             # one token, not byte-level pieces
    assert tiny_tokenizer.decode(ids, skip_special_tokens=True) == text   # generation decodes like this
    assert parse_reply(tiny_tokenizer.decode(ids, skip_special_tokens=True))["names"] == ["add"]


def test_template_that_drops_tools_is_refused(tiny_tokenizer):
    t = copy.deepcopy(tiny_tokenizer)
    t.chat_template = ("{% for m in messages %}{{ m['role'] + ': ' + (m['content'] or '') + '\n' }}{% endfor %}"
                       "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}")
    rec = load(openai_row())
    with pytest.raises(Exception, match="tool calls"):
        segments(t, rec["messages"], rec["tools"])


def test_parse_reply_reads_calls_bad_json_and_think():
    r = parse_reply('<think>\nstep\n</think>\n<tool_call>{"name": "add", "arguments": {"a": 1, "b": 2}}</tool_call>'
                    '<tool_call>{"name": add}</tool_call>')
    assert r["reasoning"] == "step" and r["calls"] == [{"name": "add", "arguments": {"a": 1, "b": 2}}]
    assert r["bad_calls"] == 1 and r["content"] == "" and r["names"] == ["add", None]
    r = parse_reply('<tool_call>{"name": "get_weather", "arguments": {"city": "arguments": {"ci')
    assert r["calls"] == [] and r["bad_calls"] == 1 and r["names"] == ["get_weather"]   # cut short, name readable
    assert parse_reply("Paris.") == {"content": "Paris.", "reasoning": "", "calls": [], "bad_calls": 0, "names": []}


# --- evaluation ----------------------------------------------------------------------------------

def test_tool_metrics_score_decision_names_arguments_and_json():
    from sftpipe.model.evaluation import call_step, tool_metrics

    call = load(openai_row())                                      # reference: add(48213, 99127)
    direct = load({"messages": [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "hi"}],
                   "tools": [ADD]})                                 # reference: no call
    rows = [call, call, call, call, direct, direct]
    preds = ['<tool_call>{"name": "add", "arguments": {"b": 99127, "a": 48213}}</tool_call>',   # exact
             '<tool_call>{"name": "add", "arguments": {"a": 48213, "b": 9}}</tool_call>',       # one arg wrong
             '<tool_call>{"name": "get_weather", "arguments": {"city": "x"}}</tool_call>',      # wrong function
             "147340",                                                                         # no call
             "hi",                                                                             # right: no call
             '<tool_call>{"name": add</tool_call>',                                            # bad JSON call
             '<tool_call>{"name": "add", "arguments": {"a": 48213, "b": "99']                    # cut short
    rows.insert(6, call)
    m = tool_metrics(rows, preds)
    assert m["tool_rows"] == 7
    assert m["tool_call_accuracy"] == round(4 / 7, 4)             # rows 1, 2, 5 and 7 (its name is readable)
    assert m["tool_decision_accuracy"] == round(5 / 7, 4)         # rows 1, 2, 3, 5 and 7
    assert m["tool_args_exact_match"] == 0.2                       # row 1 of the 5 that should call
    assert m["tool_args_f1"] == round((1 + 0.5 + 0 + 0 + 0) / 5, 4)
    assert m["tool_valid_json_rate"] == 0.6                        # 3 of 5 blocks parse
    assert call_step(call)["messages"][-1]["tool_calls"][0]["name"] == "add"
    assert call_step(direct)["messages"] == direct["messages"]


def test_answers_are_compared_without_reasoning():
    from sftpipe.model.evaluation import answer, reference

    assert answer("<think>\n8 + 5 = 13\n</think>\n13") == "13"
    assert reference(load(openai_row())) == "48213 + 99127 = 147340."


def test_a_hub_style_template_gets_tools_and_calls_in_its_own_format(tiny_tokenizer):
    """A template written against transformers' conventions (tools as JSON schemas in the OpenAI
    wrapper, calls as ``tool_call.function``), as a hub model's own template would be."""
    t = copy.deepcopy(tiny_tokenizer)
    apply_template(t, "chatml")                                     # adds the ChatML tokens
    t.chat_template = (
        "{% if tools %}{{ '<|im_start|>system\\n' }}{% for x in tools %}{{ x | tojson }}{{ '\\n' }}{% endfor %}"
        "{{ '<|im_end|>\\n' }}{% endif %}"
        "{% for m in messages %}{{ '<|im_start|>' + m.role + '\\n' }}"
        "{% if m.content %}{{ m.content }}{% endif %}"
        "{% if m.tool_calls %}{% for c in m.tool_calls %}{{ 'CALL ' + c.function.name + ' ' }}"
        "{{ c.function.arguments | tojson }}{% endfor %}{% endif %}{{ '<|im_end|>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
    rec = load(openai_row())
    enc = encode(t, rec["messages"], "response", tools=rec["tools"])
    text = t.decode(enc.input_ids)
    assert '"type": "function"' in text and '"name": "add"' in text      # the wrapper the template expects
    trained = t.decode([i for i, lab in zip(enc.input_ids, enc.labels) if lab != IGNORE])
    assert 'CALL add {"a": 48213, "b": 99127}' in trained and "147340}" not in trained


def test_trl_assistant_only_loss_accepts_the_built_in_template(tiny_tokenizer, tiny_model_dir):
    """TRL refuses a template without generation markers under assistant_only_loss."""
    pytest.importorskip("trl")                                  # a bench extra; CI skips this
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    t = copy.deepcopy(tiny_tokenizer)
    apply_template(t, "chatml")
    rows = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello there"}]}] * 2
    cfg = SFTConfig(output_dir=str(tiny_model_dir) + "-trl", assistant_only_loss=True, max_steps=1, report_to=[],
                    use_cpu=True, bf16=False)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.resize_token_embeddings(len(t))
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=Dataset.from_list(rows), processing_class=t)
    row = trainer.train_dataset[0]
    assert t.decode([i for i, lab in zip(row["input_ids"], row["labels"]) if lab != -100]) == "hello there<|im_end|>"
