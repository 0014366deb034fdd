"""Tool-use and reasoning rows for the sample, English and Chinese, with ground truth.

Task families (``category`` in the files and in truth):

* ``tool_calculator``: ``add(a, b)`` on numbers of 4-6 digits (too large for a tiny model
  to add itself); the tool's output is the true sum and the final answer states it.
* ``tool_capital``: ``get_capital(country)`` over the countries of :data:`vocab.CAPITALS`.
* ``tool_weather``: ``get_weather(city, unit?)`` (``unit`` an optional enum); the output is a
  small JSON object drawn from the generator; some rows chain ``get_capital`` then
  ``get_weather`` ("the weather in the capital of X").
* ``tool_none``: tools are declared but none is needed (a translation, sentiment or word
  reversal request from :mod:`tasks`, answered directly).
* ``reasoning_arithmetic``: multi-digit addition/subtraction with the column steps as the
  reasoning, then the answer line.

Every tool row declares 2-3 tools (the ones it needs plus distractors, in random order) so
that picking the function is a real decision; a chained row needs two tools already and gets a
distractor only where it fits the size bound. Some rows make two parallel calls (two sums,
two capitals, the weather in two cities), answered by two tool messages and one final
answer; those go to the OpenAI file only, because LLaMA-Factory's ShareGPT reader wants
strictly alternating turns (one ``observation`` after each ``function_call`` turn).

Rows are built in the canonical schema (:mod:`sftpipe.schema`) and written as OpenAI
messages (``tools_openai.jsonl``: ``tool_calls`` with JSON-string arguments, ``tool``
messages with ``tool_call_id``, ``reasoning_content``) and as LLaMA-Factory ShareGPT
(``tools_sharegpt.json``, a JSON array: ``function_call`` / ``observation`` turns, ``tools``
as a JSON string, reasoning as ``<think>...</think>`` opening the ``gpt`` value).

The rows draw from a generator of their own, so the rest of the sample does not change
with them. Each row is kept short (:data:`MAX_ROW_CHARS`, tool schemas' JSON included):
the third tool only where it fits. Every tool row opens with :data:`TOOL_SYSTEM`.
"""

from __future__ import annotations

import json
import random
import re

from . import vocab as V
from .tasks import GENERATORS

TOOL_SOURCES = {"tools_openai": "tools_openai.jsonl", "tools_sharegpt": "tools_sharegpt.json"}
TOOL_CATEGORIES = ("tool_calculator", "tool_capital", "tool_weather", "tool_none")
REASONING = "reasoning_arithmetic"
# share of each tool category among the tool rows
TOOL_WEIGHTS = {"tool_calculator": 0.25, "tool_capital": 0.2, "tool_weather": 0.3, "tool_none": 0.25}
MAX_ROW_CHARS = 600     # tool schemas' JSON + every message's text, reasoning and calls (see row_size)
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3000-\u303f\uff00-\uffef]")
# the system prompt of every tool row (as in glaive-function-calling's), which also tells a text-only
# reader (label_noise's classifier) a tool row from a chat row with the same request
TOOL_SYSTEM = {"en": "Use the tools below if needed.", "zh": "需要时可调用工具。"}
NONE_TASKS = ("translation", "sentiment", "reverse")   # requests a tool row answers without a call

_INT, _STR = {"type": "integer"}, {"type": "string"}
# name -> (description per language, properties, required)
TOOL_SPECS = {
    "add": ({"en": "Add two integers.", "zh": "两个整数相加。"}, {"a": _INT, "b": _INT}, ["a", "b"]),
    "multiply": ({"en": "Multiply two integers.", "zh": "两个整数相乘。"}, {"a": _INT, "b": _INT}, ["a", "b"]),
    "get_capital": ({"en": "Capital of a country.", "zh": "查询国家的首都。"}, {"country": _STR}, ["country"]),
    "get_population": ({"en": "Population of a country.", "zh": "查询国家的人口。"}, {"country": _STR}, ["country"]),
    "get_weather": ({"en": "Weather in a city.", "zh": "查询城市的天气。"},
                    {"city": _STR, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, ["city"]),
    "get_time": ({"en": "Local time in a city.", "zh": "查询城市的当地时间。"}, {"city": _STR}, ["city"]),
}

# (english, chinese) weather conditions; the Chinese reads after "{city}现在"
CONDITIONS = [("sunny", "天气晴朗"), ("cloudy", "多云"), ("rainy", "下雨"), ("windy", "刮风"), ("foggy", "有雾"),
              ("snowy", "下雪")]
COLUMNS = {"en": ["Ones", "Tens", "Hundreds", "Thousands", "Ten-thousands"], "zh": ["个位", "十位", "百位", "千位", "万位"]}


def tool_schema(name: str, lang: str) -> dict:
    desc, props, required = TOOL_SPECS[name]
    return {"name": name, "description": desc[lang],
            "parameters": {"type": "object", "properties": props, "required": list(required)}}


def _compact(obj) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _row_texts(row: dict) -> list[str]:
    out = [_compact(row["tools"])] if row.get("tools") else []
    for m in row["messages"]:
        out += [m["content"], m.get("reasoning_content", "")]
        out += [c["name"] + _compact(c["arguments"]) for c in m.get("tool_calls", ())]
    return out


def row_chars(row: dict) -> int:
    """The row's size: its tool schemas as compact JSON plus each message's text, reasoning and calls."""
    return sum(map(len, _row_texts(row)))


def row_size(row: dict) -> int:
    """:func:`row_chars` with each CJK character counted twice: the tokenizer gives it a token of its
    own, where English and JSON run at ~2.5 characters a token. What MAX_ROW_CHARS bounds."""
    return sum(len(t) + len(_CJK.findall(t)) for t in _row_texts(row))


def _declare(rng: random.Random, row: dict, needed: list[str]) -> dict:
    """Declare ``needed`` plus distractors, in random order: 2 tools at least (a distractor that
    fits in MAX_ROW_CHARS, else the smallest), a 3rd only where the row still fits."""
    lang = row["lang"]

    def size(names):
        return row_size({**row, "tools": [tool_schema(t, lang) for t in names]})

    others = [t for t in TOOL_SPECS if t not in needed]
    rng.shuffle(others)
    names = list(needed)
    if len(names) < 2:
        fits = [t for t in others if size(names + [t]) <= MAX_ROW_CHARS]
        names.append(fits[0] if fits else min(others, key=lambda t: size(names + [t])))
    fits = [t for t in others if t not in names and size(names + [t]) <= MAX_ROW_CHARS]
    if len(names) < 3 and fits:
        names.append(fits[0])
    rng.shuffle(names)
    row["tools"] = [tool_schema(t, lang) for t in names]
    return row


def _call_id(rng: random.Random) -> str:
    return f"call_{rng.getrandbits(32):08x}"


def _conversation(rng: random.Random, lang: str, prompt: str, steps: list[list[tuple[str, dict, str]]],
                  answer: str) -> list[dict]:
    """user -> (assistant calls -> one tool message per call) per step -> assistant answer."""
    msgs = [{"role": "system", "content": TOOL_SYSTEM[lang]}, {"role": "user", "content": prompt}]
    for calls in steps:
        ids = [_call_id(rng) for _ in calls]
        msgs.append({"role": "assistant", "content": "",
                     "tool_calls": [{"name": n, "arguments": a, "id": i} for (n, a, _), i in zip(calls, ids)]})
        msgs += [{"role": "tool", "content": out, "tool_call_id": i, "name": n} for (n, _, out), i in zip(calls, ids)]
    msgs.append({"role": "assistant", "content": answer})
    return msgs


def _tool_row(rng, lang, category, prompt, steps, answer, key) -> dict:
    row = {"lang": lang, "category": category, "key": key,
           "messages": _conversation(rng, lang, prompt, steps, answer),
           "expected_calls": [{"name": n, "arguments": a} for calls in steps for n, a, _ in calls]}
    return _declare(rng, row, list(dict.fromkeys(n for calls in steps for n, _, _ in calls)))


# ------------------------------------------------------------------------------------ tool tasks

def calculator(rng: random.Random, lang: str, parallel: bool) -> dict:
    def pair():
        return tuple(rng.randint(10 ** (k - 1), 10 ** k - 1) for k in (rng.randint(4, 6), rng.randint(4, 6)))

    sums = [pair() for _ in range(2 if parallel else 1)]
    t = rng.randrange(3)
    steps = [[("add", {"a": a, "b": b}, str(a + b)) for a, b in sums]]
    if not parallel:
        (a, b), = sums
        if lang == "en":
            prompt = [f"What is {a} + {b}?", f"Please add {a} and {b}.", f"Calculate the sum of {a} and {b}."][t]
            answer = f"{a} + {b} = {a + b}."
        else:
            prompt = [f"{a}加{b}等于多少？", f"请计算{a}与{b}的和。", f"帮我算一下{a}+{b}。"][t]
            answer = f"{a}+{b}={a + b}。"
    else:
        (a, b), (c, d) = sums
        if lang == "en":
            prompt = [f"What are {a} + {b} and {c} + {d}?", f"Please add {a} and {b}, and also {c} and {d}.",
                      f"Calculate two sums: {a} + {b} and {c} + {d}."][t]
            answer = f"{a} + {b} = {a + b}, and {c} + {d} = {c + d}."
        else:
            prompt = [f"{a}+{b}和{c}+{d}分别等于多少？", f"请分别计算{a}与{b}的和、{c}与{d}的和。",
                      f"帮我算两道加法：{a}+{b}，{c}+{d}。"][t]
            answer = f"{a}+{b}={a + b}，{c}+{d}={c + d}。"
    return _tool_row(rng, lang, "tool_calculator", prompt, steps, answer, (lang, "calc", tuple(sums)))


def capital(rng: random.Random, lang: str, parallel: bool) -> dict:
    picks = rng.sample(V.CAPITALS, 2 if parallel else 1)
    zh = lang == "zh"
    names = [(p[2], p[3]) if zh else (p[0], p[1]) for p in picks]
    t = rng.randrange(3)
    steps = [[("get_capital", {"country": c}, cap) for c, cap in names]]
    if not parallel:
        (c, cap), = names
        prompt = ([f"查一下{c}的首都。", f"请用工具查询{c}的首都。", f"帮我查查{c}的首都是哪座城市。"] if zh else
                  [f"Look up the capital of {c}.", f"Use a tool to find the capital of {c}.",
                   f"I need the capital of {c}. Can you check?"])[t]
        answer = f"{cap}是{c}的首都。" if zh else f"{cap} is the capital of {c}."
    else:
        (c1, cap1), (c2, cap2) = names
        prompt = ([f"查一下{c1}和{c2}的首都。", f"请用工具查询{c1}和{c2}的首都。", f"{c1}和{c2}的首都分别是哪里？帮我查查。"] if zh else
                  [f"Look up the capitals of {c1} and {c2}.", f"Use a tool to find the capitals of {c1} and {c2}.",
                   f"I need the capitals of {c1} and {c2}. Can you check?"])[t]
        answer = (f"{cap1}是{c1}的首都，{cap2}是{c2}的首都。" if zh else
                  f"{cap1} is the capital of {c1}, and {cap2} is the capital of {c2}.")
    key = (lang, "capital", tuple(sorted(c for c, _ in names)))
    return _tool_row(rng, lang, "tool_capital", prompt, steps, answer, key)


def _weather(rng: random.Random, lang: str, unit: str | None) -> tuple[str, int, str]:
    """(the tool's output as JSON text, temperature, condition): fahrenheit only when asked for."""
    celsius = rng.randint(-10, 35)
    cond = rng.choice(CONDITIONS if celsius <= 2 else CONDITIONS[:-1])[lang == "zh"]
    if unit == "fahrenheit":
        temp, field = round(celsius * 9 / 5 + 32), "temp_f"
    else:
        temp, field = celsius, "temp_c"
    return json.dumps({field: temp, "condition": cond}, ensure_ascii=False), temp, cond


def weather(rng: random.Random, lang: str, mode: str) -> dict:
    """mode: single | parallel (two cities) | chain (get_capital of a country, then its weather).
    ``unit`` is asked for (and passed) in some single-city rows."""
    zh = lang == "zh"
    unit = rng.choice([None, None, None, "celsius", "fahrenheit"]) if mode == "single" else None
    deg = "°F" if unit == "fahrenheit" else "°C"
    args = {"unit": unit} if unit else {}
    t = rng.randrange(3)
    if zh:
        ask = {None: "", "celsius": "用摄氏度。", "fahrenheit": "用华氏度。"}[unit]
    else:
        ask = {None: "", "celsius": " In Celsius, please.", "fahrenheit": " In Fahrenheit, please."}[unit]
    if mode == "chain":
        country, cap, country_zh, cap_zh = rng.choice(V.CAPITALS)
        c, city = (country_zh, cap_zh) if zh else (country, cap)
        text, temp, cond = _weather(rng, lang, unit)
        steps = [[("get_capital", {"country": c}, city)], [("get_weather", {"city": city, **args}, text)]]
        prompt = ([f"{c}首都的天气怎么样？", f"查一下{c}首都现在的天气。", f"{c}的首都今天天气如何？"] if zh else
                  [f"What's the weather like in the capital of {c}?", f"Check the weather in the capital of {c}.",
                   f"How is the weather in the capital of {c} right now?"])[t] + ask
        answer = (f"{c}的首都是{city}，那里现在{cond}，气温{temp}{deg}。" if zh else
                  f"It is {cond} in {city}, the capital of {c}, at {temp}{deg}.")
        key = (lang, "weather-chain", c, unit)
    else:
        picks = rng.sample(V.CAPITALS, 2 if mode == "parallel" else 1)
        cities = [p[3] if zh else p[1] for p in picks]
        reports = [_weather(rng, lang, unit) for _ in cities]
        steps = [[("get_weather", {"city": city, **args}, r[0]) for city, r in zip(cities, reports)]]
        now = "现在" if mode == "single" else ""
        parts = [(f"{city}{now}{cond}，气温{temp}{deg}" if zh else f"{cond} in {city} at {temp}{deg}")
                 for city, (_, temp, cond) in zip(cities, reports)]
        if mode == "single":
            city, = cities
            prompt = ([f"{city}现在天气怎么样？", f"查一下{city}的天气。", f"{city}今天天气如何？"] if zh else
                      [f"What's the weather like in {city}?", f"Check the current weather in {city}.",
                       f"How is the weather in {city} right now?"])[t] + ask
            answer = f"{parts[0]}。" if zh else f"It is {parts[0]}."
        else:
            c1, c2 = cities
            prompt = ([f"{c1}和{c2}现在天气怎么样？", f"查一下{c1}和{c2}的天气。", f"{c1}和{c2}今天天气如何？"] if zh else
                      [f"What's the weather like in {c1} and {c2}?", f"Check the weather in {c1} and {c2}.",
                       f"How is the weather in {c1} and {c2} now?"])[t]
            answer = f"{parts[0]}；{parts[1]}。" if zh else f"It is {parts[0]}, and {parts[1]}."
        key = (lang, "weather-" + mode, tuple(sorted(cities)), unit)
    return _tool_row(rng, lang, "tool_weather", prompt, steps, answer, key)


def no_tool(rng: random.Random, lang: str, avoid: set[str]) -> dict | None:
    """A request from another task family, answered without a call; None when its task slots
    (``repr(item.key[:-1])``, the chat rows' truth ``slots``) are in ``avoid``: the same request
    as a chat row, in any template, with the same answer, is a paraphrase dedup would drop."""
    item = GENERATORS[rng.choice(NONE_TASKS)](rng, lang)
    msgs = [{"role": "system", "content": TOOL_SYSTEM[lang]}, {"role": "user", "content": item.prompt},
            {"role": "assistant", "content": item.response}]
    row = {"lang": lang, "category": "tool_none", "key": item.key, "messages": msgs, "expected_calls": []}
    row = _declare(rng, row, [])
    return None if repr(item.key[:-1]) in avoid else row


# ------------------------------------------------------------------------------------ reasoning

def column_steps(a: int, b: int, op: str, lang: str) -> tuple[list[str], int]:
    """The written-arithmetic column steps of ``a op b`` (``a >= b`` for "-"), and the result."""
    da, db = str(a)[::-1], str(b)[::-1]
    steps, carry = [], 0
    zh = lang == "zh"
    for i in range(len(da)):
        x, y = int(da[i]), int(db[i]) if i < len(db) else 0
        col = COLUMNS[lang][i]
        last = i == len(da) - 1
        if op == "+":
            s = x + y + carry
            expr = f"{x}+{y}{'+1' if carry else ''}={s}" if zh else f"{x} + {y}{' + 1' if carry else ''} = {s}"
            if s >= 10 and not last:
                steps.append(f"{col}：{expr}，写{s % 10}进1。" if zh else f"{col}: {expr}, write {s % 10}, carry 1.")
            else:
                steps.append(f"{col}：{expr}。" if zh else f"{col}: {expr}.")
            carry = int(s >= 10)
        else:
            less = f"{'-1' if carry else ''}" if zh else f"{' - 1' if carry else ''}"
            d = x - y - carry
            if d < 0:
                expr = f"{x}-{y}{less}不够减，借1：{x + 10}-{y}{less}={d + 10}" if zh else \
                    f"{x} - {y}{less} is below 0, borrow 1: {x + 10} - {y}{less} = {d + 10}"
                carry = 1
            else:
                expr = f"{x}-{y}{less}={d}" if zh else f"{x} - {y}{less} = {d}"
                carry = 0
            steps.append(f"{col}：{expr}。" if zh else f"{col}: {expr}.")
    c = a + b if op == "+" else a - b
    steps.append(f"所以结果是{c}。" if zh else f"So the result is {c}.")
    return steps, c


def reasoning(rng: random.Random, lang: str) -> dict:
    op = rng.choice("+-")
    k = rng.choice([3, 4])
    a, b = (rng.randint(10 ** (k - 1), 10 ** k - 1) for _ in range(2))
    if op == "-" and a < b:
        a, b = b, a
    steps, c = column_steps(a, b, op, lang)
    t = rng.randrange(3)
    if lang == "zh":
        word = "加" if op == "+" else "减"
        prompt = [f"{a}{op}{b}等于多少？", f"计算{a}{word}{b}。", f"请一步一步算出{a}{op}{b}。"][t]
        answer = f"{a}{op}{b}={c}。"
    else:
        prompt = [f"What is {a} {op} {b}?", f"Calculate {a} {op} {b}.", f"Work out {a} {op} {b} step by step."][t]
        answer = f"{a} {op} {b} = {c}."
    msgs = [{"role": "user", "content": prompt},
            {"role": "assistant", "content": answer, "reasoning_content": "\n".join(steps)}]
    return {"lang": lang, "category": REASONING, "key": (lang, a, op, b), "messages": msgs,
            "expected_calls": [], "answer": c}


# ------------------------------------------------------------------------------------ all rows

def _split(n: int, weights: dict[str, float]) -> dict[str, int]:
    """``n`` split by ``weights`` (largest remainders, in order), summing to ``n``."""
    raw = {k: n * w for k, w in weights.items()}
    out = {k: int(v) for k, v in raw.items()}
    for k in sorted(raw, key=lambda k: out[k] - raw[k])[: n - sum(out.values())]:
        out[k] += 1
    return out


def _make(rng: random.Random, category: str, lang: str, avoid: set[str]) -> dict | None:
    x = rng.random()
    if category == "tool_calculator":
        return calculator(rng, lang, parallel=x < 0.3)
    if category == "tool_capital":
        return capital(rng, lang, parallel=x < 0.3)
    if category == "tool_weather":
        return weather(rng, lang, "single" if x < 0.5 else "parallel" if x < 0.8 else "chain")
    if category == "tool_none":
        return no_tool(rng, lang, avoid)
    return reasoning(rng, lang)


def tool_rows(languages: list[str], tool_rows_per_lang: int, reasoning_rows_per_lang: int, seed: int,
              avoid: set[str] = frozenset()) -> list[dict]:
    """The tool and reasoning rows, canonical (``messages``, ``tools``) with ``lang``, ``category``,
    ``expected_calls`` (and ``answer`` for reasoning), each row's ``key`` unique. ``avoid``: task
    slots a no-call row must not reuse (see :func:`no_tool`)."""
    rng = random.Random(f"tools:{seed}")
    rows, seen = [], set()
    for lang in languages:
        want = {**_split(tool_rows_per_lang, TOOL_WEIGHTS), REASONING: reasoning_rows_per_lang}
        for category, n in want.items():
            got, tries = 0, 0
            while got < n and tries < n * 50:
                tries += 1
                row = _make(rng, category, lang, avoid)
                if row is None or row["key"] in seen:
                    continue
                seen.add(row["key"])
                rows.append(row)
                got += 1
    return rows


def has_parallel_calls(row: dict) -> bool:
    return any(len(m.get("tool_calls", ())) > 1 for m in row["messages"])


def assign_tool_sources(rows: list[dict], seed: int) -> None:
    """Half the rows to each file; rows with parallel calls to the OpenAI file (see module doc)."""
    rng = random.Random(f"tool-sources:{seed}")
    for r in rows:
        x = rng.random()
        r["source"] = "tools_openai" if has_parallel_calls(r) or x < 0.5 else "tools_sharegpt"


def to_openai(r: dict) -> dict:
    """OpenAI chat format: JSON-string arguments, ``tool`` messages linked by ``tool_call_id``."""
    msgs = []
    for m in r["messages"]:
        out = {"role": m["role"], "content": m["content"]}
        if m.get("tool_calls"):
            out["content"] = None
            out["tool_calls"] = [
                {"id": c["id"], "type": "function",
                 "function": {"name": c["name"], "arguments": json.dumps(c["arguments"], ensure_ascii=False)}}
                for c in m["tool_calls"]]
        if m.get("reasoning_content"):
            out["reasoning_content"] = m["reasoning_content"]
        if m["role"] == "tool":
            out["tool_call_id"] = m["tool_call_id"]
        msgs.append(out)
    row = {"id": r["rid"], "messages": msgs, "category": r["category"], "lang": r["lang"]}
    if r.get("tools"):
        row["tools"] = [{"type": "function", "function": t} for t in r["tools"]]
    return row


def to_sharegpt(r: dict) -> dict:
    """LLaMA-Factory ShareGPT: ``function_call`` / ``observation`` turns, ``tools`` as a JSON string,
    reasoning as a ``<think>`` block opening the ``gpt`` value, the system prompt in ``system``."""
    conv, system = [], None
    for m in r["messages"]:
        if m["role"] == "system":
            system = m["content"]
        elif m["role"] == "user":
            conv.append({"from": "human", "value": m["content"]})
        elif m["role"] == "tool":
            conv.append({"from": "observation", "value": m["content"]})
        elif m.get("tool_calls"):
            calls = [{"name": c["name"], "arguments": c["arguments"]} for c in m["tool_calls"]]
            conv.append({"from": "function_call", "value": json.dumps(calls[0] if len(calls) == 1 else calls,
                                                                       ensure_ascii=False)})
        else:
            think = m.get("reasoning_content")
            value = f"<think>\n{think}\n</think>\n\n{m['content']}" if think else m["content"]
            conv.append({"from": "gpt", "value": value})
    row = {"id": r["rid"], "conversations": conv, "category": r["category"], "lang": r["lang"]}
    if system is not None:
        row["system"] = system
    if r.get("tools"):
        row["tools"] = json.dumps(r["tools"], ensure_ascii=False)
    return row


def truth_row(r: dict) -> dict:
    t = {"id": f"{r['source']}:{r['rid']}", "lang": r["lang"], "category": r["category"], "defect": None,
         "expected_calls": r["expected_calls"]}
    if "answer" in r:
        t["answer"] = r["answer"]
    return t


def generate_tool_rows(sample_params, avoid: set[str] = frozenset()) -> list[dict]:
    """The rows of both tool files, in file order, each with ``rid`` (``t000000``...) and ``source``."""
    seed = sample_params.seed
    rows = tool_rows(list(sample_params.languages), sample_params.tool_rows_per_lang,
                     sample_params.reasoning_rows_per_lang, seed, avoid)
    random.Random(f"tool-order:{seed}").shuffle(rows)
    for i, r in enumerate(rows):
        r["rid"] = f"t{i:06d}"
    assign_tool_sources(rows, seed)
    return rows


# ------------------------------------------------------------------------------------ pretraining text

def signature(schema: dict) -> str:
    """``name(arg: type, opt?: a|b) - description``: a tool as the built-in chat templates list it."""
    ps = schema.get("parameters") or {}
    req = ps.get("required", [])
    args = ", ".join(f"{k}{'' if k in req else '?'}: {'|'.join(v['enum']) if 'enum' in v else v.get('type', 'any')}"
                     for k, v in (ps.get("properties") or {}).items())
    return f"{schema['name']}({args}) - {schema['description']}"


def document(row: dict, rng: random.Random) -> str:
    """A row as plain text, no chat roles: half as prompt, newline, answer (the layout perplexity
    scoring uses: the user's request and the tools' outputs, then the answer), half as the built-in
    chat templates write tools, calls and reasoning (the tool rows' system prompt, ``<tools>``
    signatures, ``<tool_call>`` JSON, ``<think>`` blocks: the tokens a hub model's tokenizer knows
    as such), results on their own lines."""
    msgs = [m for m in row["messages"] if m["role"] != "system"]
    if rng.random() < 0.5:
        parts = [m["content"] for m in msgs if m["role"] in ("user", "tool")] + [msgs[-1]["content"]]
        return "\n".join(parts)
    parts = []
    if row.get("tools"):
        signatures = "".join(signature(t) + "\n" for t in row["tools"])
        parts += [TOOL_SYSTEM[row["lang"]], f"<tools>\n{signatures}</tools>"]
    for m in msgs:
        if m.get("reasoning_content"):
            parts.append(f"<think>\n{m['reasoning_content']}\n</think>")
        if m.get("content"):
            parts.append(m["content"])
        parts += ["<tool_call>" + json.dumps({"name": c["name"], "arguments": c["arguments"]}, ensure_ascii=False)
                  + "</tool_call>" for c in m.get("tool_calls", ())]
    return "\n".join(parts)


def pretrain_documents(languages: list[str], n: int, seed: int) -> list[str]:
    """``n`` plain-text documents drawn like the tool and reasoning rows (a generator of their own)."""
    rng = random.Random(f"tool-corpus:{seed}")
    kinds = list(TOOL_WEIGHTS) + [REASONING]
    docs = []
    while len(docs) < n:
        row = _make(rng, rng.choice(kinds), rng.choice(languages), frozenset())
        if row is not None:
            docs.append(document(row, rng))
    return docs
