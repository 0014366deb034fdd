"""Load tokenizers and causal LMs the same way for local dirs and hub ids, safely.

* weights only from safetensors (``use_safetensors=True``), never pickles
* ``trust_remote_code`` only when ``model.trust_remote_code`` says so
* a hub token only from the environment (``HF_TOKEN``), never from params
* GPU and bf16 when present, SDPA attention, CPU/fp32 otherwise

:func:`load_sft` loads what the train stage saved (base + adapter, or full weights),
so the evaluate stage depends on this module, not on the training loop.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..config import ModelParams
from ..errors import UserError

INFO_FILE = "sft_info.json"     # written by the train stage next to the adapter or weights


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


def _hub_kwargs(model_params: ModelParams) -> dict:
    kw = {"trust_remote_code": model_params.trust_remote_code}
    if model_params.revision:
        kw["revision"] = model_params.revision
    token = os.environ.get("HF_TOKEN")
    if token:
        kw["token"] = token
    return kw


def load_tokenizer(model_params: ModelParams, path: str | None = None):
    from transformers import AutoTokenizer

    path = path or model_params.name_or_path
    try:
        tok = AutoTokenizer.from_pretrained(path, **_hub_kwargs(model_params))
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load tokenizer from {path} ({_source(path)}): {str(e).splitlines()[0]}") from None
    if tok.pad_token is None:
        # Loss masks come from labels, never from the pad id, so EOS can double as padding.
        tok.pad_token = tok.eos_token
    return tok


def attn_implementation(model_params: ModelParams) -> str:
    if model_params.attn_implementation != "auto":
        return model_params.attn_implementation
    return "sdpa"


def weights_precision(method: str, precision: str) -> str:
    """Dtype to load weights in for training. Full fine-tuning keeps fp32 master weights (the
    Trainer autocasts to bf16/fp16), so small AdamW updates are not lost to bf16 rounding; the
    frozen base under an adapter can live in the compute dtype (peft keeps adapters in fp32)."""
    return "fp32" if method == "full" else precision


def load_model(model_params: ModelParams, path: str | None = None, precision: str = "auto"):
    """AutoModelForCausalLM from safetensors, on the GPU when present (fp32 on CPU)."""
    from transformers import AutoModelForCausalLM

    path = path or model_params.name_or_path
    dtype = dtype_for(precision)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, use_safetensors=True,
                                                     attn_implementation=attn_implementation(model_params),
                                                     **_hub_kwargs(model_params))
    except (OSError, ValueError) as e:
        raise UserError(f"cannot load model from {path} ({_source(path)}): {str(e).splitlines()[0]}") from None
    return model.to(device())


def fit_embeddings(model, tokenizer) -> list[int]:
    """Grow the embeddings to the tokenizer's vocabulary (a chat template can add its special
    tokens); returns the ids added, which an adapter must train."""
    old = model.get_input_embeddings().num_embeddings
    if len(tokenizer) <= old:
        return []
    model.resize_token_embeddings(len(tokenizer))
    return list(range(old, len(tokenizer)))


def load_sft(model_params: ModelParams, sft_dir: str | Path, precision: str = "auto"):
    """(model, tokenizer) of a trained run: base + adapter, or the full fine-tuned weights."""
    import json

    from peft import PeftModel

    sft_dir = Path(sft_dir)
    info_path = sft_dir / INFO_FILE
    if not info_path.is_file():
        raise UserError(f"{sft_dir}: not a trained model directory (no {INFO_FILE}); run the train stage")
    info = json.loads(info_path.read_text())
    tokenizer = load_tokenizer(model_params, str(sft_dir))
    if not info["adapter"]:
        return load_model(model_params, str(sft_dir), precision).eval(), tokenizer
    base = load_model(model_params, info["base_model"], precision)
    fit_embeddings(base, tokenizer)
    model = PeftModel.from_pretrained(base, str(sft_dir))
    return model.eval(), tokenizer
