"""Evaluate base and SFT models on the test split: loss/perplexity and generation metrics.

Generation is batched greedy decoding with left padding; prompts are built by
the same segmenting code as training, so both models see token-for-token the
prompt format the SFT model was trained on. Metrics come from the ``evaluate``
modules shipped in :mod:`sftpipe.model.metric_modules` (loaded by path, offline):
ROUGE-1/2/L with CJK characters as tokens, sacrebleu BLEU and chrF, and exact
match. Rows with a label also get per-category metrics.

Generated text is read back with :func:`~sftpipe.model.templates.parse_reply`: text
metrics compare the answer without its ``<think>`` reasoning. Rows that declare tools
are also scored on the call step: the model sees the system turn, the tools and the
user's request, and its first reply is compared with the reference's first assistant
turn (:func:`tool_metrics`). The final answer is the usual last-turn generation, with
the tool results given.
"""

from __future__ import annotations

import math
from collections import defaultdict

import json

from .formatting import IGNORE, encode, pad_batch
from .generation import generate_replies
from .templates import parse_reply


def generate(model, tokenizer, records: list[dict], max_new_tokens: int, batch_size: int, progress=None) -> list[str]:
    """Greedy replies, one per record (batched, left-padded, longest prompts first)."""
    return [r[0] for r in generate_replies(model, tokenizer, records, max_new_tokens=max_new_tokens,
                                           batch_size=batch_size, progress=progress)]


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


def text_loss(model, tokenizer, texts: list[str], batch_size: int, max_length: int) -> tuple[float, int]:
    """Mean negative log-likelihood per token of plain texts (each cut to ``max_length`` tokens), and the
    token count: the forgetting check, on general text the fine-tuning data is not about."""
    import torch

    encs = [tokenizer(t, add_special_tokens=True)["input_ids"][:max_length] for t in texts if t.strip()]
    encs = [e for e in encs if len(e) > 1]
    order = sorted(range(len(encs)), key=lambda i: len(encs[i]))
    dev = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    total, count = 0.0, 0
    with torch.inference_mode():
        for b in range(0, len(order), batch_size):
            seqs = [encs[i] for i in order[b:b + batch_size]]
            ids, att, lab = pad_batch(seqs, pad, seqs)
            mean = model(input_ids=ids.to(dev), attention_mask=att.to(dev), labels=lab.to(dev)).loss
            n = int((lab[:, 1:] != IGNORE).sum())
            total += float(mean) * n
            count += n
    return total / max(count, 1), count


def read_general_text(path) -> list[str]:
    """Documents of a general-text file: JSONL with a ``text`` field, or plain text (blank-line separated)."""
    from pathlib import Path

    from ..errors import UserError

    p = Path(path)
    if not p.is_file():
        raise UserError(f"evaluate.general_text: {path} does not exist")
    if p.suffix == ".jsonl":
        out = []
        for no, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{no}: invalid JSON ({e.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise UserError(f"{path}:{no}: field 'text': expected a string")
            out.append(row["text"])
        return out
    return [d for d in p.read_text(encoding="utf-8").split("\n\n") if d.strip()]


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
    refs = [reference(r) for r in records]
    metrics = {"loss": round(nll, 4), "perplexity": round(math.exp(min(nll, 50)), 4), "target_tokens": n,
               **text_metrics([answer(p) for p in preds], refs)}
    reasoning = [(p, r) for p, r in zip(preds, records) if r["messages"][-1].get("reasoning_content")]
    if reasoning:
        metrics["reasoning_answer_exact_match"] = round(sum(
            answer(p) == reference(r) for p, r in reasoning) / len(reasoning), 4)
        metrics["reasoning_rows_that_reason"] = round(sum(
            bool(parse_reply(p)["reasoning"]) for p, _ in reasoning) / len(reasoning), 4)
    call_rows = [r for r in records if r.get("tools")]
    if call_rows:
        steps = [call_step(r) for r in call_rows]
        call_preds = generate(model, tokenizer, steps, max_new_tokens, batch_size)
        metrics.update(tool_metrics(call_rows, call_preds, preds=[p for p, r in zip(preds, records) if r.get("tools")]))
        by_id = dict(zip((r["id"] for r in call_rows), call_preds))
        preds = [{"final": p, "call_step": by_id[r["id"]]} if r["id"] in by_id else p
                 for p, r in zip(preds, records)]
    return metrics, preds


def answer(pred) -> str:
    """The answer in a generation: its final text, without reasoning or call blocks."""
    if isinstance(pred, dict):
        pred = pred["final"]
    return parse_reply(pred)["content"]


def reference(rec: dict) -> str:
    """The reference answer: the last assistant turn's text (its calls, when it has no text)."""
    last = rec["messages"][-1]
    if last["content"] or not last.get("tool_calls"):
        return last["content"]
    return "\n".join(_call_text(c) for c in last["tool_calls"])


def _call_text(c: dict) -> str:
    return json.dumps({"name": c["name"], "arguments": c["arguments"]}, ensure_ascii=False, sort_keys=True)


def call_step(rec: dict) -> dict:
    """The row cut after its first assistant turn: the prompt that asks for the call (or the direct answer)."""
    k = next(i for i, m in enumerate(rec["messages"]) if m["role"] == "assistant")
    return {**rec, "messages": rec["messages"][:k + 1]}


def _arg_pairs(calls: list[dict]) -> list[tuple]:
    return sorted((c["name"], k, json.dumps(v, ensure_ascii=False, sort_keys=True))
                  for c in calls for k, v in c["arguments"].items())


def tool_metrics(records: list[dict], call_preds: list[str], preds: list[str] | None = None) -> dict:
    """Call-step scores over rows with tools.

    * ``tool_call_accuracy``: the right decision and the right function(s): no call where the
      reference answers directly, else the same multiset of function names (a name is read
      from a block whose arguments are broken: choosing is scored apart from writing them);
    * ``tool_decision_accuracy``: call vs no call only;
    * ``tool_args_exact_match`` (rows whose reference calls): every call with exactly the
      reference's arguments (order of calls and keys ignored);
    * ``tool_args_f1`` (same rows): F1 of (function, argument, value) triples, averaged per row;
    * ``tool_valid_json_rate``: share of generated ``<tool_call>`` blocks that parse;
    * ``tool_final_exact_match``: the final answer, given the tool results, over rows that call.
    """
    n = len(records)
    right = decided = 0
    em, f1s, blocks, valid = [], [], 0, 0
    for rec, pred in zip(records, call_preds):
        ref = next(m for m in rec["messages"] if m["role"] == "assistant").get("tool_calls", [])
        got = parse_reply(pred)
        blocks += len(got["calls"]) + got["bad_calls"]
        valid += len(got["calls"])
        calls = got["calls"]
        made = bool(calls) or got["bad_calls"] > 0
        decided += made == bool(ref)
        right += (made == bool(ref)) and sorted(map(str, got["names"])) == sorted(c["name"] for c in ref)
        if ref:
            em.append(sorted(map(_call_text, calls)) == sorted(map(_call_text, ref)))
            want, have = _arg_pairs(ref), _arg_pairs(calls)
            common = sum(min(want.count(x), have.count(x)) for x in set(want))
            p = common / len(have) if have else 0.0
            r = common / len(want) if want else 1.0
            f1s.append(2 * p * r / (p + r) if p + r else 0.0)
    out = {"tool_rows": n, "tool_call_accuracy": round(right / n, 4), "tool_decision_accuracy": round(decided / n, 4)}
    if em:
        out["tool_args_exact_match"] = round(sum(em) / len(em), 4)
        out["tool_args_f1"] = round(sum(f1s) / len(f1s), 4)
    out["tool_valid_json_rate"] = round(valid / blocks, 4) if blocks else 0.0
    if preds is not None:
        finals = [(p, r) for p, r in zip(preds, records)
                  if any(m.get("tool_calls") for m in r["messages"]) and not r["messages"][-1].get("tool_calls")]
        if finals:
            out["tool_final_exact_match"] = round(sum(answer(p) == reference(r) for p, r in finals) / len(finals), 4)
    return out


def per_category(records: list[dict], preds: dict[str, list[str]]) -> dict:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        groups[r.get("label") or "unlabeled"].append(i)
    out = {}
    for label, idx in sorted(groups.items()):
        refs = [reference(records[i]) for i in idx]
        out[label] = {"rows": len(idx), **{m: text_metrics([answer(p[i]) for i in idx], refs)
                                           for m, p in preds.items()}}
    return out


def deltas(base: dict, sft: dict) -> dict:
    return {k: round(sft[k] - base[k], 4) for k in sft
            if k in base and k not in ("target_tokens", "tool_rows", "general_tokens")}


def deltas_markdown(base: dict, sft: dict, cats: dict) -> str:
    keys = [k for k in sft if k not in ("target_tokens", "tool_rows", "general_tokens") and k in base]
    lines = ["# SFT vs base on the test split", "", "| metric | base | sft | sft - base |", "|---|---|---|---|"]
    lines += [f"| {k} | {base[k]:.4f} | {sft[k]:.4f} | {sft[k] - base[k]:+.4f} |" for k in keys]
    if cats:
        lines += ["", "## Per category (ROUGE-L / exact match)", "",
                  "| category | rows | base rougeL | sft rougeL | base EM | sft EM |", "|---|---|---|---|---|---|"]
        for c, m in cats.items():
            lines.append(f"| {c} | {m['rows']} | {m['base']['rougeL']:.3f} | {m['sft']['rougeL']:.3f} | "
                         f"{m['base']['exact_match']:.3f} | {m['sft']['exact_match']:.3f} |")
    return "\n".join(lines) + "\n"
