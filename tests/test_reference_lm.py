"""The perplexity stage's reference LM: which one ``auto`` picks, and the LM fitted on the rows themselves
(deterministic, and it tells garbage from the data's typical rows)."""

import json
import random
import statistics
from pathlib import Path

import pytest

from sftpipe.config import BaseParams, PerplexityParams, load_params, parse_params
from sftpipe.model.loading import load_model, load_tokenizer
from sftpipe.model.templates import MARKUP_TOKENS
from sftpipe.perplexity import fit_reference, fit_steps, perplexity_filter, reference_choice, score_rows
from sftpipe.sample.defects import garbage

ROOT = Path(__file__).resolve().parents[1]

# small enough to fit in a few seconds (about 50 steps)
TINY_BASE = BaseParams(vocab_size=300, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, seq_len=32,
                       batch_size=8, lr=0.01, steps=60, seed=3)
TINY_PPL = PerplexityParams(fit_epochs=3.0, fit_vocab_size=300, batch_size=16, max_length=64)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny fits are all overhead: on a busy 2-core machine a second thread only waits at barriers."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def with_changes(**sections) -> dict:
    import yaml

    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, values in sections.items():
        data[section] = {**data.get(section, {}), **values}
    return data


def test_auto_is_the_model_on_the_sample_sources():
    """params.yaml as committed: today's behaviour, scoring with the built-in base."""
    params = load_params(ROOT / "params.yaml")
    assert params.perplexity.reference == "auto"
    kind, why = reference_choice(params)
    assert kind == "model" and "sample" in why
    # a subset of the sample's files, written another way, is still the sample
    subset = parse_params(with_changes(collect={"sources": [{"path": "./data/raw/alpaca_en.json"},
                                                            {"path": "data/raw/../raw/sharegpt_zh.jsonl"}]}))
    assert reference_choice(subset)[0] == "model"


def test_auto_fits_for_other_sources_and_yields_to_a_named_model():
    mine = {"sources": [{"path": "data/raw/alpaca_en.json"}, {"path": "data/sources/mine.jsonl"}]}
    kind, why = reference_choice(parse_params(with_changes(collect=mine)))
    assert kind == "fit" and "data/sources/mine.jsonl" in why
    # another model was named: it is the reference
    assert reference_choice(parse_params(with_changes(collect=mine, model={"name_or_path": "Qwen/Qwen2.5-0.5B"})))[0] \
        == "model"
    assert reference_choice(parse_params(with_changes(collect=mine, perplexity={"model": "some/lm"})))[0] == "model"
    # an explicit choice wins either way
    assert reference_choice(parse_params(with_changes(collect=mine, perplexity={"reference": "model"})))[0] == "model"
    assert reference_choice(parse_params(with_changes(perplexity={"reference": "fit"})))[0] == "fit"


def test_fit_steps_follow_the_epochs_and_stop_at_the_cap():
    b = BaseParams(batch_size=4, seq_len=25, steps=50)
    assert fit_steps(1000, PerplexityParams(fit_epochs=1.0), b) == 10
    assert fit_steps(1000, PerplexityParams(fit_epochs=2.5), b) == 25
    assert fit_steps(1000_000, PerplexityParams(fit_epochs=1.0), b) == 50        # base.steps
    assert fit_steps(1000_000, PerplexityParams(fit_max_steps=7), b) == 7
    assert fit_steps(3, PerplexityParams(), b) == 1


def rec(i, prompt, reply):
    return {"id": f"u:{i}", "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}],
            "source": "u", "label": None, "meta": {"lang": "en"}}


COLOURS = ["red", "blue", "green", "yellow", "black", "white", "orange", "purple"]
THINGS = ["car", "house", "door", "ball", "chair", "kite", "boat", "lamp", "cup", "hat", "bag", "bike"]
ANIMALS = {"cat": 4, "dog": 4, "bird": 2, "spider": 8, "ant": 6, "horse": 4, "duck": 2, "fish": 0}


def user_rows(n=150, n_garbage=8, seed=0) -> tuple[list[dict], set[str]]:
    """Templated English rows (not the sample's kind), and ``n_garbage`` of them given garbage replies of
    the sample generator's kinds (no mojibake: an English row with it would be grouped as Chinese)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        t = i % 3
        if t == 0:
            thing, colour = rng.choice(THINGS), rng.choice(COLOURS)
            rows.append(rec(i, f"What colour is the {thing} in the picture?", f"The {thing} in the picture is {colour}."))
        elif t == 1:
            animal = rng.choice(sorted(ANIMALS))
            rows.append(rec(i, f"How many legs does a {animal} have?", f"A {animal} has {ANIMALS[animal]} legs."))
        else:
            a, b = rng.randint(1, 50), rng.randint(1, 50)
            rows.append(rec(i, f"Add {a} and {b}.", f"The sum of {a} and {b} is {a + b}."))
    bad = set()
    for j, i in enumerate(rng.sample(range(n), n_garbage)):
        kind = ("random_chars", "keyboard_mash", "repeated_tokens", "boilerplate")[j % 4]
        reply = rows[i]["messages"][1]["content"]
        rows[i]["messages"][1]["content"] = garbage(rng, kind, "en", reply, "")
        bad.add(rows[i]["id"])
    return rows, bad


def repeated_word(rows, ids) -> set[str]:
    """The rows among ``ids`` whose reply is one word repeated (garbage kind repeated_tokens)."""
    words = {r["id"]: r["messages"][1]["content"].split() for r in rows if r["id"] in ids}
    return {i for i, w in words.items() if len(w) > 1 and len(set(w)) == 1}


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    rows, bad = user_rows()
    d = tmp_path_factory.mktemp("reference")
    summary = fit_reference(rows, TINY_PPL, TINY_BASE, d, log=lambda *_: None)
    return rows, bad, d, summary


def scores_of(d, rows):
    from sftpipe.config import ModelParams

    mp = ModelParams(name_or_path=str(d))
    return score_rows(load_model(mp).eval(), load_tokenizer(mp), rows, TINY_PPL)


def test_fitted_reference_is_a_model_directory_with_a_summary(fitted):
    rows, _, d, summary = fitted
    assert (d / "model.safetensors").is_file() and (d / "tokenizer.json").is_file()
    assert summary["rows"] == len(rows) and summary["steps"] == fit_steps(summary["tokens"], TINY_PPL, TINY_BASE)
    assert 2.9 < summary["epochs"] < 3.1 and summary["steps"] < TINY_BASE.steps and summary["vocab_size"] <= 300 + len(MARKUP_TOKENS)


def test_the_same_seed_fits_the_same_reference(fitted, tmp_path):
    rows, _, d, summary = fitted
    again = fit_reference(rows, TINY_PPL, TINY_BASE, tmp_path, log=lambda *_: None)
    assert (tmp_path / "model.safetensors").read_bytes() == (d / "model.safetensors").read_bytes()
    assert scores_of(tmp_path, rows) == scores_of(d, rows)
    assert {k: v for k, v in again.items() if k != "fit_s"} == {k: v for k, v in summary.items() if k != "fit_s"}
    short = TINY_PPL.model_copy(update={"fit_max_steps": 3})
    a, b = (fit_reference(rows, short, TINY_BASE.model_copy(update={"seed": s}), tmp_path / f"s{s}", log=lambda *_: None)
            for s in (3, 4))
    assert a["final_loss"] != b["final_loss"]       # the seed matters


def test_the_fitted_reference_scores_garbage_above_the_typical_row(fitted):
    rows, bad, d, _ = fitted
    scores = scores_of(d, rows)
    clean = sorted(s for r, s in zip(rows, scores) if r["id"] not in bad)
    garb = {r["id"]: s for r, s in zip(rows, scores) if r["id"] in bad}
    repeated = repeated_word(rows, bad)
    assert repeated and len(repeated) < len(bad)
    # random characters, keyboard mash, a canned refusal: above (almost) every typical row ...
    assert min(garb[i] for i in bad - repeated) > clean[int(0.95 * len(clean))], (garb, clean)
    # ... while a word repeated is easy to predict: perplexity finds it typical or low, not high
    assert max(garb[i] for i in repeated) < statistics.median(clean)
    # the default bounds (median + 3 MAD on log-perplexity) cut the high ones, and few typical rows
    res = perplexity_filter(rows, scores, PerplexityParams())
    dropped = {x["id"] for x in res.dropped}
    assert bad - repeated <= dropped and len(dropped - bad) <= 0.05 * len(clean)


def test_too_little_text_to_fit_is_a_user_error(tmp_path):
    from sftpipe.errors import UserError

    with pytest.raises(UserError, match="reference: model"):
        fit_reference([rec(0, "Hi", "Hello.")], TINY_PPL, TINY_BASE, tmp_path)


def run_stage(tmp_path, rows, **sections):
    """The perplexity stage as `dvc repro` runs it, in-process; returns (click result, metrics)."""
    import logging

    import yaml
    from click.testing import CliRunner

    from sftpipe.io import write_jsonl
    from stages.perplexity import cli

    inp = tmp_path / "kept.jsonl"
    write_jsonl(inp, rows)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"collect": {"sources": [{"path": "data/sources/mine.jsonl"}]},
                                      "base": TINY_BASE.model_dump(), **sections}))
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        result = CliRunner().invoke(cli, ["--params", str(params), "--inp", str(inp), "--out", str(tmp_path / "ppl"),
                                          "--metrics", str(tmp_path / "ppl.json"),
                                          "--plot", str(tmp_path / "ppl.csv"), "--picture", str(tmp_path / "ppl.png")])
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    m = json.loads((tmp_path / "ppl.json").read_text()) if result.exit_code == 0 else None
    return result, m


def test_the_stage_fits_on_a_users_sources_and_records_which_reference(tmp_path, tiny_model_dir, monkeypatch):
    from sftpipe.io import read_jsonl

    monkeypatch.delenv("SFTPIPE_DEBUG", raising=False)
    rows, bad = user_rows()
    ppl = {"fit_epochs": TINY_PPL.fit_epochs, "fit_vocab_size": 300, "max_length": 64}
    result, m = run_stage(tmp_path, rows, perplexity=ppl)
    assert result.exit_code == 0, result.output
    ref = m["reference"]
    assert ref["kind"] == "fit" and "data/sources/mine.jsonl" in ref["why"] and ref["unit"] == "byte"
    assert ref["model"] == str(tmp_path / "ppl" / "reference") and ref["rows"] == len(rows) and ref["steps"] >= 1
    assert (tmp_path / "ppl" / "reference" / "model.safetensors").is_file()
    dropped = {d["id"] for d in read_jsonl(tmp_path / "ppl" / "dropped.jsonl")}
    assert bad - repeated_word(rows, bad) <= dropped
    kept = read_jsonl(tmp_path / "ppl" / "kept.jsonl")
    assert all(r["meta"]["ppl"] and r["meta"]["ifd"] for r in kept)

    # the same output folder with a named model: that model scores, and the old fitted one is gone
    result, m = run_stage(tmp_path, rows, perplexity={**ppl, "reference": "model", "model": str(tiny_model_dir)})
    assert result.exit_code == 0, result.output
    assert m["reference"] == {"kind": "model", "why": "perplexity.reference is model", "model": str(tiny_model_dir),
                              "unit": "token"}
    assert not (tmp_path / "ppl" / "reference").exists()
