"""The clean stage: each rule on what it must change and on what it must leave alone, the ledger,
and the sample's injected clean defects repaired exactly."""

import json
import random
from collections import Counter

import ftfy
import pytest

from sftpipe.clean import clean_records, clean_text, rules
from sftpipe.clean.pii import cn_id_check_char, is_bank_card, is_cn_id, luhn_ok
from sftpipe.clean.records import snippets
from sftpipe.clean.text import FTFY_CONFIG, split_fences
from sftpipe.config import CleanParams
from sftpipe.ledger import write_filter_outputs
from sftpipe.sample import defects as D

ALL_OFF = dict(mojibake=False, newlines=False, html=False, control_chars=False, zero_width=False, unicode="none",
               whitespace=False, pii=[])


def only(**on) -> CleanParams:
    return CleanParams(**{**ALL_OFF, **on})


def clean(text: str, **on) -> str:
    return clean_text(text, only(**on) if on else None)[0]


# ------------------------------------------------------------------------------------------ unicode

def test_nfc_composes_and_nfkc_also_folds_compatibility_forms():
    decomposed = "cafe\u0301 ｆｕｌｌ１２ ﬁne 10³ 中文\u3000空格"
    assert clean(decomposed, unicode="NFC") == "café ｆｕｌｌ１２ ﬁne 10³ 中文\u3000空格"
    assert clean(decomposed, unicode="NFKC") == "café full12 fine 103 中文 空格"
    assert clean(decomposed, unicode="none") == decomposed
    assert clean_text("plain ascii", only(unicode="NFC"))[1] == Counter()


# -------------------------------------------------------------------------------- invisible characters

def test_zero_width_removed_but_emoji_and_persian_joiners_kept():
    assert clean("He\u200bllo\u2060 wor\ufeffld\u200d!\u200c", zero_width=True) == "Hello world!"
    family = "👨\u200d👩\u200d👧 and ❤\ufe0f\u200d🔥"
    assert clean(family, zero_width=True) == family
    persian = "می\u200cخواهم"          # ZWNJ is part of the spelling
    assert clean(persian, zero_width=True) == persian
    assert clean("ab\u200dcd 中\u200b文", zero_width=True) == "abcd 中文"
    assert clean_text("He\u200bl\u200blo", only(zero_width=True))[1] == Counter(zero_width=2)


def test_control_characters_removed_but_newline_and_tab_kept():
    text = "a\x00b\x07c\x7fd\x81e\x9df\tg\nh\x0bi\x0cj"
    assert clean(text, control_chars=True) == "abcdef\tg\nhij"
    assert clean("\x1b[1;31mred\x1b[0m text", control_chars=True) == "red text"   # the whole escape
    assert clean("line1\r\nline2", control_chars=True) == "line1\r\nline2"       # \r is the newlines rule's


def test_c1_controls_from_windows_1252_become_their_characters_with_mojibake_on():
    assert clean("don\x92t \x93quote\x94", mojibake=True, control_chars=True) == "don’t “quote”"
    assert clean("don\x92t", control_chars=True) == "dont"


def test_newlines():
    assert clean("a\r\nb\rc\u2028d\u2029e", newlines=True) == "a\nb\nc\nd\ne"
    assert clean_text("a\r\nb\rc", only(newlines=True))[1] == Counter(newlines=2)
    assert clean("a\r\nb", newlines=False) == "a\r\nb"


# ------------------------------------------------------------------------------------------ whitespace

def test_whitespace_outside_fences_only():
    text = ("  Intro  with   runs \t\nsecond\u00a0line\u2009here   \n\n\n\n\nafter blanks\n"
            "```python\ndef f(x):  \n    return  x   # two  spaces\n\n\n\n```\n"
            "  - item   one  \n\tindented\t\ttab\n~~~\nraw   tilde  \n~~~\n   ")
    want = ("Intro with runs\nsecond line here\n\nafter blanks\n"
            "```python\ndef f(x):  \n    return  x   # two  spaces\n\n\n\n```\n"
            "  - item one\n\tindented tab\n~~~\nraw   tilde  \n~~~")
    assert clean(text, whitespace=True) == want


def test_unclosed_fence_runs_to_the_end_and_inline_backticks_do_not_open_one():
    text = "Text  here\n```\ncode   stays  \n"
    assert clean(text, whitespace=True) == "Text here\n```\ncode   stays"   # only the message end is stripped
    parts = split_fences("a ``` b\n````js\nx\n```\nstill code\n````\nafter")
    assert parts == [(False, "a ``` b\n"), (True, "````js\nx\n```\nstill code\n````\n"), (False, "after")]


def test_blank_line_cap_and_ideographic_space_kept():
    assert clean("a\n\n\nb\n\n\n\n\nc", whitespace=True) == "a\n\nb\n\nc"
    assert clean_text("a\n\n\nb", only(whitespace=True, max_blank_lines=2))[0] == "a\n\n\nb"
    assert clean_text("a\n\n\n\n\nb", only(whitespace=True, max_blank_lines=0))[0] == "a\nb"
    assert clean("\u3000\u3000段落缩进。", whitespace=True) == "\u3000\u3000段落缩进。"
    assert clean("Dear Noah,\n\nSee you.\n\nBest,\nMia", whitespace=True) == "Dear Noah,\n\nSee you.\n\nBest,\nMia"


# ------------------------------------------------------------------------------------------- mojibake

ZH = "智利的首都是圣地亚哥。"


def test_mojibake_latin1_cp1252_and_double_are_repaired():
    for how in ("latin-1", "cp1252", "cp1252_twice"):
        broken = D.mojibake_of(ZH, how)
        assert broken != ZH and clean(broken, mojibake=True) == ZH, how
    assert clean("CafÃ© naÃ¯ve â€” â€œquotedâ€\x9d", mojibake=True) == "Café naïve — “quoted”"
    half = "小丽：你好！" + D.mojibake_of("期待你的回复。", "latin-1")
    assert clean(half, mojibake=True) == "小丽：你好！期待你的回复。"


def test_mojibake_rule_leaves_good_text_alone_and_does_not_fix_gbk():
    good = ["café naïve", "“引号”与‘单引号’", "ｆｕｌｌｗｉｄｔｈ", "ﬁne", ZH, "10 °C, 5 €, £3", "São Tomé",
            "Dear Noah,\n\nsee you"]
    for g in good:
        assert clean(g, mojibake=True) == g, g
    gbk = ZH.encode("utf-8").decode("gbk", errors="replace")
    assert clean(gbk, mojibake=True) == gbk      # documented: UTF-8 read as GBK is beyond ftfy


def _read_as_gbk(text: str) -> str:
    return text.encode("utf-8").decode("gbk")


def test_gbk_mojibake_is_decoded_back_when_asked():
    """UTF-8 read as GBK (``clean.mojibake_gbk``, off by default): a whole text, runs between ASCII
    that stays ASCII, a Latin-1 layer read over it (ftfy takes that off first), short answers."""
    texts = ["你好，世界！今天天气很好", "北京上海 2 今天天气很好", "负面", "正面", "北京 上海 广州"]
    for t in texts:
        broken = _read_as_gbk(t)
        assert broken != t and clean(broken) == broken                       # off by default
        assert clean(broken, mojibake_gbk=True) == t, t
        layered = broken.encode("utf-8").decode("latin-1")
        assert clean(layered, mojibake=True, mojibake_gbk=True) == t, t
    mixed = "Answer: " + _read_as_gbk("北京上海") + " (capital)"
    assert clean(mixed, mojibake_gbk=True) == "Answer: 北京上海 (capital)"
    assert clean_text(_read_as_gbk(texts[0]), only(mojibake_gbk=True))[1] == Counter({"mojibake_gbk": 1})


def test_gbk_rule_leaves_chinese_text_and_lossy_runs_alone():
    good = [ZH, "你好", "负面", "“引号”与‘单引号’", "ｆｕｌｌｗｉｄｔｈ", "10 °C, 5 €", "São Tomé",
            "这是一个正常的中文句子，没有任何问题。", "Dear Noah,\n\n我们星期二见。"]
    for g in good:
        assert clean(g, mojibake_gbk=True) == g, g
    # bytes lost when the text was read (U+FFFD): that run stays as it is, the others are repaired
    lossy = ZH.encode("utf-8").decode("gbk", errors="replace")
    assert "\ufffd" in lossy and clean(lossy, mojibake_gbk=True) == lossy
    both = _read_as_gbk("今天天气很好") + " / " + lossy
    assert clean(both, mojibake_gbk=True) == "今天天气很好 / " + lossy


def test_garbage_mojibake_of_the_sample_stays_garbage_after_clean():
    """The sample's *garbage* mojibake must not come back as fluent text: the old variant (UTF-8
    read as Latin-1) is repaired by ftfy, the current ones are not."""
    assert ftfy.fix_text(ZH.encode("utf-8").decode("latin-1"), FTFY_CONFIG) == ZH   # why the variant went
    variants = set()
    for seed in range(40):
        out = D.garbage(random.Random(seed), "mojibake", "en", "Paris.", ZH)
        variants.add(out.isascii() or any("\u4e00" <= c <= "\u9fff" for c in out))  # GBK, or GBK then Latin-1
        repaired = clean_text(out)[0]
        assert repaired != ZH and "\ufffd" in repaired and "首都" not in repaired
    assert variants == {True, False}            # both variants were exercised


# ----------------------------------------------------------------------------------------------- html

def test_html_tags_and_entities_removed():
    text = '<div class="answer"><p>It&#39;s <b>fine</b>&nbsp;&amp; done.</p><p>Second&#x4e2d;</p></div>'
    assert clean(text, html=True, whitespace=True) == "It's fine & done.\n\nSecond中"
    assert clean("<!-- x --><script>alert(1)</script>Hi<br/>there<BR>", html=True, whitespace=True) == "Hi\nthere"
    assert clean("&lt;div&gt; is a tag", html=True) == "<div> is a tag"          # escaped tag stays text


@pytest.mark.parametrize("text", [
    "a < b and c > d",
    "if a<b and c>d then swap",
    "Use List<int> or Map<String, Object> or Vec<T>.",
    "SELECT * FROM <table> WHERE id = 1;",
    "usage: cp <source> <dest>",
    "Mask it as <EMAIL> or <PHONE>.",
    "x &copy=2 and ?a=1&lang=en",           # no ";": not a reference
    "AT&T and R&D",
    "In XML write <name>Ada</name> and <Div>x</Div>.",  # not HTML elements / not HTML case
    "Use `<b>bold</b>` for bold and ``&amp;`` for &.",
    "```html\n<p>keep &amp; this</p>\n```",
])
def test_html_leaves_non_html_and_code_alone(text):
    assert clean(text, html=True) == text


def test_html_off_leaves_markup():
    assert clean("<p>a &amp; b</p>", html=False, whitespace=True) == "<p>a &amp; b</p>"


# ------------------------------------------------------------------------------------------------ PII

def test_cn_id_check_character_satisfies_iso_7064():
    """Sum of digit * 2^(17-i) mod 11 over all 18 positions, with X = 10, must be 1 (GB 11643)."""
    rng = random.Random(1)
    for _ in range(300):
        first = "".join(str(rng.randint(0, 9)) for _ in range(17))
        full = first + cn_id_check_char(first)
        total = sum((10 if c == "X" else int(c)) * pow(2, 17 - i, 11) for i, c in enumerate(full))
        assert total % 11 == 1
    assert cn_id_check_char("11010519491231002") == "X"      # the standard's example


def test_luhn_and_card_rules():
    for good in ("4111111111111111", "5555555555554444", "378282246310005", "6011111111111117", "79927398713"):
        assert luhn_ok(good)
    assert not luhn_ok("4111111111111112") and not luhn_ok("79927398710")
    assert is_bank_card("4111 1111 1111 1111")
    assert not is_bank_card("0000000000000000")            # Luhn-valid, not a card
    for typed in ("4567890145678901", "34567890123456"):    # keyboard runs (Luhn-valid)
        assert luhn_ok(typed) and not is_bank_card(typed)
    assert luhn_ok("79927398713000000") and not is_bank_card("79927398713000000")   # first digit 7


@pytest.mark.parametrize("text,want", [
    ("Mail john.smith@gmail.com.", "Mail <EMAIL>."),
    ("请联系li.wei88@163.com。", "请联系<EMAIL>。"),
    ("Call +1 415 555 0132 now", "Call <PHONE> now"),
    ("Call +1 (212) 555-0199.", "Call <PHONE>."),
    ("Tel +44 20 7946 0958", "Tel <PHONE>"),
    ("手机13812345678，或+86 138-1234-5678，或 159 1234 5678", "手机<PHONE>，或<PHONE>，或 <PHONE>"),
    ("Server 8.8.4.4, backup 2a00:1450:4001:82b::200e.", "Server <IP>, backup <IP>."),
    ("身份证11010519491231002X。", "身份证<CN_ID>。"),
    ("ID 11010519491231002x", "ID <CN_ID>"),
    ("card 4111 1111 1111 1111 or 6222021234567890128?", "card <BANK_CARD> or <BANK_CARD>?"),
    ("Amex 3782 822463 10005", "Amex <BANK_CARD>"),
])
def test_pii_is_masked(text, want):
    assert clean_text(text)[0] == want


@pytest.mark.parametrize("text", [
    "18 + 15 = 33",
    "18+15=33 and 1+9=10，阿丽现在有10枚硬币。",
    "In 2024 it cost $1,299.99 (12,345,678 units).",
    "id 110105194912310021 fails its check digit",
    "110105194902301234 has no February 30",     # check character right (4), date wrong
    "110105185001011235 born in 1850",            # check character right, year implausible
    "4111111111111112 fails Luhn",
    "0000 0000 0000 0000",
    "pi is 3.14159265358979323846",
    "version 1.2.3.4, ver. 2.0.0.1, v1.2.3.4, 版本1.2.3.4",
    "localhost 127.0.0.1, router 192.168.1.1, doc 203.0.113.5, ::1, fe80::1, 2001:db8::1",
    "std::vector<int> and a::b::c and 12:30:45",
    "999.1.1.1 is not an address",
    "order 12345678901 and 10000000000",
    "x+12345678 is a sum",
    "Gain: +12 345 points",                       # 5 digits: too short for E.164
    "+1 2345 6789 0123 4567",                     # 17 digits: too long
])
def test_pii_leaves_ordinary_numbers(text):
    assert clean_text(text)[0] == text


def test_eighteen_digit_numbers_failing_id_check_and_luhn_are_not_masked():
    rng = random.Random(5)
    checked = 0
    for _ in range(2000):
        n = rng.choice("12345678") + "".join(str(rng.randint(0, 9)) for _ in range(17))
        if is_cn_id(n) or luhn_ok(n):
            continue
        checked += 1
        assert clean_text(f"number {n} here")[0] == f"number {n} here"
    assert checked > 1000


def test_pii_kinds_are_switched_separately():
    text = "a@b.io +1 415 555 0132 8.8.8.8 11010519491231002X 4111111111111111"
    assert clean_text(text, only(pii=["email", "ip"]))[0] == "<EMAIL> +1 415 555 0132 <IP> 11010519491231002X " \
                                                             "4111111111111111"
    assert clean_text(text, only(pii=[]))[0] == text
    with pytest.raises(ValueError):
        CleanParams(pii=["email", "email"])
    with pytest.raises(ValueError):
        CleanParams(pii=["passport"])


# ---------------------------------------------------------------------------------------- whole text

MESSY = ["  <p>Caf\u00c3\u00a9&nbsp;&amp;\u200b bar</p>\r\n\r\n\r\n\x07Mail a@b.co  ",
         "```\n x  \n```\n\n\n\ntext\t\ttab",
         D.mojibake_of("你好，世界！", "cp1252") + " 8.8.8.8",
         "e\u0301\u00a0\u200b\x1b[0m"]


def test_clean_text_is_idempotent_and_counts_rules():
    for t in MESSY:
        once, fired = clean_text(t)
        assert clean_text(once) == (once, Counter())
        assert fired
    text, fired = clean_text(MESSY[0])
    assert text == "Café & bar\n\nMail <EMAIL>"
    assert set(fired) == {"mojibake", "newlines", "html", "control_chars", "zero_width", "whitespace", "pii_email"}


def test_rules_order_follows_params():
    assert rules(CleanParams()) == ["mojibake", "newlines", "html", "control_chars", "zero_width", "unicode",
                                    "whitespace", "pii_email", "pii_cn_id", "pii_bank_card", "pii_phone", "pii_ip"]
    assert rules(only(pii=["ip", "email"], unicode="NFKC")) == ["unicode", "pii_email", "pii_ip"]


def test_snippets_show_the_changed_stretch_with_invisible_characters_spelled_out():
    before, after = snippets("x" * 100 + "a\u200bb" + "y" * 100, "x" * 100 + "ab" + "y" * 100, context=5)
    assert before == "…xxxxa<U+200B>byyyy…" and after == "…xxxxabyyyy…"   # 5 characters either side


# ------------------------------------------------------------------------------------------- records

def rec(rid, *turns, system=None, lang=None):
    msgs = [{"role": "system", "content": system}] if system is not None else []
    for i, t in enumerate(turns):
        msgs.append({"role": "user" if i % 2 == 0 else "assistant", "content": t})
    meta = {"lang": lang or "en", "format": "openai"}
    return {"id": rid, "messages": msgs, "source": "s", "label": None, "meta": meta}


def test_clean_records_ledger_balances_and_drops_empty_turns(tmp_path):
    rows = [rec("s:0", "What is 2+2?", "4"),
            rec("s:1", "Hi  there ", "Mail me at a@b.io\r\n"),
            rec("s:2", "Question?", "<p></p>\u200b"),
            rec("s:3", "\u200b\x07", "An answer."),
            rec("s:4", "Q", "A", system="\u200b"),
            rec("s:5", D.mojibake_of("智利的首都在哪里？", "latin-1"), D.mojibake_of(ZH, "cp1252"))]
    snapshot = json.dumps(rows, sort_keys=True)
    res = clean_records(rows, CleanParams())
    assert json.dumps(rows, sort_keys=True) == snapshot            # input not mutated
    m = write_filter_outputs("clean", rows, res, tmp_path / "out", tmp_path / "m.json")
    assert m["rows_in"] == 6 and m["kept"] == 4 and m["dropped_by_reason"] == {"empty_after_clean": 2}
    kept = {r["id"]: r for r in res.kept}
    assert kept["s:0"] is rows[0] and "clean" not in kept["s:0"]["meta"]
    assert kept["s:1"]["messages"] == [{"role": "user", "content": "Hi there"},
                                       {"role": "assistant", "content": "Mail me at <EMAIL>"}]
    assert kept["s:1"]["meta"]["clean"] == ["newlines", "pii_email", "whitespace"]
    assert [m["role"] for m in kept["s:4"]["messages"]] == ["user", "assistant"]   # emptied system left out
    assert kept["s:5"]["messages"][1]["content"] == ZH and kept["s:5"]["meta"]["lang"] == "zh"
    drops = {d["id"]: d for d in res.dropped}
    assert drops["s:2"]["evidence"] == {"empty_turns": [{"index": 1, "role": "assistant"}],
                                        "rules": {"html": 2, "whitespace": 1, "zero_width": 1}}
    assert drops["s:3"]["evidence"]["empty_turns"] == [{"index": 0, "role": "user"}]
    assert drops["s:2"]["record"] == rows[2] and drops["s:2"]["reason"] == "empty_after_clean"
    em = res.extra_metrics
    assert em["rows_changed"] == 5 and em["system_messages_removed"] == 1
    assert em["rows_changed_by_rule"]["pii_email"] == 1 and em["rows_changed_by_rule"]["mojibake"] == 1
    assert em["rows_changed_by_rule"]["zero_width"] == 3
    ex = res.details["examples"]
    assert ex["pii_email"] == [{"id": "s:1", "message": 1, "after": "Mail me at <EMAIL>"}]   # no raw address
    assert ex["zero_width"][0]["before"].endswith("<U+200B>")


def test_lang_given_by_the_source_is_not_overwritten():
    row = rec("s:0", "Q", D.mojibake_of(ZH, "latin-1"), lang="fr")
    assert clean_records([row], CleanParams()).kept[0]["meta"]["lang"] == "fr"


def test_clean_records_is_deterministic():
    rows = [rec(f"s:{i}", t, t + " ok") for i, t in enumerate(MESSY * 3)]
    a, b = clean_records(rows, CleanParams()), clean_records(rows, CleanParams())
    dump = lambda r: json.dumps([r.kept, r.dropped, r.extra_metrics, r.details], sort_keys=True)  # noqa: E731
    assert dump(a) == dump(b)
    assert sum(len(v) for v in a.details["examples"].values()) <= 3 * len(rules(CleanParams()))


# ---------------------------------------------------------------------------------------- the sample

def test_sample_clean_defects_are_repaired_and_clean_rows_untouched(tmp_path):
    from sftpipe.collect.sources import collect
    from sftpipe.config import CollectParams, SampleParams, Source
    from sftpipe.sample import SOURCES, generate

    generate(SampleParams(rows_per_lang=400, seed=7, clean_defect_rate=0.1), tmp_path)
    rows = collect(CollectParams(sources=[Source(path=str(tmp_path / f), name=n) for n, f in SOURCES.items()])).records
    truth = {json.loads(x)["id"]: json.loads(x) for x in (tmp_path / "truth.jsonl").read_text().splitlines()}
    res = clean_records(rows, CleanParams())
    assert not res.dropped
    by_id = {r["id"]: r for r in rows}
    out = {r["id"]: r for r in res.kept}
    ok, total = Counter(), Counter()
    for i, t in truth.items():
        if t["defect"] == "clean_defect":
            total[t["clean_defect"]] += 1
            assert by_id[i]["messages"][-1]["content"] != t["expected"]
            ok[t["clean_defect"]] += out[i]["messages"][-1]["content"] == t["expected"]
    assert set(total) == set(D.CLEAN_TYPES)
    assert all(ok[k] >= 0.95 * total[k] for k in total), (ok, total)
    clean_ids = [i for i, t in truth.items() if t["defect"] is None]
    changed = [i for i in clean_ids if out[i] is not by_id[i]]
    assert len(changed) <= 0.01 * len(clean_ids), [out[i]["meta"]["clean"] for i in changed[:5]]
