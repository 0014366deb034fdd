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
from .templates import CHATML, CHATML_TOKENS, MARKUP_TOKENS

EOS, PAD = "<|endoftext|>", "<|pad|>"
CJK_CHAR = "[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]"


def train_tokenizer(corpus: list[str], vocab_size: int):
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
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
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in MARKUP_TOKENS])
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


def build_model(base_params: BaseParams, tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=base_params.hidden_size,
                      intermediate_size=base_params.intermediate_size, num_hidden_layers=base_params.num_layers,
                      num_attention_heads=base_params.num_heads, num_key_value_heads=base_params.num_heads,
                      max_position_embeddings=1024, tie_word_embeddings=True,
                      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                      bos_token_id=None)
    return LlamaForCausalLM(cfg)


def pretrain(base_params: BaseParams, corpus: list[str], out_dir: str | Path, log=print, tokenizer=None,
             name: str = "base") -> dict:
    """Train tokenizer and model; save both to ``out_dir`` (safetensors). Returns summary metrics.

    ``tokenizer``: one already trained on ``corpus`` (e.g. to size the steps from its token count),
    used instead of training another. Progress is one tqdm bar over the steps (running loss and
    tokens/s in its postfix), shown only when stderr is a terminal; ``log`` gets the one line
    describing the model and corpus, headed ``name``."""
    import torch
    from tqdm import tqdm
    from transformers import get_cosine_schedule_with_warmup

    torch.manual_seed(base_params.seed)
    t0 = time.perf_counter()
    if tokenizer is None:
        tokenizer = train_tokenizer(corpus, base_params.vocab_size)
    blocks = pack_blocks(tokenizer, corpus, base_params.seq_len)
    model = build_model(base_params, tokenizer)
    n_params = sum(x.numel() for x in model.parameters())
    log(f"{name}: vocab {len(tokenizer)}, {n_params / 1e6:.2f}M params, {blocks.numel() / 1e6:.2f}M corpus tokens")
    opt = torch.optim.AdamW(model.parameters(), lr=base_params.lr, betas=(0.9, 0.95), weight_decay=0.1)
    steps = base_params.steps
    sched = get_cosine_schedule_with_warmup(opt, math.ceil(base_params.warmup_ratio * steps), steps)
    gen = torch.Generator().manual_seed(base_params.seed)
    tokens_per_step = base_params.batch_size * base_params.seq_len
    model.train()
    losses = []
    t1 = time.perf_counter()
    bar = tqdm(total=steps, desc=f"pretrain {name}" if name != "base" else "pretrain", unit="step", leave=False, disable=None, mininterval=1.0)
    for step in range(steps):
        idx = torch.randint(0, blocks.size(0), (base_params.batch_size,), generator=gen)
        batch = blocks[idx]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        recent = losses[-20:]
        rate = (step + 1) * tokens_per_step / max(time.perf_counter() - t1, 1e-9)
        bar.set_postfix(loss=f"{sum(recent) / len(recent):.3f}", tokens_per_s=f"{rate:.0f}", refresh=False)
        bar.update()
    bar.close()
    train_s = time.perf_counter() - t1
    model.eval()
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    tail = losses[-max(1, steps // 10):]
    return {"params_m": round(n_params / 1e6, 3), "vocab_size": len(tokenizer),
            "corpus_tokens": int(blocks.numel()), "final_loss": round(sum(tail) / len(tail), 4),
            "tokens_per_s": round(steps * tokens_per_step / train_s, 1),
            "wall_s": round(time.perf_counter() - t0, 1)}
