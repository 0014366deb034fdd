"""Where sources may live, hub revisions, and compressed files (issue 13).

* ``dvc repro`` sees a user's own file change: local sources must lie under a dep of the collect
  stage in dvc.yaml (``data/sources/``); a real tiny DVC project checks ``dvc status`` end to end.
* A hub dataset without ``revision`` logs that the run is not reproducible by hash (no network:
  ``datasets`` is replaced by a fake).
* ``.jsonl.gz``/``.json.gz``/``.csv.gz`` read like the plain files, with the same lines in errors;
  a corrupt or truncated archive is one line naming the file; ``.zst`` reads like the plain file.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import shlex
import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml

from sftpipe.collect.readers import read_source
from sftpipe.collect.sources import check_declared_sources, collect
from sftpipe.config import CollectParams, Source
from sftpipe.errors import UserError
from test_malformed import corpus
from test_pipeline import env, run

ROOT = Path(__file__).resolve().parents[1]
GOOD = [{"instruction": f"What is {i} plus {i}?", "output": str(2 * i)} for i in range(3)]


def jsonl(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def params(*paths: str) -> CollectParams:
    return CollectParams(sources=[Source(path=p, name=f"s{i}") for i, p in enumerate(paths)])


def write_dvc_yaml(d: Path, deps: list, **stage) -> Path:
    f = d / "dvc.yaml"
    f.write_text(yaml.safe_dump({"stages": {"collect": {"cmd": "sftpipe collect", "deps": deps, **stage}}}))
    return f


# ----------------------------------------------------------------------------- declared sources


def test_sources_inside_declared_deps_pass(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "sources" / "sub").mkdir(parents=True)
    (tmp_path / "data" / "sources" / "sub" / "a.jsonl").write_text(jsonl(GOOD))
    (tmp_path / "data" / "raw").mkdir()
    (tmp_path / "extra.csv").write_text("instruction,output\na,b\n")
    f = write_dvc_yaml(tmp_path, ["data/raw", "data/sources", "extra.csv", "sftpipe/collect"])
    check_declared_sources(params("data/sources/sub/a.jsonl",              # under a folder dep
                                  str(tmp_path / "data/raw/x.json"),       # absolute, not there yet
                                  "./data/sources/../raw/y.csv",           # normalised
                                  "extra.csv",                             # a file dep itself
                                  "tatsu-lab/alpaca"), f)                  # hub id: not checked


def test_source_outside_deps_is_one_line_naming_param_file_deps_and_fix(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "extra").mkdir()
    (tmp_path / "extra" / "bad.jsonl").write_text(jsonl(GOOD))
    f = write_dvc_yaml(tmp_path, ["data/raw", "data/sources", "sftpipe/collect"])
    with pytest.raises(UserError) as e:
        check_declared_sources(params("data/raw/a.json", "data/sources/b.jsonl", "extra/bad.jsonl"), f)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("collect.sources[2].path: extra/bad.jsonl is not inside any dependency of the "
                          "collect stage")
    assert "(data/raw, data/sources, sftpipe/collect)" in msg
    assert "move it under data/sources/ or add its path to the collect stage's deps in" in msg
    # a sibling folder whose name only starts like a dep is outside it
    with pytest.raises(UserError, match=r"collect.sources\[0\].path: data/sources2/x.jsonl "):
        check_declared_sources(params("data/sources2/x.jsonl"), f)


def test_declared_deps_are_relative_to_the_stage_wdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    f = write_dvc_yaml(tmp_path, ["../shared"], wdir="pipeline")
    check_declared_sources(params("shared/x.jsonl"), f)
    with pytest.raises(UserError, match=r"sources\[0\].path: pipeline/shared/x.jsonl"):
        check_declared_sources(params("pipeline/shared/x.jsonl"), f)


def test_symlink_into_the_dvc_cache_counts_as_inside_its_folder(tmp_path, monkeypatch):
    """`dvc add` with cache.type symlink leaves data/sources/big.jsonl pointing into .dvc/cache."""
    monkeypatch.chdir(tmp_path)
    cache = tmp_path / ".dvc" / "cache" / "files" / "md5" / "ab"
    cache.mkdir(parents=True)
    (cache / "cdef").write_text(jsonl(GOOD))
    (tmp_path / "data" / "sources").mkdir(parents=True)
    (tmp_path / "data" / "sources" / "big.jsonl").symlink_to(cache / "cdef")
    check_declared_sources(params("data/sources/big.jsonl"), write_dvc_yaml(tmp_path, ["data/sources"]))


@pytest.mark.parametrize("content", [None, "stages: [unparsable", "stages:\n  other:\n    cmd: x\n"])
def test_no_check_without_a_collect_stage_to_check_against(tmp_path, monkeypatch, content):
    monkeypatch.chdir(tmp_path)
    if content is not None:
        (tmp_path / "dvc.yaml").write_text(content)
    check_declared_sources(params("/anywhere/x.jsonl"), tmp_path / "dvc.yaml")


def test_the_committed_pipeline_declares_the_committed_sources(monkeypatch):
    from sftpipe.config import load_params

    monkeypatch.chdir(ROOT)
    deps = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["collect"]["deps"]
    assert "data/sources" in deps and (ROOT / "data" / "sources" / "README.md").is_file()
    check_declared_sources(load_params(ROOT / "params.yaml").collect)


def collect_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    e = env() | {"PYTHONPATH": str(ROOT)}
    e.pop("SFTPIPE_DEBUG", None)
    e.pop("DVC_STAGE", None)
    return subprocess.run([sys.executable, "-m", "stages.collect", *args], cwd=cwd, env=e, capture_output=True,
                          text=True, timeout=120)


def test_stage_refuses_an_undeclared_source_only_in_a_pipeline_run(tmp_path):
    (tmp_path / "extra").mkdir()
    (tmp_path / "extra" / "bad.jsonl").write_text(jsonl(GOOD))
    write_dvc_yaml(tmp_path, ["data/sources"])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"collect": {"sources": [{"path": "extra/bad.jsonl"}]}}))
    proc = collect_cli(tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: collect.sources[0].path: extra/bad.jsonl is not inside")
    assert not (tmp_path / "data" / "collected").exists()
    # the same file through a scratch params file elsewhere is no pipeline run: it is read
    (tmp_path / "scratch").mkdir()
    (tmp_path / "scratch" / "p.yaml").write_text((tmp_path / "params.yaml").read_text())
    proc = collect_cli(tmp_path, "--params", "scratch/p.yaml")
    assert proc.returncode == 0, proc.stderr
    assert len((tmp_path / "data" / "collected" / "data.jsonl").read_text().splitlines()) == len(GOOD)


def test_dvc_sees_an_edited_user_file(tmp_path):
    """A real DVC project: collect reads data/sources/mine.jsonl.gz; after `dvc repro`, editing
    that file makes `dvc status` report the collect stage's data/sources dep as modified."""
    repo = tmp_path / "proj"
    (repo / "data" / "sources").mkdir(parents=True)
    (repo / "data" / "sources" / "README.md").write_text("Put your files here.\n")
    user_file = repo / "data" / "sources" / "mine.jsonl.gz"
    user_file.write_bytes(gzip.compress(jsonl(GOOD).encode(), mtime=0))
    (repo / "params.yaml").write_text(yaml.safe_dump(
        {"collect": {"sources": [{"path": "data/sources/mine.jsonl.gz", "name": "mine"}]}}))
    cmd = f"{shlex.quote(sys.executable)} -m stages.collect"
    stage = {"cmd": cmd, "deps": ["data/sources"], "params": ["collect"], "outs": ["data/collected"],
             "metrics": [{"metrics/collect.json": {"cache": False}}]}
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"collect": stage}}, sort_keys=False))
    e = env() | {"PYTHONPATH": str(ROOT)}
    e.pop("DVC_STAGE", None)

    def dvc(args: str) -> str:
        p = subprocess.run(f"dvc {args}", shell=True, cwd=repo, env=e, capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, f"dvc {args} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
        return p.stdout

    run("git init -q && dvc init -q && git add -A && git commit -qm init", repo)
    assert "Running stage 'collect'" in dvc("repro")
    assert len((repo / "data" / "collected" / "data.jsonl").read_text().splitlines()) == len(GOOD)
    assert "up to date" in dvc("status")

    user_file.write_bytes(gzip.compress(jsonl(GOOD + [{"instruction": "new", "output": "row"}]).encode(), mtime=0))
    status = dvc("status --json")
    assert json.loads(status) == {"collect": [{"changed deps": {"data/sources": "modified"}}]}, status
    assert "Running stage 'collect'" in dvc("repro")
    assert len((repo / "data" / "collected" / "data.jsonl").read_text().splitlines()) == len(GOOD) + 1


# ----------------------------------------------------------------------------- hub revision


def fake_datasets(monkeypatch, rows) -> list:
    calls = []

    def load_dataset(repo_id, split=None, revision=None):
        calls.append((repo_id, split, revision))
        return rows

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    return calls


def test_hub_source_without_revision_warns_once_and_loads(monkeypatch, caplog):
    calls = fake_datasets(monkeypatch, GOOD)
    with caplog.at_level(logging.WARNING):
        res = collect(CollectParams(sources=[Source(path="org/ds", hub_split="test")]))
    assert calls == [("org/ds", "test", None)] and len(res.records) == len(GOOD)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].name.startswith("sftpipe")
    msg = warnings[0].getMessage()
    assert "\n" not in msg and "org/ds has no revision" in msg and "not reproducible by hash" in msg
    assert "collect.sources[0].revision" in msg


def test_hub_source_with_revision_is_pinned_without_a_warning(monkeypatch, caplog):
    calls = fake_datasets(monkeypatch, GOOD)
    with caplog.at_level(logging.WARNING):
        res = collect(CollectParams(sources=[Source(path="org/ds", revision="0123abcd")]))
    assert calls == [("org/ds", "train", "0123abcd")] and len(res.records) == len(GOOD)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_revision_on_a_local_file_is_refused(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text(jsonl(GOOD))
    with pytest.raises(UserError, match=r"^collect.sources\[0\].revision: .*a.jsonl is a local file"):
        collect(CollectParams(sources=[Source(path=str(p), revision="v1")]))


# ----------------------------------------------------------------------------- compressed files


def gz(path: Path, text: str | bytes) -> Path:
    path.write_bytes(gzip.compress(text.encode() if isinstance(text, str) else text, mtime=0))
    return path


def test_gzip_jsonl_json_csv_read_like_the_plain_files(tmp_path):
    jl = gz(tmp_path / "a.jsonl.gz", "\n" + jsonl(GOOD))
    js = gz(tmp_path / "b.json.gz", "[\n" + ",\n".join(json.dumps(r) for r in GOOD) + "\n]\n")
    cs = gz(tmp_path / "c.CSV.GZ",
            "instruction,output\n" + "".join(f"{r['instruction']},{r['output']}\n" for r in GOOD))
    assert [(r.data, r.line) for r in read_source(str(jl))] == [(r, i) for i, r in enumerate(GOOD, 2)]
    assert [(r.data, r.line) for r in read_source(str(js))] == [(r, i) for i, r in enumerate(GOOD, 2)]
    assert [(r.data, r.line) for r in read_source(str(cs))] == [(r, i) for i, r in enumerate(GOOD, 2)]
    res = collect(CollectParams(sources=[Source(path=str(p)) for p in (jl, js, cs)]))
    # the default source name is the stem without the compression suffix
    assert res.per_source == {n: {"kept": 3, "quarantined": 0} for n in ("a", "b", "c")}
    assert res.records[0]["id"].startswith("a:")


def test_gzip_errors_name_the_file_and_the_decompressed_line(tmp_path):
    jl = gz(tmp_path / "a.jsonl.gz", jsonl(GOOD[:1]) + "{broken\n" + jsonl(GOOD[1:]))
    res = collect(CollectParams(sources=[Source(path=str(jl))]))
    assert [(q["path"], q["line"], q["reason"]) for q in res.quarantine] == [(str(jl), 2, "malformed_json")]
    with pytest.raises(UserError, match=rf"^{jl}:2: malformed JSON"):
        collect(CollectParams(sources=[Source(path=str(jl))], on_error="fail"))
    js = gz(tmp_path / "b.json.gz", '[\n{"instruction": "a", "output": "b"},\n{"instruction": }\n]\n')
    with pytest.raises(UserError, match=rf"^{js}:3 \[record 2\]: invalid JSON"):
        list(read_source(str(js)))
    cs = gz(tmp_path / "c.csv.gz", 'instruction,output\na,b\n"unterminated,c\n')
    with pytest.raises(UserError, match=rf"^{cs}:3: unterminated quoted field"):
        list(read_source(str(cs)))
    bad_utf8 = gz(tmp_path / "d.csv.gz", b"instruction,output\na,b\nc,\xff\n")
    with pytest.raises(UserError, match=rf"^{bad_utf8}:3: invalid UTF-8"):
        list(read_source(str(bad_utf8)))
    arr = gz(tmp_path / "e.jsonl.gz", json.dumps(GOOD, indent=1))
    with pytest.raises(UserError, match=r"rename the file to \.json\.gz\)$"):
        list(read_source(str(arr)))


@pytest.mark.parametrize("name,content", [
    ("truncated.jsonl.gz", gzip.compress(jsonl(GOOD * 50).encode())[:-20]),
    ("not_gzip.jsonl.gz", jsonl(GOOD).encode()),
    ("bad_crc.json.gz", (lambda b: b[:-8] + b"\0\0\0\0" + b[-4:])(gzip.compress(json.dumps(GOOD).encode()))),
    ("bad_deflate.csv.gz", (lambda b: b[:10] + b"\xff" * 8 + b[18:])(gzip.compress(b"instruction,output\n" * 40))),
])
def test_corrupt_gzip_is_one_line_naming_the_file(tmp_path, name, content):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(UserError) as e:
        list(read_source(str(p)))
    msg = str(e.value)
    assert msg.startswith(f"{p}: cannot decompress gzip (") and msg.endswith("the file is corrupt or truncated")
    assert "\n" not in msg


def _zstd_files(data: bytes) -> dict[str, bytes]:
    import zstandard

    c = zstandard.ZstdCompressor()
    buf = io.BytesIO()
    w = c.stream_writer(buf, closefd=False)          # streaming mode: no content size in the frame
    w.write(data)
    w.flush(zstandard.FLUSH_FRAME)
    return {"one_frame": c.compress(data), "streamed": buf.getvalue(),
            "two_frames": c.compress(data[:40]) + c.compress(data[40:])}


@pytest.mark.parametrize("kind", ["one_frame", "streamed", "two_frames"])
def test_zst_reads_like_the_plain_file(tmp_path, kind):
    data = b"".join(json.dumps({"instruction": f"q{i}", "output": "a"}).encode() + b"\n" for i in range(5))
    data += b"{broken\n"
    plain, packed = tmp_path / "a.jsonl", tmp_path / "b.jsonl.zst"
    plain.write_bytes(data)
    packed.write_bytes(_zstd_files(data)[kind])
    got, want = list(read_source(str(packed))), list(read_source(str(plain)))
    assert [(r.data, r.line, r.error and r.error.reason) for r in got] == \
           [(r.data, r.line, r.error and r.error.reason) for r in want]
    assert got[-1].error.reason == "malformed_json" and got[-1].line == 6


@pytest.mark.parametrize("content", ["cut", "garbage"])
def test_corrupt_zst_is_one_line_naming_the_file(tmp_path, content):
    data = b'{"instruction": "q", "output": "a"}\n' * 20
    p = tmp_path / "a.jsonl.zst"
    p.write_bytes(_zstd_files(data)["one_frame"][:-5] if content == "cut" else b"not zstd at all")
    with pytest.raises(UserError) as e:
        list(read_source(str(p)))
    msg = str(e.value)
    assert msg.startswith(f"{p}: cannot decompress zstd (") and msg.endswith("corrupt or truncated") and "\n" not in msg


@pytest.mark.parametrize("name,kind", [("a.parquet.gz", ".parquet.gz"), ("a.txt.gz", ".txt.gz"), ("a.gz", ".gz"),
                                       ("notes.txt", ".txt")])
def test_unsupported_types_list_what_is_supported(tmp_path, name, kind):
    p = tmp_path / name
    p.write_bytes(b"x")
    with pytest.raises(UserError, match=rf"unsupported file type '{kind}' \(use \.jsonl, \.json, \.csv "
                                        r"\(each also \.gz or \.zst\), or \.parquet\)"):
        list(read_source(str(p)))


def test_hub_like_paths_with_a_data_suffix_are_files_not_hub_ids(tmp_path):
    for path in ("org/x.jsonl.gz", "org/x.csv.zst", "org/x.JSON"):
        with pytest.raises(UserError, match="file not found"):
            list(read_source(path))


GZ_CASES = [c for c in corpus.CASES if c.file.lower().endswith((".jsonl", ".json", ".csv"))
            and (isinstance(c.content, bytes) or callable(c.content))]


@pytest.mark.parametrize("case", GZ_CASES, ids=lambda c: c.name)
def test_every_malformed_case_reads_the_same_gzipped(tmp_path, case):
    """The whole malformed corpus, gzipped: the same records, quarantine rows (line, reason,
    field) and fatal errors as the plain file, the path aside."""
    (tmp_path / "plain").mkdir()
    (tmp_path / "gz").mkdir()
    plain = case.write(tmp_path / "plain")
    if plain.stat().st_size == 0:
        pytest.skip("an empty file gzips to a non-empty one (its error says 'no records' instead)")
    packed = gz(tmp_path / "gz" / (plain.name + ".gz"), plain.read_bytes())

    def outcome(p: Path):
        try:
            res = collect(CollectParams(sources=[Source(path=str(p), name="s")]))
        except UserError as e:
            return "fatal", str(e).replace(str(p), "<file>")
        return ([json.dumps(r, sort_keys=True) for r in res.records],
                [(q["line"], q["record"], q["reason"], q["field"], q["message"].replace(str(p), "<file>"))
                 for q in res.quarantine])

    expect = outcome(plain)
    got = outcome(packed)
    if expect[0] == "fatal":
        expect = ("fatal", expect[1].replace("rename the file to .json)", "rename the file to .json.gz)"))
    assert got == expect
