"""Render conversations through the chat template and build loss masks.

The mask does not depend on generation markers in the template (their absence is
the most reported cause of empty assistant masks). Instead each conversation is
rendered at every assistant-turn boundary and cut into segments: the text before
an assistant reply (never trained), and the reply itself up to and including its
end-of-turn marker (trained under ``loss_on: response``). Segments are tokenized
separately and concatenated, so the prompt a model sees at generation time is
token-for-token the prefix it was trained on.

The end of every assistant turn carries a stop token (the template's end-of-turn
marker or EOS). Templates that emit none get EOS appended, and it is trained on.

Tool use: the row's ``tools`` go to the template (``apply_chat_template(..., tools=...)``)
and canonical messages are handed over in the form chat templates expect (calls as
``{"type": "function", "function": {"name", "arguments"}}``). Tool results are never
trained on: they sit in the text before the next assistant reply, like the tool
schemas and the system turn. Assistant calls are. Reasoning (``reasoning_content``)
is trained on under ``reasoning: train``, kept in the input without loss under
``mask``, and removed from the rows under ``drop``. A template that silently leaves
out the tools or a call is refused, since the model would learn calls it never saw
declared, or nothing at all.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UserError
from .templates import stop_token_ids

IGNORE = -100


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    prompt_len: int          # tokens before the final assistant reply
    truncated: bool = False


def pad_batch(seqs: list[list[int]], pad_id: int, labels: list[list[int]] | None = None, left: bool = False):
    """``(input_ids, attention_mask, labels)`` long tensors as wide as the longest sequence: ids padded
    with ``pad_id``, labels (None when not given) with IGNORE, on the right, or on the left (``left``,
    for generation, so every prompt ends where the new tokens start)."""
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    att = torch.zeros((len(seqs), width), dtype=torch.long)
    lab = None if labels is None else torch.full((len(seqs), width), IGNORE, dtype=torch.long)
    for row, seq in enumerate(seqs):
        cols = slice(width - len(seq), width) if left else slice(0, len(seq))
        ids[row, cols] = torch.tensor(seq, dtype=torch.long)
        att[row, cols] = 1
        if lab is not None:
            lab[row, cols] = torch.tensor(labels[row], dtype=torch.long)
    return ids, att, lab


def chat_messages(messages: list[dict], reasoning: str = "train") -> list[dict]:
    """Canonical messages in the form chat templates read (``reasoning: drop`` removes reasoning)."""
    out = []
    for m in messages:
        if "tool_calls" in m or "reasoning_content" in m:
            m = dict(m)
            if "tool_calls" in m:
                m["tool_calls"] = [{**({"id": c["id"]} if c.get("id") else {}), "type": "function",
                                    "function": {"name": c["name"], "arguments": c["arguments"]}}
                                   for c in m["tool_calls"]]
            if reasoning == "drop":
                m.pop("reasoning_content", None)
        out.append(m)
    return out


def chat_tools(tools: list[dict] | None) -> list[dict] | None:
    return [{"type": "function", "function": t} for t in tools] if tools else None


def _render(tokenizer, messages, add_generation_prompt: bool, tools=None) -> str:
    return tokenizer.apply_chat_template(messages, tools=tools, tokenize=False,
                                         add_generation_prompt=add_generation_prompt)


def _reasoning_cut(reply: str, reasoning: str) -> int:
    """Where the reasoning (and its closing tag) ends inside a rendered reply; 0 if absent."""
    at = reply.find(reasoning)
    if at < 0:
        return 0
    end = at + len(reasoning)
    close = reply.find("</think>", end)
    if close >= 0 and not reply[end:close].strip():
        end = close + len("</think>")
        while end < len(reply) and reply[end] == "\n":
            end += 1
    return end


def segments(tokenizer, messages: list[dict], tools: list[dict] | None = None,
             reasoning: str = "train") -> list[tuple[str, bool]]:
    """Split the rendered conversation into (text, is_assistant_reply) pieces; the reasoning of a
    reply is its own untrained piece under ``reasoning: mask``."""
    out: list[tuple[str, bool]] = []
    done = ""
    markers = [t for t in (tokenizer.eos_token, "<|im_end|>") if t]
    hf_tools = chat_tools(tools)
    canonical = messages
    messages = chat_messages(messages, reasoning)
    for k, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:k], True, hf_tools)
        after = _render(tokenizer, messages[: k + 1], False, hf_tools)
        if not before.startswith(done) or not after.startswith(before):
            raise UserError("chat template is not prefix-stable (rendering a conversation changes earlier "
                            "turns), so response-only masks cannot be built; set model.template to a named "
                            "template (chatml, alpaca, vicuna, zh)")
        out.append((before[len(done):], False))
        reply = after[len(before):]
        missing = [c["name"] for c in canonical[k].get("tool_calls", ()) if c["name"] not in reply]
        if missing:
            raise UserError(f"the chat template leaves out assistant tool calls ({missing[0]!r} is not in the "
                            f"rendered turn), so they cannot be trained; set model.template to chatml, alpaca, "
                            f"vicuna or zh, whose tool format is documented")
        if reasoning == "mask" and canonical[k].get("reasoning_content"):
            think = _reasoning_cut(reply, canonical[k]["reasoning_content"])
            if think:
                out.append((reply[:think], False))
                reply = reply[think:]
        cut = max((reply.rfind(t) + len(t) for t in markers if reply.rfind(t) >= 0), default=-1)
        if cut > 0 and reply[cut:].strip() == "":
            out.append((reply[:cut], True))
            if reply[cut:]:
                out.append((reply[cut:], False))
        else:
            out.append((reply, True))
        done = after
    full = _render(tokenizer, messages, False, hf_tools)
    if tools and not any(t["name"] in full for t in tools):
        raise UserError("the chat template does not render the row's tools, so the model would learn calls to "
                        "functions it never saw declared; set model.template to chatml, alpaca, vicuna or zh")
    if full.startswith(done) and len(full) > len(done):
        out.append((full[len(done):], False))
    return out


def encode(tokenizer, messages: list[dict], loss_on: str = "response", max_length: int | None = None,
           tools: list[dict] | None = None, reasoning: str = "train") -> Encoded:
    """Token ids and labels (IGNORE where no loss) for one conversation."""
    stops = set(stop_token_ids(tokenizer))
    segs = segments(tokenizer, messages, tools, reasoning)
    n_replies = sum(is_reply for _, is_reply in segs)
    ids: list[int] = []
    labels: list[int] = []
    prompt_len = 0
    reply_no = 0
    for text, is_reply in segs:
        piece = tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
        if is_reply:
            reply_no += 1
            if not piece or piece[-1] not in stops:
                piece = piece + [tokenizer.eos_token_id]
            if reply_no == n_replies:
                prompt_len = len(ids)
            train = loss_on == "all" or loss_on == "response" or (loss_on == "last_turn" and reply_no == n_replies)
        else:
            train = loss_on == "all"
        ids.extend(piece)
        labels.extend(piece if train else [IGNORE] * len(piece))
    truncated = max_length is not None and len(ids) > max_length
    if truncated:
        ids, labels = ids[:max_length], labels[:max_length]
    return Encoded(ids, labels, prompt_len, truncated)


def encode_prompt(tokenizer, messages: list[dict], tools: list[dict] | None = None) -> list[int]:
    """Ids of the prompt for the final assistant reply, exactly as segmented in training."""
    enc = encode(tokenizer, messages, tools=tools)
    return enc.input_ids[: enc.prompt_len]
