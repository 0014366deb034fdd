"""Fresh unlabeled prompts of the sample's six task families, for distillation and best-of-K.

The sample's generators (:mod:`sftpipe.sample.tasks`) draw new items from their own seed; an item is
skipped when the existing rows (the split: train, validation and test) already hold its prompt, or its
answer (the answer of an arithmetic, capital, reverse, translation or invitation item names its slots,
so this also skips paraphrases of a held item: the same question in another template). Sentiment answers
are one word, so only the prompt is compared there. The prompts carry no reply: the reply a generator
gives is what the create pipeline judges. The generator's own answers are returned apart (``truth``),
for measuring, never for training.
"""

from __future__ import annotations

import random

from ..config import PromptsParams
from ..sample.tasks import GENERATORS
from ..schema import last_turn_split


def _held(existing: list[dict]) -> tuple[set[str], set[str]]:
    prompts, answers = set(), set()
    for rec in existing:
        for m in rec["messages"]:
            if m["role"] == "user":
                prompts.add(m["content"].strip())
        if rec["messages"] and rec["messages"][-1]["role"] == "assistant" and rec.get("label") != "sentiment":
            answers.add(last_turn_split(rec)[1].strip())
    return prompts, answers


def fresh_prompts(existing: list[dict], pp: PromptsParams) -> tuple[list[dict], list[dict], dict]:
    """(prompt rows, truth rows ``{"id", "response"}``, counts). Deterministic in ``pp``."""
    rng = random.Random(f"prompts:{pp.seed}")
    held_prompts, held_answers = _held(existing)
    rows, truth = [], []
    skipped = {"held_prompt": 0, "held_answer": 0, "repeat": 0}
    short = {}
    for lang in pp.languages:
        for cat in pp.categories:
            seen: set = set()       # item keys and prompt texts drawn in this category
            n = tries = 0
            while n < pp.per_category and tries < pp.per_category * 50:
                tries += 1
                item = GENERATORS[cat](rng, lang)
                if item.key in seen or item.prompt in seen:
                    skipped["repeat"] += 1
                    continue
                seen.update((item.key, item.prompt))
                if item.prompt.strip() in held_prompts:
                    skipped["held_prompt"] += 1
                    continue
                if cat != "sentiment" and item.response.strip() in held_answers:
                    skipped["held_answer"] += 1
                    continue
                rid = f"prompts:{lang}:{cat}:{n:04d}"
                rows.append({"id": rid, "messages": [{"role": "user", "content": item.prompt}], "source": "prompts",
                             "label": cat, "meta": {"lang": lang, "category": cat}})
                truth.append({"id": rid, "response": item.response})
                n += 1
            if n < pp.per_category:
                short[f"{lang}:{cat}"] = n
    return rows, truth, {"prompts": len(rows), "skipped": skipped, "short_categories": short}
