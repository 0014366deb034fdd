"""The dedup stage streams (sftpipe/dedup/stream.py) when the paraphrase pass is off, with the bytes
the in-memory path writes; with it on, it reads every row as before."""

from __future__ import annotations

import pytest

import sftpipe.dedup.stream as stream
from tests.test_ray_engine import outputs, run_stage, sample_rows  # noqa: F401  (sample_rows: a fixture)

OFF = {"dedup": {"semantic": {"enabled": False}}}


@pytest.fixture
def calls(monkeypatch):
    seen = []
    real = stream.dedup_jsonl

    def spy(*a, **kw):
        seen.append(a[0])
        return real(*a, **kw)

    monkeypatch.setattr(stream, "dedup_jsonl", spy)
    return seen


def test_the_stage_streams_without_the_paraphrase_pass_and_writes_the_in_memory_bytes(
        sample_rows, tmp_path, calls, monkeypatch):  # noqa: F811
    res = run_stage("dedup", tmp_path / "stream", sample_rows, **OFF)
    assert res.exit_code == 0, res.output
    assert len(calls) == 1
    got = outputs(tmp_path / "stream")
    monkeypatch.setattr(stream, "streamable", lambda p: False)         # force the in-memory path
    res = run_stage("dedup", tmp_path / "memory", sample_rows, **OFF)
    assert res.exit_code == 0, res.output
    assert len(calls) == 1
    want = outputs(tmp_path / "memory")
    assert got == want and any(b'"reason":"near_duplicate"' in v or b'"near_duplicate"' in v for v in got.values())
    assert (tmp_path / "stream" / "plot.csv").read_bytes() == (tmp_path / "memory" / "plot.csv").read_bytes()


def test_the_paraphrase_pass_keeps_the_in_memory_path(sample_rows, tmp_path, calls):  # noqa: F811
    res = run_stage("dedup", tmp_path / "d", sample_rows)
    assert res.exit_code == 0, res.output
    assert calls == []
