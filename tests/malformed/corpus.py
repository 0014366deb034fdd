"""The malformed-input corpus: bad (and tricky but valid) input files, and what collect must do.

Every case is one input file, written here byte for byte (BOMs, CRLF and invalid
UTF-8 are easier to get exactly right in code than in committed files, and git
cannot rewrite them), with the expected outcome:

* row-level cases list the rows that must be quarantined (reason, field, line or
  record, and a piece of the message), and how many records the file holds,
  counted by hand, so ``kept + quarantined == rows`` is checked against the file
  rather than against collect's own arithmetic;
* fatal cases give a pattern the one-line error must match, and the line it
  must name when the problem has one.

Large inputs (the 5 MB record) are built when a test asks for them.
``python tests/malformed/corpus.py OUTDIR`` writes every file for a look by hand.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

BOM = b"\xef\xbb\xbf"
DIRECTORY = object()        # content: make a directory at the path
MISSING = object()          # content: create nothing at the path


@dataclass(frozen=True)
class Q:
    """One row the case must send to the quarantine, in file order."""
    reason: str
    field: str | None
    line: int | None
    message: str = ""           # a piece the message must contain
    record: int | None = None   # checked when given (and always when there is no line)


@dataclass(frozen=True)
class Case:
    name: str
    file: str                                   # file name; the suffix picks the reader
    content: bytes | Callable[[], bytes] | object
    rows: int = 0                               # records in the file (row-level cases)
    quarantined: tuple[Q, ...] = ()
    fatal: str | None = None                    # regex for the one-line error of a fatal case
    fatal_line: int | None = None               # line the fatal error must name
    check: Callable[[list[dict]], None] | None = None   # more assertions on the kept records
    why: str = ""

    def write(self, directory: Path) -> Path:
        path = directory / self.file
        if self.content is DIRECTORY:
            path.mkdir()
        elif self.content is not MISSING:
            data = self.content() if callable(self.content) else self.content
            path.write_bytes(data)
        return path


# ----------------------------------------------------------------------------- helpers

def obj(**kw) -> bytes:
    return json.dumps(kw, ensure_ascii=False).encode("utf-8")


def jsonl(*lines: bytes | dict, eol: bytes = b"\n") -> bytes:
    return b"".join((json.dumps(x, ensure_ascii=False).encode() if isinstance(x, dict) else x) + eol
                    for x in lines)


def alp(i: int) -> dict:
    return {"instruction": f"What is {i} plus {i}?", "output": str(2 * i)}


def share(*turns: tuple[str, object], **extra) -> dict:
    return {"conversations": [{"from": r, "value": v} for r, v in turns], **extra}


def chat(*turns: tuple[str, object]) -> dict:
    return {"messages": [{"role": r, "content": c} for r, c in turns]}


def csv_bytes(text: str, eol: str = "\n") -> bytes:
    return text.replace("\n", eol).encode("utf-8")


def five_mb_jsonl() -> bytes:
    big = ("All work and no play makes a long record. " * 125_000)[:5_000_000]
    return jsonl(alp(1), {"instruction": "Summarise this.", "input": big, "output": "Too long."}, alp(2))


def big_field_csv() -> bytes:
    # 200 000 characters: over the csv module's default 131 072 field limit, over max_chars
    return ("instruction,output\n" + "a,b\n" + '"' + "x" * 200_000 + '",y\n' + "c,d\n").encode()


# ----------------------------------------------------------------------------- checks

def no_cr(records: list[dict]) -> None:
    for r in records:
        for m in r["messages"]:
            assert "\r" not in m["content"], (r["id"], m["content"])


def no_bom(records: list[dict]) -> None:
    for r in records:
        for m in r["messages"]:
            assert "\ufeff" not in m["content"], r
        assert not any("\ufeff" in k for k in r["meta"]), r["meta"]
        assert "\ufeff" not in r["id"], r["id"]


def first_instruction_is(text: str) -> Callable[[list[dict]], None]:
    def check(records):
        assert records[0]["messages"][0]["content"] == text, records[0]["messages"]
    return check


def csv_line_breaks_kept(records: list[dict]) -> None:
    # each row arrived whole: the odd line-break characters stayed inside its field
    assert [r["messages"][0]["content"] for r in records] == [
        "first\u2028half", "next\x85line", "page\x0cbreak", "vertical\x0btab"]
    assert [r["messages"][1]["content"] for r in records] == ["a", "b", "c", "d"]
    assert [r["meta"]["line"] for r in records] == [2, 3, 4, 5]


def multiline_csv(records: list[dict]) -> None:
    assert records[0]["messages"][0]["content"] == "Write a haiku\nabout rain"
    assert records[0]["messages"][1]["content"] == "drops on the tin roof\nthe gutter sings\nnight cools"
    assert [r["meta"]["line"] for r in records] == [2, 9]
    no_cr(records)


def _lines(records: list[dict], lines: list[int]) -> None:
    assert [r["meta"]["line"] for r in records] == lines


def ids_are(*ids: str) -> Callable[[list[dict]], None]:
    def check(records):
        assert [r["id"] for r in records] == list(ids)
    return check


def instruction_with_input_kept(records: list[dict]) -> None:
    # an empty instruction is fine when the input carries the prompt
    assert records[-1]["messages"][0]["content"] == "Translate: bonjour"


# ----------------------------------------------------------------------------- the corpus

CASES: list[Case] = [
    # --- JSONL syntax: each bad line is one quarantined row, the rest go on
    Case("jsonl_truncated_object", "trunc.jsonl",
         jsonl(alp(1), b'{"instruction": "Add 2 and 3.", "output": "5"', alp(2)),
         rows=3, quarantined=(Q("malformed_json", None, 2, "Expecting ','"),),
         why="a line cut off mid-object (a download stopped, a line was split)"),
    Case("jsonl_trailing_comma", "comma.jsonl",
         jsonl(alp(1), b'{"instruction": "Add 2 and 3.", "output": "5",}', alp(2)),
         rows=3, quarantined=(Q("malformed_json", None, 2, "malformed JSON"),)),
    Case("jsonl_unquoted_text", "text.jsonl",
         jsonl(alp(1), b"What is 2 plus 2? 4", alp(2)),
         rows=3, quarantined=(Q("malformed_json", None, 2, "Expecting value at column 1"),)),
    Case("jsonl_non_object_lines", "scalars.jsonl",
         jsonl(alp(1), b'"What is 2 plus 2?"', b"[" + obj(**alp(5)) + b"]", b"42", b"null", b"true", alp(2)),
         rows=7, quarantined=(Q("bad_type", None, 2, "got string"), Q("bad_type", None, 3, "got array"),
                              Q("bad_type", None, 4, "got number"), Q("bad_type", None, 5, "got null"),
                              Q("bad_type", None, 6, "got boolean")),
         why="a bare string, a one-line array, a number, null, true: valid JSON, not records"),
    Case("jsonl_nan_infinity", "nan.jsonl",
         jsonl(alp(1), b'{"instruction": "a", "output": "b", "score": NaN}',
               b'{"instruction": "a", "output": "b", "score": -Infinity}',
               b'{"instruction": "a", "output": "b", "score": 1e999}', alp(2)),
         rows=5, quarantined=(Q("malformed_json", None, 2, "NaN is not valid JSON"),
                              Q("malformed_json", None, 3, "-Infinity is not valid JSON"),
                              Q("malformed_json", None, 4, "too large")),
         why="Python's json reads these, but they are not JSON: written back out they would make "
             "data.jsonl unreadable for strict parsers (pyarrow, datasets)"),
    Case("jsonl_two_objects_on_one_line", "two.jsonl",
         jsonl(alp(1), obj(**alp(3)) + b" " + obj(**alp(4)), alp(2)),
         rows=3, quarantined=(Q("malformed_json", None, 2, "extra data"),),
         why="a lost newline glues two records; keeping only the first would lose one silently"),
    Case("jsonl_duplicate_key", "dupkey.jsonl",
         jsonl(alp(1), b'{"instruction": "Capital of France?", "output": "Paris", "output": "Lyon"}', alp(2)),
         rows=3, quarantined=(Q("duplicate_key", "output", 2, "appears twice"),),
         why="a JSON parser keeps the last value without a word; which answer is right is unknowable"),
    Case("jsonl_deep_nesting", "deep.jsonl",
         jsonl(alp(1), b"[" * 100_000, alp(2)),
         rows=3, quarantined=(Q("malformed_json", None, 2, "nested too deeply"),),
         why="used to raise RecursionError out of the reader and kill the stage"),
    Case("jsonl_huge_integer", "bigint.jsonl",
         jsonl(alp(1), b'{"id": 1' + b"0" * 5000 + b', "instruction": "a", "output": "b"}', alp(2)),
         rows=3, quarantined=(Q("malformed_json", None, 2, "5001 digits"),),
         why="used to raise ValueError (int max str digits) out of the reader and kill the stage"),
    Case("jsonl_lone_surrogate", "surrogate.jsonl",
         jsonl(alp(1), b'{"instruction": "Smile", "output": "ok \\ud83d"}',
               b'{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "\\udc00!"}]}',
               b'{"instruction": "a", "output": "b", "note\\ud800": "x"}', alp(2)),
         rows=5, quarantined=(Q("invalid_unicode", "output", 2, "U+D83D"),
                              Q("invalid_unicode", "conversations[1].value", 3, "U+DC00"),
                              Q("invalid_unicode", "note\\ud800", 4, "U+D800")),
         why="a half emoji escape parses, then crashed the UTF-8 writer after the whole stage had run"),
    Case("jsonl_invalid_utf8", "latin1.jsonl",
         jsonl(alp(1), b'{"instruction": "Caf\xe9?", "output": "yes"}', b'{"instruction": "\xe4\xbd", "output": "x"}',
               alp(2)),
         rows=4, quarantined=(Q("invalid_utf8", None, 2, "invalid UTF-8 at byte 20"),
                              Q("invalid_utf8", None, 3, "invalid UTF-8")),
         why="a Latin-1 line and a cut multibyte character: one bad line, not a bad file"),
    Case("jsonl_bom_and_joined_bom", "bom.jsonl",
         BOM + jsonl({"id": "a", "instruction": "First", "output": "1"}, alp(2))
         + BOM + jsonl({"id": "b", "instruction": "Third", "output": "3"}),
         rows=3, check=lambda recs: (no_bom(recs), first_instruction_is("First")(recs),
                                     ids_are("bom:a", "bom:#2", "bom:b")(recs)),
         why="a BOM at the start, and one in the middle from `cat a.jsonl b.jsonl`, are both dropped"),
    Case("jsonl_crlf", "crlf.jsonl",
         jsonl(alp(1), {"instruction": "List two colours.", "output": "red\ngreen"}, b"{oops", alp(2), eol=b"\r\n"),
         rows=4, quarantined=(Q("malformed_json", None, 3),), check=no_cr),

    # --- a JSON array where JSONL is expected: one mistake about the file, so fatal with a hint
    Case("jsonl_holding_json_array", "array.jsonl",
         b'[\n  {"instruction": "a", "output": "b"},\n  {"instruction": "c", "output": "d"}\n]\n',
         fatal=r"found a JSON array, but \.jsonl expects one JSON object per line \(rename the file to \.json\)",
         fatal_line=1),
    Case("jsonl_holding_one_line_array", "array1.jsonl",
         b'\n[{"instruction": "a", "output": "b"}, {"instruction": "c", "output": "d"}]\n',
         fatal=r"found a JSON array", fatal_line=2),

    # --- missing, misnamed and mistyped fields
    Case("alpaca_instruction_typo", "typo.jsonl",
         jsonl(alp(1), {"instrution": "Name a fruit.", "output": "apple"}, alp(2)),
         rows=3, quarantined=(Q("missing_field", "instruction", 2, "is 'instrution' meant to be 'instruction'"),)),
    Case("alpaca_response_instead_of_output", "response.jsonl",
         jsonl(alp(1), {"instruction": "Name a fruit.", "response": "apple"}, alp(2)),
         rows=3, quarantined=(Q("missing_field", "output", 2, "is 'response' meant to be 'output'"),)),
    Case("unknown_format_prompt_completion", "pc.jsonl",
         jsonl(alp(1), {"prompt": "Name a fruit.", "completion": "apple"}, alp(2)),
         rows=3, quarantined=(Q("unknown_format", "prompt", 2, "'completion' meant to be 'output'"),)),
    Case("alpaca_wrong_types", "types.jsonl",
         jsonl(alp(1),
               {"instruction": ["Name", "a fruit"], "output": "apple"},
               {"instruction": "Add 2 and 2.", "output": 4},
               {"instruction": "Say nothing.", "output": None},
               {"instruction": "Echo", "input": {"text": "hi"}, "output": "hi"},
               {"instruction": "Hi", "output": "Hello", "history": [["only one"]]},
               {"instruction": "Hi", "output": "Hello", "label": ["greeting"]},
               {"id": 1.5, "instruction": "Hi", "output": "Hello"},
               alp(2)),
         rows=9, quarantined=(Q("bad_type", "instruction", 2, "must be a string, got array"),
                              Q("bad_type", "output", 3, "got number"),
                              Q("bad_type", "output", 4, "is null"),
                              Q("bad_type", "input", 5, "got object"),
                              Q("bad_type", "history[0]", 6, "pair of strings"),
                              Q("bad_type", "label", 7, "got array"),
                              Q("bad_type", "id", 8, "got number"))),
    Case("sharegpt_conversations_is_object", "convdict.jsonl",
         jsonl(alp(1), {"conversations": {"from": "human", "value": "hi"}},
               share(("human", "hi"), ("gpt", 42)), share(("human", None), ("gpt", "hello")), alp(2)),
         rows=5, quarantined=(Q("bad_type", "conversations", 2, "must be a list, got object"),
                              Q("bad_type", "conversations[1].value", 3, "got number"),
                              Q("bad_type", "conversations[0].value", 4, "got null"))),
    Case("openai_content_number_and_null", "content.jsonl",
         jsonl(alp(1), chat(("user", "What is 6 times 7?"), ("assistant", 42)),
               chat(("user", None), ("assistant", "Hello")), alp(2)),
         rows=4, quarantined=(Q("bad_type", "messages[1].content", 2, "got number"),
                              Q("bad_type", "messages[0].content", 3, "got null"))),

    # --- empty and whitespace-only text
    Case("empty_and_blank_content", "empty.jsonl",
         jsonl(alp(1),
               {"instruction": "", "output": "Paris"},
               {"instruction": "Capital of France?", "output": " \n\t "},
               share(("human", "hi"), ("gpt", "   "), system="Be brief."),
               chat(("user", "\u3000"), ("assistant", "Hello")),
               {"instruction": "   ", "input": "Translate: bonjour", "output": "hello"}),
         rows=6, quarantined=(Q("empty_content", "instruction", 2, "empty instruction"),
                              Q("empty_content", "output", 3, "empty output"),
                              Q("empty_content", "conversations[1].value", 4, "empty assistant message"),
                              Q("empty_content", "messages[0].content", 5, "empty user message")),
         check=instruction_with_input_kept,
         why="the sharegpt row has a system prompt, so its bad turn is messages[2] inside: the error "
             "names the input's own field"),

    # --- roles and turn order
    Case("sharegpt_unknown_roles", "roles.jsonl",  # tool roles are known now, but these are broken
         jsonl(alp(1), share(("human", "Weather?"), ("function_call", "{}"), ("gpt", "Sunny")),
               share(("human", "hi"), ("observation", "x")),
               {"conversations": [{"role": "human", "content": "hi"}, {"role": "Bot", "content": "yo"}]},
               {"conversations": [{"from": ["human"], "value": "hi"}, {"from": "gpt", "value": "yo"}]},
               {"conversations": [{"value": "hi"}, {"from": "gpt", "value": "yo"}]},
               alp(2)),
         rows=7, quarantined=(Q("bad_tool_call", "conversations[1].value", 2, "no function name"),
                              Q("orphan_tool_result", "conversations[1]", 3, "no tool call before it"),
                              Q("unknown_role", "conversations[1].role", 4, "'Bot'"),
                              Q("bad_type", "conversations[0].from", 5, "got array"),
                              Q("missing_field", "conversations[0].from", 6, "no 'from'")),
         why="a role given as a list used to raise TypeError (unhashable) and kill the stage"),
    Case("sharegpt_never_reaches_assistant", "order.jsonl",
         jsonl(alp(1), share(("system", "Be kind."), ("human", "hi")),
               share(("human", "hi"), ("human", "anyone?")),
               share(("human", "hi"), ("gpt", "hello"), ("human", "bye")),
               share(("gpt", "I start"), ("human", "ok")),
               share(),
               alp(2)),
         rows=7, quarantined=(Q("no_assistant", "messages", 2, "never ends with an assistant"),
                              Q("bad_turn_order", "messages", 3, "turn 1 is user"),
                              Q("no_assistant", "messages", 4, "never ends with an assistant"),
                              Q("bad_turn_order", "messages", 5, "turn 0 is assistant"),
                              Q("bad_messages", "messages", 6, "non-empty"))),
    Case("openai_tools_and_parts", "tools.jsonl",
         jsonl(alp(1),
               {"messages": [{"role": "user", "content": "Weather in Oslo?"},
                             {"role": "assistant", "content": None,
                              "tool_calls": [{"id": "c1", "type": "function",
                                              "function": {"name": "weather", "arguments": "{}"}}]},
                             {"role": "tool", "tool_call_id": "c1", "content": "rain"},
                             {"role": "assistant", "content": "It rains."}]},
               chat(("user", "hi"), ("function", "{}"), ("assistant", "done")),
               chat(("user", [{"type": "text", "text": "What is this?"},
                              {"type": "image_url", "image_url": {"url": "https://example.invalid/x.png"}}]),
                    ("assistant", "A cat.")),
               chat(("user", [{"type": "text"}]), ("assistant", "?")),
               chat(("developer", "Be brief."), ("user", "hi"), ("assistant", "hello")),
               alp(2)),
         rows=7, quarantined=(Q("undeclared_tool", "messages[1].tool_calls[0].name", 2, "declares no tools"),
                              Q("orphan_tool_result", "messages[1]", 3, "no tool call before it"),
                              Q("unsupported_content", "messages[0].content[1]", 4, "'image_url'"),
                              Q("bad_type", "messages[0].content[0]", 5, "content part"),
                              Q("unknown_role", "messages[0].role", 6, "'developer'"))),

    # --- duplicate ids within one source (across sources: see the test file)
    Case("duplicate_ids_in_source", "dups.jsonl",
         jsonl({"id": 1, **alp(1)}, {"id": 2, **alp(2)}, {"id": 1, **alp(3)}, {"id": "2", **alp(4)},
               {**alp(5)}, {"id": "#5", **alp(6)}),
         rows=6, quarantined=(Q("duplicate_id", "id", 3, "duplicate id 'dups:1' (first seen at "),
                              Q("duplicate_id", "id", 4, "duplicate id 'dups:2'"),
                              Q("duplicate_id", "id", 6, "duplicate id 'dups:#5'")),
         check=ids_are("dups:1", "dups:2", "dups:#5"),
         why="a second copy is quarantined with where the first was, never dropped silently. 2 and '2' "
             "are one id; an explicit id '#5' meets the id generated for the id-less record 5"),

    # --- too long
    Case("record_5mb", "huge.jsonl", five_mb_jsonl,
         rows=3, quarantined=(Q("too_long", None, 2, "above collect.max_chars=100000"),),
         why="one 5 MB record: quarantined by max_chars, quickly, and the preview in the quarantine is short"),

    # --- .json files
    Case("json_bom_crlf", "bomcrlf.json",
         BOM + b'[\r\n  {"instruction": "First", "output": "1"},\r\n  {"instruction": "Second",\r\n'
               b'   "output": "2"}\r\n]\r\n',
         rows=2, check=lambda recs: (no_bom(recs), no_cr(recs), first_instruction_is("First")(recs),
                                     _lines(recs, [2, 3]))),
    Case("json_bad_record_inside_array", "rows.json",
         b'[\n {"instruction": "a", "output": "1"},\n {"instruction": "b", "output": "2", "score": NaN},\n'
         b' {"instruction": "c", "output": "3", "output": "4"},\n "just text",\n'
         b' {"instruction": "d", "output": "5"}\n]',
         rows=5, quarantined=(Q("malformed_json", None, 3, "NaN", record=2),
                              Q("duplicate_key", "output", 4, "appears twice", record=3),
                              Q("bad_type", None, 5, "got string", record=4)),
         why="a record that parses but breaks a rule is one bad row; the array goes on"),
    Case("json_truncated_array", "cut.json",
         b'[\n {"instruction": "a", "output": "1"},\n {"instruction": "b", "output": ',
         fatal=r"\[record 2\]: invalid JSON \(Expecting value\)", fatal_line=3,
         why="after a syntax error inside an array, where the next record starts is unknowable: fatal"),
    Case("json_missing_comma", "comma.json",
         b'[\n {"instruction": "a", "output": "1"}\n {"instruction": "b", "output": "2"}\n]',
         fatal=r"\[record 1\]: invalid JSON \(expected ',' or '\]' after a record\)", fatal_line=3),
    Case("json_holding_jsonl", "lines.json",
         jsonl(alp(1), alp(2)),
         fatal=r"invalid JSON \(Extra data\); a \.json file must hold an array of records \(use \.jsonl",
         fatal_line=2),
    Case("json_invalid_utf8", "latin1.json",
         b'[\n {"instruction": "a", "output": "1"},\n {"instruction": "Caf\xe9", "output": "2"}\n]',
         fatal=r"invalid UTF-8 at byte \d+; a \.json file must decode as a whole", fatal_line=3),
    Case("json_whitespace_only", "blank.json", b"  \n\t\n",
         fatal=r"no records found \(only whitespace\)"),
    Case("json_empty_array", "none.json", b"[ ]\n", fatal=r"no records found"),

    # --- CSV
    Case("csv_missing_column", "nocol.csv", csv_bytes("instruction,input\nName a fruit.,\n"),
         fatal=r"CSV header \['instruction', 'input'\] lacks the columns of a known format", fatal_line=1),
    Case("csv_misnamed_column", "misnamed.csv", csv_bytes("instruction,response\nName a fruit.,apple\n"),
         fatal=r"lacks the columns.*is 'response' meant to be 'output'\?", fatal_line=1),
    Case("csv_duplicate_column", "dupcol.csv", csv_bytes("instruction,output,output\nName a fruit.,apple,pear\n"),
         fatal=r"CSV header repeats column\(s\) \['output'\]", fatal_line=1,
         why="DictReader kept the last 'output' and dropped the other without a word"),
    Case("csv_too_few_too_many_values", "counts.csv",
         csv_bytes("instruction,input,output\nAdd,1 2,3\nAdd,1 2\nAdd,1 2,3,oops\nMul,2 3,6\n"),
         rows=4, quarantined=(Q("missing_field", "output", 3, "2 value(s) for 3 columns"),
                              Q("bad_csv_row", None, 4, "4 values for 3 columns"))),
    Case("csv_quoted_newlines_then_bad_rows", "multiline.csv",
         csv_bytes('instruction,output\n"Write a haiku\nabout rain","drops on the tin roof\nthe gutter sings\n'
                   'night cools"\n\n"Two lines\nhere"\nAdd 1 and 1,2\n"x"y,z\n', eol="\r\n"),
         rows=4, quarantined=(Q("missing_field", "output", 7, "1 value(s) for 2 columns"),
                              Q("bad_csv_row", None, 10, "malformed CSV quoting")),
         check=multiline_csv,
         why="a record spanning lines moves every later line number; CRLF inside quotes becomes \\n"),
    Case("csv_line_break_characters_in_fields", "seps.csv",
         csv_bytes("instruction,output\nfirst\u2028half,a\nnext\x85line,b\npage\x0cbreak,c\nvertical\x0btab,d\n"),
         rows=4, check=csv_line_breaks_kept,
         why="str.splitlines() cut rows at U+2028, NEL, form feed and vertical tab: the halves became "
             "a bad row and a wrong record that was kept"),
    Case("csv_unterminated_quote", "openquote.csv",
         csv_bytes('instruction,output\nAdd,2\n"Subtract 1 from 3,2\nMul,6\nDiv,1\n'),
         fatal=r"unterminated quoted field", fatal_line=3,
         why="the open quote swallowed every later row into one field: 3 records read as 1"),
    Case("csv_bad_json_column", "msgs.csv",
         csv_bytes('id,messages\n1,"[{""role"": ""user"", ""content"": ""hi""}, '
                   '{""role"": ""assistant"", ""content"": ""yo""}]"\n2,"[{""role"": ""user""}"\n'
                   '3,"{""role"": ""user""}"\n'
                   '4,"[{""role"": ""user"", ""role"": ""assistant"", ""content"": ""hi""}]"\n'),
         rows=4, quarantined=(Q("malformed_json", "messages", 3, "column holds malformed JSON"),
                              Q("bad_type", "messages", 4, "must be a list, got object"),
                              Q("duplicate_key", "messages", 5, "column holds key 'role' appears twice")),
         why="JSON inside a CSV column gets the same checks as a JSONL line, named by its column"),
    Case("csv_field_over_128k", "bigfield.csv", big_field_csv,
         rows=3, quarantined=(Q("too_long", None, 3, "200001 characters"),),
         why="csv's default 128 KiB field limit raised csv.Error and killed the stage"),
    Case("csv_invalid_utf8", "latin1.csv", csv_bytes("instruction,output\nAdd,2\n") + b"Caf\xe9,yes\n",
         fatal=r"invalid UTF-8 at byte 28; a \.csv file must decode as a whole", fatal_line=3),
    Case("csv_bom", "bom.csv", BOM + csv_bytes("instruction,output\nFirst,1\nSecond,2\n"),
         rows=2, check=lambda recs: (no_bom(recs), first_instruction_is("First")(recs))),
    Case("csv_header_only", "header.csv", b"instruction,output\n", fatal=r"no records found"),
    Case("csv_whitespace_only", "blank.csv", b"\n  \n", fatal=r"no CSV header row \(only whitespace\)"),

    # --- files that are not there, or not files
    Case("empty_file", "empty.jsonl", b"", fatal=r"file is empty \(no records\)"),
    Case("whitespace_only_jsonl", "blank.jsonl", b"\n \r\n\t\n", fatal=r"no records found \(only blank lines\)"),
    Case("missing_file", "absent.jsonl", MISSING, fatal=r"file not found"),
    Case("directory_not_file", "adir.jsonl", DIRECTORY, fatal=r"is a directory, expected a data file"),
    Case("unsupported_suffix", "notes.txt", b"instruction: a\n", fatal=r"unsupported file type '\.txt'"),
    Case("corrupt_parquet", "bad.parquet", b"PAR1 this is not a parquet file",
         fatal=r"cannot read parquet \(\w+: [^\n]*\)"),
]


BY_NAME = {c.name: c for c in CASES}
assert len(BY_NAME) == len(CASES), "case names must be unique"


def write_all(directory: Path) -> list[Path]:
    """Write every case into its own folder (two cases may share a file name)."""
    out = []
    for c in CASES:
        d = directory / c.name
        d.mkdir(parents=True, exist_ok=True)
        out.append(c.write(d))
    return out


if __name__ == "__main__":
    for p in write_all(Path(sys.argv[1] if len(sys.argv) > 1 else "malformed_corpus")):
        print(p)
