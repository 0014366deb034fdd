"""Load tokenizers and causal LMs the same way for local dirs and hub ids, safely.

* weights only from safetensors (``use_safetensors=True``), never pickles
* ``trust_remote_code`` only when ``model.trust_remote_code`` says so
* a hub token only from the environment (``HF_TOKEN``), never from params
* GPU and bf16 when present, SDPA attention, CPU/fp32 otherwise
"""

from __future__ import annotations

import os
from pathlib import Path

from .config import ModelParams
from .errors import UserError


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def dtype_for(precision: str = "auto"):
    """The compute dtype: bf16 on GPUs that support it, fp16 on older GPUs, fp32 on CPU."""
    import torch

    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def _source(name_or_path: str) -> str:
    return "local directory" if Path(name_or_path).exists() else "hub id"


def _hub_kwargs(mp: ModelParams) -> dict:
    kw = {"trust_remote_code": mp.trust_remote_code}
    if mp.revision:
        kw["revision"] = mp.revision
    token = os.environ.get("HF_TOKEN")
    if token:
        kw["token"] = token
    return kw


def load_tokenizer(mp: ModelParams, path: str | None = None):
    from transformers import AutoTokenizer

    path = path or mp.name_or_path
    try:
        tok = AutoTokenizer.from_pretrained(path, **_hub_kwargs(mp))
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load tokenizer from {path} ({_source(path)}): {str(e).splitlines()[0]}") from None
    if tok.pad_token is None:
        # Loss masks come from labels, never from the pad id, so EOS can double as padding.
        tok.pad_token = tok.eos_token
    return tok


def attn_implementation(mp: ModelParams) -> str:
    if mp.attn_implementation != "auto":
        return mp.attn_implementation
    return "sdpa"


def weights_precision(method: str, precision: str) -> str:
    """Dtype to load weights in for training. Full fine-tuning keeps fp32 master weights (the
    Trainer autocasts to bf16/fp16), so small AdamW updates are not lost to bf16 rounding; the
    frozen base under an adapter can live in the compute dtype (peft keeps adapters in fp32)."""
    return "fp32" if method == "full" else precision


def load_model(mp: ModelParams, path: str | None = None, precision: str = "auto"):
    """AutoModelForCausalLM from safetensors, on the GPU when present (fp32 on CPU)."""
    from transformers import AutoModelForCausalLM

    path = path or mp.name_or_path
    dtype = dtype_for(precision)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, use_safetensors=True,
                                                     attn_implementation=attn_implementation(mp),
                                                     **_hub_kwargs(mp))
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load model from {path} ({_source(path)}): {str(e).splitlines()[0]}") from None
    return model.to(device())
