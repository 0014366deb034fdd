"""Instruction augmentation: rule-based paraphrases and format variants of a row's instruction, in
English and Chinese, and model-based paraphrases from a generator.

**Rules** are data (they live in ``params.yaml``; :data:`DEFAULT_RULES` is the default, a plain
list of dicts that dumps to YAML as is)::

    {"name": "translation_en_0",                       # unique
     "pattern": "^Translate into Chinese: (?P<x>.+)$",  # Python regex, named groups = slots
     "templates": ["What is \\"{x}\\" in Chinese?", "English to Chinese: {x}"],
     "lang": "en"}                                      # optional: only rows of this language

A rule applies to a row when its pattern matches the WHOLE instruction (``re.fullmatch``; the
instruction is the content of the row's last user message). Each template, filled with the
pattern's named groups (``str.format``; write a literal brace as ``{{``), is one variant of the
instruction; the reply is left unchanged, so a rule must keep every slot the answer depends on.
:func:`validate_rules` refuses a bad regex or a template slot the pattern does not define.

The default rules cover every task family of the sample (:mod:`sftpipe.sample.tasks`) in both
languages with wordings that are NOT the sample's own templates (the augmentation experiment holds
one of those out of training and tests on it; a test checks that no default variant reproduces any
of them), plus generic format variants (a request sentence above the instruction). They also keep
what the rule verifiers (:mod:`sftpipe.create.verify`) read: the numbers and the add/subtract verb
of an arithmetic item, a colon right before a word list to reverse and none before it, no polarity
word in a sentiment template; so best-of-K still verifies an augmented row.

:func:`augment_rows` draws up to ``per_row`` variants per row, deterministically (a
``random.Random`` seeded by ``seed`` and the row id), and accounts for every drawn candidate: kept,
or in the ledger as ``same_as_original`` / ``duplicate_variant``.

:func:`paraphrase_prompts` asks a generator (:func:`sftpipe.create.backends.generate`) to rephrase
each instruction and keeps a reply only if it still looks like a paraphrase of it.
"""

from __future__ import annotations

import random
import re
import string
from collections import Counter
from copy import deepcopy
from pathlib import Path

from ..ledger import FilterResult, drop
from ..schema import detect_lang
from .self_instruct import rouge_l

STAGE = "augment"
LANGS = ("en", "zh")
RULE_KEYS = {"name", "pattern", "templates", "lang"}

# ---------------------------------------------------------------------------------------------- rules

_N_EN, _P_EN = r"(?P<n>[A-Z][a-z]+)", r"(?P<p>[a-z][a-z ]*?)"
_N_ZH, _MW, _O = r"(?P<n>[^\W\d]{1,4}?)", r"(?P<mw>[^\W\d])", r"(?P<o>[^\W\d]+?)"
_DAY_ZH, _TM_ZH = r"(?P<day>星期.)", r"(?P<tm>(?:上午|中午|下午|晚上)\S+?点)"
_CTRY_EN, _CTRY_ZH = r"(?P<c>[A-Z][A-Za-z ]*[a-z])", r"(?P<c>[^\s，。？！]+?)"

# (family, lang, the sample's patterns (one per prompt template), NEW wordings)
_FAMILIES: list[tuple[str, str, list[str], list[str]]] = [
    ("arithmetic_add", "en", [
        rf"{_N_EN} has (?P<a>\d+) {_P_EN}\. (?P=n) gets (?P<b>\d+) more\. How many (?P=p) does (?P=n) have now\?",
        rf"If {_N_EN} owns (?P<a>\d+) {_P_EN} and buys (?P<b>\d+) more, how many (?P=p) does (?P=n) own\?",
        rf"{_N_EN} had (?P<a>\d+) {_P_EN} and found (?P<b>\d+) more\. What is the total number of (?P=p)\?",
    ], ["{n} starts with {a} {p} and receives {b} more. How many {p} does {n} have in total?",
        "Add {b} {p} to the {a} {p} that {n} already has. How many {p} is that?",
        "{n} collects {a} {p}, then {b} more. How many {p} altogether?"]),
    # subtraction wordings keep a verb the verifier reads as minus (gives / lost / took)
    ("arithmetic_sub", "en", [
        rf"{_N_EN} has (?P<a>\d+) {_P_EN} and gives (?P<b>\d+) away\. How many (?P=p) are left\?",
        rf"{_N_EN} had (?P<a>\d+) {_P_EN} but lost (?P<b>\d+)\. How many (?P=p) remain\?",
        rf"There were (?P<a>\d+) {_P_EN} on the table and {_N_EN} took (?P<b>\d+)\. How many (?P=p) are still there\?",
    ], ["{n} starts with {a} {p} and gives {b} of them to a friend. How many {p} does {n} have left?",
        "Out of {a} {p}, {n} lost {b}. How many {p} does {n} still have?",
        "{a} {p} were in a box, and {n} took {b} out. How many {p} are in the box now?"]),
    ("arithmetic_add", "zh", [
        rf"{_N_ZH}有(?P<a>\d+){_MW}{_O}，又得到了(?P<b>\d+)(?P=mw)。(?P=n)现在一共有多少(?P=mw)(?P=o)？",
        rf"如果{_N_ZH}有(?P<a>\d+){_MW}{_O}，又买了(?P<b>\d+)(?P=mw)，(?P=n)一共有几(?P=mw)(?P=o)？",
        rf"{_N_ZH}原来有(?P<a>\d+){_MW}{_O}，后来又找到(?P<b>\d+)(?P=mw)。(?P=o)的总数是多少？",
    ], ["{n}手里有{a}{mw}{o}，别人又给了{n}{b}{mw}。现在{n}有多少{mw}{o}？",
        "{n}先有{a}{mw}{o}，后来又收到{b}{mw}，加起来是多少{mw}{o}？",
        "算一算，{n}有{a}{mw}{o}，再添{b}{mw}，一共几{mw}？"]),
    # subtraction wordings keep 送给 / 丢了 / 拿走 (the verifier's minus words)
    ("arithmetic_sub", "zh", [
        rf"{_N_ZH}有(?P<a>\d+){_MW}{_O}，送给别人(?P<b>\d+)(?P=mw)。还剩多少(?P=mw)(?P=o)？",
        rf"{_N_ZH}有(?P<a>\d+){_MW}{_O}，丢了(?P<b>\d+)(?P=mw)。还剩几(?P=mw)(?P=o)？",
        rf"桌子上有(?P<a>\d+){_MW}{_O}，{_N_ZH}拿走了(?P<b>\d+)(?P=mw)。桌子上还有多少(?P=mw)(?P=o)？",
    ], ["{n}一开始有{a}{mw}{o}，后来送给朋友{b}{mw}，{n}还有几{mw}{o}？",
        "{n}的{a}{mw}{o}丢了{b}{mw}，剩下多少{mw}？",
        "盒子里有{a}{mw}{o}，{n}拿走了{b}{mw}，盒子里还剩多少{mw}{o}？"]),
    ("translation", "en", [
        r"Translate into Chinese: (?P<x>.+)",
        r'How do you say "(?P<x>.+)" in Chinese\?',
        r'Give the Chinese translation of the phrase "(?P<x>.+)"\.',
    ], ['What is "{x}" in Chinese?', "Render this phrase in Chinese: {x}", "English to Chinese: {x}"]),
    ("translation", "zh", [
        r"请把“(?P<x>.+)”翻译成英文。",
        r"“(?P<x>.+)”用英语怎么说？",
        r"翻译成英语：(?P<x>.+)",
    ], ["中译英：{x}", "“{x}”的英文是什么？", "请给出“{x}”的英语说法。"]),
    # no polarity word of the sample's vocabulary in a sentiment wording (the verifier counts them)
    ("sentiment", "en", [
        r'What is the sentiment of this review\? "(?P<r>.+)"',
        r"Classify the review as positive or negative: (?P<r>.+)",
        r"Is the following review positive or negative\?\n(?P<r>.+)",
    ], ["Review: {r}\nIs this review positive or negative?",
        'Decide whether this review is positive or negative. "{r}"',
        "Positive or negative? {r}"]),
    ("sentiment", "zh", [
        r"判断下面这条评论的情感倾向：(?P<r>.+)",
        r"这条评论是正面还是负面的？“(?P<r>.+)”",
        r"请给出评论的情感（正面或负面）：(?P<r>.+)",
    ], ["评论：{r}\n这条评论的态度是正面还是负面？",
        "请判断这条评论是正面的还是负面的：{r}",
        "“{r}”——这是好评还是差评？请回答正面或负面。"]),
    # the word list stays after the wording's only colon (what the verifier splits on)
    ("reverse", "en", [
        r"Reverse the order of these words: (?P<w>.+)",
        r"Write these words in reverse order: (?P<w>.+)",
    ], ["List these words backwards: {w}", "Put the following words in reverse order: {w}",
        "Words to reverse: {w}"]),
    ("reverse", "zh", [
        r"把下面的词语倒序排列：(?P<w>.+)",
        r"请按相反的顺序写出这些词：(?P<w>.+)",
    ], ["将这些词倒过来排列：{w}", "倒序输出下列词语：{w}", "请把这些词的顺序反过来：{w}"]),
    ("capital", "en", [
        rf"What is the capital of {_CTRY_EN}\?",
        rf"Name the capital city of {_CTRY_EN}\.",
        rf"Which city is the capital of {_CTRY_EN}\?",
        rf"Tell me the capital of {_CTRY_EN}\.",
        rf"What city serves as the capital of {_CTRY_EN}\?",
    ], ["Capital of {c}?", "Do you know the capital of {c}?", "{c} has which city as its capital?"]),
    ("capital", "zh", [
        rf"{_CTRY_ZH}的首都是哪里？",
        rf"请说出{_CTRY_ZH}的首都。",
        rf"哪座城市是{_CTRY_ZH}的首都？",
        rf"{_CTRY_ZH}的首都是哪座城市？",
        rf"告诉我{_CTRY_ZH}的首都。",
    ], ["{c}的首都叫什么？", "你知道{c}的首都在哪里吗？", "{c}的首都是？"]),
    ("invitation", "en", [
        r"Write a short invitation to (?P<name>[A-Z][a-z]+) for (?P<ev>.+?) at (?P<place>.+?) on "
        r"(?P<day>[A-Z][a-z]+day) at (?P<tm>.+?)\. Sign it as (?P<sender>[A-Z][a-z]+)\.",
        r"Please draft a note from (?P<sender>[A-Z][a-z]+) inviting (?P<name>[A-Z][a-z]+) to (?P<ev>.+?) on "
        r"(?P<day>[A-Z][a-z]+day) at (?P<tm>.+?), held at (?P<place>.+?)\.",
        r"Invite (?P<name>[A-Z][a-z]+) to (?P<ev>.+?)\. Details: (?P<place>.+?), (?P<day>[A-Z][a-z]+day), "
        r"(?P<tm>.+?)\. From (?P<sender>[A-Z][a-z]+)\.",
    ], ["Compose an invitation from {sender} to {name}: {ev}, {day} at {tm}, at {place}.",
        "{sender} wants to invite {name} to {ev} at {place} ({day}, {tm}). Write the invitation.",
        "Write a letter inviting {name} to {ev}. Place: {place}. Day: {day}. Time: {tm}. Sender: {sender}."]),
    ("invitation", "zh", [
        rf"请帮我给(?P<name>\S+?)写一份邀请，请对方{_DAY_ZH}{_TM_ZH}到(?P<place>\S+?)参加(?P<ev>\S+?)，"
        r"落款是(?P<sender>\S+?)。",
        rf"以(?P<sender>\S+?)的名义写一段话，邀请(?P<name>\S+?){_DAY_ZH}{_TM_ZH}来(?P<place>\S+?)参加(?P<ev>\S+?)。",
        rf"写一张便条邀请(?P<name>\S+?)参加(?P<ev>\S+?)。时间：{_DAY_ZH}{_TM_ZH}；地点：(?P<place>\S+?)；"
        r"署名：(?P<sender>\S+?)。",
    ], ["以{sender}的口吻，邀请{name}在{day}{tm}去{place}参加{ev}，写一封简短的邀请函。",
        "帮{sender}写封信，请{name}{day}{tm}到{place}参加{ev}。",
        "邀请函：收信人{name}，活动{ev}，地点{place}，时间{day}{tm}，落款{sender}。"]),
]

# generic format variants: a request sentence above any instruction (no colon and no digit, so the
# verifiers still read the task that follows)
_GENERIC = [
    {"name": "format_en", "pattern": r"(?P<x>[\s\S]+)", "lang": "en",
     "templates": ["Please respond to the following request.\n{x}", "Here is a task for you.\n{x}"]},
    {"name": "format_zh", "pattern": r"(?P<x>[\s\S]+)", "lang": "zh",
     "templates": ["请完成下面的任务。\n{x}", "请处理下面这个请求。\n{x}"]},
]


def _default_rules() -> list[dict]:
    rules = []
    for family, lang, patterns, templates in _FAMILIES:
        for i, p in enumerate(patterns):
            rules.append({"name": f"{family}_{lang}_{i}", "pattern": f"^{p}$", "templates": list(templates),
                          "lang": lang})
    return rules + [dict(r, templates=list(r["templates"])) for r in _GENERIC]


#: The default rules: plain data (``yaml.safe_dump(DEFAULT_RULES, allow_unicode=True)`` writes them).
DEFAULT_RULES: list[dict] = _default_rules()


def _slots(template: str) -> list[str]:
    """The field names of a ``str.format`` template (raises ValueError on a malformed one)."""
    return [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]


def validate_rules(rules: list[dict]) -> list[tuple[dict, re.Pattern]]:
    """Check rules and compile their patterns; a ValueError names the rule and what is wrong."""
    if not isinstance(rules, list):
        raise ValueError(f"augment rules must be a list of {{name, pattern, templates}}, got {type(rules).__name__}")
    out, seen = [], set()
    for i, rule in enumerate(rules):
        if not isinstance(rule, dict):
            raise ValueError(f"augment rule #{i}: must be a mapping with name, pattern and templates")
        name = rule.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"augment rule #{i}: needs a non-empty string 'name'")
        where = f"augment rule {name!r}"
        if name in seen:
            raise ValueError(f"{where}: the name is used twice")
        seen.add(name)
        extra = sorted(set(rule) - RULE_KEYS)
        if extra:
            raise ValueError(f"{where}: unknown key(s) {extra} (expected {sorted(RULE_KEYS)})")
        if rule.get("lang") not in (None, *LANGS):
            raise ValueError(f"{where}: lang must be one of {list(LANGS)} or absent, not {rule['lang']!r}")
        pattern = rule.get("pattern")
        if not isinstance(pattern, str) or not pattern:
            raise ValueError(f"{where}: needs a string 'pattern'")
        try:
            rx = re.compile(pattern)
        except re.error as e:
            raise ValueError(f"{where}: bad regex {pattern!r} ({e})") from None
        templates = rule.get("templates")
        if not isinstance(templates, list) or not templates or not all(isinstance(t, str) for t in templates):
            raise ValueError(f"{where}: 'templates' must be a non-empty list of strings")
        groups = set(rx.groupindex)
        for t in templates:
            try:
                slots = _slots(t)
            except ValueError as e:
                raise ValueError(f"{where}: template {t!r} is not a valid format string ({e}; "
                                 "write a literal brace as {{ or }})") from None
            for s in slots:
                if s not in groups:
                    known = ", ".join(sorted(groups)) or "none"
                    raise ValueError(f"{where}: template {t!r} uses slot {{{s}}}, which the pattern does not "
                                     f"define (its named groups: {known})")
        out.append((rule, rx))
    return out


def _as_compiled(rules) -> list[tuple[dict, re.Pattern]]:
    if rules and isinstance(rules[0], tuple):
        return rules
    return validate_rules(rules)


# ---------------------------------------------------------------------------------------------- variants

def instruction_index(rec: dict) -> int | None:
    """Index of the row's last user message (the instruction augmentation rewrites)."""
    for i in range(len(rec["messages"]) - 1, -1, -1):
        if rec["messages"][i]["role"] == "user":
            return i
    return None


def _lang(rec: dict, text: str) -> str:
    lang = (rec.get("meta") or {}).get("lang")
    return lang if lang in LANGS else detect_lang(text)


def render_variants(text: str, rules, lang: str | None = None) -> list[tuple[str, int, str]]:
    """Every variant the rules give for one instruction: ``(rule name, template index, text)`` in rule
    order (a rule with ``lang`` applies only when ``lang`` is that language, or is None)."""
    out = []
    for rule, rx in _as_compiled(rules):
        if rule.get("lang") and lang is not None and rule["lang"] != lang:
            continue
        m = rx.fullmatch(text)
        if m is None:
            continue
        slots = {k: (v if v is not None else "") for k, v in m.groupdict().items()}
        for j, t in enumerate(rule["templates"]):
            out.append((rule["name"], j, t.format(**slots)))
    return out


def _variant_row(rec: dict, at: int, text: str, vid: str, meta: dict) -> dict:
    row = deepcopy(rec)
    row["id"] = vid
    row["messages"][at]["content"] = text
    row["meta"] = {**(rec.get("meta") or {}), **meta}
    return row


def augment_rows(records: list[dict], rules=None, *, per_row: int = 1, seed: int = 0,
                 keep_original: bool = True) -> tuple[list[dict], FilterResult]:
    """Rule-based variants of each row's instruction; returns ``(rows, result)``.

    Per row, every variant of every matching rule (:func:`render_variants`) is shuffled by
    ``random.Random(f"{seed}:{row id}")`` and taken in that order until ``per_row`` distinct new ones
    are found; each one taken is a candidate ``<id>~aug<j>`` (j: its draw number), kept, or dropped
    as ``same_as_original`` / ``duplicate_variant`` (of an earlier candidate of the row). A variant
    row is the original with the instruction replaced (reply, system prompt, label unchanged),
    ``meta.augmented_from``, ``meta.augment_rule`` and ``meta.augment_template``.

    ``rows``: each original (unless ``keep_original`` is false) followed by its kept variants.
    ``result``: a FilterResult over the candidates (kept + dropped == candidates), with per-rule
    counts and the rows no rule matched in ``extra_metrics``. Byte-deterministic.
    """
    if per_row < 0:
        raise ValueError(f"augment: per_row must be >= 0, got {per_row}")
    compiled = _as_compiled(DEFAULT_RULES if rules is None else rules)
    rows, kept, dropped = [], [], []
    per_rule: Counter = Counter()
    unmatched = 0
    for rec in records:
        if keep_original:
            rows.append(rec)
        at = instruction_index(rec)
        text = rec["messages"][at]["content"] if at is not None else None
        options = render_variants(text, compiled, _lang(rec, text)) if text is not None else []
        if not options:
            unmatched += 1
            continue
        random.Random(f"{seed}:{rec['id']}").shuffle(options)
        seen: dict[str, str] = {}
        n_kept = 0
        for j, (name, t, variant) in enumerate(options):
            if n_kept >= per_row:
                break
            row = _variant_row(rec, at, variant, f"{rec['id']}~aug{j}",
                               {"augmented_from": rec["id"], "augment_rule": name, "augment_template": t})
            if variant.strip() == text.strip():
                dropped.append(drop(row, STAGE, "same_as_original", rule=name, template=t))
            elif variant.strip() in seen:
                dropped.append(drop(row, STAGE, "duplicate_variant", rule=name, template=t,
                                    of=seen[variant.strip()]))
            else:
                seen[variant.strip()] = row["id"]
                kept.append(row)
                rows.append(row)
                per_rule[name] += 1
                n_kept += 1
    metrics = {"rows": len(records), "rows_without_rule": unmatched, "candidates": len(kept) + len(dropped),
               "variants": len(kept), "per_rule": dict(sorted(per_rule.items()))}
    return rows, FilterResult(kept, dropped, metrics)


# ---------------------------------------------------------------------------------------------- model

DEFAULT_PARAPHRASE_TEMPLATES = {
    "en": ("Rewrite the following instruction in different words. Keep its meaning and every name, number "
           "and quoted text exactly as they are. Reply with the rewritten instruction only.\n\n{instruction}"),
    "zh": "用不同的说法改写下面这条指令，意思不变，其中的名字、数字和引用的文字保持原样。只输出改写后的指令。\n\n{instruction}",
}
_NUM = re.compile(r"\d+(?:\.\d+)?")
_QUOTES = "\"'“”‘’「」『』`"
_LABEL = re.compile(r"^(?:rewritten instruction|paraphrase|instruction|rewrite|改写后的指令|改写|指令)\s*[:：]\s*", re.I)


def clean_reply(reply: str) -> str:
    """A generator's paraphrase without surrounding whitespace, a leading label ("Paraphrase:") or
    quotes around the whole of it."""
    text = _LABEL.sub("", (reply or "").strip()).strip()
    while len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES and not any(q in text[1:-1] for q in "\"“”"):
        text = text[1:-1].strip()
    return text


def _template_for(instruction_template, lang: str) -> str:
    if isinstance(instruction_template, dict):
        t = instruction_template.get(lang) or instruction_template.get("en")
    else:
        t = instruction_template
    if not isinstance(t, str) or "{instruction}" not in t:
        raise ValueError(f"augment: the paraphrase template for {lang!r} must be a string with {{instruction}}, "
                         f"got {t!r}")
    return t


def paraphrase_requests(records: list[dict], instruction_template=None) -> tuple[list[dict], list[int | None]]:
    """One generator request (a record with a single user turn) per row, and the index of the row's
    instruction message (None: no user turn, no request: that row's request is None)."""
    tmpl = DEFAULT_PARAPHRASE_TEMPLATES if instruction_template is None else instruction_template
    reqs, where = [], []
    for rec in records:
        at = instruction_index(rec)
        where.append(at)
        if at is None:
            reqs.append(None)
            continue
        text = rec["messages"][at]["content"]
        lang = _lang(rec, text)
        # replace, not format: the instruction may hold braces
        prompt = _template_for(tmpl, lang).replace("{instruction}", text)
        reqs.append({"id": f"{rec['id']}~paraphrase", "messages": [{"role": "user", "content": prompt}],
                     "source": rec.get("source", ""), "meta": {"lang": lang}})
    return reqs, where


def paraphrase_prompts(records: list[dict], gp, model_params, instruction_template=None,
                       cache_dir: str | Path | None = None, *, min_rouge: float = 0.2,
                       length_ratio: tuple[float, float] = (0.3, 3.0), keep_numbers: bool = True,
                       progress=None) -> FilterResult:
    """Model-based paraphrases: ask the generator (``gp``, see :func:`backends.generate`; ``gp.k``
    replies per row) to rephrase each row's instruction with ``instruction_template`` (a string with
    ``{instruction}``, or one per language ``{"en": ..., "zh": ...}``; default
    :data:`DEFAULT_PARAPHRASE_TEMPLATES`).

    Each reply (cleaned by :func:`clean_reply`) is a candidate row ``<id>~augm<j>`` (the original with
    the instruction replaced; ``meta.augment_rule = "model"``; ``~augm`` so that rule-based
    ``~aug<j>`` ids of the same row never collide). Dropped, with evidence: ``empty``;
    ``same_as_original``; ``duplicate_variant`` (an earlier reply of the row); ``not_a_paraphrase``
    (ROUGE-L F with the original below ``min_rouge``, or a character-length ratio outside
    ``length_ratio``); ``changed_numbers`` (with ``keep_numbers``, the numbers of the original and
    the reply differ as multisets: the unchanged answer would be wrong). Rows whose request failed
    give no candidates: they are counted in ``extra_metrics.requests_failed``, their errors are in
    ``details.errors``.
    """
    from .backends import generate

    lo, hi = length_ratio
    reqs, where = paraphrase_requests(records, instruction_template)
    asked = [r for r in reqs if r is not None]
    results = iter(generate(asked, gp, model_params, cache_dir=cache_dir, progress=progress) if asked else [])
    kept, dropped, errors = [], [], {}
    for rec, req, at in zip(records, reqs, where):
        if req is None:
            continue
        res = next(results)
        if res.get("replies") is None:
            errors[rec["id"]] = res.get("error")
            continue
        original = rec["messages"][at]["content"]
        seen: dict[str, str] = {}
        for j, reply in enumerate(res["replies"]):
            text = clean_reply(reply)
            row = _variant_row(rec, at, text, f"{rec['id']}~augm{j}",
                               {"augmented_from": rec["id"], "augment_rule": "model", "augment_template": j})
            if not text:
                dropped.append(drop(row, STAGE, "empty", reply=reply[:200] if reply else reply))
                continue
            if text == original.strip():
                dropped.append(drop(row, STAGE, "same_as_original"))
                continue
            if text in seen:
                dropped.append(drop(row, STAGE, "duplicate_variant", of=seen[text]))
                continue
            score = rouge_l(original, text)
            ratio = len(text) / max(len(original.strip()), 1)
            if score < min_rouge or not lo <= ratio <= hi:
                dropped.append(drop(row, STAGE, "not_a_paraphrase", rouge_l=round(score, 4),
                                    length_ratio=round(ratio, 3), min_rouge=min_rouge, length_bounds=[lo, hi]))
                continue
            if keep_numbers and Counter(_NUM.findall(original)) != Counter(_NUM.findall(text)):
                dropped.append(drop(row, STAGE, "changed_numbers", original=sorted(_NUM.findall(original)),
                                    reply=sorted(_NUM.findall(text))))
                continue
            seen[text] = row["id"]
            kept.append(row)
    metrics = {"rows": len(records), "requests": len(asked), "requests_failed": len(errors),
               "candidates": len(kept) + len(dropped), "variants": len(kept)}
    return FilterResult(kept, dropped, metrics, {"errors": errors} if errors else {})
