"""Six instruction-following task families, each in English and Chinese.

Every generator takes a ``random.Random`` and a language and returns an
:class:`Item`: the prompt, the response, a key that identifies the item (used to
avoid accidental duplicates), and a plain-text statement of the same fact for
the base model's pretraining corpus. The tasks are small enough for a tiny model
to learn: arithmetic with small numbers, a fixed bilingual phrase dictionary,
two-way sentiment, word-order reversal, capitals, and slot-filled invitations.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from . import vocab as V

CATEGORIES = ("arithmetic", "translation", "sentiment", "reverse", "capital", "invitation")


def _template(rng: random.Random, n: int, template: int | None) -> int:
    """The prompt template: drawn, or ``template`` when given (the draw still happens, so the
    slots and everything drawn after are the same either way: a paraphrase of the same item)."""
    drawn = rng.randrange(n)
    return drawn if template is None else template


@dataclass(frozen=True)
class Item:
    category: str
    lang: str
    prompt: str
    response: str
    key: tuple
    statement: str


def arithmetic_response(lang: str, op: str, a: int, b: int, c: int, obj: tuple, name: str) -> str:
    """The answer to an arithmetic item (``c`` is the result it states: the quality defects give a wrong one)."""
    if lang == "en":
        unit = obj[1] if c != 1 else obj[0]
        return f"{a} + {b} = {c}. {name} has {c} {unit}." if op == "+" else f"{a} - {b} = {c}. There are {c} {unit} left."
    o, mw = obj[2], obj[3]
    return f"{a}+{b}={c}，{name}现在有{c}{mw}{o}。" if op == "+" else f"{a}-{b}={c}，还剩{c}{mw}{o}。"


def arithmetic(rng: random.Random, lang: str, template: int | None = None) -> Item:
    op = rng.choice("+-")
    if op == "+":
        a, b = rng.randint(1, 20), rng.randint(1, 20)
        c = a + b
    else:
        a = rng.randint(5, 30)
        b = rng.randint(1, a - 1)
        c = a - b
    obj = rng.choice(V.OBJECTS)
    t = _template(rng, 3, template)
    if lang == "en":
        n = rng.choice(V.NAMES_EN)
        s, p = obj[0], obj[1]
        if op == "+":
            prompt = [f"{n} has {a} {p}. {n} gets {b} more. How many {p} does {n} have now?",
                      f"If {n} owns {a} {p} and buys {b} more, how many {p} does {n} own?",
                      f"{n} had {a} {p} and found {b} more. What is the total number of {p}?"][t]
            response = arithmetic_response(lang, op, a, b, c, obj, n)
            statement = f"{n} had {a} {p} and got {b} more, so {n} has {c} {p if c != 1 else s}. {a} plus {b} is {c}."
        else:
            prompt = [f"{n} has {a} {p} and gives {b} away. How many {p} are left?",
                      f"{n} had {a} {p} but lost {b}. How many {p} remain?",
                      f"There were {a} {p} on the table and {n} took {b}. How many {p} are still there?"][t]
            response = arithmetic_response(lang, op, a, b, c, obj, n)
            statement = f"{a} minus {b} is {c}, so when {n} gives away {b} of {a} {p}, {c} are left."
    else:
        n = rng.choice(V.NAMES_ZH)
        o, mw = obj[2], obj[3]
        if op == "+":
            prompt = [f"{n}有{a}{mw}{o}，又得到了{b}{mw}。{n}现在一共有多少{mw}{o}？",
                      f"如果{n}有{a}{mw}{o}，又买了{b}{mw}，{n}一共有几{mw}{o}？",
                      f"{n}原来有{a}{mw}{o}，后来又找到{b}{mw}。{o}的总数是多少？"][t]
            response = arithmetic_response(lang, op, a, b, c, obj, n)
            statement = f"{n}有{a}{mw}{o}，又得到{b}{mw}，所以一共有{c}{mw}。{a}加{b}等于{c}。"
        else:
            prompt = [f"{n}有{a}{mw}{o}，送给别人{b}{mw}。还剩多少{mw}{o}？",
                      f"{n}有{a}{mw}{o}，丢了{b}{mw}。还剩几{mw}{o}？",
                      f"桌子上有{a}{mw}{o}，{n}拿走了{b}{mw}。桌子上还有多少{mw}{o}？"][t]
            response = arithmetic_response(lang, op, a, b, c, obj, n)
            statement = f"{a}减{b}等于{c}，{a}{mw}{o}拿走{b}{mw}，还剩{c}{mw}。"
    return Item("arithmetic", lang, prompt, response, (lang, op, a, b, obj[0], n, t), statement)


def translation(rng: random.Random, lang: str, template: int | None = None) -> Item:
    (adj, adj_zh), (noun, noun_zh) = rng.choice(V.ADJ), rng.choice(V.NOUN)
    zh = f"{adj_zh}{noun_zh}"
    en = f"{adj} {noun}"
    t = _template(rng, 3, template)
    if lang == "en":
        prompt = [f"Translate into Chinese: {en}", f'How do you say "{en}" in Chinese?',
                  f'Give the Chinese translation of the phrase "{en}".'][t]
        response = zh
    else:
        prompt = [f"请把“{zh}”翻译成英文。", f"“{zh}”用英语怎么说？", f"翻译成英语：{zh}"][t]
        response = en
    statement = rng.choice([f'In Chinese, "{en}" is {zh}.', f"“{zh}”的英文是{en}。"])
    return Item("translation", lang, prompt, response, (lang, adj, noun, t), statement)


def _review(rng: random.Random, lang: str, positive: bool) -> str:
    if lang == "en":
        words = V.POS_EN if positive else V.NEG_EN
        t1, t2 = rng.sample(V.THINGS_EN, 2)
        w1, w2 = rng.sample(words, 2)
        s = f"The {t1} was {w1}"
        if rng.random() < 0.6:
            s += f" and the {t2} was {w2}"
        s += "."
        if rng.random() < 0.4:
            s += " I would recommend it." if positive else " I would not recommend it."
        return s
    words = V.POS_ZH if positive else V.NEG_ZH
    t1, t2 = rng.sample(V.THINGS_ZH, 2)
    w1, w2 = rng.sample(words, 2)
    s = f"{t1}{w1}"
    if rng.random() < 0.6:
        s += f"，{t2}也{w2}"
    s += "。"
    if rng.random() < 0.4:
        s += "我会推荐给朋友。" if positive else "我不会再来了。"
    return s


def sentiment(rng: random.Random, lang: str, template: int | None = None) -> Item:
    positive = rng.random() < 0.5
    review = _review(rng, lang, positive)
    t = _template(rng, 3, template)
    if lang == "en":
        prompt = [f'What is the sentiment of this review? "{review}"',
                  f"Classify the review as positive or negative: {review}",
                  f"Is the following review positive or negative?\n{review}"][t]
        response = "positive" if positive else "negative"
        statement = f'The review "{review}" is {response}.'
    else:
        prompt = [f"判断下面这条评论的情感倾向：{review}", f"这条评论是正面还是负面的？“{review}”",
                  f"请给出评论的情感（正面或负面）：{review}"][t]
        response = "正面" if positive else "负面"
        statement = f"评论“{review}”是{response}的。"
    return Item("sentiment", lang, prompt, response, (lang, review, t), statement)


# the separator of reverse's answer, per language and prompt template
REVERSE_SEP = {"en": (" ", ", "), "zh": ("、", " ")}


def reverse(rng: random.Random, lang: str, template: int | None = None) -> Item:
    k = rng.randint(3, 5)
    words = rng.sample(V.REVERSE_WORDS_EN if lang == "en" else V.REVERSE_WORDS_ZH, k)
    t = _template(rng, 2, template)
    sep = REVERSE_SEP[lang][t]
    if lang == "en":
        prompt = [f"Reverse the order of these words: {' '.join(words)}",
                  f"Write these words in reverse order: {', '.join(words)}"][t]
        response = sep.join(reversed(words))
        statement = f'Reversed, "{sep.join(words)}" becomes "{response}".'
    else:
        prompt = [f"把下面的词语倒序排列：{'、'.join(words)}", f"请按相反的顺序写出这些词：{' '.join(words)}"][t]
        response = sep.join(reversed(words))
        statement = f"“{sep.join(words)}”倒过来是“{response}”。"
    return Item("reverse", lang, prompt, response, (lang, tuple(words), t), statement)


def capital_response(lang: str, country: str, capital: str) -> str:
    """The answer to a capital item, in ``lang``: ``country`` and ``capital`` in that language."""
    return f"The capital of {country} is {capital}." if lang == "en" else f"{country}的首都是{capital}。"


def capital(rng: random.Random, lang: str, template: int | None = None) -> Item:
    country, cap, country_zh, cap_zh = rng.choice(V.CAPITALS)
    t = _template(rng, 5, template)
    if lang == "en":
        prompt = [f"What is the capital of {country}?", f"Name the capital city of {country}.",
                  f"Which city is the capital of {country}?", f"Tell me the capital of {country}.",
                  f"What city serves as the capital of {country}?"][t]
        response = capital_response(lang, country, cap)
        statement = rng.choice([response, f"{cap} is the capital city of {country}."])
    else:
        prompt = [f"{country_zh}的首都是哪里？", f"请说出{country_zh}的首都。", f"哪座城市是{country_zh}的首都？",
                  f"{country_zh}的首都是哪座城市？", f"告诉我{country_zh}的首都。"][t]
        response = capital_response(lang, country_zh, cap_zh)
        statement = rng.choice([response, f"{cap_zh}是{country_zh}的首都。"])
    return Item("capital", lang, prompt, response, (lang, country, t), statement)


EXTRA_EN = {"a birthday party": "There will be cake for everyone.", "a picnic": "Please bring a blanket.",
            "a book club meeting": "We will talk about a new novel.", "a dinner": "I will cook something special.",
            "a concert": "The band plays for two hours.", "a football match": "Wear comfortable shoes.",
            "a movie night": "We will have popcorn.", "a garden party": "The flowers are in bloom.",
            "a chess game": "Bring your best strategy.", "a cooking class": "All ingredients are provided.",
            "a charity run": "Every step helps a good cause.", "a wedding rehearsal": "Please arrive on time.",
            "a science fair": "Students will show their projects.", "a farewell lunch": "We will say goodbye together."}
EXTRA_ZH = {"生日聚会": "现场会有蛋糕。", "野餐": "请带一块野餐垫。", "读书会": "我们会讨论一本新小说。",
            "晚餐": "我会准备几道拿手菜。", "音乐会": "乐队会演奏两个小时。", "足球比赛": "请穿舒适的鞋子。",
            "电影之夜": "我们会准备爆米花。", "花园聚会": "花园里的花都开了。", "象棋比赛": "准备好你的棋艺。",
            "烹饪课": "所有食材都已备好。", "慈善跑": "每一步都在帮助别人。", "婚礼彩排": "请准时到场。",
            "科学展": "学生们会展示他们的作品。", "送别午餐": "我们一起好好道别。"}


def invitation_response(lang: str, ev: tuple, day: tuple, place: tuple, tm: tuple, name: str, sender: str) -> str:
    """The invitation letter; ``ev``, ``day``, ``place`` and ``tm`` are (English, Chinese) pairs of the vocab."""
    if lang == "en":
        return (f"Dear {name},\n\nI would like to invite you to {ev[0]} at {place[0]} on {day[0]}. "
                f"We will start at {tm[0]}. {EXTRA_EN[ev[0]]} Please let me know if you can come.\n\n"
                f"Best wishes,\n{sender}")
    return (f"{name}：\n\n你好！诚挚邀请你{day[1]}{tm[1]}到{place[1]}参加{ev[1]}。"
            f"{EXTRA_ZH[ev[1]]}期待你的回复。\n\n{sender}")


def invitation(rng: random.Random, lang: str, template: int | None = None) -> Item:
    ev, day, place, tm = rng.choice(V.EVENTS), rng.choice(V.DAYS), rng.choice(V.PLACES), rng.choice(V.TIMES)
    t = _template(rng, 3, template)
    if lang == "en":
        name, sender = rng.sample(V.NAMES_EN, 2)
        prompt = [f"Write a short invitation to {name} for {ev[0]} at {place[0]} on {day[0]} at {tm[0]}. "
                  f"Sign it as {sender}.",
                  f"Please draft a note from {sender} inviting {name} to {ev[0]} on {day[0]} at {tm[0]}, "
                  f"held at {place[0]}.",
                  f"Invite {name} to {ev[0]}. Details: {place[0]}, {day[0]}, {tm[0]}. From {sender}."][t]
        response = invitation_response(lang, ev, day, place, tm, name, sender)
    else:
        name, sender = rng.sample(V.NAMES_ZH, 2)
        prompt = [f"请帮我给{name}写一份邀请，请对方{day[1]}{tm[1]}到{place[1]}参加{ev[1]}，落款是{sender}。",
                  f"以{sender}的名义写一段话，邀请{name}{day[1]}{tm[1]}来{place[1]}参加{ev[1]}。",
                  f"写一张便条邀请{name}参加{ev[1]}。时间：{day[1]}{tm[1]}；地点：{place[1]}；署名：{sender}。"][t]
        response = invitation_response(lang, ev, day, place, tm, name, sender)
    return Item("invitation", lang, prompt, response, (lang, ev, day, place, tm, name, sender, t), response)


GENERATORS = {"arithmetic": arithmetic, "translation": translation, "sentiment": sentiment,
              "reverse": reverse, "capital": capital, "invitation": invitation}
# Share of each category in the sample (capitals are a small closed set, so fewer rows).
WEIGHTS = {"arithmetic": 0.2, "translation": 0.2, "sentiment": 0.2, "reverse": 0.15, "capital": 0.05,
           "invitation": 0.2}

SYSTEM = {"en": "You are a helpful assistant.", "zh": "你是一个乐于助人的助手。"}
