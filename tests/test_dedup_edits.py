"""Typo-level copies and paraphrases, scored against injected ground truth (sftpipe.sample.dupbench)."""

from __future__ import annotations

import numpy as np
import pytest

from sftpipe import ledger
from sftpipe.config import DedupParams, EditsParams, SemanticDedupParams
from sftpipe.dedup import clusters as dedup
from sftpipe.dedup import lsh
from sftpipe.dedup.edits import char_ngram_hashes, edit_similarity, oph_signatures, slot_change
from sftpipe.dedup.sketch import MAX_HASH, normalize, normalize_batch
from sftpipe.sample import dupbench

P = DedupParams()
WORD_ONLY = DedupParams(edits=EditsParams(enabled=False), slot_check=False,
                        semantic=SemanticDedupParams(enabled=False))


def rec(rid, prompt, response):
    return {"id": rid, "source": "t", "label": None, "meta": {},
            "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]}


def clusters_of(records, res) -> list[int]:
    """Per record: the index of the record its cluster kept."""
    at = {r["id"]: i for i, r in enumerate(records)}
    comp = list(range(len(records)))
    for d in res.dropped:
        comp[at[d["id"]]] = at[d["evidence"]["kept_id"]]
    return comp


@pytest.fixture(scope="module")
def bench():
    return dupbench.generate(n_per_lang=400, n_long=60, n_typo=40, n_para=40, seed=1)


def test_dupbench_targets_on_a_small_set(bench):
    """The issue's targets: typo recall >= 0.95 at 2% and >= 0.90 at 5% of characters edited,
    paraphrase recall >= 0.80, precision >= 0.99 with templated one-slot near-misses kept apart.
    The word pass alone (what dedup was) finds few of the typo copies and no paraphrase."""
    res = dedup.dedup_records(bench.records, P)
    ledger.check_accounting("dedup", [r["id"] for r in bench.records], [r["id"] for r in res.kept],
                            [d["id"] for d in res.dropped])
    s = bench.score(clusters_of(bench.records, res))
    assert s.rate("typo", rate=0.02) >= 0.95 and s.rate("typo", rate=0.05) >= 0.90, s.recall
    assert s.rate("paraphrase") >= 0.80, s.recall
    assert s.precision >= 0.99 and s.one_slot_merged == 0 and s.one_slot_pairs > 1000, s
    old = bench.score(clusters_of(bench.records, dedup.dedup_records(bench.records, WORD_ONLY)))
    assert old.rate("typo", lang="en", rate=0.02) < 0.5 and old.rate("paraphrase") < 0.1, old.recall
    m = res.extra_metrics
    assert m["edit_pairs"] > 100 and m["slot_rejected_pairs"] > 100 and m["semantic_pairs"] > 50
    assert m["paraphrases"] > 50 and m["near_duplicates"] > 100


def test_every_drop_names_the_signature_that_matched(bench):
    res = dedup.dedup_records(bench.records, P)
    by = {tuple(d["evidence"].get("matched_by", ["exact"])) for d in res.dropped}
    assert ("char_edits",) in by and ("semantic",) in by
    for d in res.dropped:
        ev = d["evidence"]
        if d["reason"] == "paraphrase":
            assert ev["matched_by"] == ["semantic"] and ev["rule"]["rule"] in ("same_answer_same_content",
                                                                               "label_same_input")
            assert -1 <= ev["similarity"] <= 1
        elif d["reason"] == "near_duplicate":
            assert ev["matched_by"] and 0 < ev["similarity"] <= 1 and "edit_similarity" in ev
            if ev["matched_by"] == ["char_edits"]:
                assert ev["similarity"] >= P.edits.min_similarity


def test_a_typo_copy_is_found_whatever_its_word_jaccard():
    a = "Please explain why the sky looks blue on a clear afternoon, and keep it short for a child."
    b = "Plaese explain why teh sky looks blue on a clear aftrenoon, and keep it shrot for a child."
    recs = [rec("t:1", a, "Sunlight scatters off air molecules; blue scatters most."),
            rec("t:2", b, "Sunlight scatters off air molecules; blue scatters most.")]
    assert dedup.dedup_records(recs, WORD_ONLY).dropped == []            # 4 typos break most word 5-grams
    (d,) = dedup.dedup_records(recs, P).dropped
    assert d["reason"] == "near_duplicate" and d["evidence"]["matched_by"] == ["char_edits"]
    assert d["evidence"]["jaccard"] < 0.8 <= d["evidence"]["edit_similarity"]


@pytest.mark.parametrize("a,b,reason", [
    ("what is 18 + 15", "what is 18 + 16", "number"),
    ("what is the capital of kenya", "what is the capital of peru", "substitution"),
    ("the cat sat on the green mat", "the cat sat on the red mat", "substitution"),
    ("我 买 了 一 门 课程", "我 买 了 一 门 手机", "substitution"),
    ("判断 旅 行很温馨 正面", "判断 服 务很温馨 正面", "substitution"),       # a typo's space splits no CJK word
    ("小娟有3个苹果 小娟吃了1个", "小红有3个苹果 小红吃了1个", "repeated"),
    ("the library opens at nine", "the library opens at nine i would recommend it to everyone here", "insertion"),
    ("teh cat sat on the mat", "the cat sat on the mat", None),            # a swap is one edit
    # one word deleted, one character changed and "thanks" appended: under 10% of the letters
    ("the library opens at nine and closes at six except on sundays when it stays closed for cleaning "
     "and repairs of the old reading room", "the library opens at nine and closes at six except on sundays "
     "when it stays closed for cleaning and repairs of the old room", None),
    ("我们明天上午九点在学校门口集合然后一起坐大巴去郊外的森林公园野餐请大家记得带好水和雨伞",
     "我们明天上午九点在学校门口集合然后一起坐大巴去郊外的森林公园野餐请大家记得带好水和雨衣谢谢", None),
])
def test_slot_check(a, b, reason):
    assert slot_change(a, b) == reason


def test_char_ngram_hashes_agree_with_the_ngram_sets():
    texts = ["hello world", "ab", "", "world hello", "hello"]
    b = normalize_batch(texts, P.normalize)
    rows, h = char_ngram_hashes(b.cps, b.lens, 5)
    got = [sorted(set(h[(rows == i) & (h != MAX_HASH)].tolist())) for i in range(len(texts))]
    norm = b.texts()
    want = [sorted({t[k:k + 5] for k in range(max(1, len(t) - 4))}) if t else [] for t in norm]
    assert [len(g) for g in got] == [len(w) for w in want]
    assert set(got[0]) & set(got[3]) and len(set(got[0]) & set(got[4])) == 1   # "hello" is shared once
    assert got[2] == [] and len(got[1]) == 1
    sig = oph_signatures(rows, h, len(texts), 16)
    assert (sig[:, 2] == MAX_HASH).all() and (sig[:, 0] != MAX_HASH).all()    # short rows are densified


def test_the_long_row_prefilter_keeps_typo_copies_and_drops_unrelated_rows():
    rng = np.random.default_rng(0)
    words = [f"w{k}" for k in range(400)]
    base = " ".join(rng.choice(words, 120))
    other = " ".join(rng.choice(words, 120))            # same vocabulary: shares many char 5-grams
    typo = base.replace("w1", "w!1", 3)
    res = dedup.find_duplicates([base, other, typo], P)
    assert res.component.tolist() == [0, 1, 0]
    norm = [normalize(t, P.normalize) for t in (base, typo)]
    assert edit_similarity(norm[:1], norm[1:])[0] >= 0.8


def test_the_original_survives_its_longer_typo_copy():
    """A doubled key makes the copy's answer longer, so longest_response alone keeps the typo."""
    others = [rec(f"o:{k}", f"Tell me about the river number {k}.", f"The river number {k} is long and the water "
                  f"is cold in the winter.") for k in range(5)]
    orig = rec("a:1", "Tell me about the old river.", "The old river is long and the water is cold in the winter.")
    copy = rec("a:2", "Tell me about the old river.", "The old river is long and teh water is cold in the wintter.")
    recs = others + [orig, copy]
    res = dedup.dedup_records(recs, P)
    assert [d["id"] for d in res.dropped] == ["a:2"] and res.dropped[0]["evidence"]["kept_id"] == "a:1"
    plain = dedup.dedup_records(recs, P.model_copy(update={"prefer_typical": False}))
    assert [d["id"] for d in plain.dropped] == ["a:1"]
    assert dedup.rare_tokens(recs, [5, 6]) == {5: 0, 6: 2}      # "teh", "wintter" occur nowhere else


# ---------------------------------------------------------------------------
# Templated data: the typo pass's work is bounded (dedup.edits.bucket_cap / window / digit_key)

_NAMES = ["anna", "boris", "carla", "dmitri", "elena", "farid", "greta", "hiro", "ines", "jonas", "kira", "lukas"]
_THINGS = ["garden party", "book club", "chess match", "piano recital", "science fair", "film night",
           "charity run", "cooking class", "poetry reading", "board game evening", "quiz night", "art show"]
_DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
_PLACES = ["the library", "the old town hall", "the community centre", "the park pavilion", "the school gym"]


def template_rows(m: int, seed: int = 0) -> list[str]:
    """m distinct rows of one prompt template (four slots), as a user's SFT data has them."""
    rng = np.random.default_rng(seed)
    seen: dict[str, None] = {}
    while len(seen) < m:
        n, t, d, p = (rng.choice(x) for x in (_NAMES, _THINGS, _DAYS, _PLACES))
        seen[f"Please write a short invitation to {n} for the {t} on {d} at {p}. Keep it friendly and "
             f"brief. Dear {n}, you are warmly invited to the {t} on {d} at {p}. Hope to see you there!"] = None
    return list(seen)


def _typo_pass_pairs(texts: list[str], edits: EditsParams) -> np.ndarray:
    sk = dedup.sketch(texts, P)
    lens = np.array([len(t) for t in sk.norm])
    return lsh.candidate_pairs(sk.edit_sig, edits.bands, edits.rows, np.flatnonzero(lens > 0),
                               cap=edits.bucket_cap, window=edits.window)


def test_the_typo_pass_checks_grow_linearly_inside_a_template():
    """Rows of one template meet in nearly every band: all pairs of a bucket grow as its size squared,
    the capped buckets (each row and its `window` neighbours) as its size, once the per-row pairs
    have filled up to their bound (counted, not timed)."""
    e, old = P.edits, P.edits.model_copy(update={"bucket_cap": None})
    new = {m: len(_typo_pass_pairs(template_rows(m), e)) for m in (600, 1200, 2400)}
    for m, k in new.items():
        # the bound: per band, a bucket of s <= cap rows gives s(s-1)/2 <= s(cap-1)/2 pairs, a bigger one s*window
        assert k <= e.bands * m * max((e.bucket_cap - 1) / 2, e.window)
    assert new[2400] / new[1200] < 2 * 1.1 and new[1200] / new[600] < 2 * 1.2     # ~linear
    all_pairs = {m: len(_typo_pass_pairs(template_rows(m), old)) for m in (300, 600)}
    assert all_pairs[600] / all_pairs[300] > 2 * 1.6                              # ~quadratic
    assert new[600] < all_pairs[600] / 2


def test_small_buckets_keep_all_their_pairs():
    """With no bucket over the cap the pairs are those of plain banding (small data: as before)."""
    texts = template_rows(60, seed=3)
    e = P.edits
    sk = dedup.sketch(texts, P)
    plain = lsh.candidate_pairs(sk.edit_sig, e.bands, e.rows)
    assert len(plain) and np.array_equal(lsh.candidate_pairs(sk.edit_sig, e.bands, e.rows, cap=60, window=1), plain)
    capped = {tuple(p) for p in lsh.candidate_pairs(sk.edit_sig, e.bands, e.rows, cap=4, window=2).tolist()}
    assert capped < {tuple(p) for p in plain.tolist()}


def test_band_ranges_partition_the_capped_pairs():
    """The Ray engine's band tasks each take a range of bands: with capped buckets (whose order reads
    the next bands, circularly) and the digit key, the union over any partition is the whole."""
    texts = template_rows(300, seed=5)
    e = P.edits
    sk = dedup.sketch(texts, P)
    kw = dict(cap=e.bucket_cap, window=e.window, extra=sk.digit_key)
    whole = lsh.candidate_pairs(sk.edit_sig, e.bands, e.rows, **kw)
    for cuts in ([0, e.bands], [0, 5, e.bands], [0, 1, 17, 30, e.bands]):
        parts = [lsh.candidate_pairs(sk.edit_sig, e.bands, e.rows, band_range=(a, b), **kw)
                 for a, b in zip(cuts, cuts[1:])]
        assert len(whole) and np.array_equal(np.unique(np.concatenate(parts), axis=0), whole), cuts
    assert len(parts[1]) < len(whole)          # a range alone is not the whole


def test_a_typo_copy_inside_a_big_template_bucket_is_still_found():
    """A typo copy among 800 rows of its template. With the defaults it also meets its original in a
    bucket under the cap (the one holding that row's slot values); with a cap of 2 every bucket it
    shares is over the cap (checked: without the windows the pair is lost), and the windows, ordered
    by the next bands' keys, still put it next to its original."""
    texts = template_rows(800, seed=1)
    copy = texts[123].replace("invitation", "invitaton").replace("friendly", "firendly").replace("warmly", "warmyl")
    texts.append(copy)
    tight = P.model_copy(update={"edits": P.edits.model_copy(update={"bucket_cap": 2, "window": 2})})
    assert [123, 800] not in _typo_pass_pairs(texts, tight.edits.model_copy(update={"window": 0})).tolist()
    assert [123, 800] in _typo_pass_pairs(texts, tight.edits).tolist()
    for params in (P, tight):
        comp = dedup.find_duplicates(texts, params).component
        assert comp[800] == comp[123] == 123
        assert np.bincount(comp).max() == 2                       # no one-slot sibling merged


def test_the_digit_key_drops_only_pairs_the_slot_check_rejects():
    texts = [f"what is {a} + {b}? the answer is {a + b}." for a in range(10, 40) for b in range(10, 40)]
    texts += ["what is 12 + 13? teh answer is 25.", "whta is 12 + 13? the answer is 25."]
    e = P.edits.model_copy(update={"bucket_cap": None})
    sk = dedup.sketch(texts, P)
    with_key, sim = dedup.edit_candidates(sk, e, slot_check=True)
    without, _ = dedup.edit_candidates(sk, e.model_copy(update={"digit_key": False}), slot_check=True)
    reasons = dedup.slot_reasons(sk.norm, without)
    kept = {tuple(p) for p, r in zip(without.tolist(), reasons) if r != "number"}
    assert {tuple(p) for p in with_key.tolist()} == kept and len(with_key) < len(without) / 10
    assert dedup.find_duplicates(texts, P).component[-2:].tolist() == [63, 63]     # 12 + 13 and its copies


def test_capped_buckets_are_ordered_as_a_full_lexsort_would():
    """candidate_pairs sorts by key, then reorders only the buckets over the cap by the next two
    bands' keys: the pairs are those of one lexsort of (key, next key, key after) for every column."""
    texts = template_rows(400, seed=7)
    e = P.edits
    sk = dedup.sketch(texts, P)
    n = sk.edit_sig.shape[1]
    keys = [lsh._band_keys(sk.edit_sig[k * e.rows:(k + 1) * e.rows]) for k in range(e.bands)]
    for cap, window in ((4, 2), (16, 4)):
        expect = set()
        for k in range(e.bands):
            order = np.lexsort((keys[(k + 2) % e.bands], keys[(k + 1) % e.bands], keys[k]))
            same = keys[k][order][1:] == keys[k][order][:-1]
            for i, j in lsh._pairs_of_runs(order, same, cap, window).tolist():
                expect.add((min(i, j), max(i, j)))
        got = lsh.candidate_pairs(sk.edit_sig, e.bands, e.rows, cap=cap, window=window)
        assert len(got) and {tuple(p) for p in got.tolist()} == expect and got.max() < n


def test_slot_check_with_precomputed_stats_gives_the_same_reasons():
    """slot_reasons hands slot_change each text's letter count and digit flag, computed for all texts
    at once (text_stats); the reasons equal slot_change's own on pairs with digits, CJK and edits."""
    from sftpipe.dedup.edits import _DIGITS, _content, text_stats
    texts = template_rows(150, seed=2) + [f"what is {a} + 7? it is {a + 7}." for a in range(20)]
    texts += ["小明有3个苹果，小红有5个。", "小明有3个苹果，小红有6个。", "小明有3个苹果,小红有5个", "x_y ٣ Ⅻ", "",
              "the quick brown fox jumps over the lazy dog", "the quikc brown fox jumps over teh lazy dog"]
    sk = dedup.sketch(texts, P)
    n = len(texts)
    pairs = np.array([(i, j) for i in range(n) for j in range(i + 1, n) if (i * 7 + j) % 5 == 0 or i >= n - 7])
    expect = [slot_change(sk.norm[i], sk.norm[j]) for i, j in pairs.tolist()]
    got = dedup.slot_reasons(sk.norm, pairs)
    assert got == expect and {"number", "substitution", None} <= set(got)
    content, digit = text_stats(sk.norm)
    assert content.tolist() == [_content(t) for t in sk.norm]
    assert digit.tolist() == [bool(_DIGITS.search(t)) for t in sk.norm]
    assert dedup.slot_reasons(sk.norm, np.zeros((0, 2), dtype=np.int64)) == []
