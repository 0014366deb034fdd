"""engine: ray for the model embeddings (dedup's paraphrase pass, select): the local batches on a pool of
Ray actors, so the same floats at 1 or 2 actors, a killed actor retried, one-line errors otherwise.

One local Ray (2 CPUs) serves the whole module: the stages find it connected and use it as it is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sftpipe.config import ActorPoolParams, SelectParams
from sftpipe.dedup import semantic
from sftpipe.errors import UserError
from sftpipe.ray_session import FAULT_ENV
from sftpipe.select.choose import embed_rows
from tests.conftest import torch_threads
from tests.test_ray_engine import fresh_process_error, run_stage


@pytest.fixture(scope="module")
def texts():
    """Texts of many lengths (the batches pad differently), a repeat, and more than a few batches of 8."""
    rng = np.random.default_rng(3)
    words = "the capital of kenya is nairobi seven minus three is four 首都 是 内罗毕 translate this review".split()
    out = [" ".join(rng.choice(words, size=int(rng.integers(1, 40)))) for _ in range(45)]
    return out + out[:3]


def local_embed(texts, model_dir):
    with torch_threads(1):
        return semantic.embed(texts, method="base_model", model=str(model_dir), batch_size=8)


@pytest.mark.parametrize("actors", [1, 2])
def test_ray_embeddings_are_bit_identical_to_local(local_ray, tiny_model_dir, texts, actors):
    want = local_embed(texts, tiny_model_dir)
    got = semantic.embed(texts, method="base_model", model=str(tiny_model_dir), batch_size=8, engine="ray",
                         actors=ActorPoolParams(actors=actors))
    assert got.dtype == want.dtype and np.array_equal(got, want)
    assert len({r.tobytes() for r in want}) > 40         # real, distinct rows
    # tfidf ignores the engine: one global fit in this process
    assert np.array_equal(semantic.embed(texts, engine="ray"), semantic.embed(texts))


def test_a_killed_embedding_actor_is_retried_and_the_rows_are_the_same(local_ray, tiny_model_dir, texts, tmp_path,
                                                                      monkeypatch):
    marker = tmp_path / "died"
    monkeypatch.setenv(FAULT_ENV, f"embed:{marker}")
    got = semantic.embed(texts, method="base_model", model=str(tiny_model_dir), batch_size=8, engine="ray",
                         actors=ActorPoolParams(actors=2))
    assert marker.exists()                      # an actor process really exited mid-run
    assert np.array_equal(got, local_embed(texts, tiny_model_dir))


def test_embedding_actor_dying_past_its_restarts_is_one_line(local_ray, tiny_model_dir, texts, monkeypatch):
    monkeypatch.setenv(FAULT_ENV, "embed:always")
    p = SelectParams(embedding={"method": "base_model", "model": str(tiny_model_dir), "batch_size": 8},
                     engine="ray", ray={"actors": 1})
    recs = [{"id": str(i), "source": "s", "meta": {}, "messages": [{"role": "user", "content": t},
                                                                     {"role": "assistant", "content": "ok"}]}
            for i, t in enumerate(texts[:10])]
    with pytest.raises(UserError, match=r"^select: an actor died embedding a batch, and again on each of its 0 "
                                        r"retries") as e:
        embed_rows(recs, p, max_retries=0)
    assert "\n" not in str(e.value)


def test_an_impossible_gpu_ask_is_one_line(local_ray, tiny_model_dir, texts):
    with pytest.raises(UserError) as e:
        semantic.embed(texts, method="base_model", model=str(tiny_model_dir), engine="ray",
                       actors=ActorPoolParams(actors=1, num_gpus_per_actor=1), section="select.ray")
    assert str(e.value) == ("select.ray: 1 actors x 1 GPUs need 1, the Ray cluster has 0 (lower select.ray.actors "
                            "or the per-actor GPUs)")


# --------------------------------------------------------------------------- the stages


def select_rows(texts):
    return [{"id": f"s:{i}", "source": "s", "label": "qa", "meta": {"lang": "en", "ifd": 0.1 + 0.01 * i},
             "messages": [{"role": "user", "content": f"question {i}: {t}"},
                          {"role": "assistant", "content": t[::-1]}]}
            for i, t in enumerate(texts)]


def all_files(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*"))
            if p.is_file() and p.name not in ("params.yaml", "in.jsonl")}


SELECT = {"method": "diverse", "budget": 20, "threshold": 0.97,
          "embedding": {"method": "base_model", "batch_size": 8}}


@pytest.fixture(scope="module")
def select_local(tiny_model_dir, texts, tmp_path_factory):
    d = tmp_path_factory.mktemp("select_local")
    sel = {**SELECT, "embedding": {**SELECT["embedding"], "model": str(tiny_model_dir)}}
    with torch_threads(2):          # not the actors' 1: the outputs must not depend on it
        res = run_stage("select", d, select_rows(texts), select=sel)
    assert res.exit_code == 0, res.output
    files = all_files(d)
    assert {"out/train.jsonl", "out/dropped.jsonl", "metrics.json", "plot.png"} <= set(files)
    return files


@pytest.mark.parametrize("actors", [1, 2])
def test_select_stage_on_ray_writes_the_local_bytes(local_ray, tiny_model_dir, texts, select_local, tmp_path,
                                                    monkeypatch, actors):
    """With 2 actors, the first to get a batch dies and is restarted: still the local files."""
    marker = tmp_path / "died"
    if actors == 2:
        monkeypatch.setenv(FAULT_ENV, f"embed:{marker}")
    sel = {**SELECT, "embedding": {**SELECT["embedding"], "model": str(tiny_model_dir)}, "engine": "ray",
           "ray": {"actors": actors}}
    res = run_stage("select", tmp_path / "run", select_rows(texts), select=sel)
    assert res.exit_code == 0, res.output
    assert marker.exists() == (actors == 2)
    assert all_files(tmp_path / "run") == select_local


def test_dedup_paraphrase_pass_on_ray_writes_the_local_bytes(local_ray, tiny_model_dir, texts, tmp_path,
                                                             monkeypatch):
    """dedup.engine: ray embeds the paraphrase pass on dedup.ray's actors (one killed and retried)."""
    rows = select_rows(texts)
    rows += [{**r, "id": f"p:{r['id']}", "messages": [{"role": "user", "content": "please, " +
                                                       r["messages"][0]["content"]}, r["messages"][1]]}
             for r in rows[:8]]         # paraphrases: same answer, the request reworded
    sem = {"method": "base_model", "model": str(tiny_model_dir), "batch_size": 8}
    local = run_stage("dedup", tmp_path / "local", rows, dedup={"semantic": sem})
    marker = tmp_path / "died"
    monkeypatch.setenv(FAULT_ENV, f"embed:{marker}")
    on_ray = run_stage("dedup", tmp_path / "ray", rows,
                       dedup={"semantic": sem, "engine": "ray", "ray": {"actors": 2}})
    assert local.exit_code == 0 and on_ray.exit_code == 0, local.output + on_ray.output
    assert marker.exists()                      # the embeddings ran on the actors
    assert all_files(tmp_path / "ray") == all_files(tmp_path / "local")
    assert b"paraphrase" in (tmp_path / "local/out/dropped.jsonl").read_bytes()


def test_select_on_ray_with_an_unreachable_address_is_one_line(tiny_model_dir, texts, tmp_path):
    """In a fresh process (this one is connected to the module's Ray): the CLI as dvc runs it."""
    from sftpipe.io import write_jsonl

    write_jsonl(tmp_path / "in.jsonl", select_rows(texts[:10]))
    sel = {**SELECT, "embedding": {**SELECT["embedding"], "model": str(tiny_model_dir)}, "engine": "ray"}
    line = fresh_process_error("select", tmp_path, select=sel, ray={"address": "127.0.0.1:1"})
    assert line.startswith("error: ray.address 127.0.0.1:1: cannot connect ("), line


def test_select_params_validate_in_one_line():
    assert SelectParams().engine == "local" and SelectParams().ray == ActorPoolParams()
    from sftpipe.config import parse_params

    for bad, msg in [({"select": {"engine": "spark"}}, "select.engine: Input should be 'local' or 'ray'"),
                     ({"select": {"ray": {"actors": 0}}}, "select.ray.actors"),
                     ({"dedup": {"ray": {"num_gpus_per_actor": -1}}}, "dedup.ray.num_gpus_per_actor")]:
        with pytest.raises(UserError, match=msg) as e:
            parse_params({"collect": {"sources": [{"path": "x"}]}, **bad})
        assert "\n" not in str(e.value)
