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
    assert all(defects[k] > 0 for k in ("exact_dup", "near_dup", "label_flip", "garbage", "clean_defect"))
    # chat rows before the copies (the tool and reasoning rows get no defects)
    base_rows = counts["rows"] - counts["tool_rows"] - counts["reasoning_rows"] - defects["exact_dup"] - defects["near_dup"]
    assert counts["clean_defect"] == defects["clean_defect"] == round(p.clean_defect_rate * base_rows)
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
        if t["defect"] == "clean_defect":   # the broken response is in the file, the repair in truth
            assert by_id[i]["label"] == t["category"]
            assert by_id[i]["messages"][-1]["content"] != t["expected"] and t["expected"].strip()
    assert len(set(counts["per_source"])) == len(SOURCES) == 6


def test_clean_defect_rate_leaves_the_rest_of_the_sample_alone(tmp_path):
    """The clean defects draw from a generator of their own: without them, ids, sources and the
    other defects are the same rows."""
    a, b = tmp_path / "a", tmp_path / "b"
    generate(SampleParams(rows_per_lang=100, clean_defect_rate=0.1), a)
    generate(SampleParams(rows_per_lang=100, clean_defect_rate=0.0), b)
    ta = [json.loads(x) for x in (a / "truth.jsonl").read_text().splitlines()]
    tb = [json.loads(x) for x in (b / "truth.jsonl").read_text().splitlines()]
    assert [t["id"] for t in ta] == [t["id"] for t in tb]
    assert sum(t["defect"] == "clean_defect" for t in ta) > 15 and not any(t["defect"] == "clean_defect" for t in tb)
    for x, y in zip(ta, tb):
        if x["defect"] == "clean_defect":
            assert y["defect"] is None and y["category"] == x["category"]
        else:
            assert x == y


def test_garbage_mojibake_source_is_never_ascii():
    """ASCII reads the same in every encoding: its "mojibake" would be a fluent answer labelled garbage."""
    import random

    from sftpipe.sample import _mojibake_source

    texts = ["hot bird", "小狗", "positive", "负面"]
    picks = {_mojibake_source(texts, random.Random(s)) for s in range(50)}
    assert picks == {"小狗", "负面"}
    assert _mojibake_source(["only ascii"], random.Random(0)) == "乱码示例文本"


def test_generation_is_deterministic(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    generate(SampleParams(rows_per_lang=100), a)
    generate(SampleParams(rows_per_lang=100), b)
    for f in list(SOURCES.values()) + ["truth.jsonl"]:
        assert (a / f).read_bytes() == (b / f).read_bytes()


def test_pretrain_corpus_has_no_chat_markup():
    docs = pretrain_corpus(["en", "zh"], 200, seed=1)
    assert len(docs) == 200 and not any("<|im_start|>" in d for d in docs)
