"""Streaming dedup (sftpipe.dedup.stream): the same bytes as the in-memory stage path, in bounded memory."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from sftpipe.collect.sources import collect
from sftpipe.config import CollectParams, DedupParams, EditsParams, SampleParams, SemanticDedupParams, Source
from sftpipe.dedup import stream
from sftpipe.dedup.clusters import dedup_records
from sftpipe.errors import UserError
from sftpipe.io import read_jsonl, write_jsonl
from sftpipe.ledger import write_filter_outputs
from sftpipe.sample import SOURCES, dupbench, generate

OFF = SemanticDedupParams(enabled=False)
FILES = ("kept.jsonl", "dropped.jsonl", "details.json")


def _msgs(prompt, response):
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """The project's sample (exact and near copies, English and Chinese, tool rows), dupbench rows
    (typo copies at 2/5/8%, paraphrases, long rows), typo copies of sample rows, empty texts."""
    raw = tmp_path_factory.mktemp("sample")
    generate(SampleParams(rows_per_lang=300, seed=3), raw)
    recs = collect(CollectParams(sources=[Source(path=str(raw / f), name=n) for n, f in SOURCES.items()])).records
    recs += dupbench.generate(n_per_lang=150, n_long=40, n_typo=15, n_para=15, seed=1).records
    rng = random.Random(7)
    for k, src in enumerate(rng.sample(recs[:900], 40)):
        msgs = [dict(m, content=dupbench.typo(rng, m["content"], 0.03)) if m["role"] in ("user", "assistant")
                and m["content"] else dict(m) for m in src["messages"]]
        recs.append({**src, "id": f"typo:{k}", "messages": msgs})
    for k, (q, a) in enumerate([("", ""), ("", ""), ("  ", "\n"), ("", "")]):
        recs.append({"id": f"empty:{k}", "source": "t", "label": None, "messages": _msgs(q, a), "meta": {}})
    rng.shuffle(recs)
    return recs


def _in_memory(records, p, out, inp):
    rows = read_jsonl(inp)
    assert rows == records
    write_filter_outputs("dedup", rows, dedup_records(rows, p), out / "mem", out / "mem.json")
    return [(out / "mem" / f).read_bytes() for f in FILES] + [(out / "mem.json").read_bytes()]


def _streamed(p, out, inp, **kw):
    m, details = stream.dedup_jsonl(inp, out / "str", out / "str.json", p, **kw)
    files = [(out / "str" / f).read_bytes() for f in FILES] + [(out / "str.json").read_bytes()]
    assert json.loads(files[-1]) == m and json.loads(files[2]) == details
    return files


def both(tmp_path, records, p, **kw):
    inp = tmp_path / "in.jsonl"
    write_jsonl(inp, records)
    return _in_memory(records, p, tmp_path, inp), _streamed(p, tmp_path, inp, **kw)


def test_the_data_has_every_kind_of_row(records, tmp_path):
    """The identity tests below are only worth what the data exercises."""
    mem, _ = both(tmp_path, records, DedupParams(semantic=OFF))
    dropped = [json.loads(x) for x in mem[1].splitlines()]
    reasons = {d["reason"] for d in dropped}
    assert reasons == {"exact_duplicate", "near_duplicate"}
    by = {tuple(d["evidence"]["matched_by"]) for d in dropped if d["reason"] == "near_duplicate"}
    assert {("char_edits",), ("char_edits", "word_jaccard")} <= by        # typo copies word 5-grams miss
    assert any(d["id"].startswith("typo:") for d in dropped)
    assert any(d["id"].startswith("empty:") for d in dropped)              # identical empty texts
    metrics = json.loads(mem[3])
    assert metrics["slot_rejected_pairs"] > 0 and metrics["edit_pairs"] > 0 and metrics["largest_cluster"] >= 3
    kept = [json.loads(x) for x in mem[0].splitlines()]
    assert len({r["meta"]["lang"] for r in kept if "lang" in r["meta"]}) == 2


@pytest.mark.parametrize("chunk_rows", [1, 97, 100_000])
@pytest.mark.parametrize("kw", [{}, {"keep": "lowest_id"}, {"keep": "shortest_response", "prefer_typical": False}],
                         ids=["longest_typical", "lowest_id", "shortest_plain"])
def test_byte_identical_to_the_in_memory_path(records, tmp_path, kw, chunk_rows):
    mem, got = both(tmp_path, records, DedupParams(semantic=OFF, **kw), chunk_rows=chunk_rows)
    assert got == mem


@pytest.mark.parametrize("kw", [
    {"exact": False}, {"near": False}, {"verify": False}, {"field": "prompt"}, {"field": "response"},
    {"edits": EditsParams(enabled=False)}, {"slot_check": False}, {"edits": EditsParams(bands=20, rows=5)},
    {"edits": EditsParams(bucket_cap=None)}, {"edits": EditsParams(bucket_cap=2, window=1)},
    {"edits": EditsParams(bucket_cap=3, window=0, digit_key=False)},
    {"edits": EditsParams(enabled=False), "slot_check": False}, {"threshold": 0.5, "num_perm": 64},
    {"near": False, "semantic": SemanticDedupParams(enabled=True)},     # the semantic pass needs near
], ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items())[:40])
def test_byte_identical_whatever_the_params(records, tmp_path, kw):
    mem, got = both(tmp_path, records, DedupParams(**{"semantic": OFF, **kw}), chunk_rows=211)
    assert got == mem


def test_tiny_blocks_everywhere(records, tmp_path, monkeypatch):
    """Candidate pairs checked a few at a time, rows read back a few at a time, clusters split
    across survivor blocks: the same bytes."""
    monkeypatch.setattr(stream, "PAIR_BLOCK", 5)
    monkeypatch.setattr(stream, "CHUNK_ROWS", 3)
    monkeypatch.setattr(stream, "CHECK_PAIRS", 2)
    mem, got = both(tmp_path, records, DedupParams(semantic=OFF, edits=EditsParams(bucket_cap=4, window=2)),
                    chunk_rows=64)
    assert got == mem


def test_rare_tokens_are_counted_over_the_whole_file(tmp_path):
    """prefer_typical: the typo copy (longer, so longest_response would keep it) loses to its original
    while its misspelt word occurs in no other row; once an unrelated row has that word too, it is not
    rare any more and the longer copy wins. Both paths agree byte for byte either way."""
    en = ("The library opens at nine in the morning and closes at six in the evening, except on Sundays "
          "when it stays closed for cleaning and repairs of the old reading room.")
    pair = [{"id": "a:1", "messages": _msgs("When does it open?", en)},
            {"id": "a:2", "messages": _msgs("When does it open?", en.replace("morning", "mornning"))}]
    p = DedupParams(semantic=OFF)
    for other, kept in (("Do birds sing in the morning?", ["a:1", "a:3"]),
                        ("Do birds sing in the morning? Or mornning, as some write it?", ["a:2", "a:3"])):
        rows = pair + [{"id": "a:3", "messages": _msgs(other, "No idea.")}]
        mem, got = both(tmp_path, rows, p)
        assert got == mem
        assert [json.loads(x)["id"] for x in got[0].splitlines()] == kept


@pytest.mark.parametrize("text", ["", "\n\n  \n", "\r\n"])
def test_empty_input(tmp_path, text):
    inp = tmp_path / "in.jsonl"
    inp.write_text(text, encoding="utf-8")
    p = DedupParams(semantic=OFF)
    assert _streamed(p, tmp_path, inp) == _in_memory([], p, tmp_path, inp)


def test_line_ends_and_blank_lines_read_as_the_reader_reads_them(records, tmp_path):
    lines = [json.dumps(r, ensure_ascii=False) for r in records[:300]]
    body = "".join(line + ("\r\n" if k % 3 == 0 else "\r" if k % 3 == 1 else "\n\n \n") for k, line in enumerate(lines))
    inp = tmp_path / "in.jsonl"
    inp.write_bytes(body.encode("utf-8"))
    p = DedupParams(semantic=OFF)
    assert _streamed(p, tmp_path, inp, chunk_rows=50) == _in_memory(read_jsonl(inp), p, tmp_path, inp)


@pytest.mark.parametrize("bad", ['{"id": "x",', "not json", "\ufeff{}"])
def test_a_bad_line_fails_with_the_readers_one_line_error(tmp_path, bad):
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"id": "ok", "messages": []}\n\n' + bad + "\n{}\n", encoding="utf-8")
    with pytest.raises(UserError) as theirs:
        read_jsonl(inp)
    with pytest.raises(UserError) as ours:
        stream.dedup_jsonl(inp, tmp_path / "out", tmp_path / "m.json", DedupParams(semantic=OFF))
    assert str(ours.value) == str(theirs.value) and ":3: invalid JSON" in str(ours.value)
    assert not (tmp_path / "out").exists() and not (tmp_path / "m.json").exists()


def test_a_missing_file_fails_as_the_reader_does(tmp_path):
    with pytest.raises(UserError) as theirs:
        read_jsonl(tmp_path / "nope.jsonl")
    with pytest.raises(UserError) as ours:
        stream.dedup_jsonl(tmp_path / "nope.jsonl", tmp_path / "out", tmp_path / "m.json", DedupParams(semantic=OFF))
    assert str(ours.value) == str(theirs.value)


@pytest.mark.parametrize("chunk_rows", [1, 97])
@pytest.mark.parametrize("kw", [
    {}, {"keep": "lowest_id", "prefer_typical": False}, {"field": "prompt"},
    {"semantic": SemanticDedupParams(fit_rows=300)},            # the embedder and templates fitted on a sample
    {"semantic": SemanticDedupParams(field="all", label_rows=3)},
    {"edits": EditsParams(enabled=False), "slot_check": False},
], ids=["defaults", "lowest_id", "field_prompt", "fit_300", "embed_all", "word_only"])
def test_the_paraphrase_pass_streams_byte_identical(records, tmp_path, kw, chunk_rows, monkeypatch):
    """With the paraphrase pass on (the default), candidate groups read back a few rows at a time."""
    from sftpipe.dedup import semantic

    monkeypatch.setattr(semantic, "GROUP_ROWS", 5)
    mem, got = both(tmp_path, records, DedupParams(**kw), chunk_rows=chunk_rows)
    assert got == mem
    dropped = [json.loads(x) for x in mem[1].splitlines()]
    para = [d for d in dropped if d["reason"] == "paraphrase"]
    assert para and all(d["evidence"]["matched_by"] == ["semantic"] and d["evidence"]["rule"]["rule"] for d in para)
    assert json.loads(mem[3])["semantic_pairs"] >= len(para)


def test_paraphrase_matches_of_exact_copies(tmp_path):
    """Semantic pairs join rows, not exact groups: a copy's own paraphrase match and its group's first row's
    matches are weighed together, as the in-memory path does (kept row first, then similarity, then order)."""
    def row(rid, q, a):
        return {"id": rid, "source": "t", "label": None, "meta": {}, "messages": _msgs(q, a)}

    recs = [row("a", "Kenya: its capital?", "Nairobi is the capital of Kenya."),
            row("b", "The capital of Kenya is which city?", "Nairobi is the capital of Kenya."),
            row("c", "The capital of Kenya is which city?", "Nairobi is the capital of Kenya."),
            row("d", "Which city is the capital of Kenya?", "Nairobi is the capital of Kenya!"),
            row("e", "Which city is the capital of Kenya?", "Nairobi is the capital of Kenya!"),
            row("f", "Of Kenya, the capital is which city?", "Nairobi: the capital of Kenya.")]
    for keep in ("longest_response", "shortest_response", "lowest_id"):
        mem, got = both(tmp_path, recs, DedupParams(keep=keep, prefer_typical=False))
        assert got == mem, keep
        dropped = [json.loads(x) for x in mem[1].splitlines()]
        assert {d["reason"] for d in dropped} == {"exact_duplicate", "paraphrase"}, keep
        # the copy of the dropped paraphrase is no copy of the kept row: a paraphrase too, matched to it
        para = [d for d in dropped if d["reason"] == "paraphrase"]
        assert len(para) == 2 and {d["evidence"]["matched_id"] for d in para} == {d["evidence"]["kept_id"] for d in para}


def test_an_input_changed_between_passes_writes_nothing(records, tmp_path, monkeypatch):
    inp = tmp_path / "in.jsonl"
    write_jsonl(inp, records[:200])
    real = stream._pick_survivors

    def then_edit(path, *a, **kw):
        out = real(path, *a, **kw)
        rows = read_jsonl(path)
        rows[150]["id"] = "someone-else"
        write_jsonl(path, rows)
        return out
    monkeypatch.setattr(stream, "_pick_survivors", then_edit)
    with pytest.raises(UserError, match="changed while dedup was reading it"):
        stream.dedup_jsonl(inp, tmp_path / "out", tmp_path / "m.json", DedupParams(semantic=OFF))
    assert not list((tmp_path / "out").rglob("*")) and not (tmp_path / "m.json").exists()


def test_the_histogram_floor_never_exceeds_the_edit_distance(records):
    """The typo pass skips a pair when this floor already rules the edit check out: it must be a
    true lower bound of the Levenshtein distance (any texts: words, CJK, emptiness, long runs)."""
    from rapidfuzz.distance import Levenshtein

    rng = random.Random(3)
    texts = [m["content"] for r in records[:400] for m in r["messages"]] + ["", "a" * 600, "ab" * 300, "é" * 300]
    a = [rng.choice(texts) for _ in range(3000)]
    b = [dupbench.typo(rng, x, rng.choice((0.02, 0.3))) if rng.random() < 0.5 else rng.choice(texts) for x in a]
    floor = stream._levenshtein_floor(stream._char_histograms(a), stream._char_histograms(b))
    dist = np.array([Levenshtein.distance(x, y) for x, y in zip(a, b)])
    assert (floor <= dist).all() and (floor > 0).mean() > 0.5 and (floor == dist).any()
