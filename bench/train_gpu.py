"""GPU training throughput and MFU on a Qwen2-0.5B-shaped model: ours vs TRL's SFTTrainer.

Written for a GPU machine (bf16, SDPA, and flash_attention_2 when ``flash_attn`` is installed);
``--tiny`` runs the same code on CPU with a small config in fp32 so it can be checked anywhere.

Model: ``Qwen2Config`` with Qwen2-0.5B's shape (hidden 896, 24 layers, 14 heads, 2 KV heads,
intermediate 4864, vocab 151936, tied embeddings), random weights, saved like a hub model next to a
word-level tokenizer whose vocabulary is exactly the model's (ChatML tokens included), so both
trainers load it through the same path as a real model. Data: synthetic conversations of random
words (one word = one token), lengths drawn from a log-normal (median ~300 tokens) and capped so
every row fits in ``--seq-len`` (1024); ``dense`` rows fill exactly ``--seq-len`` tokens.

Configs (``--configs``; each runs for every method in ``--methods``, lora and full):

* ``ours_padded`` / ``ours_pf``: ``sftpipe.model.train.fit`` with packing=padded (length-grouped padded
  batches) / padding_free (DataCollatorWithFlattening), SDPA; ``*_fa2`` with flash_attention_2
* ``trl``: TRL ``SFTTrainer``, its default padding (no length grouping), SDPA, assistant-only loss via
  our ChatML with generation markers (the same rows and loss masks as ours); ``trl_pf_fa2``: TRL's
  padding_free with flash_attention_2. Gradient checkpointing off for everyone (TRL's default is on).
* ``ours_dense``: ours padded on dense rows (no padding at all): the MFU ceiling of this stack.

Same model, rows, batch (``--batch-size``), max length, optimizer steps, LoRA (r8, alpha 16, all-linear)
and precision for all; one epoch per run (rows = steps x batch), after a short warm-up run per
config; the order alternates between repeats and ratios are per repeat.

FLOPs convention (stated in the output): N = weights of every matmul per token, i.e. all Linear
layers including the LM head (the tied embedding counted once, as the head; the embedding lookup
itself is free), so N = 494M for Qwen2-0.5B. Per real token: full FT 6N, LoRA 4N + 6 N_lora (frozen
weights get no weight gradient; the adapters are trained in full). Attention adds 12 * L * H * hd * n
per token of a sequence of length n (forward QK^T and AV = 4 L H hd n, backward twice that; the full
square, PaLM's convention, even though causal kernels skip half), summed over each row's own length:
packed rows do not attend across rows. Padding is never counted. MFU = model FLOPs / s / --peak-flops
(989e12: H100 SXM bf16 dense).

    PYTHONPATH=. python bench/train_gpu.py                       # GPU, a few minutes
    PYTHONPATH=. python bench/train_gpu.py --tiny                # CPU check, ~2 min
    PYTHONPATH=. python bench/train_gpu.py --methods lora --configs ours_padded,ours_pf_fa2,trl --steps 100
"""

from __future__ import annotations

import argparse
import contextlib
import math
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import (command_line, interleave, machine, median_of, peak_rss_mb, ratios,  # noqa: E402
                           set_threads, setup_env, spread, table)

SHAPES = {
    "qwen2-0.5b": dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                       intermediate_size=4864, vocab_size=151936, tie_word_embeddings=True,
                       max_position_embeddings=32768, rope_theta=1e6),
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=128, vocab_size=2048, tie_word_embeddings=True, max_position_embeddings=1024),
}
SPECIALS = ["<|endoftext|>", "<|pad|>", "<|im_start|>", "<|im_end|>", "[UNK]"]
ROLES = ["system", "user", "assistant"]
ALL_CONFIGS = ["ours_padded", "ours_pf", "ours_padded_fa2", "ours_pf_fa2", "trl", "trl_pf_fa2", "ours_dense"]


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="small config, fp32, few steps: a CPU check")
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps per run (default 40; tiny 6)")
    ap.add_argument("--repeats", type=int, default=None, help="interleaved repeats (default 3; tiny 1)")
    ap.add_argument("--batch-size", type=int, default=None, help="rows per step (default 16 = params.yaml; tiny 4)")
    ap.add_argument("--seq-len", type=int, default=None, help="max length (default 1024; tiny 128)")
    ap.add_argument("--methods", default="lora,full")
    ap.add_argument("--configs", default=",".join(ALL_CONFIGS),
                    help="comma list; the *_fa2 ones are skipped when flash_attn is not installed")
    ap.add_argument("--lora-dropout", type=float, default=0.05, help="lora.dropout (params.yaml: 0.05)")
    ap.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp16", "fp32"],
                    help="train.precision (auto: bf16 on GPU as the pipeline does, fp32 on CPU)")
    ap.add_argument("--peak-flops", type=float, default=989e12, help="accelerator peak FLOP/s for MFU")
    ap.add_argument("--median-len", type=float, default=None, help="median synthetic row length (default 300)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (tiny default 1)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    tiny = args.tiny
    args.max_length = None  # set from --seq-len below (train_throughput.train_params reads it)
    for k, full, small in (("steps", 40, 6), ("repeats", 3, 1), ("batch_size", 16, 4), ("seq_len", 1024, 128),
                           ("median_len", 300.0, 40.0), ("threads", None, 1)):
        if getattr(args, k) is None:
            setattr(args, k, small if tiny else full)
    args.max_length = args.seq_len
    return args


# --------------------------------------------------------------------------- model and data

def word_tokenizer(vocab_size: int):
    """A word-level tokenizer with exactly ``vocab_size`` ids: specials, role names, then words w<i>."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from sftpipe.model.templates import CHATML

    names = SPECIALS + ROLES
    vocab = {t: i for i, t in enumerate(names)}
    vocab.update({f"w{i}": i for i in range(len(names), vocab_size)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|pad|>",
                                   unk_token="[UNK]", additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    fast.chat_template = CHATML
    fast.model_max_length = 1 << 20
    assert len(fast) == vocab_size, (len(fast), vocab_size)
    return fast


def build_model_dir(out: Path, shape: dict, seed: int, dtype) -> dict:
    """Random Qwen2 of ``shape`` plus the word tokenizer, saved like a hub model; returns its config."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = word_tokenizer(shape["vocab_size"])
    cfg = Qwen2Config(**shape, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None)
    torch.manual_seed(seed)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(dev):  # initialising 0.5B parameters is much faster on the GPU
        model = Qwen2ForCausalLM(cfg)
    model.to(dtype).save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    tok.save_pretrained(out / TOKENIZER_SUBDIR)  # see word_tokenizer_redirect
    del model
    if dev == "cuda":
        torch.cuda.empty_cache()
    return cfg.to_dict()


TOKENIZER_SUBDIR = "word_tokenizer"


@contextlib.contextmanager
def word_tokenizer_redirect(model_dir: Path):
    """Load the tokenizer of ``model_dir`` from its config-free copy, for both trainers.

    transformers 5.23's AutoTokenizer lists qwen2 in MODELS_WITH_INCORRECT_HUB_TOKENIZER_CLASS and so
    loads any directory whose config.json says qwen2 as Qwen2Tokenizer, rebuilding a byte-level BPE
    from our word-level vocabulary (every word becomes [UNK]-like garbage). A directory without a
    config.json loads as saved. ``sftpipe.model.loading.load_tokenizer`` is what both ``fit`` and the TRL
    setup call, so it is redirected there; the model still loads from ``model_dir``.
    """
    import sftpipe.model.loading

    original = sftpipe.model.loading.load_tokenizer

    def load(mp, path=None):
        path = path or mp.name_or_path
        return original(mp, str(model_dir / TOKENIZER_SUBDIR) if Path(path) == model_dir else path)

    sftpipe.model.loading.load_tokenizer = load
    try:
        yield
    finally:
        sftpipe.model.loading.load_tokenizer = original


def bench_model(tmp: str | Path, tiny: bool, seed: int):
    """train_gpu's model for an inference bench: (model in eval mode, tokenizer, shape, precision), built in
    ``tmp``; bf16 on a GPU, fp32 for ``tiny`` or on CPU."""
    import torch

    import sftpipe.model.loading
    from sftpipe.config import ModelParams

    shape = SHAPES["tiny" if tiny else "qwen2-0.5b"]
    precision = "bf16" if torch.cuda.is_available() and not tiny else "fp32"
    model_dir = Path(tmp) / "model"
    build_model_dir(model_dir, shape, seed, torch.bfloat16 if precision == "bf16" else torch.float32)
    mp = ModelParams(name_or_path=str(model_dir))
    with word_tokenizer_redirect(model_dir):
        tok = sftpipe.model.loading.load_tokenizer(mp)
    return sftpipe.model.loading.load_model(mp, precision=precision).eval(), tok, shape, precision


def cuda_timed(fn):
    """(fn(), seconds, peak GiB allocated on the GPU, NaN on CPU), the GPU synchronized at both ends."""
    import torch

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    out = fn()
    if cuda:
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0, torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")


def synthetic_records(n: int, seq_len: int, vocab_size: int, median: float, seed: int, dense: bool) -> list[dict]:
    """Conversations of random words. Lengths: log-normal around ``median`` tokens, capped so that the
    rendered row (ChatML adds 6 tokens for a user and an assistant turn) fits in ``seq_len``; dense rows
    are longer than ``seq_len`` and get cut to exactly ``seq_len`` by truncation."""
    rng = random.Random(seed)
    first = len(SPECIALS) + len(ROLES)

    def words(k):
        return " ".join(f"w{rng.randrange(first, vocab_size)}" for _ in range(k))

    out = []
    for i in range(n):
        if dense:
            total = seq_len + 16
        else:
            total = int(min(seq_len - 6, max(16, rng.lognormvariate(math.log(median), 0.8))))
        prompt = max(1, int(total * rng.uniform(0.2, 0.6)))
        out.append({"id": f"syn:{i}", "source": "syn", "label": None, "meta": {},
                    "messages": [{"role": "user", "content": words(prompt)},
                                 {"role": "assistant", "content": words(total - prompt)}]})
    return out


def row_lengths(records, model_dir, seq_len) -> list[int]:
    """Token count of every row as ours tokenizes and truncates it (TRL's are checked equal on the CPU)."""
    import sftpipe.model.loading
    from sftpipe.config import ModelParams, TrainParams
    from sftpipe.model.train import tokenize_rows

    with word_tokenizer_redirect(model_dir):
        tok = sftpipe.model.loading.load_tokenizer(ModelParams(name_or_path=str(model_dir)))
    probe = records[0]["messages"][0]["content"]
    if len(tok(probe, add_special_tokens=False)["input_ids"]) != len(probe.split()):
        raise SystemExit(f"{model_dir}: the tokenizer does not load as the word-level one it was saved as")
    ds, _ = tokenize_rows(records, tok, TrainParams(max_length=seq_len))
    return list(ds["length"])


# --------------------------------------------------------------------------- FLOPs

def flops_model(cfg: dict, lora_r: int = 8) -> dict:
    """Matmul weights per token (N), LoRA adapter weights (all-linear), and the attention coefficient."""
    d, L, H, kv = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or d // H
    inter, vocab = cfg["intermediate_size"], cfg["vocab_size"]
    shapes = [(d, H * hd), (d, kv * hd), (d, kv * hd), (H * hd, d), (d, inter), (d, inter), (inter, d)]
    per_layer = sum(a * b for a, b in shapes)
    n_matmul = L * per_layer + d * vocab  # + LM head (the tied embedding, used as the head)
    n_lora = L * sum(lora_r * (a + b) for a, b in shapes)  # all-linear excludes the LM head
    return {"N": n_matmul, "N_lora": n_lora, "attn": 12 * L * H * hd, "L": L, "H": H, "hd": hd,
            "params": n_matmul + (0 if cfg.get("tie_word_embeddings") else d * vocab)}


def epoch_flops(lengths: list[int], fm: dict, method: str) -> float:
    per_tok = 6 * fm["N"] if method == "full" else 4 * fm["N"] + 6 * fm["N_lora"]
    return sum(per_tok * n + fm["attn"] * n * n for n in lengths)


# --------------------------------------------------------------------------- runs

def _cuda_mem_reset():
    import gc

    import torch

    gc.collect()  # trainers hold reference cycles; free the previous run's model before measuring
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _cuda_peak_gib() -> float:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")


def run_config(name: str, method: str, records, model_dir, args, steps: int, keep=None) -> dict:
    """One run; a CUDA out-of-memory is reported as NaN figures instead of ending the bench."""
    import torch

    try:
        return _run_config(name, method, records, model_dir, args, steps, keep)
    except torch.cuda.OutOfMemoryError:
        import gc

        gc.collect()
        _cuda_mem_reset()
        print(f"  {method} {name}: CUDA out of memory (try a smaller --batch-size)")
        nan = float("nan")
        return {"tokens_per_s": nan, "step_ms": nan, "peak_mem_gib": nan, "seconds": nan, "tokens": 0}


def _run_config(name: str, method: str, records, model_dir, args, steps: int, keep=None) -> dict:
    import sftpipe.model.train
    from bench.train_throughput import make_timer, quiet, summarise, timer_in_fit, train_params, trl_setup
    from sftpipe.config import LoraParams, ModelParams

    attn = "flash_attention_2" if name.endswith("_fa2") else "sdpa"
    mp = ModelParams(name_or_path=str(model_dir), attn_implementation=attn)
    tp = train_params(args, steps, "padding_free" if name.startswith("ours_pf") else "padded",
                      method=method, precision=args.precision, logging_steps=10)
    timer = make_timer()
    _cuda_mem_reset()
    with tempfile.TemporaryDirectory(prefix="sftbench-gpu-") as d, quiet(), word_tokenizer_redirect(model_dir):
        t_start = time.perf_counter()
        if name.startswith("ours"):
            with timer_in_fit(sftpipe.model.train, timer, no_final_save=True):
                trainer, *_ = sftpipe.model.train.fit(records, [], mp, tp, LoraParams(dropout=args.lora_dropout), Path(d) / "ckpt", Path(d) / "live")
        else:
            trainer = trl_setup(records, mp, args, steps, "trl_pf" if name == "trl_pf_fa2" else "trl", timer, d, tp)
            trainer.train()
    out = summarise(timer, t_start, 0, None)
    out["peak_mem_gib"] = _cuda_peak_gib()
    if keep is not None:
        keep["train_dataset"] = trainer.train_dataset  # not the trainer: it would pin the model in memory
    del trainer
    return out


def main(argv=None):
    args = parse(argv)
    setup_env()
    set_threads(args.threads)
    import torch
    import transformers
    import trl
    from transformers.utils import is_flash_attn_2_available

    from sftpipe.model.loading import dtype_for

    gpu = torch.cuda.is_available()
    print(f"machine: {machine()}")
    if gpu:
        print(f"GPU: {torch.cuda.get_device_name()} ({torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} "
              f"GiB), bf16 supported: {torch.cuda.is_bf16_supported()}")
    else:
        print("GPU: none (CPU run" + (", --tiny)" if args.tiny else "; this bench is meant for a GPU)"))
    fa2 = is_flash_attn_2_available()
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}, "
          f"flash_attn 2 available: {fa2}")
    shape = SHAPES["tiny" if args.tiny else "qwen2-0.5b"]
    dtype = dtype_for(args.precision)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    names = [c.strip() for c in args.configs.split(",") if c.strip()]
    skipped = [c for c in names if c.endswith("_fa2") and not fa2]
    names = [c for c in names if c not in skipped]
    if skipped:
        print(f"skipped (flash_attn not installed): {', '.join(skipped)}")

    work = tempfile.TemporaryDirectory(prefix="sftbench-gpu-assets-")
    model_dir = Path(work.name) / "model"
    t0 = time.perf_counter()
    cfg = build_model_dir(model_dir, shape, args.seed, dtype)
    fm = flops_model(cfg)
    rows = args.steps * args.batch_size
    data = {"variable": synthetic_records(rows, args.seq_len, shape["vocab_size"], args.median_len, args.seed, False),
            "dense": synthetic_records(rows, args.seq_len, shape["vocab_size"], args.median_len, args.seed, True)}
    lengths = {k: row_lengths(v, model_dir, args.seq_len) for k, v in data.items()}
    print(f"model: Qwen2 shape {'tiny' if args.tiny else 'Qwen2-0.5B'} (hidden {cfg['hidden_size']}, "
          f"{cfg['num_hidden_layers']} layers, {cfg['num_attention_heads']}/{cfg['num_key_value_heads']} heads, "
          f"vocab {cfg['vocab_size']}), {fm['params'] / 1e6:.1f}M params, N = {fm['N'] / 1e6:.1f}M matmul weights "
          f"per token, LoRA r8 all-linear {fm['N_lora'] / 1e6:.2f}M; dtype {str(dtype).split('.')[-1]}; "
          f"built in {time.perf_counter() - t0:.1f}s")
    for k, ls in lengths.items():
        print(f"data {k}: {len(ls)} rows, {sum(ls)} tokens, mean {statistics.mean(ls):.0f}, max {max(ls)}, "
              f"seq_len {args.seq_len}; batch {args.batch_size}, {args.steps} steps = one epoch")

    results = {}
    keep_trl: dict = {}
    for method in methods:
        runs, warm = {}, {}
        for n in names:
            recs = data["dense" if n == "ours_dense" else "variable"]
            runs[n] = (lambda n=n, recs=recs, m=method: run_config(n, m, recs, model_dir, args, args.steps))
            warm[n] = (lambda n=n, recs=recs, m=method: run_config(n, m, recs, model_dir, args, max(3, args.steps // 4),
                                                                   keep=keep_trl if n == "trl" and not keep_trl
                                                                   else None))
        print(f"\n{method}: {names}; 1 short warm-up run each, then {args.repeats} interleaved repeats")
        results[method] = interleave(runs, args.repeats, warmup=warm)
        if keep_trl.get("train_dataset") is not None:
            from bench.train_throughput import compare_tokenization
            from sftpipe.config import ModelParams

            with word_tokenizer_redirect(model_dir):
                print("TRL " + compare_tokenization(data["variable"], ModelParams(name_or_path=str(model_dir)), args,
                                                    keep_trl.pop("train_dataset")))

    out_rows = []
    for method in methods:
        res = results[method]
        for n in names:
            rs = res[n]
            ls = lengths["dense" if n == "ours_dense" else "variable"]
            flops_per_tok = epoch_flops(ls, fm, method) / sum(ls)
            tps = median_of(rs, "tokens_per_s")
            mfu = tps * flops_per_tok / args.peak_flops
            out_rows.append([method, n, "fa2" if n.endswith("_fa2") else "sdpa", tps, median_of(rs, "step_ms"),
                             tps * flops_per_tok / 1e12, f"{100 * mfu:.3g}%",
                             f"{median_of(rs, 'peak_mem_gib'):.1f}" if gpu else "-",
                             spread(ratios(rs, res["trl"], "tokens_per_s")) if "trl" in res and n != "ours_dense"
                             else "-",
                             spread(ratios(rs, res["ours_padded"], "tokens_per_s"))
                             if "ours_padded" in res and n != "ours_dense" else "-"])
    print()
    print(table(["method", "config", "attn", "tokens/s", "step ms", "TFLOP/s", "MFU", "peak GiB", "vs TRL",
                 "vs ours_padded"],
                out_rows, title=f"training throughput, {'tiny' if args.tiny else 'Qwen2-0.5B'} shape, seq_len "
                                f"{args.seq_len}, batch {args.batch_size}, {args.repeats} repeats (median; ratios = "
                                f"median [min..max] of per-repeat ratios)"))
    if "ours_dense" in names:
        print("ours_dense trains on different (full-length) rows: no ratios; it is this stack's MFU ceiling")
    print(f"tokens = real (non-padding) tokens/s. MFU = tokens/s x model FLOPs per token / {args.peak_flops:.3g}; "
          f"model FLOPs per token = 6N (full) or 4N + 6N_lora (LoRA), N = {fm['N'] / 1e6:.1f}M (all Linear "
          f"weights incl. the tied LM head), plus attention 12*L*H*hd*n = {fm['attn']} * n for a row of n tokens "
          f"(full square, per row, padding never counted)")
    if not gpu:
        print("(no GPU: MFU against a GPU peak is meaningless here; this run only checks the code path)")
    print(f"peak RSS (process): {peak_rss_mb():.0f} MiB")
    print(f"command: {command_line()}")


if __name__ == "__main__":
    main()
