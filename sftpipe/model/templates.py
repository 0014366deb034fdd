"""Named prompt formats, expressed as chat templates.

``model.template: auto`` keeps the tokenizer's own chat template and falls back
to ChatML for a base model that has none. The other names replace it. Every
format is a Jinja chat template, so training, loss masking, perplexity scoring
and generation all render through ``tokenizer.apply_chat_template``.
The end of each assistant turn is an end-of-turn marker (ChatML's
``<|im_end|>``) or the tokenizer's EOS token, which is always trained on.

Tool use and reasoning in the built-in formats (a hub model's own template renders
them its own way, through ``apply_chat_template(..., tools=...)``):

* the tools are listed in the system turn, one signature per line, inside
  ``<tools>...</tools>``: ``name(arg: type, opt?: type) - description``, where ``?``
  marks an optional argument and an enum shows as ``a|b``;
* an assistant's calls follow its text, one per call:
  ``<tool_call>{"name": "add", "arguments": {"a": 1, "b": 2}}</tool_call>``;
* each tool result is its own turn (ChatML role ``tool``; ``### Tool result:`` /
  ``### 工具结果：`` / ``TOOL:`` in the others), in the order of the calls;
* reasoning opens the assistant turn: ``<think>\\n...\\n</think>\\n``.

Assistant turns are wrapped in ``{% generation %}`` markers, so transformers'
``return_assistant_tokens_mask`` and TRL's ``assistant_only_loss`` accept these
templates; this project's own masks do not need them (see formatting.py).
"""

from __future__ import annotations

import json
import re

# --- pieces shared by the templates (Jinja, no literal newlines: strings carry '\n') ---

_FN = "{% set f = t['function'] if t['function'] is defined else t %}"
_PARAMS = ("{% set ps = f['parameters'] if f['parameters'] is defined and f['parameters'] else {} %}"
           "{% set props = ps['properties'] if ps['properties'] is defined else {} %}"
           "{% set req = ps['required'] if ps['required'] is defined else [] %}")
_SIGNATURE = (
    _FN + _PARAMS + "{{ f['name'] + '(' }}"
    "{% for k, v in props.items() %}"
    "{{ k }}{% if k not in req %}{{ '?' }}{% endif %}{{ ': ' }}"
    "{% if v['enum'] is defined %}{{ v['enum'] | join('|') }}"
    "{% elif v['type'] is defined %}{{ v['type'] }}{% else %}{{ 'any' }}{% endif %}"
    "{% if not loop.last %}{{ ', ' }}{% endif %}"
    "{% endfor %}{{ ')' }}"
    "{% if f['description'] is defined and f['description'] %}{{ ' - ' + f['description'] }}{% endif %}"
    "{{ '\\n' }}"
)
TOOLS_BLOCK = "{{ '<tools>\\n' }}{% for t in tools %}" + _SIGNATURE + "{% endfor %}{{ '</tools>' }}"

# the assistant's reply: reasoning, text, calls (no end-of-turn marker)
REPLY = (
    "{% if m['reasoning_content'] is defined and m['reasoning_content'] %}"
    "{{ '<think>\\n' + m['reasoning_content'] + '\\n</think>\\n' }}{% endif %}"
    "{{ m['content'] if m['content'] else '' }}"
    "{% if m['tool_calls'] is defined and m['tool_calls'] %}"
    "{% for tc in m['tool_calls'] %}{% set c = tc['function'] if tc['function'] is defined else tc %}"
    "{% if m['content'] or not loop.first %}{{ '\\n' }}{% endif %}"
    "{{ '<tool_call>' }}{{ {'name': c['name'], 'arguments': c['arguments']} | tojson }}{{ '</tool_call>' }}"
    "{% endfor %}{% endif %}"
)

# ChatML. Without tools and reasoning it renders byte for byte as it always has.
CHATML = (
    "{% set has_tools = tools is defined and tools %}"
    "{% for m in messages %}"
    "{% if m['role'] == 'system' and loop.first and has_tools %}"
    "{{ '<|im_start|>system\\n' + m['content'] + '\\n\\n' }}" + TOOLS_BLOCK + "{{ '<|im_end|>\\n' }}"
    "{% else %}"
    "{% if loop.first and has_tools %}{{ '<|im_start|>system\\n' }}" + TOOLS_BLOCK + "{{ '<|im_end|>\\n' }}{% endif %}"
    "{% if m['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\\n' }}{% generation %}" + REPLY + "{{ '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}"
    "{% else %}"
    "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>' + '\\n' }}"
    "{% endif %}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def _plain(system_sep: str, user: str, tool: str, assistant: str, turn_end: str, after_reply: str,
           tools_title: str, gen_prompt: str) -> str:
    """An instruction-style template: system text, then user / tool / assistant blocks."""
    return (
        "{% set has_tools = tools is defined and tools %}"
        "{% for m in messages %}"
        "{% if loop.first and has_tools and m['role'] != 'system' %}"
        "{{ '" + tools_title + "' }}" + TOOLS_BLOCK + "{{ '" + system_sep + "' }}{% endif %}"
        "{% if m['role'] == 'system' %}"
        "{% if has_tools %}{{ m['content'] + '\\n\\n" + tools_title + "' }}" + TOOLS_BLOCK +
        "{{ '" + system_sep + "' }}{% else %}{{ m['content'] + '" + system_sep + "' }}{% endif %}"
        "{% elif m['role'] == 'user' %}{{ '" + user + "' + m['content'] + '" + turn_end + "' }}"
        "{% elif m['role'] == 'tool' %}{{ '" + tool + "' + m['content'] + '" + turn_end + "' }}"
        "{% else %}{{ '" + assistant + "' }}{% generation %}" + REPLY + "{{ eos_token }}{% endgeneration %}"
        "{{ '" + after_reply + "' }}{% endif %}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '" + gen_prompt + "' }}{% endif %}"
    )


ALPACA = _plain("\\n\\n", "### Instruction:\\n", "### Tool result:\\n", "### Response:\\n", "\\n\\n", "\\n\\n",
                "Tools:\\n", "### Response:\\n")
VICUNA = _plain(" ", "USER: ", "TOOL: ", "ASSISTANT: ", " ", "", "Tools: ", "ASSISTANT:")
ZH = _plain("\\n\\n", "### 指令：\\n", "### 工具结果：\\n", "### 回答：\\n", "\\n\\n", "\\n\\n", "工具：\\n",
            "### 回答：\\n")

TEMPLATES = {"chatml": CHATML, "alpaca": ALPACA, "vicuna": VICUNA, "zh": ZH}
END_OF_TURN = {"chatml": "<|im_end|>"}
CHATML_TOKENS = ["<|im_start|>", "<|im_end|>"]
# The tool and reasoning markup the built-in templates write, one token each in the built-in base
# model's vocabulary (as hub chat models have them, e.g. Qwen2.5's <tool_call>): ordinary added tokens,
# not special ones, so decoding with skip_special_tokens keeps them and parse_reply can read them.
# Split into byte-level pieces, "<tool_call>" was 5 tokens whose "_call" the tiny model kept writing
# inside function names ("get_call>"); as one token, SFT writes the call's frame.
MARKUP_TOKENS = ["<tool_call>", "</tool_call>", "<tools>", "</tools>", "<think>", "</think>"]


def apply_template(tokenizer, name: str) -> str:
    """Set the tokenizer's chat template per ``model.template``; returns the name in force."""
    if name == "auto":
        if getattr(tokenizer, "chat_template", None):
            return "tokenizer"
        name = "chatml"
    if name == "chatml":
        missing = [t for t in CHATML_TOKENS if t not in tokenizer.get_vocab()]
        if missing:
            tokenizer.add_special_tokens({"additional_special_tokens": missing})
    tokenizer.chat_template = TEMPLATES[name]
    return name


def stop_token_ids(tokenizer) -> list[int]:
    """Ids that end an assistant turn: EOS plus ChatML's end-of-turn marker when present."""
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    # per-token lookups, not get_vocab(): that builds a dict of the whole vocabulary (70 ms for
    # Qwen2's 151,936 tokens), and encode() calls this for every row
    for tok in ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>"):
        tid = tokenizer.convert_tokens_to_ids(tok)
        if isinstance(tid, int) and tokenizer.convert_ids_to_tokens(tid) == tok:  # absent -> unk id or None
            ids.add(tid)
    return sorted(ids)


_CALL = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.S)
_THINK = re.compile(r"^\s*<think>(.*?)</think>\s*", re.S)


_NAME = re.compile(r'^\s*\{\s*"name"\s*:\s*"([^"\\]+)"')


def parse_reply(text: str) -> dict:
    """A generated assistant turn, read back: ``{"content", "reasoning", "calls", "bad_calls", "names"}``.

    ``calls`` are the ``<tool_call>`` blocks that hold a JSON object with a string ``name``
    (``arguments`` an object; a JSON string of one is parsed); ``bad_calls`` counts blocks
    that do not (invalid JSON, no name, an unclosed block cut by the token limit). ``names``
    are the functions every block calls, read from the block's opening ``{"name": "..."``
    when its JSON is broken further on (choosing the function and writing valid arguments
    are scored apart); a block with no readable name gives ``None``.
    """
    reasoning = ""
    think = _THINK.match(text)
    if think:
        reasoning, text = think.group(1).strip(), text[think.end():]
    elif "</think>" in text:           # reasoning without its opening tag (some templates put it in the prompt)
        reasoning, text = text.split("</think>", 1)
        reasoning, text = reasoning.replace("<think>", "").strip(), text.lstrip()
    calls, bad, names = [], 0, []
    for m in _CALL.finditer(text):
        try:
            obj = json.loads(m.group(1))
            args = obj.get("arguments", {}) if isinstance(obj, dict) else None
            if isinstance(args, str):
                args = json.loads(args)
            if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not isinstance(args, dict):
                raise ValueError
            calls.append({"name": obj["name"], "arguments": args})
            names.append(obj["name"])
        except ValueError:
            bad += 1
            name = _NAME.match(m.group(1))
            names.append(name.group(1) if name else None)
    content = _CALL.sub("", text).strip() if "<tool_call>" in text else text.strip()
    return {"content": content, "reasoning": reasoning, "calls": calls, "bad_calls": bad, "names": names}
