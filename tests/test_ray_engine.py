"""engine: ray for dedup and perplexity, on a local Ray (what CI runs, conftest's ``local_ray``): the same output bytes as the local
engine whatever the number of workers or actors, a killed worker retried, one-line errors otherwise.

One local Ray (2 CPUs) serves the whole module: the stages find it connected and use it as it is."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

import ray
from sftpipe.config import (CleanParams, CollectParams, DedupRayParams, ModelParams, PerplexityParams,
                            PerplexityRayParams, RayParams, SampleParams, Source, parse_params)
from sftpipe.dedup import clusters, lsh
from sftpipe.dedup import ray_engine
from sftpipe.dedup.ray_engine import FAULT_ENV, RayEngine, pair_blocks
from sftpipe.errors import UserError
from sftpipe.io import write_jsonl

ROOT = Path(__file__).resolve().parents[1]
OUTPUTS = ("out/kept.jsonl", "out/dropped.jsonl", "out/details.json", "metrics.json", "plot.csv", "plot.png")


@pytest.fixture(scope="module")
def sample_rows(tmp_path_factory):
    """The project's generated sample, collected and cleaned: the dedup stage's real kind of input."""
    from sftpipe.clean.records import clean_records
    from sftpipe.collect.sources import collect
    from sftpipe.sample import SOURCES, generate

    raw = tmp_path_factory.mktemp("raw")
    generate(SampleParams(rows_per_lang=300, seed=5), raw)
    rows = collect(CollectParams(sources=[Source(path=str(raw / f), name=n) for n, f in SOURCES.items()])).records
    return clean_records(rows, CleanParams()).kept


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    """Many signature chunks (the local and Ray engines cut the same ones) and pair-check blocks of a few
    hundred pairs, so that several tasks run."""
    monkeypatch.setattr(clusters, "_CHUNK_ROWS", 128)
    monkeypatch.setattr(ray_engine, "PAIRS_PER_TASK", (50, 400))


def params_file(d: Path, **sections) -> Path:
    """The committed params.yaml with ``sections`` merged in (nested dicts), written to ``d``."""
    data = yaml.safe_load((ROOT / "params.yaml").read_text())

    def merge(into, new):
        for k, v in new.items():
            if isinstance(v, dict) and isinstance(into.get(k), dict):
                merge(into[k], v)
            else:
                into[k] = v

    merge(data, copy.deepcopy(sections))
    f = d / "params.yaml"
    f.write_text(yaml.safe_dump(data, allow_unicode=True))
    return f


def run_stage(stage: str, d: Path, rows: list[dict], **sections):
    """``sftpipe <stage>`` in this process, on ``rows``, into ``d``; returns click's result."""
    from stages.cli import main

    d.mkdir(parents=True, exist_ok=True)
    write_jsonl(d / "in.jsonl", rows)
    args = [stage, "--params", str(params_file(d, **sections)), "--inp", str(d / "in.jsonl"), "--out", str(d / "out"),
            "--metrics", str(d / "metrics.json"), "--plot", str(d / "plot.csv"), "--picture", str(d / "plot.png")]
    return CliRunner().invoke(main, args)


def outputs(d: Path) -> dict[str, bytes]:
    return {f: (d / f).read_bytes() for f in OUTPUTS if (d / f).exists()}


def error_lines(result) -> list[str]:
    return [x for x in result.output.splitlines() if x.startswith("error:")]


# --------------------------------------------------------------------------- params


def test_ray_params_validate_in_one_line():
    base = {"collect": {"sources": [{"path": "x"}]}}
    assert parse_params(base).dedup.engine == "local" and parse_params(base).ray.address is None
    for ok in ("auto", "10.0.0.5:6379", "ray://head.example:10001"):
        assert parse_params({**base, "ray": {"address": ok}}).ray.address == ok
    for bad, msg in [({"ray": {"address": "head.example"}}, "ray.address: expected null, 'auto'"),
                     ({"ray": {"address": "h:6379", "num_cpus": 2}}, "num_cpus sizes the local Ray"),
                     ({"dedup": {"engine": "spark"}}, "dedup.engine: Input should be 'local' or 'ray'"),
                     ({"perplexity": {"ray": {"actors": 0}}}, "perplexity.ray.actors")]:
        with pytest.raises(UserError, match=msg) as e:
            parse_params({**base, **bad})
        assert "\n" not in str(e.value)


# --------------------------------------------------------------------------- dedup


def test_band_tasks_give_the_local_candidate_pairs(local_ray):
    """The sorted union of the band-group tasks (1, 2 or 4 groups of the 5 bands) is what candidate_pairs
    finds over all bands, for any subset of valid columns, with whole bands equal across many rows."""
    rng = np.random.default_rng(0)
    sig = rng.integers(0, 3, size=(16, 400), dtype=np.uint32)      # 3 values: many equal bands
    for workers in (1, 2, None):
        engine = RayEngine(DedupRayParams(workers=workers))
        for valid in (None, np.arange(0, 400, 3), np.array([7]), np.array([], dtype=np.int64)):
            got, want = engine.candidate_pairs(sig, 5, 3, valid), lsh.candidate_pairs(sig, 5, 3, valid)
            assert got.dtype == want.dtype and got.shape == want.shape and np.array_equal(got, want)
    assert len(lsh.candidate_pairs(sig, 5, 3)) > 1000


def test_a_killed_band_task_is_retried_and_the_candidates_are_the_same(local_ray, tmp_path, monkeypatch):
    """The band-group tasks of dedup_records (the in-memory path) on Ray."""
    marker = tmp_path / "died"
    monkeypatch.setenv(FAULT_ENV, f"bands:{marker}")
    sig = np.random.default_rng(2).integers(0, 3, size=(16, 300), dtype=np.uint32)
    got = RayEngine(DedupRayParams(workers=2)).candidate_pairs(sig, 5, 3)
    assert marker.exists() and np.array_equal(got, lsh.candidate_pairs(sig, 5, 3)) and len(got) > 100


def test_in_memory_dedup_on_ray_gives_the_local_result(local_ray, sample_rows):
    """dedup_records (the in-memory path, which the stage no longer takes) with the Ray engine: the same kept rows,
    ledger, metrics and details."""
    from sftpipe.config import DedupParams

    want = clusters.dedup_records(sample_rows, DedupParams())
    got = clusters.dedup_records(sample_rows, DedupParams(engine="ray"), engine=RayEngine(DedupRayParams(workers=2)))
    assert (got.kept, got.dropped, got.extra_metrics, got.details) == (want.kept, want.dropped, want.extra_metrics,
                                                                      want.details)
    assert len(want.dropped) > 20


def test_the_paraphrase_pass_runs_where_the_engine_runs(local_ray):
    """semantic_engine: on Ray (group checks as tasks, embeddings on dedup.ray's actors, the cluster's retries)
    with a Ray engine, here with the local one or none."""
    from sftpipe.config import DedupParams, RayParams

    p = DedupParams()
    assert clusters.semantic_engine(p) == {} and clusters.semantic_engine(p, clusters.LocalEngine()) == {}
    got = clusters.semantic_engine(p, RayEngine(DedupRayParams(), RayParams(max_retries=5)))
    assert got == {"engine": "ray", "actors": p.ray, "max_retries": 5, "section": "dedup.ray"}


@pytest.mark.parametrize("bands", [1, 2, 5])
def test_band_search_tasks_give_the_local_candidates(local_ray, bands):
    """The streamed stage's band search, one task per band (bands read on demand, as from its spill files): the
    local candidates, with buckets over the cap (ordered by the next two bands, circularly), a digit key and a
    subset of valid columns, and for one-row uint64 band keys (the word pass)."""
    from sftpipe.dedup.clusters import LocalEngine

    rng = np.random.default_rng(bands)
    n, rows = 500, 3
    sig = rng.integers(0, 3, size=(bands * rows, n), dtype=np.uint32)     # big buckets
    read: list[int] = []

    def band_of(k):
        read.append(k)
        return sig[k * rows:(k + 1) * rows]

    extra = rng.integers(0, 2, size=n).astype(np.uint64)
    for workers in (1, None):
        engine = RayEngine(DedupRayParams(workers=workers))
        for valid in (np.arange(n), np.arange(0, n, 3)):
            for bucketing in ({}, {"cap": 8, "window": 2}, {"cap": 8, "window": 2, "extra": extra}):
                want = LocalEngine().band_candidates(band_of, bands, rows, n, valid, **bucketing)
                got = engine.band_candidates(band_of, bands, rows, n, valid, **bucketing)
                assert got.dtype == want.dtype and np.array_equal(got, want), (workers, bucketing)
                assert np.array_equal(want, lsh.candidate_pairs(sig, bands, rows, valid, **bucketing))
        keys = rng.integers(0, 40, size=(bands, n)).astype(np.uint64)
        one_row = engine.band_candidates(lambda k: keys[k][None, :], bands, 1, n, np.arange(n))
        assert np.array_equal(one_row, lsh.candidate_pairs(keys, bands, 1)) and len(one_row) > 1000
    assert set(read) == set(range(bands))
    # the cap really cut the buckets: fewer pairs than the uncapped search
    assert len(lsh.candidate_pairs(sig, bands, rows, cap=8, window=2)) < len(lsh.candidate_pairs(sig, bands, rows)) / 2


def test_pair_blocks_cover_the_pairs_once_in_order(monkeypatch):
    monkeypatch.setattr(ray_engine, "PAIRS_PER_TASK", (10, 100))
    for m, slots, want in [(1, 4, 1), (19, 4, 1), (20, 4, 2), (95, 4, 8), (1000, 2, 10), (1001, 2, 11), (0, 2, 0)]:
        blocks = pair_blocks(m, slots)
        assert len(blocks) == want, (m, slots, blocks)
        assert [a for a, _ in blocks] == [0] + [b for _, b in blocks[:-1]] if m else blocks == []
        assert not m or blocks[-1][1] == m
        assert all(b > a for a, b in blocks)


def test_pair_check_tasks_give_the_local_answers(local_ray, sample_rows):
    """Exact Jaccard, edit similarity and the slot check, cut into blocks of tasks, answer each pair as the local
    check does (the same floats, the same reasons), for any number of workers."""
    from sftpipe.config import DedupParams
    from sftpipe.schema import text_of

    p = DedupParams(slot_check=True)
    sk = clusters.sketch([text_of(r, p.field) for r in sample_rows], p)
    n = len(sk.sizes)
    rng = np.random.default_rng(1)
    pairs = np.sort(rng.integers(0, n, size=(1500, 2)), axis=1)
    # the real candidates too: they hold the near pairs (high similarity, slot changes)
    bands, rows = clusters.lsh_params(p)
    cand = lsh.candidate_pairs(sk.sig, bands, rows, np.flatnonzero(sk.sizes > 0))
    pairs = np.concatenate([pairs, cand])
    for workers in (1, 2, None):
        engine = RayEngine(DedupRayParams(workers=workers))
        for kind, data in (("jaccard", (sk.flat, sk.offsets)), ("edits", sk.norm), ("slots", sk.norm)):
            want, got = clusters.check_pairs(kind, data, pairs), engine.check_pairs(kind, data, pairs)
            if kind == "slots":
                assert got == want
            else:
                assert got.dtype == want.dtype and np.array_equal(got, want)
    assert (clusters.check_pairs("jaccard", (sk.flat, sk.offsets), cand) >= p.threshold).sum() > 10
    assert sum(r is not None for r in clusters.check_pairs("slots", sk.norm, cand)) > 0
    assert len(pair_blocks(len(pairs), 2)) == 4                   # several tasks answered
    assert RayEngine().check_pairs("edits", sk.norm, np.zeros((0, 2), dtype=np.int64)).shape == (0,)


@pytest.mark.parametrize("fit_rows", [None, 300])
def test_paraphrase_group_tasks_give_the_local_pairs(local_ray, monkeypatch, fit_rows):
    """The paraphrase pass's group checks, one Ray task per batch of groups (batches of ~20 rows here, so many
    tasks): the same pairs, cosines and evidence as the local pass, with every row in the TF-IDF fit and
    with rows past the fit embedded inside the tasks."""
    from sftpipe.dedup import semantic
    from sftpipe.dedup.semantic import SemanticParams, semantic_pairs
    from sftpipe.sample import dupbench

    b = dupbench.generate(n_per_lang=150, n_long=20, n_typo=5, n_para=30, seed=4)
    params = SemanticParams() if fit_rows is None else SemanticParams(fit_rows=fit_rows)
    monkeypatch.setattr(semantic, "GROUP_ROWS", 20)
    want = semantic_pairs(b.records, params, return_evidence=True)
    got = semantic_pairs(b.records, params, return_evidence=True, engine="ray", max_retries=1, section="dedup.ray")
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1]) and got[2] == want[2]
    assert len(want[0]) > 20                                            # paraphrases were paired
    keys = semantic.row_keys([semantic.request_text(r) for r in b.records],
                             [semantic.answer_text(r) for r in b.records], params)
    _, starts, _ = semantic.candidate_groups(keys, params)
    assert starts[-1] > 5 * 20                                          # several batches, so several tasks


@pytest.fixture(scope="module")
def dedup_local(sample_rows, tmp_path_factory):
    """The dedup stage's output files with the local engine (chunks of 128 rows, as every run here)."""
    mp = pytest.MonkeyPatch()
    mp.setattr(clusters, "_CHUNK_ROWS", 128)
    d = tmp_path_factory.mktemp("dedup_local")
    try:
        res = run_stage("dedup", d, sample_rows)
    finally:
        mp.undo()
    assert res.exit_code == 0, res.output
    return outputs(d)


@pytest.mark.parametrize("workers", [1, 2])
def test_dedup_stage_on_ray_writes_the_local_bytes(local_ray, sample_rows, dedup_local, tmp_path, workers):
    res = run_stage("dedup", tmp_path, sample_rows, dedup={"engine": "ray", "ray": {"workers": workers}})
    assert res.exit_code == 0, res.output
    assert set(dedup_local) == set(OUTPUTS)
    assert outputs(tmp_path) == dedup_local
    m = json.loads(dedup_local["metrics.json"])
    # the sample's injected copies were found: the comparison is not between two empty ledgers
    assert m["dropped_by_reason"]["exact_duplicate"] > 10 and m["dropped_by_reason"]["near_duplicate"] > 10
    assert len(sample_rows) > 6 * 128          # several signature chunks, so several tasks


@pytest.mark.parametrize("step", ["sketch", "bands", "pairs", "groups"])
def test_a_killed_dedup_worker_is_retried_and_the_output_is_the_same(local_ray, sample_rows, dedup_local, tmp_path,
                                                                     monkeypatch, step):
    marker = tmp_path / "died"
    monkeypatch.setenv(FAULT_ENV, f"{step}:{marker}")
    res = run_stage("dedup", tmp_path / "run", sample_rows, dedup={"engine": "ray", "ray": {"workers": 2}})
    assert res.exit_code == 0, res.output
    assert marker.exists()                      # a worker process really exited mid-stage
    assert outputs(tmp_path / "run") == dedup_local


def test_dedup_worker_dying_past_its_retries_is_one_line_and_writes_nothing(local_ray, sample_rows, dedup_local,
                                                                          tmp_path, monkeypatch):
    monkeypatch.setenv(FAULT_ENV, "sketch:always")
    res = run_stage("dedup", tmp_path, sample_rows, dedup={"engine": "ray"}, ray={"max_retries": 1})
    assert res.exit_code == 2, res.output
    (line,) = error_lines(res)
    assert line.startswith("error: dedup: a worker died computing signatures") and "1 retries" in line
    assert "Traceback" not in res.output
    assert not (tmp_path / "out").exists() and not (tmp_path / "metrics.json").exists()
    # the rerun, once workers stop dying, writes the local engine's files
    monkeypatch.delenv(FAULT_ENV)
    again = run_stage("dedup", tmp_path, sample_rows, dedup={"engine": "ray"}, ray={"max_retries": 1})
    assert again.exit_code == 0, again.output
    assert outputs(tmp_path) == dedup_local


@pytest.mark.parametrize("address, message", [
    ("127.0.0.1:1", "error: ray.address 127.0.0.1:1: cannot connect ("),
    ("ray://127.0.0.1:1", "error: ray.address ray://127.0.0.1:1: "),
])
def test_an_unreachable_ray_address_is_one_line(sample_rows, tmp_path, address, message):
    """In a fresh process (this one is connected to the module's Ray): the CLI as dvc runs it."""
    write_jsonl(tmp_path / "in.jsonl", sample_rows[:50])
    line = fresh_process_error("dedup", tmp_path, dedup={"engine": "ray"}, ray={"address": address})
    assert line.startswith(message), line


def fresh_process_error(stage: str, d: Path, **sections) -> str:
    """The one line ``python -m stages.<stage>`` prints on ``d/in.jsonl`` with ``sections`` merged into the
    params, in a fresh process (exit status 2, nothing written)."""
    p = params_file(d, **sections)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop(FAULT_ENV, None)
    r = subprocess.run([sys.executable, "-m", f"stages.{stage}", "--params", str(p), "--inp", str(d / "in.jsonl"),
                        "--out", str(d / "out"), "--metrics", str(d / "m.json"),
                        "--plot", str(d / "p.csv"), "--picture", str(d / "p.png")],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    (line,) = [x for x in r.stderr.splitlines() if not x.startswith(f"[{stage}]")]
    assert not (d / "out").exists()
    return line


# --------------------------------------------------------------------------- perplexity


@pytest.fixture(scope="module")
def ppl_rows(sample_rows):
    return sample_rows[::4]


def test_ray_actors_score_bit_identical_to_the_local_model(local_ray, tiny_model_dir, ppl_rows):
    """One actor at one torch thread against this process at one thread: the same floats, for the
    perplexity pass and both IFD passes."""
    import torch

    from sftpipe.model.loading import load_model, load_tokenizer
    from sftpipe.perplexity import RayModelPool, ifd_rows, score_rows

    mp = ModelParams(name_or_path=str(tiny_model_dir))
    p = PerplexityParams(batch_size=8, template="chat", ray=PerplexityRayParams(actors=1))
    model, tok = load_model(mp).eval(), load_tokenizer(mp)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        want = score_rows(model, tok, ppl_rows, p)
        want_ifd = ifd_rows(model, tok, ppl_rows, p)
    finally:
        torch.set_num_threads(threads)
    with RayModelPool(mp, p, RayParams()) as pool:
        got = score_rows(pool, tok, ppl_rows, p)
        got_ifd = ifd_rows(pool, tok, ppl_rows, p)
    assert got == want and got_ifd == want_ifd
    assert len(set(want)) > len(want) // 2 and None not in want


@pytest.fixture(scope="module")
def ppl_local(ppl_rows, tiny_model_dir, tmp_path_factory):
    import torch

    d = tmp_path_factory.mktemp("ppl_local")
    threads = torch.get_num_threads()
    torch.set_num_threads(2)        # not the actors' 1: the outputs must not depend on it
    try:
        res = run_stage("perplexity", d, ppl_rows, model={"name_or_path": str(tiny_model_dir)},
                        perplexity={"reference": "model"})
    finally:
        torch.set_num_threads(threads)
    assert res.exit_code == 0, res.output
    return outputs(d)


def test_perplexity_stage_on_two_actors_one_killed_writes_the_local_bytes(local_ray, ppl_rows, ppl_local,
                                                                         tiny_model_dir, tmp_path, monkeypatch):
    """Two CPU actors (two torch threads here, one in each actor); the first actor to get a batch
    dies, is restarted by Ray and its batch retried: the stage's files are still the local ones."""
    marker = tmp_path / "died"
    monkeypatch.setenv(FAULT_ENV, f"score:{marker}")
    res = run_stage("perplexity", tmp_path / "run", ppl_rows, model={"name_or_path": str(tiny_model_dir)},
                    perplexity={"reference": "model", "engine": "ray", "ray": {"actors": 2}})
    assert res.exit_code == 0, res.output
    assert marker.exists()
    assert set(ppl_local) == set(OUTPUTS) and outputs(tmp_path / "run") == ppl_local
    assert cpus_come_back()                     # the stage stopped its actors


def cpus_come_back(limit_s: float = 60.0) -> bool:
    """Whether the module's 2 CPUs are all free again (actors release theirs asynchronously once killed)."""
    import time

    end = time.monotonic() + limit_s
    while ray.available_resources().get("CPU", 0) < 2:
        if time.monotonic() > end:
            return False
        time.sleep(0.2)
    return True


def test_perplexity_actor_dying_past_its_restarts_is_one_line(local_ray, ppl_rows, tiny_model_dir, tmp_path,
                                                              monkeypatch):
    monkeypatch.setenv(FAULT_ENV, "score:always")
    res = run_stage("perplexity", tmp_path, ppl_rows[:20], model={"name_or_path": str(tiny_model_dir)},
                    perplexity={"reference": "model", "engine": "ray", "ray": {"actors": 1}}, ray={"max_retries": 0})
    assert res.exit_code == 2, res.output
    (line,) = error_lines(res)
    assert line.startswith("error: perplexity: an actor died scoring a batch"), line
    assert "Traceback" not in res.output and not (tmp_path / "out").exists()


def test_perplexity_on_ray_asks_no_more_than_the_cluster_has(local_ray, ppl_rows, tiny_model_dir, tmp_path):
    res = run_stage("perplexity", tmp_path, ppl_rows[:20], model={"name_or_path": str(tiny_model_dir)},
                    perplexity={"reference": "model", "engine": "ray", "ray": {"actors": 1, "num_gpus_per_actor": 1}})
    assert res.exit_code == 2
    assert error_lines(res) == ["error: perplexity.ray: 1 actors x 1 GPUs need 1, the Ray cluster has 0 (lower "
                                "perplexity.ray.actors or the per-actor GPUs)"]
    res = run_stage("perplexity", tmp_path, ppl_rows[:20], model={"name_or_path": str(tmp_path / "nowhere")},
                    perplexity={"reference": "model", "engine": "ray"})
    assert res.exit_code == 2 and len(error_lines(res)) == 1 and "nowhere" in error_lines(res)[0]


def test_perplexity_on_ray_scores_with_the_reference_it_fitted(local_ray, ppl_rows, tmp_path):
    """reference: fit trains a small LM in the stage's output first; the actors load that one."""
    tiny = {"base": {"hidden_size": 16, "num_layers": 1, "num_heads": 1, "intermediate_size": 16, "seq_len": 16,
                     "batch_size": 2, "steps": 3},
            "perplexity": {"reference": "fit", "fit_vocab_size": 300}}
    rows = ppl_rows[:60]
    local = run_stage("perplexity", tmp_path / "local", rows, **tiny)
    assert local.exit_code == 0, local.output
    on_ray = run_stage("perplexity", tmp_path / "ray", rows,
                       **{**tiny, "perplexity": {**tiny["perplexity"], "engine": "ray", "ray": {"actors": 1}}})
    assert on_ray.exit_code == 0, on_ray.output
    assert (tmp_path / "ray/out/reference/model.safetensors").is_file()
    a, b = outputs(tmp_path / "ray"), outputs(tmp_path / "local")
    ma, mb = json.loads(a.pop("metrics.json")), json.loads(b.pop("metrics.json"))
    assert a == b
    # the metrics name the fitted model's directory and say how long the fit took: nothing else differs
    for m in (ma, mb):
        del m["reference"]["model"], m["reference"]["fit_s"]
    assert ma == mb and ma["reference"]["kind"] == "fit"
