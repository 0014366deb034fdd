"""Build the offline base model: a byte-level BPE tokenizer and a tiny LLaMA, pretrained briefly.

The result is an ordinary Hugging Face model directory (config.json,
model.safetensors, tokenizer.json with a ChatML chat template) that
``AutoModelForCausalLM`` / ``AutoTokenizer`` load exactly like a hub model.
It stands in for e.g. ``Qwen/Qwen2.5-0.5B`` on machines without network.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from ..config import BaseParams
from .templates import CHATML, CHATML_TOKENS

EOS, PAD = "<|endoftext|>", "<|pad|>"
CJK_CHAR = "[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]"


def train_tokenizer(corpus: list[str], vocab_size: int):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    # CJK characters are isolated first, so merges never fuse whole Chinese phrases (names, slots)
    # into one token: Chinese is tokenized per character, other scripts by byte-level BPE.
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(CJK_CHAR), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  special_tokens=[EOS, PAD, *CHATML_TOKENS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD,
                                   additional_special_tokens=CHATML_TOKENS)
    fast.chat_template = CHATML
    fast.model_max_length = 4096
    return fast


def pack_blocks(tokenizer, corpus: list[str], seq_len: int):
    """Concatenate documents separated by EOS and cut into (n_blocks, seq_len) token blocks."""
    import torch

    ids: list[int] = []
    for enc in tokenizer(corpus, add_special_tokens=False)["input_ids"]:
        ids.extend(enc)
        ids.append(tokenizer.eos_token_id)
    n = len(ids) // seq_len
    return torch.tensor(ids[: n * seq_len], dtype=torch.long).view(n, seq_len)


def build_model(p: BaseParams, tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=p.hidden_size, intermediate_size=p.intermediate_size,
                      num_hidden_layers=p.num_layers, num_attention_heads=p.num_heads,
                      num_key_value_heads=p.num_heads, max_position_embeddings=1024, tie_word_embeddings=True,
                      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                      bos_token_id=None)
    return LlamaForCausalLM(cfg)


def pretrain(p: BaseParams, corpus: list[str], out_dir: str | Path, log=print) -> dict:
    """Train tokenizer and model; save both to ``out_dir`` (safetensors). Returns summary metrics."""
    import torch
    from transformers import get_cosine_schedule_with_warmup

    torch.manual_seed(p.seed)
    t0 = time.perf_counter()
    tokenizer = train_tokenizer(corpus, p.vocab_size)
    blocks = pack_blocks(tokenizer, corpus, p.seq_len)
    model = build_model(p, tokenizer)
    n_params = sum(x.numel() for x in model.parameters())
    log(f"base: vocab {len(tokenizer)}, {n_params / 1e6:.2f}M params, {blocks.numel() / 1e6:.2f}M corpus tokens")
    opt = torch.optim.AdamW(model.parameters(), lr=p.lr, betas=(0.9, 0.95), weight_decay=0.1)
    sched = get_cosine_schedule_with_warmup(opt, math.ceil(p.warmup_ratio * p.steps), p.steps)
    gen = torch.Generator().manual_seed(p.seed)
    model.train()
    losses = []
    t1 = time.perf_counter()
    for step in range(p.steps):
        idx = torch.randint(0, blocks.size(0), (p.batch_size,), generator=gen)
        batch = blocks[idx]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if (step + 1) % max(1, p.steps // 10) == 0:
            log(f"base: step {step + 1}/{p.steps} loss {sum(losses[-20:]) / len(losses[-20:]):.3f}")
    train_s = time.perf_counter() - t1
    model.eval()
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    tail = losses[-max(1, p.steps // 10):]
    return {"params_m": round(n_params / 1e6, 3), "vocab_size": len(tokenizer),
            "corpus_tokens": int(blocks.numel()), "final_loss": round(sum(tail) / len(tail), 4),
            "tokens_per_s": round(p.steps * p.batch_size * p.seq_len / train_s, 1),
            "wall_s": round(time.perf_counter() - t0, 1)}
