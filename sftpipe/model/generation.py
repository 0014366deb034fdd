"""Batched generation with a local transformers model: greedy replies for evaluation, K sampled
replies per prompt for data creation (sftpipe.create).

Prompts are built by the same segmenting code as training (:func:`~.formatting.encode_prompt`), so
a model sees token for token the format it was fine-tuned on. A record's prompt is everything
before its last assistant reply; a record that ends with a user turn (a prompt without a reply)
gets the assistant header after it. Prompts are sorted longest first and cut into batches of
``batch_size`` prompts, left-padded; with ``k`` > 1 each prompt is expanded to ``k`` sequences
in the same forward pass (``num_return_sequences``), so ``k`` samples cost one prefill.

Determinism: greedy decoding depends on the inputs alone. Sampling seeds torch once per batch with
``seed`` and the batch's number, so the same records, ``batch_size`` and seed give the same samples
on the same machine (another batch size regroups the prompts and so draws other samples).
"""

from __future__ import annotations

from .formatting import encode_prompt, pad_batch
from .templates import stop_token_ids


def prompt_ids(tokenizer, rec: dict) -> list[int]:
    """The token ids the model continues for ``rec``'s (last) assistant reply."""
    messages = rec["messages"]
    if not messages or messages[-1]["role"] != "assistant":
        messages = [*messages, {"role": "assistant", "content": ""}]
    return encode_prompt(tokenizer, messages, tools=rec.get("tools"))


def generate_replies(model, tokenizer, records: list[dict], *, max_new_tokens: int, batch_size: int,
                     k: int = 1, temperature: float = 0.0, top_p: float = 1.0, seed: int = 0,
                     progress=None) -> list[list[str]]:
    """``k`` replies per record (decoded, special tokens dropped, stripped), in input order.

    ``temperature`` 0 is greedy decoding (``k`` must be 1); above 0, nucleus sampling with ``top_p``.
    """
    import torch

    if temperature == 0 and k != 1:
        raise ValueError("greedy decoding gives one reply per prompt (k=1)")
    prompts = [prompt_ids(tokenizer, r) for r in records]
    order = sorted(range(len(records)), key=lambda i: -len(prompts[i]))
    stops = stop_token_ids(tokenizer)
    pad = tokenizer.pad_token_id
    dev = next(model.parameters()).device
    sampling = {"do_sample": False} if temperature == 0 else {
        "do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0, "num_return_sequences": k}
    out: list[list[str]] = [[] for _ in records]
    with torch.inference_mode():
        for n, b in enumerate(range(0, len(order), batch_size)):
            idx = order[b:b + batch_size]
            ids, att, _ = pad_batch([prompts[i] for i in idx], pad, left=True)
            width = ids.shape[1]
            if temperature > 0:
                torch.manual_seed(seed * 1_000_003 + n)
            gen = model.generate(input_ids=ids.to(dev), attention_mask=att.to(dev), max_new_tokens=max_new_tokens,
                                 eos_token_id=stops, pad_token_id=pad, **sampling)
            # sequences come prompt-major: prompt 0's k samples, then prompt 1's, ...
            for row, i in enumerate(idx):
                out[i] = [tokenizer.decode(gen[row * k + j, width:], skip_special_tokens=True).strip()
                          for j in range(k)]
            if progress is not None:
                progress.update(len(idx))
    return out


def new_tokens(tokenizer, replies: list[list[str]]) -> int:
    """Tokens in the replies (re-encoded), for throughput figures."""
    return sum(len(tokenizer(r, add_special_tokens=False)["input_ids"]) for rs in replies for r in rs)
