"""The perplexity stage's text rules (sftpipe/text_rules.py): the garbage a reference LM finds unsurprising,
caught with evidence; ordinary replies in English, simplified and traditional Chinese, Japanese, code,
lists and tables left alone; on a generated sample, against its truth."""

import json

import pytest

from sftpipe.config import CleanParams, CollectParams, PerplexityParams, SampleParams, Source, TextRulesParams
from sftpipe.perplexity import perplexity_filter
from sftpipe.text_rules import check_record, check_text, common_han

P = TextRulesParams()

ORDINARY = {
    "en prose": "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen inside the leaf.",
    "en list": "1. Preheat the oven.\n2. Mix the flour.\n3. Add the eggs.\n4. Bake for 20 minutes.\n5. Let it cool.",
    "table": "| name | age |\n|---|---|\n| Tom | 3 |\n| Ann | 4 |\n| Bob | 5 |\n| Joe | 6 |",
    "code": "for i in range(10):\n    print(i)\n    print(i)\nfor j in range(10):\n    print(j)",
    "simplified": "北京是中国的首都，也是一座历史悠久的城市，每年都有很多游客来这里参观故宫和长城。",
    "traditional": "臺灣的首都是臺北，這裡的夜市非常熱鬧，許多觀光客都會來體驗當地的美食。",
    "japanese": "東京は日本の首都です。気温は広い範囲で上がり、売り上げも伸びました。",
    "rare name": "王喆",
    "full-width acronym": "ＡＩ技术",
    "full-width english": "７ + １ = ８． Ｚｏｅ ｈａｓ ８ ｂｏｏｋｓ．",
    "one word": "positive",
    "short repeat": "ok ok ok",   # under min_units
    "quoting the phrase": "The phrase 'AI language model' names systems like this one.",
}


@pytest.mark.parametrize("name", sorted(ORDINARY))
def test_ordinary_replies_pass(name):
    assert check_text(ORDINARY[name], P) is None


@pytest.mark.parametrize("text,reason", [
    ("and " * 30, "repetitive"),
    ("I love you. " * 6, "repetitive"),
    ("是的" * 12, "repetitive"),
    ("哈哈" * 10, "repetitive"),
    ("北京是中国的首都".encode("utf-8").decode("gbk", errors="replace"), "lossy_decoding"),
    ("负面".encode("utf-8").decode("gbk", errors="replace"), "rare_han"),
    ("正面".encode("utf-8").decode("gbk", errors="replace"), "rare_han"),   # 姝ｉ潰: a full-width letter
    ("As an AI language model, I cannot answer that.", "canned_phrase"),
    ("作为一个人工智能语言模型，我无法回答这个问题。", "canned_phrase"),
])
def test_garbage_is_caught_with_its_reason(text, reason):
    hit = check_text(text, P)
    assert hit is not None and hit[0] == reason, hit


def test_units_cut_han_characters_one_by_one_and_other_text_into_words_in_any_mix():
    """One rule for every language: a reply mostly in English with a Chinese run repeated in it is cut into
    its characters too (a share of Han characters used to decide, and ran "好好好..." into one word)."""
    from sftpipe.text_rules import units

    assert units("重复重复 the THE 2024年 café x_y") == ["重", "复", "重", "复", "the", "the", "2024", "年",
                                                        "café", "x_y"]
    mixed = "Quick summary of the results for everyone: " + "好" * 12
    assert units(mixed)[-12:] == ["好"] * 12
    hit = check_text(mixed, TextRulesParams())
    assert hit is not None and hit[0] == "repetitive" and hit[1]["units"] == 19
    assert check_text("Quick summary of the results for everyone: 好的，谢谢你。", TextRulesParams()) is None


def test_gbk_mojibake_of_real_chinese_is_rare_characters_and_the_text_itself_is_not():
    """Every sentence of the sample's Chinese pretraining text: read as GBK where the bytes decode without
    loss it is flagged rare_han (or lossy_decoding where they do not), and the sentence itself passes."""
    from sftpipe.sample import pretrain_corpus

    texts = [t for t in pretrain_corpus(["zh"], 200, seed=3) if len(t) >= 4]
    assert len(texts) > 100
    for t in texts:
        assert check_text(t, P) is None, t
        hit = check_text(t.encode("utf-8").decode("gbk", errors="replace"), P)
        assert hit is not None and hit[0] in ("rare_han", "lossy_decoding"), t


def test_common_sets_cover_both_scripts_and_miss_most_characters_of_utf8_lead_bytes_read_as_gbk():
    assert all(common_han(c) for c in "的是中国人臺灣這裡們會")
    pairs = []
    for lead in range(0xE4, 0xEA):          # UTF-8's lead bytes of CJK characters
        for trail in range(0x80, 0xC0):     # its continuation bytes
            try:
                pairs.append(bytes([lead, trail]).decode("gbk"))
            except UnicodeDecodeError:
                pass
    assert len(pairs) == 384 and sum(not common_han(c) for c in pairs) == 276


def test_rules_read_replies_only_and_each_one_turns_off():
    rec = {"id": "r", "messages": [{"role": "user", "content": "Say 'as an AI language model' " + "la " * 20},
                                   {"role": "assistant", "content": "Done."}]}
    assert check_record(rec, P) is None
    rec["messages"].append({"role": "user", "content": "again"})
    rec["messages"].append({"role": "assistant", "content": "yes " * 20})
    reason, ev = check_record(rec, P)
    assert reason == "repetitive" and ev["reply"] == 1 and ev["most_common"] == "yes yes yes"
    assert check_record(rec, P.model_copy(update={"repetition": None})) is None
    assert check_text("\ufffd", P.model_copy(update={"replacement_char": False})) is None
    assert check_text("璐熼潰", P.model_copy(update={"rare_han": None})) is None
    assert check_text("As an AI language model", P.model_copy(update={"phrases": []})) is None


def test_the_filter_drops_a_rule_hit_inside_the_bounds_with_its_evidence_and_score():
    rows = [{"id": f"r{i}", "source": "s", "label": None, "meta": {"lang": "en"},
             "messages": [{"role": "user", "content": "q"},
                          {"role": "assistant", "content": "and " * 20 if i == 3 else f"answer {i}"}]}
            for i in range(8)]
    scores = [10.0] * 8
    res = perplexity_filter(rows, scores, PerplexityParams())
    assert [d["id"] for d in res.dropped] == ["r3"]
    d = res.dropped[0]
    assert d["reason"] == "repetitive" and d["evidence"]["ppl"] == 10.0 and d["evidence"]["units"] == 20
    assert len(res.kept) + len(res.dropped) == 8
    off = PerplexityParams(rules=TextRulesParams(enabled=False))
    assert not perplexity_filter(rows, scores, off).dropped


def test_the_ifd_cap_reads_this_run_s_scores_never_an_ifd_the_input_carries():
    """Rows that arrive with a meta.ifd of their own (another run's output used as a source) and a run
    with the IFD pass off: the cap has nothing of this run to read, so it keeps them (it used to index
    the missing scores and crash)."""
    rows = [{"id": f"r{i}", "label": None, "source": "s", "meta": {"lang": "en", "ifd": 9.0},
             "messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
            for i in range(4)]
    params = PerplexityParams(ifd=False, max_ifd=1.0, mad_k=None)
    res = perplexity_filter(rows, [5.0, 6.0, 7.0, 8.0], params, ifd=None)
    assert [r["id"] for r in res.kept] == ["r0", "r1", "r2", "r3"] and res.dropped == []
    res = perplexity_filter(rows, [5.0, 6.0, 7.0, 8.0], params, ifd=[0.5, None, 1.5, 0.9])
    assert [d["id"] for d in res.dropped] == ["r2"] and res.dropped[0]["reason"] == "ifd_high"


def test_on_a_generated_sample_only_garbage_is_hit(tmp_path):
    """After collect and clean, as in the pipeline: no defect-free row and no row of another defect is hit;
    of the garbage, every repeated-token and mojibake row is."""
    from sftpipe.clean import clean_records
    from sftpipe.collect.sources import collect
    from sftpipe.sample import SOURCES, generate

    generate(SampleParams(rows_per_lang=1000, seed=5), tmp_path)
    truth = {t["id"]: t for t in map(json.loads, (tmp_path / "truth.jsonl").read_text(encoding="utf-8").splitlines())}
    res = collect(CollectParams(sources=[Source(path=str(tmp_path / f), name=n) for n, f in SOURCES.items()]))
    rows = clean_records(res.records, CleanParams()).kept
    hits = {r["id"]: check_record(r, P) for r in rows}
    not_garbage = [i for i in hits if truth[i].get("defect") != "garbage"]
    assert len(not_garbage) > 1500 and not any(hits[i] for i in not_garbage)
    for kind in ("repeated_tokens", "mojibake"):
        ids = [i for i in hits if truth[i].get("garbage_type") == kind]
        assert ids and all(hits[i] for i in ids), kind


def _row(i, request, reply, lang="en"):
    return {"id": f"r{i}", "source": "s", "label": None, "meta": {"lang": lang},
            "messages": [{"role": "user", "content": request}, {"role": "assistant", "content": reply}]}


CANNED = "Click here to subscribe to our newsletter and never miss an update!"


def test_the_same_reply_to_unrelated_requests_is_repeated_reply_and_an_answer_to_paraphrases_is_not():
    rows = [_row(0, "Explain what `json.dumps` does.", CANNED),
            _row(1, "What does `os.path.join` do in Python?", CANNED),
            _row(2, "Describe the purpose of `heapq.heappush`.", CANNED.upper()),     # units are lowercased
            # the same answer to three phrasings of one question: it shares its subject with each of them
            _row(3, "What is the capital of Mongolia?", "The capital of Mongolia is Ulaanbaatar, its largest city."),
            _row(4, "Name the capital of Mongolia.", "The capital of Mongolia is Ulaanbaatar, its largest city."),
            _row(5, "Which city is Mongolia's capital?", "The capital of Mongolia is Ulaanbaatar, its largest city."),
            _row(6, "蒙古的首都是哪座城市？", "蒙古的首都是乌兰巴托。", "zh"),
            _row(7, "告诉我蒙古的首都。", "蒙古的首都是乌兰巴托。", "zh"),
            _row(8, "哪座城市是蒙古的首都？", "蒙古的首都是乌兰巴托。", "zh"),
            # a canned reply under only two requests, and one request asked three times (dedup's job)
            _row(9, "Summarize `zlib.crc32`.", "This content is not available in your region. Please try again later."),
            _row(10, "What is `bisect` for?", "This content is not available in your region. Please try again later."),
            *[_row(11 + k, "Explain what `glob.glob` does.", "I'm sorry, but I am unable to help with that request.")
              for k in range(3)]]
    res = perplexity_filter(rows, [10.0] * len(rows), PerplexityParams(mad_k=None, max_ifd=None))
    assert sorted(d["id"] for d in res.dropped) == ["r0", "r1", "r2"]
    assert {d["reason"] for d in res.dropped} == {"repeated_reply"}
    assert res.dropped[0]["evidence"]["requests"] == 3 and res.dropped[0]["evidence"]["ppl"] == 10.0
    assert len(res.kept) + len(res.dropped) == len(rows)
    for off in (TextRulesParams(repeated_reply=None), TextRulesParams(enabled=False),
                TextRulesParams(repeated_reply=4), TextRulesParams(reply_overlap=1.0, repeated_reply=5)):
        kept = perplexity_filter(rows, [10.0] * len(rows), PerplexityParams(mad_k=None, max_ifd=None, rules=off))
        assert not kept.dropped, off
    # allowed any overlap, the answers to paraphrases repeat too
    loose = PerplexityParams(mad_k=None, max_ifd=None, rules=TextRulesParams(reply_overlap=1.0))
    assert sorted(d["id"] for d in perplexity_filter(rows, [10.0] * len(rows), loose).dropped) == \
        ["r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8"]


def test_a_repeated_reply_cut_by_another_rule_or_bound_keeps_that_reason():
    rows = [_row(i, f"Explain what `mod{i}.fn` does.", CANNED) for i in range(3)]
    rows.append(_row(3, "Explain what `mod3.fn` does.", "As an AI language model, I cannot help with that today."))
    rows += [_row(4 + i, f"What does `pkg{i}.run` do?", "As an AI language model, I cannot help with that today.")
             for i in range(2)]
    res = perplexity_filter(rows, [10.0, 10.0, 1e6, 10.0, 10.0, 10.0], PerplexityParams(mad_k=None, max_ppl=100.0,
                                                                                    max_ifd=None))
    reasons = {d["id"]: d["reason"] for d in res.dropped}
    assert reasons == {"r0": "repeated_reply", "r1": "repeated_reply", "r2": "perplexity_high",
                       "r3": "canned_phrase", "r4": "canned_phrase", "r5": "canned_phrase"}


def test_on_a_generated_sample_repeated_reply_hits_only_garbage(tmp_path):
    """After collect and clean (exact and near duplicates still in): every row the rule reads as a reply
    repeated under unrelated requests is injected garbage."""
    from sftpipe.clean import clean_records
    from sftpipe.collect.sources import collect
    from sftpipe.sample import SOURCES, generate
    from sftpipe.text_rules import repeated_replies, reply_key

    generate(SampleParams(rows_per_lang=1000, seed=5), tmp_path)
    truth = {t["id"]: t for t in map(json.loads, (tmp_path / "truth.jsonl").read_text(encoding="utf-8").splitlines())}
    res = collect(CollectParams(sources=[Source(path=str(tmp_path / f), name=n) for n, f in SOURCES.items()]))
    rows = clean_records(res.records, CleanParams()).kept
    hit = [r["id"] for r, n in zip(rows, repeated_replies([reply_key(r, P) for r in rows], P)) if n]
    assert len(hit) >= 10 and all(truth[i].get("garbage_type") == "boilerplate" for i in hit), \
        [(i, truth[i].get("defect")) for i in hit if truth[i].get("garbage_type") != "boilerplate"]
