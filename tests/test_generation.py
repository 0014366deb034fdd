"""Generation backends (sftpipe.create.backends, sftpipe.model.generation): batched local generation
with K seeded samples, and an OpenAI-compatible endpoint (a real local HTTP server started here,
also serving the tiny model) with faults, the cache and a run killed mid-way."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lookup_model import LOOKUP
from openai_server import FakeOpenAI, closed_url, kill_once_cached
from sftpipe.config import EndpointParams, GenerationParams, ModelParams
from sftpipe.create.backends import build_request, candidate_rows, generate, prompt_messages
from sftpipe.errors import UserError
from sftpipe.llm.openai_chat import request_hash



def rec(i: int, prompt: str, reply: str | None = "ref", **extra) -> dict:
    msgs = [{"role": "user", "content": prompt}] + ([{"role": "assistant", "content": reply}] if reply else [])
    return {"id": f"g:{i}", "source": "g", "label": "qa", "meta": {"lang": "en"}, "messages": msgs, **extra}


PROMPTS = ["what is two plus two", "name a colour", "translate the word cat into french please now",
           "say hi", "count to three slowly", "which city is the capital of france", "reverse: a b c"]


def oa(url: str, tmp_path: Path, **kw) -> GenerationParams:
    ep = {"base_url": url, "model": "teacher", "concurrency": 4, "timeout": 2.0, "max_retries": 3, "backoff": 0.0}
    ep.update(kw.pop("openai", {}))
    return GenerationParams(backend="openai", openai=EndpointParams(**ep), cache_dir=str(tmp_path / "cache"),
                            **{"k": 2, "temperature": 0.8, **kw})


def numbered(body: dict) -> list[str]:
    last = body["messages"][-1]["content"]
    return [f"{last} | sample {j}" for j in range(body.get("n", 1))]


# ---------------------------------------------------------------------------------------------- transformers

@pytest.fixture(scope="module")
def tiny(lookup_model_dir):
    """The tiny LLaMA that learned tests/lookup_model.LOOKUP: greedy replies are real text."""
    from sftpipe.model.loading import load_model, load_tokenizer

    mp = ModelParams(name_or_path=str(lookup_model_dir))
    return mp, load_model(mp).eval(), load_tokenizer(mp)


def test_batched_greedy_equals_one_prompt_at_a_time(tiny):
    from sftpipe.model.generation import generate_replies

    _, model, tok = tiny
    records = [rec(i, q) for i, (q, _) in enumerate(LOOKUP)]
    batched = generate_replies(model, tok, records, max_new_tokens=24, batch_size=4)
    single = generate_replies(model, tok, records, max_new_tokens=24, batch_size=1)
    assert batched == single == [[a] for _, a in LOOKUP]      # left padding changes nothing


def test_k_samples_are_seeded_and_prompt_only_records_work(tiny):
    from sftpipe.model.generation import generate_replies, prompt_ids

    _, model, tok = tiny
    records = [rec(i, q, reply=None if i % 2 else "ref") for i, (q, _) in enumerate(LOOKUP)]
    assert prompt_ids(tok, records[1]) == prompt_ids(tok, rec(1, LOOKUP[1][0], reply="anything"))
    kw = dict(max_new_tokens=10, batch_size=3, k=3, temperature=3.0)
    a = generate_replies(model, tok, records, seed=0, **kw)
    b = generate_replies(model, tok, records, seed=0, **kw)
    c = generate_replies(model, tok, records, seed=1, **kw)
    assert a == b and a != c
    assert all(len(r) == 3 for r in a)
    assert any(len(set(r)) > 1 for r in a)          # K samples of one prompt differ
    with pytest.raises(ValueError, match="greedy"):
        generate_replies(model, tok, records, max_new_tokens=4, batch_size=2, k=2, temperature=0.0)


def test_greedy_with_several_samples_and_an_incomplete_endpoint_are_refused():
    with pytest.raises(ValueError, match="temperature 0"):
        GenerationParams(k=4, temperature=0.0)
    with pytest.raises(ValueError, match="openai.base_url and openai.model"):
        GenerationParams(backend="openai", openai=EndpointParams(base_url="http://x/v1"))
    with pytest.raises(ValueError, match="NAME of an environment variable"):
        EndpointParams(api_key_env="sk-live-1234")


def test_transformers_backend_and_candidate_rows(tiny, tmp_path):
    mp, _, _ = tiny
    records = [rec(i, q) for i, (q, _) in enumerate(LOOKUP[:3])]
    gp = GenerationParams(k=2, temperature=1.0, max_new_tokens=6, batch_size=2)
    res = generate(records, gp, mp)
    rows = candidate_rows(records, res, "tiny")
    assert [r["id"] for r in rows] == ["g:0#0", "g:0#1", "g:1#0", "g:1#1", "g:2#0", "g:2#1"]
    for row, (i, j) in zip(rows, [(i, j) for i in range(3) for j in range(2)]):
        assert row["messages"][:-1] == prompt_messages(records[i])        # the reference reply is not kept
        assert row["messages"][-1] == {"role": "assistant", "content": res[i]["replies"][j]}
        assert row["meta"]["candidate_of"] == records[i]["id"] and row["meta"]["candidate"] == j
        assert row["label"] == "qa" and row["source"] == "g"


# ---------------------------------------------------------------------------------------------- openai

def test_openai_backend_sends_the_prompt_with_n_and_returns_k_replies_in_order(tmp_path):
    records = [rec(i, p) for i, p in enumerate(PROMPTS)] + [rec(99, PROMPTS[0])]    # a repeated prompt
    with FakeOpenAI(reply=numbered, models=("teacher",)) as srv:
        gp = oa(srv.url, tmp_path, k=3, top_p=0.9, max_new_tokens=40, seed=7)
        out = generate(records, gp, ModelParams())
        assert srv.count == len(PROMPTS)                                     # the repeated prompt asked once
        body = srv.requests[0]
        assert {body["n"], body["top_p"], body["max_tokens"], body["seed"], body["temperature"]} == {3, 0.9, 40, 7, 0.8}
        assert all(m["content"] != "ref" for b in srv.requests for m in b["messages"])   # no reference reply sent
    for r, o in zip(records, out):
        last = r["messages"][0]["content"]
        assert o["replies"] == [f"{last} | sample {j}" for j in range(3)] and o["error"] is None


def test_a_rerun_is_served_from_the_cache_with_zero_requests(tmp_path):
    records = [rec(i, p) for i, p in enumerate(PROMPTS)]
    with FakeOpenAI(reply=numbered, models=("teacher",)) as srv:
        gp = oa(srv.url, tmp_path)
        first = generate(records, gp, ModelParams())
        srv.reset()
        again = generate(records, gp, ModelParams())
        assert srv.count == 0
        assert [o["replies"] for o in again] == [o["replies"] for o in first] and all(o["cached"] for o in again)
        generate(records, gp.model_copy(update={"seed": 1}), ModelParams())   # another seed is another request
        assert srv.count == len(PROMPTS)


@pytest.mark.parametrize("fault", ["429", "500", "503", "malformed", "no_choices", "close", "timeout", "short"])
def test_transient_faults_are_retried(tmp_path, fault):
    short = {"status": 200, "body": {"choices": [{"index": 0, "message": {"role": "assistant", "content": "one"},
                                                  "finish_reason": "stop"}]}}
    action = short if fault == "short" else fault

    def faults(n, body, attempt):
        return action if attempt == 0 else None

    records = [rec(i, p) for i, p in enumerate(PROMPTS[:3])]
    with FakeOpenAI(reply=numbered, faults=faults, stall=3.0, models=("teacher",)) as srv:
        out = generate(records, oa(srv.url, tmp_path, openai={"timeout": 1.0}), ModelParams())
        assert srv.count == 6                                                # each asked twice
    assert [o["replies"] for o in out] == [numbered({"messages": r["messages"][:1], "n": 2}) for r in records]


def test_retries_run_out_is_a_row_error_and_the_rest_come_back(tmp_path):
    bad = PROMPTS[1]
    records = [rec(i, p) for i, p in enumerate(PROMPTS[:3])]
    with FakeOpenAI(reply=numbered, faults=lambda n, body, a: "500" if body["messages"][-1]["content"] == bad else None,
                    models=("teacher",)) as srv:
        out = generate(records, oa(srv.url, tmp_path), ModelParams())
    assert out[1]["replies"] is None and out[1]["error"].startswith("http 500")
    assert out[0]["replies"] and out[2]["replies"]
    assert [r["id"] for r in candidate_rows(records, out, "t")] == ["g:0#0", "g:0#1", "g:2#0", "g:2#1"]


def test_a_refused_connection_is_one_line_error_naming_the_endpoint(tmp_path):
    url = closed_url()
    with pytest.raises(UserError, match=r"^cannot reach generation.openai endpoint http://127.0.0.1:\d+/v1 "
                                        r"\(connection refused\)$"):
        generate([rec(0, "hi")], oa(url, tmp_path, openai={"max_retries": 1}), ModelParams())


def test_an_unknown_model_stops_with_a_hint(tmp_path):
    with FakeOpenAI(reply=numbered, faults=lambda n, b, a: "404", models=("teacher",)) as srv:
        with pytest.raises(UserError, match=r"HTTP 404.*check generation.openai.model \('teacher'\)"):
            generate([rec(0, "hi")], oa(srv.url, tmp_path), ModelParams())


KILL_SCRIPT = """
import json, sys
from sftpipe.config import GenerationParams, ModelParams
from sftpipe.create.backends import generate
gp, recs = GenerationParams.model_validate_json(sys.argv[1]), json.loads(sys.argv[2])
generate(recs, gp, ModelParams())
print("finished")
"""


def test_a_killed_run_keeps_what_it_got_and_the_rerun_asks_only_for_the_rest(tmp_path):
    records = [rec(i, f"prompt number {i}") for i in range(16)]
    cache = tmp_path / "cache"
    with FakeOpenAI(reply=numbered, latency=0.25, models=("teacher",)) as srv:
        gp = oa(srv.url, tmp_path, openai={"concurrency": 2, "timeout": 5.0})
        done = kill_once_cached(KILL_SCRIPT, [gp.model_dump_json(), json.dumps(records)], cache, 4)
        assert 4 <= len(done) < 16
        for f in cache.rglob("*.json"):                    # complete entries, each with its k replies
            entry = json.loads(f.read_text())
            assert entry["key"] == f.stem and len(entry["content"]) == 2
        srv.wait_idle()
        srv.reset()
        out = generate(records, gp, ModelParams())
        asked = {request_hash(build_request(rec(0, b["messages"][-1]["content"]), gp)) for b in srv.requests}
    keys = {request_hash(build_request(r, gp)) for r in records}
    assert asked == keys - done and srv.count == len(keys - done)      # nothing twice, nothing lost
    assert all(o["replies"] == numbered({"messages": r["messages"][:1], "n": 2}) for r, o in zip(records, out))


def test_a_server_serving_the_tiny_model_agrees_with_the_local_backend(tiny, tmp_path):
    """The test's server runs the tiny model itself: greedy replies through HTTP equal local ones."""
    from sftpipe.model.generation import generate_replies

    mp, model, tok = tiny

    def serve(body):
        r = {"messages": body["messages"]}
        return generate_replies(model, tok, [r], max_new_tokens=body["max_tokens"], batch_size=1)[0] * body["n"]

    records = [rec(i, q) for i, (q, _) in enumerate(LOOKUP)]
    with FakeOpenAI(reply=serve, models=("teacher",)) as srv:
        remote = generate(records, oa(srv.url, tmp_path, k=1, temperature=0.0, max_new_tokens=24), mp)
    local = generate(records, GenerationParams(k=1, temperature=0.0, max_new_tokens=24, batch_size=4), mp)
    assert [o["replies"] for o in remote] == [o["replies"] for o in local] == [[a] for _, a in LOOKUP]
