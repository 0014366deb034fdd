"""Format conversion into the canonical schema, and row-level vs fatal errors."""

import json

import pytest

from sftpipe.config import CollectParams, Source
from sftpipe.collect.sources import collect
from sftpipe.errors import RowError, UserError
from sftpipe.collect.formats import to_record
from sftpipe.collect.readers import RawRow, read_source


def rec(data, fmt="auto", label_field=None):
    return to_record(RawRow(data, "x.jsonl", 1, 1), "src", fmt, label_field)


def test_alpaca_with_input_system_and_history():
    r = rec({"instruction": "Add", "input": "1 2", "output": "3", "system": "Be terse.",
             "history": [["hi", "hello"]], "category": "math", "difficulty": 2})
    assert r["messages"] == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "Add\n\n1 2"}, {"role": "assistant", "content": "3"}]
    assert r["label"] == "math" and r["source"] == "src" and r["id"] == "src:#1"
    assert r["meta"]["format"] == "alpaca" and r["meta"]["difficulty"] == 2 and r["meta"]["lang"] == "en"


def test_sharegpt_roles_mapped_and_chinese_detected():
    r = rec({"id": 7, "conversations": [{"from": "system", "value": "你是助手"}, {"from": "human", "value": "你好"},
                                        {"from": "gpt", "value": "你好！有什么可以帮你？"}]})
    assert [m["role"] for m in r["messages"]] == ["system", "user", "assistant"]
    assert r["id"] == "src:7" and r["meta"]["lang"] == "zh" and r["meta"]["format"] == "sharegpt"


def test_openai_messages_with_text_parts():
    r = rec({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                          {"role": "assistant", "content": "c"}]})
    assert r["messages"][0]["content"] == "ab"


@pytest.mark.parametrize("data,reason,field", [
    ({"instruction": "x"}, "missing_field", "output"),
    ({"instruction": ["x"], "output": "y"}, "bad_type", "instruction"),
    ({"instruction": "", "output": "y"}, "empty_content", "instruction"),
    ({"instruction": "x", "output": "  "}, "empty_content", "output"),
    ({"conversations": [{"from": "alien", "value": "x"}]}, "unknown_role", "conversations[0].from"),
    ({"conversations": [{"from": "human", "value": "x"}]}, "no_assistant", "messages"),
    ({"conversations": [{"from": "gpt", "value": "x"}, {"from": "human", "value": "y"}]}, "bad_turn_order", "messages"),
    ({"messages": "hi"}, "bad_type", "messages"),
    ({"foo": 1}, "unknown_format", None),
])
def test_row_errors_name_reason_and_field(data, reason, field):
    with pytest.raises(RowError) as e:
        rec(data)
    assert e.value.reason == reason and e.value.field == field


def test_explicit_format_mismatch_is_a_row_error():
    with pytest.raises(RowError) as e:
        rec({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}, fmt="alpaca")
    assert e.value.field == "instruction"


def test_json_array_records_carry_line_numbers(tmp_path):
    p = tmp_path / "a.json"
    p.write_text('[\n  {"instruction": "a", "output": "b"},\n\n  {"instruction": "c", "output": "d"}\n]\n')
    rows = list(read_source(str(p)))
    assert [(r.line, r.recno) for r in rows] == [(2, 1), (4, 2)]


def test_collect_quarantines_bad_rows_and_keeps_going(tmp_path):
    p = tmp_path / "d.jsonl"
    good = json.dumps({"instruction": "a", "output": "b"})
    p.write_text("\n".join([good, "{not json", json.dumps({"instruction": "a"}), good]) + "\n")
    res = collect(CollectParams(sources=[Source(path=str(p))]))
    assert len(res.records) == 2 and [q["line"] for q in res.quarantine] == [2, 3]
    assert [q["reason"] for q in res.quarantine] == ["malformed_json", "missing_field"]
    assert res.metrics()["rows_in"] == 4


def test_collect_fail_mode_stops_with_location(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps({"instruction": "a", "output": "b"}) + "\n" + json.dumps({"instruction": 5, "output": "b"}))
    with pytest.raises(UserError, match=r"d.jsonl:2 field 'instruction': 'instruction' must be a string"):
        collect(CollectParams(sources=[Source(path=str(p))], on_error="fail"))


def test_missing_file_is_fatal(tmp_path):
    with pytest.raises(UserError, match="file not found"):
        list(read_source(str(tmp_path / "nope.jsonl")))
