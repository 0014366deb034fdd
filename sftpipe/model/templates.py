"""Named prompt formats, expressed as chat templates.

``model.template: auto`` keeps the tokenizer's own chat template and falls back
to ChatML for a base model that has none. The other names replace it. Every
format is a Jinja chat template, so training, loss masking, perplexity scoring
and generation all render through ``tokenizer.apply_chat_template``.
The end of each assistant turn is an end-of-turn marker (ChatML's
``<|im_end|>``) or the tokenizer's EOS token, which is always trained on.
"""

from __future__ import annotations

CHATML = (
    "{% for m in messages %}"
    "{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

ALPACA = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ m['content'] + '\n\n' }}"
    "{% elif m['role'] == 'user' %}{{ '### Instruction:\n' + m['content'] + '\n\n' }}"
    "{% else %}{{ '### Response:\n' + m['content'] + eos_token + '\n\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '### Response:\n' }}{% endif %}"
)

VICUNA = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ m['content'] + ' ' }}"
    "{% elif m['role'] == 'user' %}{{ 'USER: ' + m['content'] + ' ' }}"
    "{% else %}{{ 'ASSISTANT: ' + m['content'] + eos_token }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

ZH = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ m['content'] + '\n\n' }}"
    "{% elif m['role'] == 'user' %}{{ '### 指令：\n' + m['content'] + '\n\n' }}"
    "{% else %}{{ '### 回答：\n' + m['content'] + eos_token + '\n\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '### 回答：\n' }}{% endif %}"
)

TEMPLATES = {"chatml": CHATML, "alpaca": ALPACA, "vicuna": VICUNA, "zh": ZH}
END_OF_TURN = {"chatml": "<|im_end|>"}
CHATML_TOKENS = ["<|im_start|>", "<|im_end|>"]


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
