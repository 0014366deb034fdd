"""The sample's tool-use and reasoning rows: they load through the real loaders, their calls and
answers agree with the ground truth, and the rest of the sample does not depend on them."""

import json
import re
from collections import Counter

import pytest

from sftpipe.collect.sources import collect
from sftpipe.config import CollectParams, SampleParams, Source
from sftpipe.sample import CHAT_SOURCES, SOURCES, generate, pretrain_corpus
from sftpipe.sample import tools as T
from sftpipe.sample.vocab import CAPITALS

PARAMS = SampleParams(rows_per_lang=60, tool_rows_per_lang=60, reasoning_rows_per_lang=20, seed=2)
CAPITAL_OF = {c: cap for row in CAPITALS for c, cap in (row[0:2], row[2:4])}


def _collect(d, names):
    return collect(CollectParams(sources=[Source(path=str(d / SOURCES[n]), name=n) for n in names]))


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    d = tmp_path_factory.mktemp("tools")
    counts = generate(PARAMS, d)
    res = _collect(d, T.TOOL_SOURCES)
    truth = {t["id"]: t for t in map(json.loads, (d / "truth.jsonl").read_text(encoding="utf-8").splitlines())}
    return d, counts, res, truth


def _calls(rec):
    return [c for m in rec["messages"] if m["role"] == "assistant" for c in m.get("tool_calls", ())]


def _results(rec):
    return [m for m in rec["messages"] if m["role"] == "tool"]


def _link(m):
    return m.get("tool_call_id") or m["name"]


def _final(rec):
    return rec["messages"][-1]["content"]


def test_new_rows_load_cleanly_and_match_truth(sample):
    d, counts, res, truth = sample
    assert res.quarantine == [] and res.per_source["tools_openai"]["kept"] and res.per_source["tools_sharegpt"]["kept"]
    new = {i: t for i, t in truth.items() if i.split(":")[0] in T.TOOL_SOURCES}
    assert {r["id"] for r in res.records} == set(new)
    # truth: the chat rows first, then the new ones; every row of every file has its truth row
    order = [t["id"].split(":")[0] in T.TOOL_SOURCES for t in truth.values()]
    assert order == sorted(order)
    everything = _collect(d, SOURCES)
    assert everything.quarantine == [] and {r["id"] for r in everything.records} == set(truth)
    # a no-call row never repeats a chat row's request (dedup would drop it as a copy)
    asked = {m["content"] for r in everything.records if r["source"] in CHAT_SOURCES for m in r["messages"]}
    assert not {r["messages"][1]["content"] for r in res.records if r["label"] == "tool_none"} & asked
    per = Counter((t["category"], t["lang"]) for t in new.values())
    for lang in PARAMS.languages:
        assert sum(per[c, lang] for c in T.TOOL_CATEGORIES) == PARAMS.tool_rows_per_lang
        assert per[(T.REASONING, lang)] == PARAMS.reasoning_rows_per_lang
        assert all(per[(c, lang)] > 0 for c in T.TOOL_CATEGORIES)
    assert counts["tool_rows"] + counts["reasoning_rows"] == len(new)
    for r in res.records:
        t = new[r["id"]]
        assert t["defect"] is None and r["label"] == t["category"] and r["meta"]["lang"] == t["lang"]
        assert r["meta"]["format"] == {"tools_openai": "openai", "tools_sharegpt": "sharegpt"}[r["source"]]
        assert [{"name": c["name"], "arguments": c["arguments"]} for c in _calls(r)] == t["expected_calls"]
        assert T.row_chars(r) <= T.MAX_ROW_CHARS + 50   # a 2nd tool is declared even where it does not fit
        if len(r.get("tools", ())) == 3:
            assert T.row_size(r) <= T.MAX_ROW_CHARS


def test_calls_name_declared_tools_with_required_arguments(sample):
    _, _, res, truth = sample
    for r in res.records:
        cat = truth[r["id"]]["category"]
        if cat == T.REASONING:
            assert "tools" not in r and not _calls(r)
            continue
        schemas = {t["name"]: t for t in r["tools"]}
        assert 2 <= len(schemas) <= 3
        calls = _calls(r)
        assert bool(calls) == (cat != "tool_none")
        called = {c["name"] for c in calls}
        # distractors: a tool not called, but in chained rows (two tools needed) where none fits
        assert called < set(schemas) or called == {"get_capital", "get_weather"} == set(schemas)
        for c in calls:
            params = schemas[c["name"]]["parameters"]
            assert set(params["required"]) <= set(c["arguments"]) <= set(params["properties"])
            for k, v in c["arguments"].items():
                spec = params["properties"][k]
                assert isinstance(v, {"integer": int, "string": str}[spec["type"]]) and v in spec.get("enum", [v])
        # one tool message per call, in the order of the calls, each naming its call (by id where the
        # format has ids, OpenAI; else by name, ShareGPT), before the final answer
        assert [_link(m) for m in _results(r)] == [c.get("id", c["name"]) for c in calls]
        assert r["messages"][-1]["role"] == "assistant" and _final(r) and not r["messages"][-1].get("tool_calls")


def test_final_answer_states_the_tool_result(sample):
    _, _, res, truth = sample
    seen = Counter()
    for r in res.records:
        cat = truth[r["id"]]["category"]
        for c, result in zip(_calls(r), _results(r), strict=True):
            got, args = result["content"], c["arguments"]
            if c["name"] == "add":
                assert got == str(args["a"] + args["b"]) and 1000 <= min(args["a"], args["b"])
                expected = [got]
            elif c["name"] == "get_capital":
                assert got == CAPITAL_OF[args["country"]]
                expected = [got]
            else:
                assert c["name"] == "get_weather" and args["city"] in CAPITAL_OF.values()
                report = json.loads(got)
                key = "temp_f" if args.get("unit") == "fahrenheit" else "temp_c"
                assert set(report) == {key, "condition"}
                expected = [f"{report[key]}°{key[-1].upper()}", report["condition"]]
            assert all(x in _final(r) for x in expected), (expected, _final(r))
            seen[cat] += 1
    assert all(seen[c] for c in ("tool_calculator", "tool_capital", "tool_weather"))


def test_parallel_chained_and_no_call_rows_in_both_languages(sample):
    _, _, res, truth = sample
    kinds = Counter()
    for r in res.records:
        lang, cat = truth[r["id"]]["lang"], truth[r["id"]]["category"]
        turns = [m for m in r["messages"] if m.get("tool_calls")]
        if any(len(m["tool_calls"]) == 2 for m in turns):
            kinds["parallel", lang] += 1
            roles = [m["role"] for m in r["messages"] if m["role"] != "system"]
            assert roles == ["user", "assistant", "tool", "tool", "assistant"]
            assert r["source"] == "tools_openai"
        if len(turns) == 2:
            kinds["chain", lang] += 1
            assert [c["name"] for m in turns for c in m["tool_calls"]] == ["get_capital", "get_weather"]
        if cat == "tool_none":
            kinds["no_call", lang] += 1
        if len(turns) == 1 and len(turns[0]["tool_calls"]) == 1:
            kinds["single", lang] += 1
    assert all(kinds[k, lang] > 0 for k in ("parallel", "chain", "no_call", "single") for lang in ("en", "zh")), kinds


def test_reasoning_rows_have_reasoning_and_the_true_answer(sample):
    d, _, res, truth = sample
    by_source = Counter()
    for r in res.records:
        t = truth[r["id"]]
        if t["category"] != T.REASONING:
            assert not any(m.get("reasoning_content") for m in r["messages"])
            continue
        by_source[r["source"], t["lang"]] += 1
        user, reply = r["messages"][-2:]
        a, op, b = re.search(r"(\d+) ?([-+减加]) ?(\d+)", user["content"]).groups()
        true = int(a) + int(b) if op in "+加" else int(a) - int(b)
        assert t["answer"] == true and str(true) in reply["content"] and t["expected_calls"] == []
        steps = reply["reasoning_content"].splitlines()
        assert len(steps) == max(len(a), len(b)) + 1 and str(true) in steps[-1]
        assert "<think>" not in reply["content"]
    assert all(by_source[s, lang] for s in T.TOOL_SOURCES for lang in ("en", "zh")), by_source
    # as written: OpenAI rows carry reasoning_content, ShareGPT rows a <think> block opening the gpt turn
    openai = [json.loads(x) for x in (d / SOURCES["tools_openai"]).read_text(encoding="utf-8").splitlines()]
    assert any("reasoning_content" in m for row in openai for m in row["messages"])
    sharegpt = json.loads((d / SOURCES["tools_sharegpt"]).read_text(encoding="utf-8"))
    gpt = [t["value"] for row in sharegpt for t in row["conversations"] if t["from"] == "gpt"]
    assert any(v.startswith("<think>\n") for v in gpt)


def test_files_are_in_their_formats(sample):
    d, _, _, _ = sample
    for line in (d / SOURCES["tools_openai"]).read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        assert all(t["type"] == "function" and set(t["function"]) == {"name", "description", "parameters"}
                   for t in row.get("tools", ()))
        for m in row["messages"]:
            for c in m.get("tool_calls", ()):
                assert c["type"] == "function" and isinstance(json.loads(c["function"]["arguments"]), dict)
                assert m["content"] is None and c["id"].startswith("call_")
    rows = json.loads((d / SOURCES["tools_sharegpt"]).read_text(encoding="utf-8"))
    assert isinstance(rows, list) and rows
    for row in rows:
        # LLaMA-Factory's ShareGPT reader: human/observation and gpt/function_call alternate, gpt last
        tags = [t["from"] for t in row["conversations"]]
        assert all(tag in (("human", "observation"), ("gpt", "function_call"))[i % 2] for i, tag in enumerate(tags))
        assert tags[-1] == "gpt"
        if "tools" in row:
            assert isinstance(row["tools"], str) and 2 <= len(json.loads(row["tools"])) <= 3
        for t in row["conversations"]:
            if t["from"] == "function_call":
                assert set(json.loads(t["value"])) == {"name", "arguments"}


def test_chat_files_do_not_depend_on_the_tool_rows(tmp_path):
    """The tool rows draw from generators of their own: the four chat files and their truth rows
    are the same bytes whatever the tool params; the tool files are deterministic."""
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate(PARAMS, a)
    generate(PARAMS.model_copy(update={"tool_rows_per_lang": 7, "reasoning_rows_per_lang": 3}), b)
    generate(PARAMS, c)
    for f in CHAT_SOURCES.values():
        assert (a / f).read_bytes() == (b / f).read_bytes()
    ta, tb = ((d / "truth.jsonl").read_text(encoding="utf-8").splitlines() for d in (a, b))
    chat = [x for x in ta if json.loads(x)["id"].split(":")[0] in CHAT_SOURCES]
    assert ta[:len(chat)] == tb[:len(chat)] == chat
    assert len(tb) - len(chat) == 2 * (7 + 3)
    for f in list(SOURCES.values()) + ["truth.jsonl"]:
        assert (a / f).read_bytes() == (c / f).read_bytes()


def test_pretrain_corpus_is_unchanged_by_default_and_can_add_tool_text():
    from sftpipe.sample import _task_documents

    assert pretrain_corpus(["en", "zh"], 200, seed=1) == _task_documents(["en", "zh"], 200, 1)
    small, large = (pretrain_corpus(["en", "zh"], n, seed=1, tool_share=0.05) for n in (200, 400))
    assert len(small) == 200 and small[:190] == large[:190] == _task_documents(["en", "zh"], 190, 1)
    tool_docs = large[380:]
    assert any("<tool_call>" in x for x in tool_docs) and any("<think>" in x for x in tool_docs)
    assert not any("<|im_start|>" in x for x in large) and not set(tool_docs) & set(large[:380])
