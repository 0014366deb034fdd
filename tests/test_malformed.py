"""Bad input is refused clearly and never lost silently.

The corpus (tests/malformed/corpus.py) holds one input file per case. A row-level
case must quarantine exactly the rows it lists, with reason, field and line, and
keep the rest, so that the rows in the file add up; a fatal case must stop with
one line naming the file (and the line). The CLI tests run the real stage
command as a subprocess: params errors, on_error=fail, and the files a run with
quarantined rows still writes.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from sftpipe.collect.sources import collect
from sftpipe.config import CollectParams, Source
from sftpipe.errors import UserError, where
from sftpipe.io import write_jsonl

ROOT = Path(__file__).resolve().parents[1]


def _load_corpus():
    # loaded by path, so it does not matter how pytest sets up sys.path
    spec = importlib.util.spec_from_file_location("malformed_corpus", ROOT / "tests" / "malformed" / "corpus.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


corpus = _load_corpus()
CASES, BY_NAME = corpus.CASES, corpus.BY_NAME
ROW_CASES = [c for c in CASES if c.fatal is None]
FATAL_CASES = [c for c in CASES if c.fatal is not None]
BAD_ROW_CASES = [c for c in ROW_CASES if c.quarantined]
name_of = lambda c: c.name  # noqa: E731


def run_collect(path: Path, **kw):
    return collect(CollectParams(sources=[Source(path=str(path))], **kw))


def read_back(path: Path) -> list:
    """Rows of a JSONL file the stage wrote, parsed strictly (no NaN/Infinity).

    Lines are split on \n only: str.splitlines() would also split inside a value
    holding U+2028 or \x85, which JSON writes as they are.
    """
    def reject(name):
        raise ValueError(f"{name} in output")
    return [json.loads(x, parse_constant=reject) for x in path.read_text("utf-8").split("\n") if x]


def test_corpus_is_big_enough_and_covers_both_outcomes():
    assert len(CASES) >= 30
    assert len(BAD_ROW_CASES) >= 15 and len(FATAL_CASES) >= 10


# ----------------------------------------------------------------------------- the corpus, in process

@pytest.mark.parametrize("case", ROW_CASES, ids=name_of)
def test_row_level_case(case, tmp_path):
    path = case.write(tmp_path)
    res = run_collect(path)

    got = [(q["reason"], q["field"], q["line"]) for q in res.quarantine]
    assert got == [(q.reason, q.field, q.line) for q in case.quarantined]
    for q, want in zip(res.quarantine, case.quarantined):
        assert want.message in q["message"], q
        if want.record is not None or want.line is None:
            assert q["record"] == want.record
        assert q["path"] == str(path) and q["source"] == path.stem
        assert q["raw"], "the quarantine must show the offending row"
        assert "\n" not in q["message"]

    # every row of the file is either kept or quarantined: counted from the file, not from collect
    assert len(res.records) + len(res.quarantine) == case.rows
    m = res.metrics()
    assert (m["rows_in"], m["kept"], m["quarantined"]) == (case.rows, case.rows - len(case.quarantined),
                                                           len(case.quarantined))
    assert m["quarantined_by_reason"] == dict(Counter(q.reason for q in case.quarantined))
    assert m["per_source"] == {path.stem: {"kept": m["kept"], "quarantined": m["quarantined"]}}

    # what was collected can be written, and read back by a strict JSON parser
    n = write_jsonl(tmp_path / "out" / "data.jsonl", res.records)
    write_jsonl(tmp_path / "out" / "quarantine.jsonl", res.quarantine)
    back = read_back(tmp_path / "out" / "data.jsonl")
    assert n == len(back) == len(res.records)
    if case.check:
        case.check(res.records)


@pytest.mark.parametrize("case", BAD_ROW_CASES, ids=name_of)
def test_fail_mode_stops_at_the_first_bad_row(case, tmp_path):
    path = case.write(tmp_path)
    first = case.quarantined[0]
    with pytest.raises(UserError) as e:
        run_collect(path, on_error="fail")
    msg = str(e.value)
    loc = where(path, first.line, None if first.line else first.record, first.field)
    assert msg.startswith(f"{loc}: ") and first.message in msg, msg
    assert "collect.on_error=fail" in msg and "\n" not in msg


@pytest.mark.parametrize("case", FATAL_CASES, ids=name_of)
def test_fatal_case(case, tmp_path):
    path = case.write(tmp_path)
    with pytest.raises(UserError) as e:
        run_collect(path)
    msg = str(e.value)
    assert "\n" not in msg
    where_ = re.escape(f"{path}:{case.fatal_line}" if case.fatal_line else str(path))
    assert re.match(where_ + r"( \[record \d+\])?: ", msg), msg
    assert re.search(case.fatal, msg), msg


# ----------------------------------------------------------------------------- beyond single files

def test_5mb_record_is_quarantined_quickly_with_a_short_preview(tmp_path):
    path = BY_NAME["record_5mb"].write(tmp_path)
    assert path.stat().st_size > 5_000_000
    t0 = time.perf_counter()
    res = run_collect(path)
    assert time.perf_counter() - t0 < 3.0
    (q,) = res.quarantine
    assert q["reason"] == "too_long" and len(q["raw"]) == 2000 and q["raw_truncated"] is True
    assert len(res.records) == 2


def test_same_id_in_two_sources_is_two_records(tmp_path):
    # ids are source:id, so two sources may both have an id 1; a repeat inside one source is quarantined
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_bytes(corpus.jsonl({"id": 1, **corpus.alp(1)}, {"id": 2, **corpus.alp(2)}))
    b.write_bytes(corpus.jsonl({"id": 1, **corpus.alp(3)}, {"id": 1, **corpus.alp(4)}))
    res = collect(CollectParams(sources=[Source(path=str(a)), Source(path=str(b))]))
    assert [r["id"] for r in res.records] == ["a:1", "a:2", "b:1"]
    assert [r["messages"][0]["content"] for r in res.records][2] == "What is 3 plus 3?"
    (q,) = res.quarantine
    assert (q["source"], q["line"], q["reason"], q["field"]) == ("b", 2, "duplicate_id", "id")
    assert f"first seen at {b}:1" in q["message"]
    assert res.metrics()["per_source"] == {"a": {"kept": 2, "quarantined": 0}, "b": {"kept": 1, "quarantined": 1}}


def test_only_bad_rows_is_fatal_and_says_what_the_quarantine_would_hold(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_bytes(corpus.jsonl(b"{oops", {"instruction": "a"}, b"[1]"))
    with pytest.raises(UserError) as e:
        run_collect(p)
    msg = str(e.value)
    assert "no valid records" in msg and "3 row(s) quarantined" in msg and "\n" not in msg
    assert "bad_type=1, malformed_json=1, missing_field=1" in msg
    assert f"first: {p}:1: malformed JSON" in msg


def test_default_system_does_not_shift_the_reported_field(tmp_path):
    p = tmp_path / "chat.jsonl"
    p.write_bytes(corpus.jsonl(corpus.chat(("user", "hi"), ("assistant", " ")), corpus.alp(1)))
    res = collect(CollectParams(sources=[Source(path=str(p))], default_system="You are helpful."))
    (q,) = res.quarantine
    assert (q["reason"], q["field"]) == ("empty_content", "messages[1].content")
    assert res.records[0]["messages"][0] == {"role": "system", "content": "You are helpful."}


def test_converted_messages_carry_no_bookkeeping(tmp_path):
    path = BY_NAME["sharegpt_never_reaches_assistant"].write(tmp_path)
    for r in run_collect(path).records:
        assert all(set(m) == {"role", "content"} for m in r["messages"])


# ----------------------------------------------------------------------------- the real CLI

GOOD = [{"instruction": "Name a colour.", "output": "blue"}, {"instruction": "Name a shape.", "output": "circle"}]


def good_source(tmp_path: Path) -> Path:
    p = tmp_path / "good.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in GOOD))
    return p


def cli(tmp_path: Path, params, *, entry=("stages.collect",), env=None):
    """Run the collect stage as the user would, with outputs under tmp_path."""
    pfile = tmp_path / "params.yaml"
    if isinstance(params, dict):
        params = yaml.safe_dump(params)
    if params is not None:
        pfile.write_bytes(params if isinstance(params, bytes) else params.encode())
    cmd = [sys.executable, "-m", *entry, "--params", str(pfile),
           "--out", str(tmp_path / "out"), "--metrics", str(tmp_path / "metrics" / "collect.json")]
    full_env = {k: v for k, v in os.environ.items() if k != "SFTPIPE_DEBUG"} | (env or {})
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=full_env, timeout=120)
    return proc, pfile


def assert_one_line_error(proc, *needles):
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def with_source(tmp_path, **groups) -> dict:
    params = {"collect": {"sources": [{"path": str(good_source(tmp_path))}]}}
    for group, values in groups.items():
        params.setdefault(group, {}).update(values)
    return params


PARAM_CASES = {
    "lora_r_negative": (lambda t: with_source(t, lora={"r": -1}),
                        ["lora.r: Input should be greater than or equal to 1 (got -1)"]),
    "split_not_summing_to_1": (lambda t: with_source(t, split={"train": 0.7, "validation": 0.1, "test": 0.1}),
                               ["split: split fractions must sum to 1 (train+validation+test = 0.9)"]),
    "dedup_threshold_above_1": (lambda t: with_source(t, dedup={"threshold": 1.5}),
                                ["dedup.threshold: Input should be less than or equal to 1 (got 1.5)"]),
    "typo_key_lora_rr": (lambda t: with_source(t, lora={"rr": 16}), ["lora.rr: unknown key (typo?)"]),
    "wrong_type_train_lr": (lambda t: with_source(t, train={"lr": "fast"}),
                            ["train.lr: Input should be a valid number", "'fast'"]),
    "on_error_unknown": (lambda t: with_source(t, collect={"on_error": "ignore"}),
                         ["collect.on_error: Input should be 'quarantine' or 'fail'"]),
    "source_without_path": (lambda t: {"collect": {"sources": [{"name": "x", "format": "alpaca"}]}},
                            ["collect.sources.0.path: Field required"]),
    "source_path_empty": (lambda t: {"collect": {"sources": [{"path": ""}]}},
                          ["collect.sources.0.path: String should have at least 1 character"]),
    "no_sources": (lambda t: {"collect": {"sources": []}}, ["collect.sources: List should have at least 1 item"]),
    "non_mapping_file": (lambda t: "- collect\n- lora\n", ["expected a mapping of param groups at the top level"]),
    "empty_params_file": (lambda t: "", ["expected a mapping of param groups"]),
    "invalid_yaml": (lambda t: "collect:\n  sources: [{path: a.jsonl}\nlora:\n  r: 8\n", [": invalid YAML ("]),
    "params_file_missing": (lambda t: None, ["params file not found"]),
}


@pytest.mark.parametrize("name", PARAM_CASES)
def test_cli_bad_params_one_line_naming_file_and_key(name, tmp_path):
    make, needles = PARAM_CASES[name]
    proc, pfile = cli(tmp_path, make(tmp_path))
    line = assert_one_line_error(proc, *needles)
    assert line.startswith(f"error: {pfile}")
    assert not (tmp_path / "out").exists() and not (tmp_path / "metrics").exists()


def test_cli_invalid_yaml_names_the_line(tmp_path):
    proc, pfile = cli(tmp_path, "collect:\n  on_error: quarantine\n  sources: [\n")
    line = assert_one_line_error(proc)
    assert re.match(rf"error: {re.escape(str(pfile))}:[34]: invalid YAML", line), line


def test_cli_on_error_fail_stops_at_first_bad_row(tmp_path):
    src = BY_NAME["alpaca_wrong_types"].write(tmp_path)
    proc, _ = cli(tmp_path, {"collect": {"on_error": "fail", "sources": [{"path": str(src)}]}},
                  entry=("stages.cli", "collect"))
    assert_one_line_error(proc, f"{src}:2 field 'instruction': 'instruction' must be a string, got array",
                          "collect.on_error=fail")
    assert not (tmp_path / "out").exists()


def test_cli_fatal_input_is_one_line(tmp_path):
    src = BY_NAME["csv_unterminated_quote"].write(tmp_path)
    proc, _ = cli(tmp_path, {"collect": {"sources": [{"path": str(good_source(tmp_path))}, {"path": str(src)}]}})
    assert_one_line_error(proc, f"error: {src}:3: unterminated quoted field")
    assert not (tmp_path / "out").exists()


def test_cli_run_with_quarantined_rows_writes_all_outputs(tmp_path):
    cases = [BY_NAME["alpaca_wrong_types"], BY_NAME["csv_quoted_newlines_then_bad_rows"], BY_NAME["jsonl_nan_infinity"]]
    srcs = []
    for c in cases:
        d = tmp_path / c.name
        d.mkdir()
        srcs.append(c.write(d))
    proc, _ = cli(tmp_path, {"collect": {"sources": [{"path": str(s)} for s in srcs]}})
    assert proc.returncode == 0, proc.stderr
    assert "error" not in proc.stderr and "Traceback" not in proc.stderr

    data = read_back(tmp_path / "out" / "data.jsonl")
    quarantine = read_back(tmp_path / "out" / "quarantine.jsonl")
    metrics = json.loads((tmp_path / "metrics" / "collect.json").read_text())
    want = Counter(q.reason for c in cases for q in c.quarantined)
    rows = sum(c.rows for c in cases)
    assert len(data) + len(quarantine) == rows == metrics["rows_in"]
    assert (metrics["kept"], metrics["quarantined"]) == (len(data), len(quarantine))
    assert metrics["quarantined_by_reason"] == dict(sorted(want.items()))
    expected = [(str(s), q.line, q.reason, q.field) for c, s in zip(cases, srcs) for q in c.quarantined]
    assert [(q["path"], q["line"], q["reason"], q["field"]) for q in quarantine] == expected
    assert all(q["message"] and q["raw"] for q in quarantine)


def test_cli_only_bad_rows_exits_2_and_writes_nothing(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_bytes(corpus.jsonl(b"{oops", {"instruction": "a"}))
    proc, _ = cli(tmp_path, {"collect": {"sources": [{"path": str(p)}]}})
    assert_one_line_error(proc, "no valid records", f"first: {p}:1: malformed JSON")
    assert not (tmp_path / "out").exists()


def test_cli_debug_env_shows_the_traceback(tmp_path):
    missing = tmp_path / "absent.jsonl"
    proc, _ = cli(tmp_path, {"collect": {"sources": [{"path": str(missing)}]}}, env={"SFTPIPE_DEBUG": "1"})
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and f"UserError: {missing}: file not found" in proc.stderr
    # and the code under test is this worktree's, not the installed copy's
    assert str(ROOT / "sftpipe" / "collect" / "readers.py") in proc.stderr

# ----------------------------------------------------------------------------- params file problems


def test_cli_params_with_a_control_character_is_one_line(tmp_path):
    # yaml's ReaderError has no problem_mark, and its str() spans two lines
    proc, pfile = cli(tmp_path, "collect:\n  on_error: \x07quarantine\n")
    assert_one_line_error(proc, str(pfile))


def test_cli_params_not_utf8_names_the_file(tmp_path):
    # today: "internal error UnicodeDecodeError", exit 1, and no file name
    proc, pfile = cli(tmp_path, b"collect:\n  on_error: \xff\n")
    assert_one_line_error(proc, str(pfile))


def test_cli_params_repeated_group_is_refused(tmp_path):
    # PyYAML keeps the last of two 'collect:' blocks without a word: the first block's sources vanish
    src = good_source(tmp_path)
    proc, pfile = cli(tmp_path, f"collect:\n  sources: [{{path: {src}}}]\ncollect:\n  on_error: fail\n")
    assert_one_line_error(proc, str(pfile), "collect")
    assert "Field required" not in proc.stderr


def test_cli_params_path_is_a_directory_is_one_line(tmp_path):
    # click's own usage error prints three lines
    proc = subprocess.run([sys.executable, "-m", "stages.collect", "--params", str(tmp_path),
                           "--out", str(tmp_path / "out"), "--metrics", str(tmp_path / "m.json")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert_one_line_error(proc, str(tmp_path))


def test_jsonl_lines_survive_readers_that_split_on_unicode_line_breaks(tmp_path):
    """JSON leaves U+2028/U+2029/U+0085 raw inside strings; str.splitlines() (and many JSONL
    readers) break lines there. The clean stage's own input has them (a defect it repairs)."""
    from sftpipe.io import read_jsonl, write_jsonl

    rows = [{"id": "a", "text": "one\u2028two\u2029three\x85four\x0bfive"}, {"id": "b", "text": "ok"}]
    write_jsonl(tmp_path / "x.jsonl", rows)
    raw = (tmp_path / "x.jsonl").read_text(encoding="utf-8")
    assert [json.loads(x) for x in raw.splitlines()] == rows == read_jsonl(tmp_path / "x.jsonl")
