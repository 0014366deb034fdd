"""Quality defects: rows that parse, read fluently and are not garbage, but make bad training data.

They are what the ``select`` stage (quality scores such as IFD, perplexity, length or an LLM judge)
is there to cut; each is made from the row's last task item (:class:`.tasks.Item`) and replaces the
last response. :func:`make` returns the new response and the fields for ``truth.jsonl``; the correct
response is kept there as ``expected``.

* ``wrong_answer``: a plausible wrong answer to a checkable task (``wrong_answer`` names what is wrong):
  a sum or difference off by 1 or 2 (``sum``, ``difference``), another real capital from the vocab
  (``capital``), the other sentiment label (``sentiment``), another adjective or noun of the phrase
  dictionary (``translation``), the words in a wrong order (``word_order``), an invitation with
  another day, time or place than the one asked for (``invitation_day``, ``_time``, ``_place``)
* ``truncated``: the response cut mid-way, 30-70% kept (``kept_share``), at a word boundary for
  Latin text and between characters for Chinese, never right after punctuation or inside a number;
  responses under 3 words (7 characters for Chinese) are not cut
* ``off_topic``: the response of another row of another category in the same language (the caller
  picks it: :func:`off_topic_fields`)
* ``wrong_language``: the right answer in the other language (``response_lang``), made with the
  task's own answer builders (people's names transliterated); not for translation rows, whose
  answer is in the other language by design
* ``padded``: the right answer with generic filler sentences around it (2-3 before, 1-3 after) in
  the row's language, drawn from templates below
"""

from __future__ import annotations

import random
import re

from . import tasks as K
from . import vocab as V
from .tasks import Item

QUALITY_TYPES = ("wrong_answer", "truncated", "off_topic", "wrong_language", "padded")

_OBJECTS = {o[0]: o for o in V.OBJECTS}
_ADJ, _NOUN = dict(V.ADJ), dict(V.NOUN)
_CAPITALS = {c[0]: c for c in V.CAPITALS}
_LABELS = {"en": ("positive", "negative"), "zh": ("正面", "负面")}
_OTHER = {"en": "zh", "zh": "en"}
_NAMES = {"en": V.NAMES_EN_IN_ZH, "zh": V.NAMES_ZH_IN_EN}       # a name, as the other language writes it
_WORDS = {"en": V.REVERSE_WORDS_EN, "zh": V.REVERSE_WORDS_ZH}   # parallel lists
_CJK = re.compile(r"[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]")
_NO_CUT_AFTER = set(".,;:!?，。！？；：、“”\"")


def applies(kind: str, item: Item) -> bool:
    """Whether ``kind`` can be made of this item."""
    if kind == "truncated":
        return _cuts(item.response) != []
    if kind == "wrong_language":
        return item.category != "translation"
    return kind in QUALITY_TYPES


def make(rng: random.Random, kind: str, item: Item) -> tuple[str, dict]:
    """(bad response, truth fields) for ``kind`` but ``off_topic`` (see :func:`off_topic_fields`)."""
    if kind == "wrong_answer":
        text, what = wrong_answer(rng, item)
        return text, {"wrong_answer": what, "expected": item.response}
    if kind == "truncated":
        text = truncate(rng, item.response)
        return text, {"kept_share": round(len(text) / len(item.response), 2), "expected": item.response}
    if kind == "wrong_language":
        return wrong_language(item), {"response_lang": _OTHER[item.lang], "expected": item.response}
    if kind == "padded":
        return pad(rng, item), {"expected": item.response}
    raise ValueError(kind)


def off_topic_fields(item: Item, donor: Item) -> tuple[str, dict]:
    """The donor's response for ``item``'s prompt (another category, same language)."""
    assert donor.category != item.category and donor.lang == item.lang
    return donor.response, {"response_category": donor.category, "expected": item.response}


# ------------------------------------------------------------------------------ wrong answers

def _other(rng: random.Random, options: list, current):
    return rng.choice([x for x in options if x != current])


def wrong_answer(rng: random.Random, item: Item) -> tuple[str, str]:
    """(a plausible wrong answer, what is wrong)."""
    cat, key = item.category, item.key
    if cat == "arithmetic":
        lang, op, a, b, obj, name, _ = key
        c = a + b if op == "+" else a - b
        wrong = c + rng.choice([d for d in (-2, -1, 1, 2) if c + d >= 0])
        return K.arithmetic_response(lang, op, a, b, wrong, _OBJECTS[obj], name), "sum" if op == "+" else "difference"
    if cat == "translation":
        lang, adj, noun, _ = key
        if rng.random() < 0.6:
            noun = _other(rng, list(_NOUN), noun)
        else:
            adj = _other(rng, list(_ADJ), adj)
        return (f"{_ADJ[adj]}{_NOUN[noun]}" if lang == "en" else f"{adj} {noun}"), "translation"
    if cat == "sentiment":
        pos, neg = _LABELS[item.lang]
        return (neg if item.response == pos else pos), "sentiment"
    if cat == "reverse":
        lang, words, t = key
        order = list(reversed(words))
        if rng.random() < 0.5:
            order = list(words)          # not reversed at all
        else:                            # two neighbours swapped
            i = rng.randrange(len(order) - 1)
            order[i], order[i + 1] = order[i + 1], order[i]
        return K.REVERSE_SEP[lang][t].join(order), "word_order"
    if cat == "capital":
        lang, country, _ = key
        entry, other = _CAPITALS[country], _other(rng, V.CAPITALS, _CAPITALS[country])
        if lang == "en":
            return K.capital_response(lang, entry[0], other[1]), "capital"
        return K.capital_response(lang, entry[2], other[3]), "capital"
    if cat == "invitation":
        lang, ev, day, place, tm, name, sender, _ = key
        what = rng.choice(["day", "time", "place"])
        if what == "day":
            day = _other(rng, V.DAYS, day)
        elif what == "time":
            tm = _other(rng, V.TIMES, tm)
        else:
            place = _other(rng, V.PLACES, place)
        return K.invitation_response(lang, ev, day, place, tm, name, sender), f"invitation_{what}"
    raise ValueError(cat)


# ------------------------------------------------------------------------------ truncation

def _cuts(text: str) -> list[int]:
    """Where ``text`` may be cut (the length kept): 30-70% of it, at a word boundary (Latin text) or
    between characters (Chinese), not right after punctuation, not inside a number or a Latin word."""
    cjk = bool(_CJK.search(text))
    if (len(text) if cjk else len(text.split())) < (7 if cjk else 3):
        return []
    out = []
    for i in range(1, len(text)):
        prev, nxt = text[i - 1], text[i]
        if not 0.3 <= i / len(text) <= 0.7 or prev.isspace() or prev in _NO_CUT_AFTER:
            continue
        if not cjk and not nxt.isspace():
            continue
        if prev.isascii() and prev.isalnum() and nxt.isascii() and nxt.isalnum():
            continue
        out.append(i)
    return out


def truncate(rng: random.Random, text: str) -> str:
    """``text`` cut mid-way (a strict prefix, 30-70% of it); see :func:`_cuts`."""
    return text[:rng.choice(_cuts(text))]


# ------------------------------------------------------------------------------ wrong language

def wrong_language(item: Item) -> str:
    """The item's correct answer in the other language, built as the task builds its answers."""
    cat, key, other = item.category, item.key, _OTHER[item.lang]
    if cat == "arithmetic":
        lang, op, a, b, obj, name, _ = key
        c = a + b if op == "+" else a - b
        return K.arithmetic_response(other, op, a, b, c, _OBJECTS[obj], _NAMES[lang][name])
    if cat == "sentiment":
        return _LABELS[other][_LABELS[item.lang].index(item.response)]
    if cat == "reverse":
        lang, words, t = key
        translated = [_WORDS[other][_WORDS[lang].index(w)] for w in words]
        return K.REVERSE_SEP[other][t].join(reversed(translated))
    if cat == "capital":
        entry = _CAPITALS[key[1]]
        return K.capital_response(other, *((entry[0], entry[1]) if other == "en" else (entry[2], entry[3])))
    if cat == "invitation":
        lang, ev, day, place, tm, name, sender, _ = key
        return K.invitation_response(other, ev, day, place, tm, _NAMES[lang][name], _NAMES[lang][sender])
    raise ValueError(f"no wrong-language answer for {cat}")


# ------------------------------------------------------------------------------ padding

_TOPIC = {"arithmetic": ("numbers and simple math", "数字和简单的计算"),
          "translation": ("languages and translation", "语言和翻译"),
          "sentiment": ("reviews and opinions", "评论和观点"),
          "reverse": ("word games", "文字游戏"),
          "capital": ("geography and world capitals", "地理和各国首都"),
          "invitation": ("invitations and letters", "邀请和书信")}
_BEFORE = {
    "en": ["Great question!", "Thanks for asking about this.", "Sure, I would be glad to help you with that.",
           "Let me think about this carefully before I answer.",
           "Questions about {topic} come up quite often, and they are always worth a careful look.",
           "There are a few things to keep in mind when it comes to {topic}.",
           "It is a good idea to read the question slowly and make sure every detail is clear.",
           "Many people find {topic} interesting, so it is worth taking a moment here.",
           "Before giving my answer, I want to make sure I understand exactly what is being asked.",
           "This is the kind of task that looks simple, but it is still worth doing step by step."],
    "zh": ["这是一个很好的问题！", "谢谢你的提问。", "好的，我很乐意帮你解答。", "让我先仔细想一想再回答。",
           "关于{topic}的问题经常有人问，值得认真看一看。", "说到{topic}，有几点需要注意。",
           "读题的时候最好慢一点，把每个细节都看清楚。", "很多人都对{topic}很感兴趣，所以我们花点时间来看看。",
           "在给出答案之前，我想先确认一下问题到底问的是什么。", "这类题目看起来很简单，但还是一步一步来比较好。"]}
_AFTER = {
    "en": ["I hope this answer is helpful to you.", "Let me know if you have any other questions.",
           "If anything is unclear, I am happy to explain it again in more detail.",
           "Feel free to ask me more about {topic} at any time.",
           "Thank you for your patience, and have a wonderful day!",
           "It is always a good habit to double-check an answer like this one.",
           "As you can see, there is more to {topic} than it seems at first.",
           "Remember that a little practice every day makes a big difference."],
    "zh": ["希望这个回答对你有帮助。", "如果还有其他问题，欢迎随时问我。", "如果有哪里不清楚，我很乐意再详细解释一遍。",
           "以后有关于{topic}的问题，也可以随时来问我。", "感谢你的耐心，祝你有美好的一天！",
           "像这样的答案，养成再检查一遍的习惯总是好的。", "可以看出，{topic}其实挺有意思的。",
           "请记住，每天练习一点点，进步就会很明显。"]}


def pad(rng: random.Random, item: Item) -> str:
    """The correct answer, verbatim, between generic filler sentences in the item's language."""
    lang = item.lang
    topic = _TOPIC[item.category][lang == "zh"]
    before = rng.sample(_BEFORE[lang], rng.randint(2, 3))
    after = rng.sample(_AFTER[lang], rng.randint(1, 3))
    sep = " " if lang == "en" else ""
    fill = [sep.join(s.format(topic=topic) for s in part) for part in (before, after)]
    return f"{fill[0]}\n\n{item.response}\n\n{fill[1]}"
