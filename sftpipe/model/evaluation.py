"""Evaluate base and SFT models on the test split: loss/perplexity and generation metrics.

Generation is batched greedy decoding with left padding; prompts are built by
the same segmenting code as training, so both models see token-for-token the
prompt format the SFT model was trained on. Metrics come from the ``evaluate``
modules shipped in :mod:`sftpipe.model.metric_modules` (loaded by path, offline):
ROUGE-1/2/L with CJK characters as tokens, sacrebleu BLEU and chrF, and exact
match. Rows with a label also get per-category metrics.
"""

from __future__ import annotations

import math
from collections import defaultdict

from .formatting import IGNORE, encode, pad_batch
from .templates import stop_token_ids


def generate(model, tokenizer, records: list[dict], max_new_tokens: int, batch_size: int, progress=None) -> list[str]:
    import torch

    prompts = [encode(tokenizer, r["messages"], tools=r.get("tools")) for r in records]
    prompts = [e.input_ids[: e.prompt_len] for e in prompts]
    order = sorted(range(len(records)), key=lambda i: -len(prompts[i]))
    stops = stop_token_ids(tokenizer)
    pad = tokenizer.pad_token_id
    dev = next(model.parameters()).device
    out = [""] * len(records)
    with torch.inference_mode():
        for b in range(0, len(order), batch_size):
            idx = order[b:b + batch_size]
            ids, att, _ = pad_batch([prompts[i] for i in idx], pad, left=True)
            width = ids.shape[1]
            gen = model.generate(input_ids=ids.to(dev), attention_mask=att.to(dev), max_new_tokens=max_new_tokens,
                                 do_sample=False, eos_token_id=stops, pad_token_id=pad)
            for row, i in enumerate(idx):
                out[i] = tokenizer.decode(gen[row, width:], skip_special_tokens=True).strip()
            if progress is not None:
                progress.update(len(idx))
    return out


def response_loss(model, tokenizer, records: list[dict], batch_size: int, max_length: int) -> tuple[float, int]:
    """Mean negative log-likelihood per response token over all rows, and the token count."""
    import torch

    encs = [encode(tokenizer, r["messages"], "response", max_length, tools=r.get("tools")) for r in records]
    order = sorted(range(len(encs)), key=lambda i: len(encs[i].input_ids))
    dev = next(model.parameters()).device
    total, count = 0.0, 0
    with torch.inference_mode():
        for b in range(0, len(order), batch_size):
            idx = order[b:b + batch_size]
            ids, att, lab = pad_batch([encs[i].input_ids for i in idx], tokenizer.pad_token_id,
                                      [encs[i].labels for i in idx])
            # the model's own loss: peft's prompt/prefix tuning prepend virtual tokens and align labels
            mean = model(input_ids=ids.to(dev), attention_mask=att.to(dev), labels=lab.to(dev)).loss
            n = int((lab[:, 1:] != IGNORE).sum())
            total += float(mean) * n
            count += n
    return total / max(count, 1), count


def text_metrics(predictions: list[str], references: list[str]) -> dict:
    from .metric_modules import load

    out = {}
    for name in ("sft_rouge", "sft_bleu", "sft_exact_match"):
        out.update(load(name).compute(predictions=predictions, references=references))
    return {k: round(float(v), 4) for k, v in out.items()}


def score_model(name: str, model, tokenizer, records: list[dict], max_new_tokens: int, batch_size: int,
                max_length: int, progress=None) -> tuple[dict, list[str]]:
    nll, n = response_loss(model, tokenizer, records, batch_size, max_length)
    preds = generate(model, tokenizer, records, max_new_tokens, batch_size, progress)
    refs = [r["messages"][-1]["content"] for r in records]
    metrics = {"loss": round(nll, 4), "perplexity": round(math.exp(min(nll, 50)), 4), "target_tokens": n,
               **text_metrics(preds, refs)}
    return metrics, preds


def per_category(records: list[dict], preds: dict[str, list[str]]) -> dict:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        groups[r.get("label") or "unlabeled"].append(i)
    out = {}
    for label, idx in sorted(groups.items()):
        refs = [records[i]["messages"][-1]["content"] for i in idx]
        out[label] = {"rows": len(idx), **{m: text_metrics([p[i] for i in idx], refs) for m, p in preds.items()}}
    return out


def deltas(base: dict, sft: dict) -> dict:
    return {k: round(sft[k] - base[k], 4) for k in sft if k in base and k != "target_tokens"}


def deltas_markdown(base: dict, sft: dict, cats: dict) -> str:
    keys = [k for k in sft if k != "target_tokens"]
    lines = ["# SFT vs base on the test split", "", "| metric | base | sft | sft - base |", "|---|---|---|---|"]
    lines += [f"| {k} | {base[k]:.4f} | {sft[k]:.4f} | {sft[k] - base[k]:+.4f} |" for k in keys]
    if cats:
        lines += ["", "## Per category (ROUGE-L / exact match)", "",
                  "| category | rows | base rougeL | sft rougeL | base EM | sft EM |", "|---|---|---|---|---|---|"]
        for c, m in cats.items():
            lines.append(f"| {c} | {m['rows']} | {m['base']['rougeL']:.3f} | {m['sft']['rougeL']:.3f} | "
                         f"{m['base']['exact_match']:.3f} | {m['sft']['exact_match']:.3f} |")
    return "\n".join(lines) + "\n"
