"""The generated sample: formats, languages, and ground truth that matches the files."""

import json
from collections import Counter

from sftpipe.config import CollectParams, SampleParams, Source
from sftpipe.collect.sources import collect
from sftpipe.sample import SOURCES, generate, pretrain_corpus


def test_sample_files_collect_cleanly_and_truth_matches(tmp_path):
    p = SampleParams(rows_per_lang=300, seed=3)
    counts = generate(p, tmp_path)
    res = collect(CollectParams(sources=[Source(path=str(tmp_path / f), name=n) for n, f in SOURCES.items()]))
    assert not res.quarantine
    truth = {json.loads(x)["id"]: json.loads(x) for x in (tmp_path / "truth.jsonl").read_text().splitlines()}
    ids = {r["id"] for r in res.records}
    assert ids == set(truth) and len(ids) == counts["rows"]
    defects = Counter(t["defect"] for t in truth.values())
    assert all(defects[k] > 0 for k in ("exact_dup", "near_dup", "label_flip", "garbage"))
    langs = Counter(r["meta"]["lang"] for r in res.records)
    assert langs["en"] > 250 and langs["zh"] > 250
    by_id = {r["id"]: r for r in res.records}
    for i, t in truth.items():
        if t["defect"] == "exact_dup":
            assert by_id[i]["messages"] == by_id[t["of"]]["messages"]
        if t["defect"] == "label_flip":
            assert by_id[i]["label"] != t["category"]
        if t["defect"] is None:
            assert by_id[i]["label"] == t["category"]
    assert len(set(counts["per_source"])) == 4


def test_generation_is_deterministic(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    generate(SampleParams(rows_per_lang=100), a)
    generate(SampleParams(rows_per_lang=100), b)
    for f in list(SOURCES.values()) + ["truth.jsonl"]:
        assert (a / f).read_bytes() == (b / f).read_bytes()


def test_pretrain_corpus_has_no_chat_markup():
    docs = pretrain_corpus(["en", "zh"], 200, seed=1)
    assert len(docs) == 200 and not any("<|im_start|>" in d for d in docs)
