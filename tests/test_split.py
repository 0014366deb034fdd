"""Leakage-free split: near-duplicate groups stay in one split (checked with MinHash on the
output), labels are stratified, and decontamination drops only real overlaps."""

import json
import logging
import random
from collections import Counter
from itertools import combinations

import pytest
import yaml

from sftpipe.collect.sources import collect
from sftpipe.config import CollectParams, DedupParams, SampleParams, Source, SplitParams
from sftpipe.dedup.clusters import find_duplicates
from sftpipe.io import write_jsonl
from sftpipe.sample import SOURCES, generate
from sftpipe.sample.vocab import ADJ, NOUN, REVERSE_WORDS_EN
from sftpipe.schema import full_text
from sftpipe.split import SPLITS, assign_splits, decontaminate, split_records

DP = DedupParams()


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    d = tmp_path_factory.mktemp("split")
    # duplicates left in on purpose: the split must keep each near-duplicate group together
    generate(SampleParams(rows_per_lang=600, seed=11, near_dup_rate=0.08, exact_dup_rate=0.05), d)
    return collect(CollectParams(sources=[Source(path=str(d / f), name=n) for n, f in SOURCES.items()])).records


def test_no_near_duplicate_pair_crosses_splits(records):
    p = SplitParams(decontaminate=False)
    parts, res = split_records(records, p, DP)
    where = {r["id"]: s for s in SPLITS for r in parts[s]}
    rows = [r for s in SPLITS for r in parts[s]]
    # an independent check on the output: every MinHash pair at the grouping threshold, same split
    dup = find_duplicates([full_text(r) for r in rows], DP, threshold=p.group_threshold)
    pairs = dup.pairs[dup.accepted]
    assert len(pairs) > 50, "the fixture must contain near-duplicate pairs for the check to mean anything"
    crossing = [(rows[i]["id"], rows[j]["id"]) for i, j in pairs.tolist() if where[rows[i]["id"]] != where[rows[j]["id"]]]
    assert crossing == []


@pytest.mark.parametrize("order", ["hash", "shuffle"])
def test_fractions_are_met_per_label(records, order):
    parts, _ = split_records(records, SplitParams(decontaminate=False, order=order), DP)
    total = Counter(r["label"] for r in records)
    for s, frac in (("train", 0.8), ("validation", 0.1), ("test", 0.1)):
        got = Counter(r["label"] for r in parts[s])
        for label, n in total.items():
            assert abs(got[label] - frac * n) <= max(3, 0.03 * n), (s, label, got[label], n)


@pytest.mark.parametrize("order", ["hash", "shuffle"])
def test_split_is_deterministic_and_seeded(records, order):
    a, _ = split_records(records, SplitParams(order=order), DP)
    b, _ = split_records(list(reversed(records)) if order == "hash" else records, SplitParams(order=order), DP)
    c, _ = split_records(records, SplitParams(seed=1, order=order), DP)
    ids = lambda parts: {s: sorted(r["id"] for r in parts[s]) for s in SPLITS}  # noqa: E731
    assert ids(a) == ids(b) and ids(a) != ids(c)


def test_with_hash_order_a_rows_split_does_not_depend_on_which_other_rows_reached_the_stage(records):
    """5% of the rows removed upstream (a filter param changed): with order hash almost every surviving
    test and validation row keeps its split; the seeded deal (order shuffle) moves most of them, which is
    what made every filter experiment score on another test set."""
    rng = random.Random(3)
    fewer = [r for r in records if rng.random() > 0.05]
    kept = {r["id"] for r in fewer}

    def stayed(order):
        p = SplitParams(decontaminate=False, order=order)
        before, _ = split_records(records, p, DP)
        after, _ = split_records(fewer, p, DP)
        out = {}
        for s in ("test", "validation"):
            was = {r["id"] for r in before[s]} & kept
            out[s] = len(was & {r["id"] for r in after[s]}) / len(was)
        return out

    hashed, dealt = stayed("hash"), stayed("shuffle")
    assert min(hashed.values()) >= 0.9, hashed
    assert max(dealt.values()) < 0.5, dealt


def rec(i, prompt, reply):
    return {"id": f"t:{i}", "label": None, "source": "t", "meta": {},
            "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}]}


def test_decontamination_drops_copies_of_eval_rows_only():
    q = "Write a short invitation to Anna for a picnic at the park on Monday at 9 am. Sign it as Tom."
    a = ("Dear Anna,\n\nI would like to invite you to a picnic at the park on Monday. We will start at 9 am. "
         "Please bring a blanket. Please let me know if you can come.\n\nBest wishes,\nTom")
    other_q = "Write a short invitation to Leo for a concert at the museum on Friday at 7 pm. Sign it as Iris."
    other_a = ("Dear Leo,\n\nI would like to invite you to a concert at the museum on Friday. We will start at 7 pm. "
               "The band plays for two hours. Please let me know if you can come.\n\nBest wishes,\nIris")
    zh = "请帮我给小明写一份邀请，请对方星期一上午九点到公园参加野餐，落款是小红。"
    train = [rec(0, q, a), rec(1, other_q, other_a), rec(2, zh, "小明：\n\n你好！诚挚邀请你星期一上午九点到公园参加野餐。"),
             rec(3, "把下面的词语倒序排列：苹果、河流、石头", "石头、河流、苹果")]
    evals = [("e:1", "eval_file", q), ("e:2", "eval_file", zh + "\n小明你好")]
    kept, dropped = decontaminate(train, evals, SplitParams(), DP)
    assert {d["id"] for d in dropped} == {"t:0", "t:2"}
    ev = dropped[0]["evidence"]
    assert ev["matched_id"] == "e:1" and ev["overlap"] >= 0.7 and ev["ngram"] in q.lower()
    # the classic "any shared n-gram" rule also flags the row that only shares the template
    _, any_shared = decontaminate(train, [("e:3", "validation", other_q.replace("Leo", "Tom"))],
                                  SplitParams(decontam_min_overlap=0.0), DP)
    assert {d["id"] for d in any_shared} == {"t:1"}


def test_split_ledger_adds_up(records):
    # the near-duplicate groups (typo pass included) keep the fixture's copies together, so a lower
    # overlap than the default is needed for some training rows to count as contaminated
    parts, res = split_records(records, SplitParams(decontam_min_overlap=0.3), DP)
    out = [r["id"] for s in SPLITS for r in parts[s]] + [d["id"] for d in res.dropped]
    assert res.dropped, "the fixture must contain contaminated training rows for the check to mean anything"
    assert Counter(out) == Counter(r["id"] for r in records)
    assert all(d["reason"] == "contamination" for d in res.dropped)


# --- decontamination through split_records and the split stage ---------------------------------

WORDS = sorted(set(REVERSE_WORDS_EN) | {a for a, _ in ADJ} | {n for n, _ in NOUN})


def words(rng, n):
    return " ".join(rng.choice(WORDS) for _ in range(n))


@pytest.fixture(scope="module")
def leak_pairs():
    """60 pairs (short row, long row): the long row repeats the short row's question and answer, then
    goes on, so its word 5-gram Jaccard with the short row is ~0.3 (below group_threshold 0.5: the two
    land in splits independently) while all of the short row's 8-grams are inside it (overlap 1.0)."""
    rng = random.Random(3)
    rows, pairs = [], []
    for k in range(60):
        q, a = words(rng, 12), words(rng, 6)
        short = rec(f"short{k}", q, a)
        long = rec(f"long{k}", q, a + " " + words(rng, 30))
        rows += [short, long]
        pairs.append((short["id"], long["id"]))
    return rows, pairs


def test_training_rows_that_contain_a_validation_or_test_row_are_dropped(leak_pairs):
    rows, pairs = leak_pairs
    p = SplitParams()
    where = dict(zip([r["id"] for r in rows], assign_splits(rows, p, DP)[0]))
    parts, res = split_records(rows, p, DP)
    expected = {}                                    # dropped train id -> the eval row it copies
    for a, b in pairs:
        for train_id, other in ((a, b), (b, a)):
            if where[train_id] == "train" and where[other] != "train":
                expected[train_id] = other
    by_split = Counter(where[expected[t]] for t in expected)
    # the fixture must put some pairs across train/test and train/validation for the check to mean anything
    assert by_split["test"] >= 2 and by_split["validation"] >= 2, by_split
    got = {d["id"]: d["evidence"] for d in res.dropped}
    assert set(got) == set(expected)
    for train_id, ev in got.items():
        other = expected[train_id]
        assert ev["matched_id"] == other and ev["matched_in"] == where[other]
        other_text = " ".join(full_text(next(r for r in rows if r["id"] == other)).split())
        assert ev["overlap"] == 1.0 and ev["ngram"] in other_text
    # the dropped rows are gone from train; validation and test rows are never dropped
    assert not set(expected) & {r["id"] for r in parts["train"]}
    assert all(where[d["id"]] == "train" for d in res.dropped)
    assert {r["id"] for r in parts["test"]} == {i for i, s in where.items() if s == "test"}


def run_split_stage(tmp_path, rows, eval_files):
    """The split stage as `dvc repro` runs it, in-process; returns (click result, out dir)."""
    from click.testing import CliRunner

    from stages.split import cli

    inp, out = tmp_path / "in.jsonl", tmp_path / "out"
    write_jsonl(inp, rows)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"collect": {"sources": [{"path": "unused.jsonl"}]},
                                      "split": {"eval_files": [str(f) for f in eval_files]}}))
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        result = CliRunner().invoke(cli, ["--params", str(params), "--inp", str(inp), "--out", str(out),
                                          "--metrics", str(tmp_path / "split.json")])
    finally:  # the stage sets up logging for a CLI run; give pytest its handlers back
        root.handlers[:] = handlers
        root.setLevel(level)
    return result, out


def test_split_stage_decontaminates_against_eval_files(tmp_path, monkeypatch):
    monkeypatch.delenv("SFTPIPE_DEBUG", raising=False)
    rng = random.Random(8)
    rows = [rec(k, words(rng, 12), words(rng, 20)) for k in range(60)]
    copied = rows[::3]                                  # an outside eval set holds copies of 20 rows
    ev = tmp_path / "my_eval.jsonl"
    ev.write_text("".join(json.dumps({"id": f"q{k}", "instruction": r["messages"][0]["content"],
                                      "output": r["messages"][1]["content"]}) + "\n" for k, r in enumerate(copied)))
    result, out = run_split_stage(tmp_path, rows, [ev])
    assert result.exit_code == 0, result.output
    where = {json.loads(x)["id"]: s for s in SPLITS for x in (out / f"{s}.jsonl").read_text().splitlines()}
    dropped = {d["id"]: d["evidence"] for d in map(json.loads, (out / "dropped.jsonl").read_text().splitlines())}
    copied_ids = {r["id"]: f"eval0:q{k}" for k, r in enumerate(copied)}
    assert len(dropped) >= 10 and set(dropped) <= set(copied_ids)
    for rid, evidence in dropped.items():
        assert evidence["matched_in"] == "eval_file" and evidence["matched_id"] == copied_ids[rid]
    # every copied row is either dropped from train or sits in validation/test, where it is not dropped
    assert all(rid in dropped or where[rid] != "train" for rid in copied_ids)
    assert len(where) + len(dropped) == len(rows)


def test_split_stage_refuses_an_eval_file_with_an_unreadable_row(tmp_path, monkeypatch):
    monkeypatch.delenv("SFTPIPE_DEBUG", raising=False)
    ev = tmp_path / "my_eval.jsonl"
    ev.write_text(json.dumps({"instruction": "What is the capital of France?", "output": "Paris"}) + "\n"
                  + '{"instruction": "What is the capital of Spain?", "output": \n'
                  + json.dumps({"instruction": "Name a red fruit.", "output": "apple"}) + "\n")
    rng = random.Random(9)
    result, out = run_split_stage(tmp_path, [rec(k, words(rng, 12), words(rng, 12)) for k in range(10)], [ev])
    assert result.exit_code == 2
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("error: split.eval_files: 1 row(s) could not be read"), line
    assert f"{ev}:2: malformed JSON" in line, line          # names the file, the line and what is wrong
    assert not (out / "train.jsonl").exists()


NATO = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa "
        "quebec romeo sierra tango uniform victor whiskey xray yankee zulu").split()


def test_ngrams_are_word_or_character_windows():
    from sftpipe.split import ngrams

    p = SplitParams(decontam_ngram=3, decontam_char_ngram=3)
    assert ngrams("One two, three four five", p, DP) == {"one two three", "two three four", "three four five"}
    assert ngrams("one two", p, DP) == {"one two"}                  # shorter than n: the text itself
    assert ngrams("红色的猫很可爱", p, DP) == {"红色的", "色的猫", "的猫很", "猫很可", "很可爱"}
    assert ngrams("  ", p, DP) == set()


def test_overlap_at_exactly_the_threshold_is_contamination_and_the_ledger_says_why():
    p = SplitParams(decontam_ngram=3, decontam_min_overlap=0.5)
    train = [rec(0, "alpha bravo charlie", "delta echo foxtrot"), rec(1, "golf hotel india", "juliet kilo lima")]
    # 4 trigrams on each side, 2 shared: overlap 2 / 4 = 0.5
    kept, dropped = decontaminate(train, [("v:1", "validation", "alpha bravo charlie delta xray yankee")], p, DP)
    assert [r["id"] for r in kept] == ["t:1"]
    (d,) = dropped
    assert (d["id"], d["stage"], d["reason"]) == ("t:0", "split", "contamination")
    assert d["evidence"] == {"matched_id": "v:1", "matched_in": "validation", "overlap": 0.5, "shared_ngrams": 2,
                             "ngram": "alpha bravo charlie", "min_overlap": 0.5}
    # one shared trigram of the reference's 3: overlap 1/3, to 4 places; below 0.5 the row stays
    ref = ("e:1", "eval_file", "golf hotel india whiskey zulu")
    kept, dropped = decontaminate(train, [ref], SplitParams(decontam_ngram=3, decontam_min_overlap=0.3), DP)
    assert [(d["id"], d["evidence"]["overlap"], d["evidence"]["shared_ngrams"]) for d in dropped] == [("t:1", 0.3333, 1)]
    assert decontaminate(train, [ref], p, DP) == (train, [])


def test_a_row_matching_several_references_equally_names_the_first():
    p = SplitParams(decontam_ngram=3)
    train = [rec(0, " ".join(NATO[:12]), " ".join(NATO[12:24]))]
    refs = [(f"e:{k}", "eval_file", " ".join(NATO[2 * k:2 * k + 3])) for k in range(11)]  # each one trigram of the row
    _, dropped = decontaminate(train, refs, p, DP)
    assert (dropped[0]["evidence"]["matched_id"], dropped[0]["evidence"]["overlap"]) == ("e:0", 1.0)
    _, dropped = decontaminate(train, refs[::-1], p, DP)
    assert dropped[0]["evidence"]["matched_id"] == "e:10"


def test_chinese_rows_are_matched_on_character_ngrams():
    p = SplitParams(decontam_char_ngram=3)
    zh = "请帮我给小明写一份邀请"
    kept, dropped = decontaminate([rec(0, zh, "好的"), rec(1, "今天天气很好", "是的")], [("v:1", "test", zh)], p, DP)
    assert [r["id"] for r in kept] == ["t:1"]
    ev = dropped[0]["evidence"]
    assert ev["ngram"] in zh and len(ev["ngram"]) == 3 and ev["shared_ngrams"] == len(zh) - 2


def test_split_metrics_and_per_label_details_count_rows_and_groups(records):
    parts, res = split_records(records, SplitParams(decontaminate=False), DP)
    sizes = Counter(r["meta"]["split_group"] for s in SPLITS for r in parts[s])
    assert res.extra_metrics == {**{s: len(parts[s]) for s in SPLITS}, "groups": len(sizes),
                                 "multi_row_groups": sum(1 for n in sizes.values() if n > 1)}
    assert res.extra_metrics["multi_row_groups"] > 10 and res.extra_metrics["groups"] < len(records)
    per_label = {}
    for s in SPLITS:
        for r in parts[s]:
            per_label.setdefault(r.get("label") or "unlabeled", dict.fromkeys(SPLITS, 0))[s] += 1
    assert res.details == {"per_label": per_label} and list(res.details["per_label"]) == sorted(per_label)
    # rows without a label are counted as "unlabeled"
    rows = [rec(k, f"question number {word} about the weather", "an answer") for k, word in enumerate(NATO[:10])]
    _, res = split_records(rows, SplitParams(decontaminate=False), DP)
    assert res.details["per_label"] == {"unlabeled": {s: res.extra_metrics[s] for s in SPLITS}}
    assert sum(res.extra_metrics[s] for s in SPLITS) == 10


def _split_stage_params() -> list:
    from pathlib import Path

    return yaml.safe_load((Path(__file__).resolve().parents[1] / "dvc.yaml").read_text())["stages"]["split"]["params"]


def test_dvc_yaml_lists_every_dedup_key_split_reads_and_no_other(records):
    """A dedup key dvc.yaml leaves out of the split stage must not change the split; one it lists must
    be read (changing it changes something), else split reruns for nothing."""
    params = _split_stage_params()
    listed = {k.split(".", 1)[1] for k in params if isinstance(k, str) and k.startswith("dedup.")}
    assert "dedup" not in params
    assert listed | {"threshold", "keep", "prefer_typical", "field", "exact", "near", "num_proc", "semantic",
                     "engine", "ray"} == \
        set(DedupParams.model_fields)
    rows = records[:700]
    split = SplitParams(decontam_min_overlap=0.2)
    ids = lambda parts: {s: [(r["id"], r["meta"]["split_group"]) for r in parts[s]] for s in SPLITS}  # noqa: E731
    parts, res = split_records(rows, split, DP)
    base = (ids(parts), [d["id"] for d in res.dropped])
    ignored = {"threshold": 0.95, "keep": "lowest_id", "field": "prompt", "exact": False, "near": False,
               "num_proc": 2, "prefer_typical": False, "engine": "ray",
               "ray": DP.ray.model_copy(update={"workers": 1}), "semantic": DP.semantic.model_copy(update={"enabled": False, "threshold": 0.5})}
    for key, value in ignored.items():
        parts, res = split_records(rows, split, DP.model_copy(update={key: value}))
        assert (ids(parts), [d["id"] for d in res.dropped]) == base, key
    read = {"normalize": DP.normalize.model_copy(update={"punctuation": False, "lowercase": False}),
            "shingle": "char", "word_ngram": 2, "char_ngram": 2, "num_perm": 16, "bands": 1, "rows": 16,
            "verify": False, "seed": 5, "edits": DP.edits.model_copy(update={"min_similarity": 0.5}),
            "slot_check": False}
    assert set(read) == listed
    # the word pass's keys are seen with the typo pass and the slot check off (they find or reject
    # most of what another word pass setting changes);
    # the signature's size and seed matter only through candidates the estimate accepts (verify off)
    word = DP.model_copy(update={"edits": DP.edits.model_copy(update={"enabled": False}), "slot_check": False})
    estimated = word.model_copy(update={"verify": False})
    bases = {}
    noslot = DP.model_copy(update={"slot_check": False})   # else the slot check rejects what looser edits add
    for name, p in (("word", word), ("estimated", estimated), ("noslot", noslot)):
        parts, res = split_records(rows, split, p)
        bases[name] = (ids(parts), [d["id"] for d in res.dropped])
    for key, value in read.items():
        update = {"bands": 1, "rows": 16} if key in ("bands", "rows") else {key: value}   # misses pairs
        start, against = ((estimated, bases["estimated"]) if key in ("num_perm", "seed") else
                          (noslot, bases["noslot"]) if key == "edits" else (DP, base) if key == "slot_check"
                          else (word, bases["word"]))
        parts, res = split_records(rows, split, start.model_copy(update=update))
        assert (ids(parts), [d["id"] for d in res.dropped]) != against, key


def test_ngrams_are_dedups_shingles_at_the_decontamination_lengths():
    from sftpipe.dedup.sketch import normalize, shingles, use_char_shingles
    from sftpipe.split import ngrams

    p = SplitParams(decontam_ngram=4, decontam_char_ngram=6)
    for text in ("Ｈｅｌｌｏ, World! How are you today, my friend?", "请帮我 把这段 English 文字翻译成中文，谢谢！",
                 "mixed 中文 and English words here, mostly English words"):
        norm = normalize(text, DP.normalize)
        char = use_char_shingles(norm, DP.shingle)
        assert ngrams(text, p, DP) == set(shingles(norm, char, 6 if char else 4))
    # the shingle param decides words or characters, as in dedup
    assert ngrams("abc def", p, DP.model_copy(update={"shingle": "char"})) == {"abc de", "bc def"}
