"""Near-duplicate removal: normalization, shingling, datasketch equivalence, clustering, ledger."""

from __future__ import annotations

import copy
import os
import random
import subprocess
import sys

import numpy as np
import pytest
from datasketch import MinHash, MinHashLSH

from sftpipe import ledger
from sftpipe.dedup import clusters as dedup
from sftpipe.sample import neardup as bd
from sftpipe.dedup import lsh, sketch
from sftpipe.dedup.edits import edit_similarity
from sftpipe.config import DedupParams, EditsParams, NormalizeParams, SemanticDedupParams
from sftpipe.schema import full_text

P = DedupParams()
# the word-shingle MinHash pass alone: the tests that score it against its own definition
# (exact Jaccard on word 5-grams) switch the typo pass, the slot check and paraphrases off
WORD = dict(edits=EditsParams(enabled=False), slot_check=False, semantic=SemanticDedupParams(enabled=False))
PW = DedupParams(**WORD)
NORM = NormalizeParams(digits=True)       # every step on (the pipeline's default keeps digits)


def rec(rid, prompt, response="ok"):
    return {"id": rid, "messages": [{"role": "user", "content": prompt},
                                    {"role": "assistant", "content": response}],
            "source": "t", "label": None, "meta": {"lang": "en"}}


def naive_minhash(text, p=P):
    """What a caller would do with datasketch: one MinHash, one update per shingle."""
    norm = sketch.normalize(text, p.normalize)
    char = sketch.use_char_shingles(norm, p.shingle)
    m = MinHash(num_perm=p.num_perm, seed=p.seed, hashfunc=sketch.shingle_hash)
    for sh in sketch.shingles(norm, char, p.char_ngram if char else p.word_ngram):
        m.update(sh)
    return m


EN = ("The library opens at nine in the morning and closes at six in the evening, "
      "except on Sundays when it stays closed for cleaning and repairs of the old reading room.")
ZH = "我们明天上午九点在学校门口集合，然后一起坐大巴去郊外的森林公园野餐，请大家记得带好水和雨伞。"


# --- normalization -----------------------------------------------------------------

def test_fullwidth_and_ascii_normalize_equal():
    assert sketch.normalize("Ｈｅｌｌｏ，世界", NORM) == sketch.normalize("hello, 世界", NORM) == "hello 世界"


@pytest.mark.parametrize("raw,expected", [
    ("The QUICK Brown", "the quick brown"),                    # case
    ("wait... what?! (yes) a-b", "wait what yes a b"),          # punctuation to spaces
    ("price: $1,299.99 + ٣ apples", "price 0 000 00 0 apples"),  # digits (any script) to 0, symbols folded
    ("  tabs\tand\n\nnewlines\u3000here  ", "tabs and newlines here"),
    ("ﬁne ①", "fine 0"),                                      # NFKC ligature and circled digit
])
def test_normalize_cases(raw, expected):
    assert sketch.normalize(raw, NORM) == expected


def test_each_normalization_step_can_be_switched_off():
    text = "Ａb 12, c  d"
    assert sketch.normalize(text, NORM) == "ab 00 c d"
    assert sketch.normalize(text, NORM.model_copy(update={"nfkc": False})) == "ａb 00 c d"
    assert sketch.normalize(text, NORM.model_copy(update={"lowercase": False})) == "Ab 00 c d"
    assert sketch.normalize(text, NORM.model_copy(update={"punctuation": False})) == "ab 00, c d"
    assert sketch.normalize(text, NORM.model_copy(update={"digits": False})) == "ab 12 c d"
    assert sketch.normalize(text, NORM.model_copy(update={"whitespace": False})) == "ab 00  c  d"


TRICKY = list("aZé\u0301\u0300ΣσςİıßﬁＡ１，。！？ 　\t\n½²①가각ㄱᄀ\u1161\u11a8ÅΩ℃㈱…—_-'\"😀\u200b\u00a0") + ["e\u0301", "ΟΔΟΣ"]


def test_batch_normalization_agrees_with_reference():
    rng = random.Random(7)
    texts = [EN, ZH, "", "   ", "!!!", "Ｈｅｌｌｏ，世界"]
    texts += ["".join(rng.choice(TRICKY + list("abc de")) for _ in range(rng.randint(0, 30))) for _ in range(400)]
    for norm in (NORM, NormalizeParams(whitespace=False), NormalizeParams(nfkc=False, punctuation=False),
                 NormalizeParams(lowercase=False, digits=False)):
        assert sketch.normalize_batch(texts, norm).texts() == [sketch.normalize(t, norm) for t in texts]


def test_table_prenormalization_matches_unicodedata_for_every_table_char():
    import unicodedata
    table, ok = sketch._pre_table(True, True)
    cps = np.flatnonzero(ok)
    sample = cps[np.random.default_rng(0).choice(len(cps), 20000, replace=False)]
    for c in sample.tolist() + [0xFF0C, 0xFF21, 0x4E00, ord("A")]:
        assert chr(table[c]) == unicodedata.normalize("NFKC", chr(c)).lower()
    assert not ok[0x03A3] and not ok[0x0130] and not ok[0x0301]   # Σ (final sigma), İ (two chars), combining


# --- shingles and hashing ---------------------------------------------------------------

def test_shingles_word_char_short_and_empty():
    assert sketch.shingles("a b c d e f", False, 5) == ["a b c d e", "b c d e f"]
    assert sketch.shingles("a b", False, 5) == ["a b"]
    assert sketch.shingles("今天天气好吗", True, 5) == ["今天天气好", "天天气好吗"]
    assert sketch.shingles("你好", True, 5) == ["你好"]
    assert sketch.shingles("", True, 5) == [] and sketch.shingles("", False, 5) == []


def test_auto_mode_follows_cjk_share():
    assert sketch.use_char_shingles(sketch.normalize(ZH, NORM))
    assert not sketch.use_char_shingles(sketch.normalize(EN, NORM))
    assert not sketch.use_char_shingles("the word 猫 in a sentence")      # 1 CJK letter of 17
    assert sketch.use_char_shingles("anything", "char") and not sketch.use_char_shingles(ZH, "word")


def test_shingle_hash_is_32_bit_and_same_in_another_process():
    values = [sketch.shingle_hash(s) for s in ("hello world", "你好世界", "", "a")]
    assert all(0 <= v < 2 ** 32 for v in values) and len(set(values)) == 4
    code = "from sftpipe.dedup.sketch import shingle_hash as h; print([h(s) for s in ('hello world', '你好世界', '', 'a')])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": os.getcwd()})
    assert out.stdout.strip() == str(values)


def test_span_hashes_equal_reference_hash_of_each_shingle():
    texts = [EN, ZH, "short", "", "Ｈｅｌｌｏ，世界"]
    b = sketch.normalize_batch(texts, NORM)
    char = sketch.char_mode_rows(b, "auto")
    rows, s, e = sketch.shingle_spans(b, char, 5, 5)
    h = sketch.span_hashes(b, s, e)
    for i, norm in enumerate(b.texts()):
        ref = sketch.shingles(norm, bool(char[i]), 5)
        assert h[rows == i].tolist() == [sketch.shingle_hash(x) for x in ref]


# --- MinHash and LSH equal to datasketch ---------------------------------------------------

def test_signatures_bit_identical_to_datasketch():
    texts = [EN, ZH, EN.upper() + " extra words", "tiny", "", "!!!", ZH[:3]]
    for p in (P, DedupParams(num_perm=64, seed=42, word_ngram=3, char_ngram=2)):
        sk = dedup.sketch(texts, p)
        for i, t in enumerate(texts):
            ref = naive_minhash(t, p)
            assert ref.hashvalues.dtype == np.uint32
            assert np.array_equal(sk.sig[:, i], ref.hashvalues), i


def test_candidate_pairs_equal_datasketch_lsh():
    data = bd.generate(300, seed=3, dup_share=0.4, max_rate=0.3)
    p = DedupParams(bands=32, rows=1)          # loose bands: many candidates, true and false
    sk = dedup.sketch(data.texts, p)
    ours = {tuple(x) for x in lsh.candidate_pairs(sk.sig, p.bands, p.rows).tolist()}
    index = MinHashLSH(num_perm=p.num_perm, params=(p.bands, p.rows))
    mhs = [naive_minhash(t, p) for t in data.texts]
    for i, m in enumerate(mhs):
        index.insert(i, m)
    theirs = {(min(i, j), max(i, j)) for i, m in enumerate(mhs) for j in index.query(m) if j != i}
    assert len(theirs) > 300 and ours == theirs


def test_exact_jaccard_matches_python_sets():
    rng = np.random.default_rng(1)
    sets = [np.unique(rng.integers(0, 60, rng.integers(0, 40))).astype(np.uint32) for _ in range(50)]
    flat = np.concatenate(sets)
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in sets])])
    pairs = np.array([(i, j) for i in range(50) for j in range(i + 1, 50)])
    got = lsh.exact_jaccard(pairs, flat, offsets, chunk=97)    # small chunks exercise the loop
    for (i, j), g in zip(pairs.tolist(), got.tolist()):
        a, b = set(sets[i].tolist()), set(sets[j].tolist())
        assert g == pytest.approx(len(a & b) / len(a | b) if a | b else 0.0)


def test_union_find_components():
    edges = np.array([[5, 6], [1, 2], [2, 3], [9, 8], [3, 0], [6, 7]])
    assert lsh.union_find(10, edges).tolist() == [0, 0, 0, 0, 4, 5, 5, 5, 8, 8]
    chain = np.stack([np.arange(999, 0, -1), np.arange(998, -1, -1)], axis=1)   # long reversed chain
    assert (lsh.union_find(1000, chain) == 0).all()


def test_lsh_params_derived_for_recall_and_overridable():
    b, r = dedup.lsh_params(P)
    assert b * r <= P.num_perm and lsh.lsh_probability(P.threshold, b, r) >= 0.97
    assert lsh.lsh_probability(0.3, b, r) < 0.01
    assert dedup.lsh_params(DedupParams(bands=8, rows=4)) == (8, 4)
    assert dedup.lsh_params(P, threshold=0.5) != (b, r)


# --- near duplicates ----------------------------------------------------------------------

def test_english_near_duplicates_found():
    edited = EN.replace("old reading room", "old room").upper()   # Jaccard 0.89 on word 5-grams
    texts = [EN, edited, "A completely unrelated sentence about cooking pasta with garlic and olive oil tonight."]
    res = dedup.find_duplicates(texts, P)
    assert res.component.tolist() == [0, 0, 2]
    assert res.jaccard([0], [1])[0] >= P.threshold


def test_chinese_near_duplicates_need_char_shingles():
    edited = ZH.replace("雨伞", "雨衣") + "谢谢"     # a small edit; no spaces anywhere
    texts = [ZH, edited]
    auto = dedup.find_duplicates(texts, PW)
    assert auto.component.tolist() == [0, 0]
    assert auto.jaccard([0], [1])[0] >= P.threshold
    # as "words", each sentence between punctuation is one token: almost nothing is shared
    word = dedup.find_duplicates(texts, DedupParams(shingle="word", **WORD))
    assert word.component.tolist() == [0, 1]
    assert word.jaccard([0], [1])[0] < 0.5


def test_empty_normalized_texts_never_cluster_but_exact_copies_do():
    texts = ["!!!", "???", "...", "!!!", EN]
    res = dedup.find_duplicates(texts, P)
    assert res.component.tolist() == [0, 1, 2, 0, 4]
    assert not len(res.pairs)


def test_verify_rejects_weak_candidates_the_estimate_would_accept():
    data = bd.generate(400, seed=5, dup_share=0.5, max_rate=0.25)
    loose = dict(bands=32, rows=2, threshold=0.8)
    on = dedup.find_duplicates(data.texts, DedupParams(verify=True, **loose, **WORD))
    off = dedup.find_duplicates(data.texts, DedupParams(verify=False, **loose, **WORD))
    assert np.array_equal(on.pairs, off.pairs)                     # same candidates either way
    # with verify, the similarity is the exact Jaccard of the shingle sets (reference code, Python sets)
    sets = bd.shingle_sets(data.texts, P)
    truth = np.array([len(sets[i] & sets[j]) / len(sets[i] | sets[j]) for i, j in on.pairs.tolist()])
    assert on.similarity == pytest.approx(truth)
    assert np.array_equal(on.accepted, truth >= 0.8)
    # the check did real work: it rejected some LSH candidates and accepted others
    assert (~on.accepted).sum() >= 50 and on.accepted.sum() >= 10, (on.accepted.sum(), len(on.accepted))
    exact = on.similarity
    assert (exact[on.accepted] >= 0.8).all()
    assert ((exact < 0.8) & off.accepted).any() or ((exact >= 0.8) & ~off.accepted).any()


def test_deterministic_across_num_proc(monkeypatch):
    data = bd.generate(600, seed=11, dup_share=0.3, max_rate=0.08)
    monkeypatch.setattr(dedup, "_CHUNK_ROWS", 64)                  # many chunks, so the pool is used
    used = []
    real = dedup._pool_context
    monkeypatch.setattr(dedup, "_pool_context", lambda: used.append(1) or real())
    one = dedup.find_duplicates(data.texts, DedupParams(num_proc=1))
    two = dedup.find_duplicates(data.texts, DedupParams(num_proc=2))
    assert used == [1]
    assert np.array_equal(one.component, two.component) and np.array_equal(one.pairs, two.pairs)
    assert np.array_equal(one.sketches.sig, two.sketches.sig)
    assert (one.component != np.arange(600)).sum() > 50


def test_precision_recall_against_exact_jaccard():
    data = bd.generate(1000, seed=21, dup_share=0.4, max_rate=0.12)
    truth = set(bd.true_pairs(bd.shingle_sets(data.texts, P), P.threshold))
    res = dedup.find_duplicates(data.texts, PW)
    found = {tuple(x) for x in res.pairs[res.accepted].tolist()}
    precision, recall = bd.precision_recall(found, truth)
    assert len(truth) > 100
    assert precision >= 0.95 and recall >= 0.95, (precision, recall)


def test_near_duplicate_groups_labels():
    texts = [EN, "unrelated text number one about birds and trees in the park", EN, EN + " And more.", ZH]
    groups = dedup.near_duplicate_groups(texts, DedupParams(exact=False))
    assert groups == [0, 1, 0, 0, 2]
    strict = dedup.near_duplicate_groups(texts, PW, threshold=1.0)
    assert strict == [0, 1, 0, 2, 3]


# --- records, keep policy, ledger -------------------------------------------------------------

def cluster_records():
    return [rec("s:10", EN, "a medium answer"), rec("s:9", EN + " Thanks!", "short"),
            rec("s:2", EN.upper(), "the longest answer of all three"), rec("s:3", ZH, "x")]


@pytest.mark.parametrize("keep,kept", [("longest_response", "s:2"), ("shortest_response", "s:9"),
                                       ("lowest_id", "s:2")])
def test_keep_policy(keep, kept):
    res = dedup.dedup_records(cluster_records(), DedupParams(keep=keep, field="prompt", prefer_typical=False))
    assert sorted(r["id"] for r in res.kept) == sorted([kept, "s:3"])
    assert {d["evidence"]["kept_id"] for d in res.dropped} == {kept}


@pytest.mark.parametrize("keep,kept", [("longest_response", "k:2"), ("shortest_response", "k:1")])
def test_keep_policy_measures_the_response_not_the_whole_row(keep, kept):
    """The row with the longest response is the one with the shorter prompt + response."""
    recs = [rec("k:1", EN + " " * 40 + "!", "Nine to six."),     # the same prompt once normalized
            rec("k:2", EN, "From nine to six, except Sundays.")]
    assert len(recs[0]["messages"][1]["content"]) < len(recs[1]["messages"][1]["content"])
    assert len(full_text(recs[0])) > len(full_text(recs[1]))
    res = dedup.dedup_records(recs, DedupParams(keep=keep, field="prompt", prefer_typical=False))
    assert [r["id"] for r in res.kept] == [kept]
    assert [d["evidence"]["kept_id"] for d in res.dropped] == [kept]


def test_ties_broken_by_natural_id_order():
    recs = [rec("b:10", EN, "same"), rec("b:9", EN + "!", "same"), rec("a:100", "zzz other", "same")]
    res = dedup.dedup_records(recs, DedupParams(field="prompt"))
    assert [r["id"] for r in res.kept] == ["b:9", "a:100"]          # input order; b:9 < b:10
    res = dedup.dedup_records(list(reversed(recs)), DedupParams(field="prompt"))
    assert [r["id"] for r in res.kept] == ["a:100", "b:9"]


def test_shortest_response_ties_are_broken_by_natural_id_order():
    recs = [rec("b:10", EN, "same"), rec("b:9", EN + "!", "same"), rec("b:100", EN + "?", "longer reply")]
    res = dedup.dedup_records(recs, DedupParams(field="prompt", keep="shortest_response"))
    assert [r["id"] for r in res.kept] == ["b:9"]          # b:9 < b:10 (not string order), b:100 is longer
    res = dedup.dedup_records(recs[::-1], DedupParams(field="prompt", keep="shortest_response"))
    assert [r["id"] for r in res.kept] == ["b:9"]


def test_id_order_is_natural_and_total():
    ids = ["s:10", "s:9", "s:09", "s:9b", "s:9a", "s", "t:1", "s:1²", "s:١٢", "s:x", "10", "9"]
    assert sorted(ids, key=dedup._id_key) == ["9", "10", "s", "s:1²", "s:09", "s:9", "s:9a", "s:9b", "s:10",
                                              "s:x", "s:١٢", "t:1"]
    # a non-ASCII digit is text (int("²") would raise), and the lowest_id policy keeps "s:1²" over "s:2"
    recs = [rec("s:2", EN, "same"), rec("s:1²", EN, "same")]
    assert [r["id"] for r in dedup.dedup_records(recs, DedupParams(keep="lowest_id")).kept] == ["s:1²"]


def test_ledger_arithmetic_evidence_and_meta():
    data = bd.generate(500, seed=8, dup_share=0.3, max_rate=0.05)
    recs = [rec(f"g:{i}", t, "r" * (i % 7)) for i, t in enumerate(data.texts)]
    recs += [copy.deepcopy(recs[0]) | {"id": "g:copy"}]              # a byte-identical copy
    before = copy.deepcopy(recs)
    res = dedup.dedup_records(recs, DedupParams(field="prompt"))
    assert recs == before                                              # inputs untouched
    ledger.check_accounting("dedup", [r["id"] for r in recs], [r["id"] for r in res.kept],
                            [d["id"] for d in res.dropped])
    kept_ids = {r["id"] for r in res.kept}
    assert len(res.kept) + len(res.dropped) == len(recs) and len(res.dropped) > 50
    reasons = {d["reason"] for d in res.dropped}
    assert reasons == {"exact_duplicate", "near_duplicate"}
    for d in res.dropped:
        ev = d["evidence"]
        assert d["stage"] == "dedup" and ev["kept_id"] in kept_ids and "cluster" not in ev
        assert ev["threshold"] == 0.8 and ev["cluster_size"] >= 2 and 0.0 <= ev["jaccard"] <= 1.0
        assert ev["jaccard"] == round(ev["jaccard"], 4)
        if d["reason"] == "exact_duplicate":
            assert ev["jaccard"] == 1.0
    order = [r["id"] for r in recs if r["id"] in kept_ids]
    assert [r["id"] for r in res.kept] == order
    sizes = {}
    for r in res.kept:
        assert r["meta"]["lang"] == "en"
        sizes[r["id"]] = r["meta"]["dedup_cluster_size"]
        assert r["meta"]["dedup_cluster"] == r["id"]
    m = res.extra_metrics
    assert m["clusters"] == sum(1 for s in sizes.values() if s > 1)
    hist = res.details["cluster_size_hist"]
    assert sum(int(k) * v for k, v in hist.items()) == len(recs)
    assert sum(hist.values()) == len(res.kept)
    assert m["candidate_pairs"] >= m["verified_pairs"] > 0 and (m["bands"], m["band_rows"]) == dedup.lsh_params(P)


def test_empty_input_and_rows_without_duplicates_keep_everything():
    res = dedup.dedup_records([], P)
    assert res.kept == [] and res.dropped == [] and res.extra_metrics["clusters"] == 0
    recs = [rec("u:1", EN, "a"), rec("u:2", ZH, "b"), rec("u:3", "a different question about birds and trees", "c")]
    res = dedup.dedup_records(recs, P)
    assert [r["id"] for r in res.kept] == ["u:1", "u:2", "u:3"] and res.dropped == []
    assert [(r["meta"]["dedup_cluster"], r["meta"]["dedup_cluster_size"]) for r in res.kept] == \
        [("u:1", 1), ("u:2", 1), ("u:3", 1)]
    assert res.extra_metrics["exact_duplicates"] == 0 == res.extra_metrics["near_duplicates"]


def test_exact_and_near_copies_get_their_own_reason_and_evidence():
    """A byte-identical copy is an exact duplicate (Jaccard 1, no estimate); an edited copy is a near
    duplicate whose evidence holds its exact Jaccard and MinHash estimate with the kept row, to 4 places."""
    p = DedupParams(field="prompt", prefer_typical=False)
    recs = [rec("d:1", EN, "the longest reply"), rec("d:2", EN, "short"), rec("d:3", EN + " And more.", "mid")]
    res = dedup.dedup_records(recs, p)
    assert [r["id"] for r in res.kept] == ["d:1"]
    dup = dedup.find_duplicates([EN, EN, EN + " And more."], p)
    jac = float(dup.jaccard(np.array([2]), np.array([0]))[0])
    est = float(dup.estimate(np.array([2]), np.array([0]))[0])
    assert 0.8 <= jac < 1 and round(jac, 4) != round(jac, 5) and round(est, 4) != round(est, 5)
    exact, near = res.dropped
    assert (exact["id"], exact["reason"], near["id"], near["reason"]) == ("d:2", "exact_duplicate",
                                                                          "d:3", "near_duplicate")
    assert exact["evidence"] == {"kept_id": "d:1", "cluster_size": 3, "jaccard": 1.0,
                                 "threshold": 0.8}
    norm = dup.sketches.norm
    edit = edit_similarity([norm[dup.row_of[2]]], [norm[dup.row_of[0]]])[0]
    assert near["evidence"] == {"kept_id": "d:1", "cluster_size": 3, "jaccard": round(jac, 4),
                                "threshold": 0.8, "minhash_estimate": round(est, 4),
                                "edit_similarity": round(edit, 4), "matched_by": ["char_edits", "word_jaccard"],
                                "matched_id": "d:1", "similarity": round(max(edit, jac), 4)}
    assert res.extra_metrics["exact_duplicates"] == 1 and res.extra_metrics["near_duplicates"] == 1


def test_exact_only_dedup_drops_byte_identical_copies():
    recs = [rec("e:1", EN, "x"), rec("e:2", EN, "y"), rec("e:3", EN + " And more.", "z")]
    res = dedup.dedup_records(recs, DedupParams(field="prompt", near=False, keep="lowest_id"))
    assert [r["id"] for r in res.kept] == ["e:1", "e:3"]
    (d,) = res.dropped
    assert (d["id"], d["reason"], d["evidence"]["jaccard"]) == ("e:2", "exact_duplicate", 1.0)
    assert "minhash_estimate" not in d["evidence"]


def test_rows_without_meta_get_the_cluster_fields():
    recs = [{k: v for k, v in rec(f"m:{i}", EN).items() if k != "meta"} for i in (1, 2)]
    res = dedup.dedup_records(recs, DedupParams(field="prompt", keep="lowest_id"))
    assert [r["meta"] for r in res.kept] == [{"dedup_cluster": "m:1", "dedup_cluster_size": 2}]
    assert [d["id"] for d in res.dropped] == ["m:2"]


def test_sketches_do_not_depend_on_the_batch_size(monkeypatch):
    """A chunk is sketched a few hundred texts at a time (cache-sized vector passes); any batch size
    gives the same signatures, shingle sets, character signatures, digit keys and normalized texts."""
    data = bd.generate(300, seed=4, dup_share=0.3, max_rate=0.08)
    texts = data.texts + ["", "   ", "今天天气好吗", "a"]
    p = DedupParams()
    ref = dedup.sketch(texts, p)
    for rows in (1, 7, 64):
        monkeypatch.setattr(dedup, "_BATCH_ROWS", rows)
        sk = dedup.sketch(texts, p)
        for f in ("sig", "flat", "offsets", "char_mode", "edit_sig", "digit_key"):
            assert np.array_equal(getattr(sk, f), getattr(ref, f)), (rows, f)
        assert sk.norm == ref.norm
