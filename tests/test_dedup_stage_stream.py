"""The dedup stage streams (sftpipe/dedup/stream.py), paraphrase pass on or off, with the bytes the
in-memory path writes."""

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


@pytest.mark.parametrize("over", [{}, OFF], ids=["paraphrases", "no_paraphrases"])
def test_the_stage_streams_and_writes_the_in_memory_bytes(sample_rows, tmp_path, calls, over):  # noqa: F811
    from sftpipe.config import load_params
    from sftpipe.dedup.clusters import dedup_records
    from sftpipe.io import read_jsonl
    from sftpipe.ledger import write_filter_outputs

    res = run_stage("dedup", tmp_path / "stream", sample_rows, **over)
    assert res.exit_code == 0, res.output
    assert len(calls) == 1
    got = outputs(tmp_path / "stream")
    params = load_params(tmp_path / "stream" / "params.yaml")
    records = read_jsonl(tmp_path / "stream" / "in.jsonl")
    write_filter_outputs("dedup", records, dedup_records(records, params.dedup), tmp_path / "memory" / "out",
                         tmp_path / "memory" / "metrics.json")
    want = outputs(tmp_path / "memory")
    assert {k: v for k, v in got.items() if k in want} == want
    assert any(b'"near_duplicate"' in v for v in got.values())
    assert any(b'"paraphrase"' in v for v in got.values()) == (over == {})
