"""A tiny chat model that has learned a lookup table, so its generations depend on the prompt.

The randomly initialised test model greedily generates an empty string for every prompt, so
comparisons of generations compared "" with "". This one is the tiny LLaMA of the test suite,
trained for a few seconds on LOOKUP rendered through the chat template (loss on the replies),
until greedy decoding reproduces every reply. Prompts differ in length by up to ~10x, so batches
mix heavy left padding with none.
"""

from __future__ import annotations

LOOKUP = [
    ("hi", "Hello! How can I help?"),
    ("What is the capital of France?", "The capital of France is Paris."),
    ("What is the capital of Japan?", "The capital of Japan is Tokyo."),
    ("What is 2 + 3?", "2 + 3 = 5."),
    ("What is 7 + 8?", "7 + 8 = 15."),
    ("Reverse the order of these words: apple river stone cloud tiger", "tiger cloud stone river apple"),
    ("Is this review positive or negative? The soup was cold and the waiter was rude.", "negative"),
    ("请把“红色的猫”翻译成英文。", "red cat"),
    ("法国的首都是哪里？", "法国的首都是巴黎。"),
    ("三加四等于多少？", "三加四等于七。"),
    ("Translate into Chinese: blue door", "蓝色的门"),
    ("Write a short greeting for Anna, and sign it as Tom. Keep it to one line, please.", "Dear Anna, have a lovely day! Tom"),
]


def lookup_rows(pairs=LOOKUP, label="lookup") -> list[dict]:
    return [{"id": f"lookup:{i}", "source": "lookup", "label": label, "meta": {"lang": "en"},
             "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
            for i, (q, a) in enumerate(pairs)]


def train_lookup_model(tokenizer, steps: int = 80, seed: int = 0):
    """Full-parameter training of a fresh 2-layer LLaMA on the lookup rows (response-only loss)."""
    import torch

    from sftpipe.model.basemodel import build_model
    from sftpipe.config import BaseParams
    from sftpipe.model.formatting import IGNORE, encode

    torch.manual_seed(seed)
    model = build_model(BaseParams(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128), tokenizer)
    encs = [encode(tokenizer, r["messages"], "response") for r in lookup_rows()]
    width = max(len(e.input_ids) for e in encs)
    ids = torch.full((len(encs), width), tokenizer.pad_token_id)
    labels = torch.full((len(encs), width), IGNORE)
    att = torch.zeros((len(encs), width), dtype=torch.long)
    for row, e in enumerate(encs):  # right padding: training never sees left padding
        ids[row, :len(e.input_ids)] = torch.tensor(e.input_ids)
        labels[row, :len(e.labels)] = torch.tensor(e.labels)
        att[row, :len(e.input_ids)] = 1
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=ids, attention_mask=att, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return model.eval(), loss.item()
