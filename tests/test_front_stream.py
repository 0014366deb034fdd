"""collect and clean stream (sources.collect_to, clean.stream.clean_jsonl): rows go to the output files
as they are read, a chunk at a time, with the bytes the in-memory path writes; a failure part way
leaves no file, and the ledger arithmetic is still checked before anything is published."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import sftpipe.clean.records as clean_records_module
import sftpipe.collect.sources as sources
from stage_runner import run_stage
from sftpipe.clean.records import clean_records
from sftpipe.clean.stream import clean_jsonl
from sftpipe.config import CleanParams, CollectParams, SampleParams, Source
from sftpipe.errors import AccountingError
from sftpipe.io import dumps, write_json, write_jsonl
from sftpipe.ledger import write_filter_outputs
from sftpipe.sample import SOURCES, generate

FILES = ("data.jsonl", "quarantine.jsonl")
CLEAN_FILES = ("out/kept.jsonl", "out/dropped.jsonl", "out/details.json", "metrics.json")


def _user(rid, text, answer="ok"):
    return {"id": rid, "messages": [{"role": "user", "content": text}, {"role": "assistant", "content": answer}]}


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    """The generated sample (with more text defects than by default) and a file of rows the two
    stages do not simply pass on: rows collect quarantines (bad JSON, a repeated id, a wrong type)
    and rows clean drops (a turn that is only markup or invisible characters)."""
    d = tmp_path_factory.mktemp("raw")
    generate(SampleParams(rows_per_lang=150, seed=11, clean_defect_rate=0.3), d)
    lines = [dumps(_user("x:1", "Hello <b>there</b>", "Hi")), "{not json",
             dumps(_user("x:2", "<br>", "an answer")),
             dumps(_user("x:1", "the first id again")),
             dumps({"id": "x:3", "messages": "not a list"}),
             dumps(_user("x:4", "\u200b\u200b", "an answer")),
             dumps(_user("x:5", "mail me at someone@example.com", "\x1b[31mred\x1b[0m"))]
    (d / "extra.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return d


def collect_params(raw: Path, **kw) -> CollectParams:
    names = {**SOURCES, "extra": "extra.jsonl"}
    return CollectParams(sources=[Source(path=str(raw / f), name=n) for n, f in names.items()], **kw)


def read(d: Path, names) -> dict[str, bytes]:
    return {f: (d / f).read_bytes() for f in names}


# --------------------------------------------------------------------------------------- collect


def test_collect_to_writes_the_bytes_of_collect_and_quarantines_the_same_rows(raw, tmp_path):
    p = collect_params(raw)
    res = sources.collect(p)
    write_jsonl(tmp_path / "mem" / "data.jsonl", res.records)
    write_jsonl(tmp_path / "mem" / "quarantine.jsonl", res.quarantine)
    write_json(tmp_path / "mem" / "metrics.json", res.metrics())
    m = sources.collect_to(p, tmp_path / "st" / "data.jsonl", tmp_path / "st" / "quarantine.jsonl",
                           tmp_path / "st" / "metrics.json")
    names = (*FILES, "metrics.json")
    assert read(tmp_path / "st", names) == read(tmp_path / "mem", names)
    assert m == res.metrics()
    assert {"malformed_json", "duplicate_id", "bad_type"} <= set(m["quarantined_by_reason"])
    assert m["per_source"]["extra"] == {"kept": 4, "quarantined": 3}
    dup = [q for q in res.quarantine if q["reason"] == "duplicate_id"]
    assert dup[0]["message"] == f"duplicate id 'extra:x:1' (first seen at {raw / 'extra.jsonl'}:1)"


def test_seen_ids_give_the_first_place_as_the_old_location_string():
    from sftpipe.collect.readers import RawRow
    from sftpipe.errors import where

    seen = sources._SeenIds()
    rows = {"a": RawRow(None, "x/a.jsonl", 12, 3), "b": RawRow(None, "y.parquet", None, 7),
            "c": RawRow(None, "hf://o/n:train", None, 2**39 + 5), "d": RawRow(None, "x/a.jsonl", 2**40 - 1, 9)}
    for rid, row in rows.items():
        assert seen.first(rid) is None
        seen.add(rid, row)
    for rid, row in rows.items():
        assert seen.first(rid) == where(row.path, row.line, None if row.line else row.recno)
    assert seen.first("e") is None


def test_collect_yields_a_row_before_it_opens_the_next_source(raw, monkeypatch):
    opened = []
    real = sources.read_source

    def spy(path, *a):
        opened.append(Path(path).name)
        return real(path, *a)

    monkeypatch.setattr(sources, "read_source", spy)
    it = sources.iter_collect(collect_params(raw))
    ok, first = next(it)
    assert ok and opened == ["alpaca_en.json"]
    for _ in it:
        pass
    assert opened == [*SOURCES.values(), "extra.jsonl"]


def test_collect_stage_streams_the_files_it_wrote_before(raw, tmp_path, monkeypatch):
    held = []
    monkeypatch.setattr(sources, "collect", lambda *a, **k: held.append(1))     # the in-memory path is not used
    res = run_stage(tmp_path, "collect", {"collect": {"sources": [
        {"path": s.path, "name": s.name} for s in collect_params(raw).sources]}},
        "--out", tmp_path / "out", "--metrics", tmp_path / "metrics.json")
    assert res.exit_code == 0, res.output
    assert not held
    monkeypatch.undo()
    mem = sources.collect(collect_params(raw))
    assert (tmp_path / "out" / "data.jsonl").read_text(encoding="utf-8") == "".join(
        dumps(r) + "\n" for r in mem.records)
    assert json.loads((tmp_path / "metrics.json").read_text()) == mem.metrics()


def test_collect_failing_part_way_names_file_and_line_and_writes_nothing(raw, tmp_path):
    bad = tmp_path / "late_bad.jsonl"
    bad.write_text("".join(dumps(_user(f"ok:{i}", f"question {i}")) + "\n" for i in range(50)) + "{broken\n"
                   + dumps(_user("ok:x", "after")) + "\n", encoding="utf-8")
    sources_ = [{"path": str(raw / "openai_mixed.jsonl")}, {"path": str(bad)}]
    res = run_stage(tmp_path, "collect", {"collect": {"on_error": "fail", "sources": sources_}},
                    "--out", tmp_path / "out" / "collected", "--metrics", tmp_path / "m" / "collect.json")
    assert res.exit_code == 2
    errors = [x for x in res.output.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {bad}:51: malformed JSON"), res.output
    assert not (tmp_path / "out").exists() and not (tmp_path / "m").exists()


def test_collect_failing_part_way_leaves_an_existing_folder_as_it_was(raw, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "data.jsonl").write_text("old\n")
    p = collect_params(raw, on_error="fail")
    with pytest.raises(sources.UserError, match=r"extra\.jsonl:2: malformed JSON"):
        sources.collect_to(p, out / "data.jsonl", out / "quarantine.jsonl", tmp_path / "metrics.json")
    assert sorted(x.name for x in out.iterdir()) == ["data.jsonl"] and (out / "data.jsonl").read_text() == "old\n"
    assert not (tmp_path / "metrics.json").exists()


def test_collect_with_no_valid_row_still_says_what_the_quarantine_would_hold(tmp_path):
    src = tmp_path / "bad.jsonl"
    src.write_text("{x\n" + dumps({"id": 1, "messages": 3}) + "\n")
    p = CollectParams(sources=[Source(path=str(src))])
    with pytest.raises(sources.UserError) as mem:
        sources.collect(p)
    with pytest.raises(sources.UserError) as st:
        sources.collect_to(p, tmp_path / "o" / "data.jsonl", tmp_path / "o" / "q.jsonl", tmp_path / "m.json")
    assert str(st.value) == str(mem.value)
    assert "all 2 row(s) quarantined (bad_type=1, malformed_json=1); first: " + f"{src}:1" in str(st.value)
    assert not (tmp_path / "o").exists() and not (tmp_path / "m.json").exists()


# ----------------------------------------------------------------------------------------- clean


@pytest.fixture(scope="module")
def collected(raw, tmp_path_factory) -> Path:
    rows = sources.collect(collect_params(raw)).records
    path = tmp_path_factory.mktemp("collected") / "data.jsonl"
    write_jsonl(path, rows)
    return path


def in_memory_clean(inp: Path, d: Path, params: CleanParams) -> dict[str, bytes]:
    from sftpipe.io import read_jsonl

    rows = read_jsonl(inp)
    write_filter_outputs("clean", rows, clean_records(rows, params), d / "out", d / "metrics.json")
    return read(d, CLEAN_FILES)


@pytest.mark.parametrize("chunk_rows", [1, 7, 1000, 10**6])
def test_clean_in_chunks_writes_the_in_memory_bytes(collected, tmp_path, chunk_rows, monkeypatch):
    params = CleanParams()
    want = in_memory_clean(collected, tmp_path / "mem", params)
    sizes = []
    real = clean_records_module.Cleaner.feed

    def feed(self, chunk):
        sizes.append(len(chunk))
        return real(self, chunk)

    monkeypatch.setattr(clean_records_module.Cleaner, "feed", feed)
    m, details = clean_jsonl(collected, tmp_path / "st" / "out", tmp_path / "st" / "metrics.json", params,
                             chunk_rows=chunk_rows)
    assert read(tmp_path / "st", CLEAN_FILES) == want
    n = m["rows_in"]
    assert sizes == [chunk_rows] * (n // chunk_rows) + ([n % chunk_rows] if n % chunk_rows else [])
    # what spans chunks is there to compare: drops, changed rows, examples from several rows per rule
    assert m["dropped_by_reason"] == {"empty_after_clean": 2} and m["rows_changed"] > 50
    assert any(len({e["id"] for e in ex}) == params.examples for ex in details["examples"].values())


def test_clean_without_examples_and_with_rules_off_is_the_same_in_chunks(collected, tmp_path):
    params = CleanParams(examples=0, html=False, pii=["email"])
    want = in_memory_clean(collected, tmp_path / "mem", params)
    clean_jsonl(collected, tmp_path / "st" / "out", tmp_path / "st" / "metrics.json", params, chunk_rows=5)
    assert read(tmp_path / "st", CLEAN_FILES) == want


def test_clean_stage_streams_and_writes_the_in_memory_bytes(collected, tmp_path, monkeypatch):
    monkeypatch.setattr("sftpipe.clean.stream.CHUNK_ROWS", 13)
    feeds = []
    real = clean_records_module.Cleaner.feed
    monkeypatch.setattr(clean_records_module.Cleaner, "feed", lambda self, c: feeds.append(len(c)) or real(self, c))
    res = run_stage(tmp_path, "clean", {}, "--inp", collected, "--out", tmp_path / "st" / "out",
                    "--metrics", tmp_path / "st" / "metrics.json")
    assert res.exit_code == 0, res.output
    assert len(feeds) > 10 and max(feeds) == 13
    monkeypatch.undo()
    assert read(tmp_path / "st", CLEAN_FILES) == in_memory_clean(collected, tmp_path / "mem", CleanParams())


def test_clean_failing_part_way_names_file_and_line_and_writes_nothing(collected, tmp_path, monkeypatch):
    monkeypatch.setattr("sftpipe.clean.stream.CHUNK_ROWS", 10)
    lines = collected.read_text(encoding="utf-8").splitlines(keepends=True)
    bad = tmp_path / "in.jsonl"
    bad.write_text("".join(lines[:95]) + '{"id": "cut\n' + "".join(lines[95:]), encoding="utf-8")
    res = run_stage(tmp_path, "clean", {}, "--inp", bad, "--out", tmp_path / "out" / "clean",
                    "--metrics", tmp_path / "m" / "clean.json")
    assert res.exit_code == 2
    errors = [x for x in res.output.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {bad}:96: invalid JSON ("), res.output
    assert not (tmp_path / "out").exists() and not (tmp_path / "m").exists()


def _lose_last(kept, dropped):
    return kept[:-1], dropped


def _repeat_first(kept, dropped):
    return kept + kept[:1], dropped


def _rename_one(kept, dropped):
    return [{**kept[0], "id": kept[0]["id"] + "'"}, *kept[1:]], dropped


def _kept_and_dropped(kept, dropped):
    return kept, dropped + [{"id": kept[0]["id"], "reason": "x", "stage": "clean"}]


@pytest.mark.parametrize("fault", [_lose_last, _repeat_first, _rename_one, _kept_and_dropped])
def test_clean_accounting_is_checked_before_anything_is_published(collected, tmp_path, monkeypatch, fault):
    real = clean_records_module.Cleaner.feed
    calls = []

    def feed(self, chunk):
        kept, dropped = real(self, chunk)
        calls.append(1)
        return fault(kept, dropped) if len(calls) == 3 else (kept, dropped)

    monkeypatch.setattr(clean_records_module.Cleaner, "feed", feed)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(AccountingError, match=r"clean: kept \(\d+\) \+ dropped \(\d+\) != input \(\d+\)"):
        clean_jsonl(collected, out, tmp_path / "metrics.json", CleanParams(), chunk_rows=20)
    assert list(out.iterdir()) == [] and not (tmp_path / "metrics.json").exists()


@pytest.mark.parametrize("name", ["a.jsonl", "a.jsonl.gz"])
def test_jsonl_sources_are_read_as_they_come_not_whole(tmp_path, name):
    """The first row comes back before the file is read to its end: lines appended after it was
    yielded are read too (a reader that held the whole file's bytes would not see them)."""
    import gzip

    from sftpipe.collect.readers import read_source

    line = lambda i: (json.dumps({"instruction": f"q{i}", "output": "a"}) + "\n").encode()  # noqa: E731
    p = tmp_path / name
    opener = gzip.open if name.endswith(".gz") else open
    with opener(p, "wb") as f:
        f.write(b"\xef\xbb\xbf" + line(0) + b"\n")          # a BOM and a blank line are read as before
    rows = read_source(str(p))
    first = next(rows)
    assert first.data["instruction"] == "q0" and first.line == 1
    with opener(p, "ab") as f:                              # gzip: a second member, read on
        f.write(line(1))
    rest = list(rows)
    assert [(r.data["instruction"], r.line) for r in rest] == [("q1", 3)]
