"""label_noise, perplexity and split read their input in two passes (sftpipe/twopass.py): compact facts per row
first (labels and texts; group keys and scores), then the records again, routed as decided. The files
are the bytes the in-memory functions + write_filter_outputs write, whatever the chunk size; a file
that changes between the passes, or a bad line, publishes nothing."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from stage_runner import run_stage
from sftpipe.collect.sources import collect
from sftpipe.config import (CollectParams, DedupParams, LabelNoiseParams, ModelParams, PerplexityParams,
                            SampleParams, Source, SplitParams)
from sftpipe.dedup.clusters import near_duplicate_groups
from sftpipe.dedup.stream import groups_jsonl
from sftpipe.errors import AccountingError, UserError
from sftpipe.io import read_jsonl, write_jsonl
from sftpipe.label_noise import label_noise_jsonl, label_noise_records
from sftpipe.ledger import IdTally, write_filter_outputs
from sftpipe.perplexity import (filter_file, histogram_rows, ifd_rows, perplexity_filter, plot_groups, scan_file,
                                score_rows)
from sftpipe.sample import SOURCES, generate
from sftpipe.schema import full_text
from sftpipe.split import SPLITS, split_jsonl, split_records
from sftpipe.twopass import DROP, KEEP, chunks, count_rows, route

OUT_FILES = ("out/kept.jsonl", "out/dropped.jsonl", "out/details.json", "metrics.json")


@pytest.fixture(scope="module")
def rows_file(tmp_path_factory) -> Path:
    """The generated sample (flipped labels, garbage, duplicates) collected into one JSONL file, plus
    unlabelled rows and a label too rare to check."""
    d = tmp_path_factory.mktemp("back")
    generate(SampleParams(rows_per_lang=150, label_flip_rate=0.1, seed=3), d)
    recs = collect(CollectParams(sources=[Source(path=str(d / f), name=n) for n, f in SOURCES.items()])).records
    recs += [{"id": f"u:{i}", "messages": [{"role": "user", "content": f"say {i}"},
                                           {"role": "assistant", "content": f"{i}"}],
              "source": "u", "meta": {"lang": "en"}} for i in range(5)]
    recs += [{**recs[0], "id": "rare:0", "label": "rare"}]
    recs += [{"id": f"canned:{i}", "source": "u", "meta": {"lang": "en"},   # the same reply to unrelated requests
              "messages": [{"role": "user", "content": f"Explain what `mod{i}.fn` does."},
                           {"role": "assistant", "content": "Click here to subscribe to our newsletter and never miss "
                                                            "an update!"}]} for i in range(3)]
    path = d / "rows.jsonl"
    write_jsonl(path, recs)
    return path


def files(d: Path) -> dict[str, bytes]:
    return {f: (d / f).read_bytes() for f in OUT_FILES if (d / f).exists()}


def in_memory(d: Path, stage: str, records: list[dict], result) -> dict[str, bytes]:
    write_filter_outputs(stage, records, result, d / "out", d / "metrics.json")
    return files(d)


# ------------------------------------------------------------------------------------------ label_noise


@pytest.mark.parametrize("kw", [{}, {"action": "flag"}, {"action": "relabel", "min_class_size": 40},
                                {"enabled": False}, {"min_class_size": 10_000}, {"fit_rows": 300}])
@pytest.mark.parametrize("chunk_rows", [1, 97])
def test_label_noise_streamed_writes_the_in_memory_bytes(rows_file, tmp_path, kw, chunk_rows):
    p = LabelNoiseParams(**kw)
    records = read_jsonl(rows_file)
    want = in_memory(tmp_path / "mem", "label_noise", records, label_noise_records(records, p))
    m, details = label_noise_jsonl(rows_file, tmp_path / "s" / "out", tmp_path / "s" / "metrics.json", p,
                                   chunk_rows=chunk_rows)
    assert files(tmp_path / "s") == want
    assert m["kept"] + m["dropped"] == len(records)
    assert ("fit_rows" in m) == ("fit_rows" in kw)
    if not kw:   # the default checks, and drops, something: the comparison is not of two empty ledgers
        assert m["dropped"] > 5 and m["checked"] > 200
        assert set(details["per_class"]) == {r["label"] for r in records if r.get("label") not in (None, "rare")}


def test_label_noise_sampled_fit_on_embeddings_streams_to_the_in_memory_bytes(rows_file, tmp_path, tiny_model_dir,
                                                                              monkeypatch):
    """featurizer embeddings past fit_rows: the fit rows, then the other rows a chunk at a time, the model
    loaded once per run, and the same bytes whatever the chunk size."""
    import sftpipe.label_noise as ln

    loads = []
    real = ln.load_embedder
    monkeypatch.setattr(ln, "load_embedder", lambda path: loads.append(path) or real(path))
    p = LabelNoiseParams(featurizer="embeddings", embedding_model=str(tiny_model_dir), fit_rows=300)
    records = read_jsonl(rows_file)
    want = in_memory(tmp_path / "mem", "label_noise", records, label_noise_records(records, p))
    assert len(loads) == 1
    m, _ = label_noise_jsonl(rows_file, tmp_path / "s" / "out", tmp_path / "s" / "metrics.json", p, chunk_rows=97)
    assert files(tmp_path / "s") == want and len(loads) == 2
    assert m["fit_rows"] < m["checked"] and m["kept"] + m["dropped"] == len(records)


# ------------------------------------------------------------------------------------------ perplexity


def fake_scores(rows: list[dict]) -> tuple[list, list]:
    """A perplexity and an IFD per row from its id alone (None for some), so any chunking scores alike."""
    def u(rid, salt):
        return int.from_bytes(hashlib.blake2b(f"{salt}{rid}".encode(), digest_size=4).digest(), "little") / 2**32

    ppl = [None if u(r["id"], "n") < 0.03 else 2.0 + 40 * u(r["id"], "p") ** 4 for r in rows]
    ifd = [None if u(r["id"], "m") < 0.03 else 0.5 + 0.7 * u(r["id"], "f") for r in rows]
    return ppl, ifd


@pytest.mark.parametrize("ifd_on", [True, False])
@pytest.mark.parametrize("chunk_rows", [1, 50, 100_000])
def test_perplexity_streamed_writes_the_in_memory_bytes_and_plots(rows_file, tmp_path, chunk_rows, ifd_on):
    p = PerplexityParams(mad_k=2.0, upper_quantile=0.98)
    records = read_jsonl(rows_file)
    ppl, ifd = fake_scores(records)
    res = perplexity_filter(records, ppl, p, ifd if ifd_on else None)
    want = in_memory(tmp_path / "mem", "perplexity", records, res)
    reasons = {d["reason"] for d in res.dropped}
    assert {"perplexity_high", "unscorable", "repeated_reply", *(["ifd_high"] if ifd_on else [])} <= reasons

    scan = scan_file(rows_file, chunk_rows, p, lambda rows: (fake_scores(rows)[0],
                                                              fake_scores(rows)[1] if ifd_on else None))
    m, groups, hist = filter_file(rows_file, tmp_path / "s" / "out", tmp_path / "s" / "metrics.json", scan, p)
    assert files(tmp_path / "s") == want
    assert groups == plot_groups(res) and hist == histogram_rows(res)
    assert m["rows_in"] == len(records) and hist


def test_perplexity_disabled_passes_every_row_through_unchanged(rows_file, tmp_path):
    m, groups, hist = filter_file(rows_file, tmp_path / "out", tmp_path / "m.json", None, PerplexityParams())
    assert (tmp_path / "out" / "kept.jsonl").read_bytes() == rows_file.read_bytes()
    assert (tmp_path / "out" / "dropped.jsonl").read_bytes() == b""
    assert m["skipped"] == "disabled" and m["kept"] == count_rows(rows_file) and groups == {} and hist == []


def test_perplexity_stage_scores_a_chunk_at_a_time_with_the_real_model(rows_file, tmp_path, tiny_model_dir):
    """The stage with a real model: one chunk gives the bytes of score_rows + ifd_rows + perplexity_filter on
    the whole list; chunks of 7 rows judge every row and move the scores only in their last bits."""
    from sftpipe.model.loading import load_model, load_tokenizer

    model_sec = {"name_or_path": str(tiny_model_dir)}
    outs = {}
    for n in (100_000, 7):
        d = tmp_path / str(n)
        d.mkdir()
        r = run_stage(d, "perplexity", {"model": model_sec, "perplexity": {"chunk_rows": n, "reference": "model"}},
                      "--inp", rows_file, "--out", d / "out", "--metrics", d / "metrics.json",
                      "--plot", d / "p.csv", "--picture", d / "p.png")
        assert r.exit_code == 0, r.output
        outs[n] = d

    p = PerplexityParams(reference="model")
    mp = ModelParams(name_or_path=str(tiny_model_dir))
    model, tok = load_model(mp).eval(), load_tokenizer(mp)
    records = read_jsonl(rows_file)
    scores = score_rows(model, tok, records, p)
    res = perplexity_filter(records, scores, p, ifd_rows(model, tok, records, p, scores))
    res.extra_metrics["reference"] = json.loads((outs[100_000] / "metrics.json").read_text())["reference"]
    want = in_memory(tmp_path / "mem", "perplexity", records, res)
    assert files(outs[100_000]) == want

    def ppl(d):
        rows = read_jsonl(d / "out" / "kept.jsonl") + [x["record"] for x in read_jsonl(d / "out" / "dropped.jsonl")]
        return {r["id"]: (r["meta"]["ppl"], r["meta"]["ifd"]) for r in rows}

    big, small = ppl(outs[100_000]), ppl(outs[7])
    assert big.keys() == small.keys() == {r["id"] for r in records}
    for rid, (a, b) in big.items():
        c, e = small[rid]
        assert (a is None) == (c is None) and (a is None or abs(a - c) <= 1e-3 * a), rid
        assert (b is None) == (e is None) and (b is None or abs(b - e) <= 1e-3 * b), rid


# ------------------------------------------------------------------------------------------ the two passes


def test_route_refuses_a_file_that_changed_between_the_passes(rows_file, tmp_path):
    ids = IdTally()
    n = sum(len(c) for c in chunks(rows_file, 64, ids))
    lines = rows_file.read_text(encoding="utf-8").splitlines(keepends=True)

    def renamed(line, prefix):
        row = json.loads(line)
        return json.dumps({**row, "id": prefix + row["id"]}, ensure_ascii=False) + "\n"

    for name, text in [("fewer", "".join(lines[:-1])), ("more", "".join(lines) + renamed(lines[0], "x")),
                       ("other", "".join(lines[:-1]) + renamed(lines[-1], "y"))]:
        changed = tmp_path / f"{name}.jsonl"
        changed.write_text(text, encoding="utf-8")
        with pytest.raises(AccountingError, match="changed while the stage read it"):
            route("t", changed, tmp_path / name / "out", ids, lambda i, rec: (KEEP, rec))
        assert not (tmp_path / name).exists()   # nothing published, no folder left
    out = route("t", rows_file, tmp_path / "same" / "out", ids,
                lambda i, rec: (KEEP, rec) if i % 2 else (DROP, {"id": rec["id"], "reason": "odd"}))
    assert out.kept.n + out.dropped.n == n and out.reasons == {"odd": (n + 1) // 2}


def test_a_bad_line_in_the_second_pass_publishes_nothing(rows_file, tmp_path):
    bad = tmp_path / "bad.jsonl"
    lines = rows_file.read_text(encoding="utf-8").splitlines(keepends=True)
    bad.write_text("".join(lines[:10]) + "{oops\n" + "".join(lines[10:]), encoding="utf-8")
    with pytest.raises(UserError, match=r"bad\.jsonl:11: invalid JSON"):
        label_noise_jsonl(bad, tmp_path / "ln" / "out", tmp_path / "ln" / "m.json", LabelNoiseParams())
    ids = IdTally()   # the first pass read a good file; the second finds a bad line part way
    for _ in chunks(rows_file, 64, ids):
        pass
    with pytest.raises(UserError, match=r"bad\.jsonl:11: invalid JSON"):
        route("t", bad, tmp_path / "r" / "out", ids, lambda i, rec: (KEEP, rec))
    assert not (tmp_path / "ln").exists() and not (tmp_path / "r").exists()


# ------------------------------------------------------------------------------------------ split


def split_in_memory(d: Path, records, sp, dp, refs) -> dict[str, bytes]:
    """What the stage wrote before it streamed: split_records, the ledger and metrics, then the three files."""
    parts, result = split_records(records, sp, dp, refs)
    write_filter_outputs("split", records, result, d, d / "metrics.json", write_kept=False)
    for name in SPLITS:
        write_jsonl(d / f"{name}.jsonl", parts[name])
    return {f.name: f.read_bytes() for f in sorted(d.iterdir())}


@pytest.mark.parametrize("kw", [{}, {"order": "shuffle", "decontam_min_overlap": 0.3}, {"decontaminate": False},
                                {"stratify": False, "group_threshold": 0.3}])
def test_split_streamed_writes_the_in_memory_bytes(rows_file, tmp_path, kw):
    sp, dp = SplitParams(**kw), DedupParams()
    records = read_jsonl(rows_file)
    refs = [("ev:1", "eval_file", full_text(records[7])), ("ev:2", "eval_file", "an unrelated question\nanswer")]
    want = split_in_memory(tmp_path / "mem", records, sp, dp, refs)
    m = split_jsonl(rows_file, tmp_path / "s", tmp_path / "s" / "metrics.json", sp, dp, refs, chunk_rows=33)
    assert {f.name: f.read_bytes() for f in sorted((tmp_path / "s").iterdir())} == want
    assert m["multi_row_groups"] > 5 and m["train"] + m["validation"] + m["test"] + m["dropped"] == len(records)
    if sp.decontaminate:   # the eval file's copy of a row, and more
        assert m["dropped"] >= 1


def test_split_groups_streamed_are_the_in_memory_groups(rows_file):
    texts = [full_text(r) for r in read_jsonl(rows_file)]
    for t in (0.3, 0.5, 0.8):
        want = near_duplicate_groups(texts, DedupParams(), threshold=t)
        assert groups_jsonl(rows_file, DedupParams(), t).tolist() == want
        assert len(set(want)) < len(texts)


def test_split_refuses_a_file_that_changed_between_its_passes(rows_file, tmp_path, monkeypatch):
    import sftpipe.dedup.stream as dstream

    real = dstream.groups_jsonl
    grown = tmp_path / "grown.jsonl"
    grown.write_bytes(rows_file.read_bytes())

    def groups_then_append(path, *a, **kw):   # another process appends a row between the passes
        g = real(path, *a, **kw)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({**read_jsonl(rows_file)[0], "id": "late:1"}) + "\n")
        return g

    monkeypatch.setattr(dstream, "groups_jsonl", groups_then_append)
    with pytest.raises(AccountingError, match="changed while the stage read it"):
        split_jsonl(grown, tmp_path / "out", tmp_path / "m.json", SplitParams(), DedupParams())
    assert not (tmp_path / "out").exists() and not (tmp_path / "m.json").exists()
