"""Generation backends: K candidate replies per prompt from a local transformers model or from any
OpenAI-compatible endpoint (a user's ``vllm serve`` / SGLang server, or a hosted API).

* ``transformers``: :func:`sftpipe.model.generation.generate_replies`, batched (longest prompts
  first, left padding, the K samples of a prompt in one forward pass), on CPU or GPU; the prompt is
  formatted by the project's own template, exactly as in training.
* ``openai``: one chat request per distinct prompt with ``n = k``, through
  :mod:`sftpipe.llm.openai_chat` (our retries with backoff on 429/5xx/timeouts, ``concurrency``
  workers, and an on-disk cache by request hash, so an interrupted run resumes where it stopped and
  a rerun with the same inputs sends nothing). The server applies its own chat template. The key
  comes from the environment variable ``openai.api_key_env`` only.

* ``vllm``: vLLM's offline engine when the optional package is installed (a GPU machine).

All return, per input record and in input order, ``{"replies": [k strings] | None, "error": str |
None, "cached": bool}``; :func:`candidate_rows` turns them into canonical records.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..config import GenerationParams, ModelParams
from ..llm.openai_chat import Endpoint, _norm_url, run_rows

log = logging.getLogger(__name__)


def prompt_messages(rec: dict) -> list[dict]:
    """The conversation the generator continues: every turn before the last assistant reply (all of
    them when the record ends with a user turn), as plain OpenAI chat messages."""
    msgs = rec["messages"]
    if msgs and msgs[-1]["role"] == "assistant":
        msgs = msgs[:-1]
    return [{"role": m["role"], "content": m["content"]} for m in msgs]


def build_request(rec: dict, gp: GenerationParams) -> dict:
    """The chat request for one record (what is sent besides the key, and what the cache key hashes)."""
    return {"base_url": _norm_url(gp.openai.base_url), "model": gp.openai.model, "messages": prompt_messages(rec),
            "n": gp.k, "temperature": gp.temperature, "top_p": gp.top_p, "max_tokens": gp.max_new_tokens,
            "seed": gp.seed}


def generate_openai(records: list[dict], gp: GenerationParams, cache_dir: str | Path | None = None,
                    progress=None) -> list[dict]:
    out, stats = run_rows([build_request(rec, gp) for rec in records], Endpoint.of("generation.openai", gp.openai),
                          cache_dir if cache_dir is not None else gp.cache_dir,
                          lambda content, cached, error: {"replies": None if content is None else list(content),
                                                          "error": error, "cached": cached}, progress)
    log.info("generate: %d prompts, %d distinct requests (n=%d), %d from the cache, %d asked, %d failed",
             len(records), stats.requests, gp.k, stats.cached, stats.asked, len(stats.errors))
    return out


def generate_transformers(records: list[dict], gp: GenerationParams, model_params: ModelParams,
                          progress=None) -> list[dict]:
    from ..model.generation import generate_replies
    from ..model.loading import INFO_FILE, load_model, load_sft, load_tokenizer

    mp = model_params.model_copy(update={"name_or_path": gp.model or model_params.name_or_path,
                                         "revision": gp.revision if gp.model else model_params.revision,
                                         "trust_remote_code": gp.trust_remote_code})
    if (Path(mp.name_or_path) / INFO_FILE).is_file():      # the train stage's output: an adapter or full weights
        model, tokenizer = load_sft(mp, mp.name_or_path, precision=gp.precision)
    else:
        model, tokenizer = load_model(mp, precision=gp.precision).eval(), load_tokenizer(mp)
    replies = generate_replies(model, tokenizer, records, max_new_tokens=gp.max_new_tokens,
                               batch_size=gp.batch_size, k=gp.k, temperature=gp.temperature, top_p=gp.top_p,
                               seed=gp.seed, progress=progress)
    return [{"replies": r, "error": None, "cached": False} for r in replies]


def generate_vllm(records: list[dict], gp: GenerationParams, model_params: ModelParams) -> list[dict]:
    """vLLM's offline engine (an optional extra: ``pip install 'sftpipe[vllm]'`` on a CUDA machine).
    The model's own chat template formats the prompts; an adapter directory must be merged first
    (``train.merge: true``), since this path loads plain weights."""
    from ..errors import UserError
    from ..model.loading import INFO_FILE

    try:
        from vllm import LLM, SamplingParams
    except ImportError:
        raise UserError("generation backend vllm needs the vllm package (pip install 'sftpipe[vllm]', on a "
                        "CUDA machine); or use backend transformers, or openai against `vllm serve`") from None
    path = gp.model or model_params.name_or_path
    if (Path(path) / INFO_FILE).is_file() and not (Path(path) / "config.json").is_file():
        raise UserError(f"{path}: an adapter, which the vllm backend does not load; train with train.merge: true")
    llm = LLM(model=path, revision=gp.revision if gp.model else model_params.revision,
              trust_remote_code=gp.trust_remote_code, seed=gp.seed)
    sp = SamplingParams(n=gp.k, temperature=gp.temperature, top_p=gp.top_p, max_tokens=gp.max_new_tokens,
                        seed=gp.seed)
    outs = llm.chat([prompt_messages(r) for r in records], sp, use_tqdm=False)
    return [{"replies": [c.text.strip() for c in o.outputs], "error": None, "cached": False} for o in outs]


def generate(records: list[dict], gp: GenerationParams, model_params: ModelParams,
             cache_dir: str | Path | None = None, progress=None) -> list[dict]:
    """K candidate replies per record from the configured backend (see the module docstring)."""
    if gp.backend == "openai":
        return generate_openai(records, gp, cache_dir, progress)
    if gp.backend == "vllm":
        return generate_vllm(records, gp, model_params)
    return generate_transformers(records, gp, model_params, progress)


def candidate_rows(records: list[dict], results: list[dict], generator: str) -> list[dict]:
    """One canonical record per candidate: the prompt turns plus the candidate as the assistant
    reply; id ``<id>#<j>``; ``meta.candidate_of``, ``meta.candidate`` (j) and ``meta.generator``.
    Records whose request failed give no candidates (their error is the caller's to record)."""
    out = []
    for rec, res in zip(records, results):
        for j, reply in enumerate(res["replies"] or []):
            meta = {**rec.get("meta", {}), "candidate_of": rec["id"], "candidate": j, "generator": generator}
            row = {"id": f"{rec['id']}#{j}", "messages": [*prompt_messages(rec), {"role": "assistant", "content": reply}],
                   "source": rec["source"], "meta": meta}
            if rec.get("label") is not None:
                row["label"] = rec["label"]
            out.append(row)
    return out
