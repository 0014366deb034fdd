"""Why is a LoRA step slower than a full fine-tuning step on a GPU? A profile of each, through ``fit``.

train_gpu.py found LoRA (r8, all-linear) 2.5x slower per step than full fine-tuning of the same
Qwen2-0.5B-shaped model on the same rows (H100 and H200), though LoRA skips 494M weight gradients and
their optimizer state. This script runs ``sftpipe.model.train.fit`` for each variant below on the same
rows (train_gpu.py's model, tokenizer and synthetic rows, padded length-grouped batches, SDPA), times
every optimizer step, and profiles two steps with ``torch.profiler`` (CPU + CUDA):

* ``full``: the pipeline's full fine-tuning (fp32 master weights, bf16 autocast);
* ``lora``: the pipeline's LoRA (frozen base in bf16, adapters in fp32: peft's ``autocast_adapter_dtype``;
  adapted layers' inputs not cast to fp32 under autocast: ``train.adapter_input_casting``);
* ``lora_peft_cast``: the same with peft's input casting left on (the pipeline before that change);
* ``lora_bf16_adapters``: the same, adapters left in bf16 (``get_peft_model(..., autocast_adapter_dtype=False)``);
* ``lora_fp32_base``: the same LoRA over an fp32 base (loaded like full fine-tuning, autocast to bf16);
* ``lora_no_dropout``: the pipeline's LoRA with ``lora.dropout`` 0.

Per variant: median step ms (steps after the warm-up, profiled steps excluded), GPU busy ms per step
(sum of kernel times in the profile; below the step time = the GPU waited on the CPU), kernel launches
per step, and the kernels and operators that take the most GPU time.

    PYTHONPATH=. python bench/train_profile_gpu.py                     # GPU, ~2 min
    PYTHONPATH=. python bench/train_profile_gpu.py --tiny              # CPU check of the code path
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import machine, setup_env  # noqa: E402

VARIANTS = ["full", "lora", "lora_peft_cast", "lora_bf16_adapters", "lora_fp32_base", "lora_no_dropout"]
DEFAULT = ["full", "lora", "lora_peft_cast", "lora_bf16_adapters"]


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="small model, fp32, CPU: a check that the code runs")
    ap.add_argument("--variants", default=",".join(DEFAULT), help=f"comma list of {', '.join(VARIANTS)}")
    ap.add_argument("--no-warmup", action="store_true",
                    help="skip the untimed first run (it caches cuDNN's attention plans for every batch shape, "
                         "which otherwise cost the first variant tens of ms a step)")
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps per variant (default 14; tiny 6)")
    ap.add_argument("--profile-at", type=int, default=None, help="first profiled step (default 6; tiny 3)")
    ap.add_argument("--batch-size", type=int, default=None, help="default 16; tiny 4")
    ap.add_argument("--seq-len", type=int, default=None, help="default 1024; tiny 128")
    ap.add_argument("--top", type=int, default=12, help="rows of each profile table")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    t = args.tiny
    args.steps = args.steps or (6 if t else 14)
    args.profile_at = args.profile_at or (3 if t else 6)
    args.batch_size = args.batch_size or (4 if t else 16)
    args.seq_len = args.seq_len or (128 if t else 1024)
    args.max_length = args.seq_len
    args.median_len = 20.0 if t else 300.0
    return args


@contextlib.contextmanager
def variant_patches(name: str):
    """Patch what the variant changes in ``fit``'s path; restored on exit."""
    import peft

    import sftpipe.model.train as train
    from sftpipe.model import loading

    saved = (peft.get_peft_model, loading.weights_precision, train.adapter_input_casting)
    if name == "lora_bf16_adapters":
        original = peft.get_peft_model
        peft.get_peft_model = lambda model, cfg, **kw: original(model, cfg, autocast_adapter_dtype=False, **kw)
    if name == "lora_peft_cast":
        original_cast = train.adapter_input_casting
        train.adapter_input_casting = lambda model, method, autocast: original_cast(model, method, False)
    if name == "lora_fp32_base":
        loading.weights_precision = lambda method, precision: "fp32"
    try:
        yield train
    finally:
        peft.get_peft_model, loading.weights_precision, train.adapter_input_casting = saved


def profiled_timer(marks: list, prof_window: tuple[int, int], prof_holder: dict):
    """A step timer for :func:`bench.train_throughput.timer_in_fit`: the (synchronized) time at train begin and
    at every step end in ``marks``, and ``torch.profiler`` running over steps [a, b) into ``prof_holder``."""
    import torch
    from transformers import TrainerCallback

    from bench.train_throughput import _sync

    class ProfiledTimer(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            _sync()
            marks.append(time.perf_counter())

        def on_step_begin(self, args, state, control, **kw):
            if state.global_step == prof_window[0]:
                acts = [torch.profiler.ProfilerActivity.CPU]
                if torch.cuda.is_available():
                    acts.append(torch.profiler.ProfilerActivity.CUDA)
                _sync()
                prof_holder["prof"] = torch.profiler.profile(activities=acts)
                prof_holder["prof"].start()

        def on_step_end(self, args, state, control, **kw):
            _sync()
            marks.append(time.perf_counter())
            if state.global_step == prof_window[1] and "prof" in prof_holder:
                prof_holder["prof"].stop()

    return ProfiledTimer()


def _dev_time(evt, self_only: bool) -> float:
    """Device microseconds of a profiler event (torch renamed cuda_* to device_* in 2.4)."""
    for attr in (("self_device_time_total", "self_cuda_time_total") if self_only
                 else ("device_time_total", "cuda_time_total")):
        v = getattr(evt, attr, None)
        if v is not None:
            return float(v)
    return 0.0


def profile_summary(prof, n_steps: int, top: int) -> dict:
    """GPU busy time and kernel launches per step, and the top kernels/operators by GPU time."""
    kernels, busy, launches = {}, 0.0, 0
    for evt in prof.events():
        if str(getattr(evt, "device_type", "")).endswith("CUDA"):
            dur = float(evt.time_range.elapsed_us())  # a kernel's own event: its span on the device
            busy += dur
            launches += 1
            k = kernels.setdefault(evt.name, [0.0, 0])
            k[0] += dur
            k[1] += 1
    ops = [e for e in prof.key_averages() if not str(getattr(e, "device_type", "")).endswith("CUDA")]
    ops.sort(key=lambda e: _dev_time(e, True), reverse=True)
    cpu_total = sum(e.self_cpu_time_total for e in prof.key_averages())
    return {"busy_ms": busy / 1e3 / n_steps, "launches": launches / n_steps, "cpu_ms": cpu_total / 1e3 / n_steps,
            "kernels": sorted(kernels.items(), key=lambda kv: -kv[1][0])[:top],
            "ops": [(e.key, _dev_time(e, True) / 1e3 / n_steps, e.self_cpu_time_total / 1e3 / n_steps,
                     e.count / n_steps) for e in ops[:top]]}


def run_variant(name: str, records, model_dir, args) -> dict:
    import torch

    from bench.train_throughput import quiet, timer_in_fit, train_params
    from bench.train_gpu import word_tokenizer_redirect
    from sftpipe.config import LoraParams, ModelParams

    method = "full" if name == "full" else "lora"
    mp = ModelParams(name_or_path=str(model_dir), attn_implementation="sdpa")
    tp = train_params(args, args.steps, "padded", method=method, precision="auto", logging_steps=10**6)
    lp = LoraParams(dropout=0.0) if name == "lora_no_dropout" else LoraParams()
    marks, holder = [], {}
    window = (args.profile_at, args.profile_at + 2)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    with variant_patches(name) as train, tempfile.TemporaryDirectory(prefix="sftprof-") as d, \
            timer_in_fit(train, profiled_timer(marks, window, holder), no_final_save=True), quiet(), \
            word_tokenizer_redirect(model_dir):
        trainer, *_ = train.fit(records, [], mp, tp, lp, Path(d) / "ckpt", Path(d) / "live")
        model = trainer.model
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        dtypes = sorted({str(p.dtype).split(".")[-1] + ("*" if p.requires_grad else "") for p in model.parameters()})
        del trainer, model
    steps = [b - a for a, b in zip(marks, marks[1:])]  # steps[i] = step i+1
    timed = [s for i, s in enumerate(steps, start=1) if i > 3 and not (window[0] < i <= window[1])]
    out = {"step_ms": 1e3 * statistics.median(timed), "n_timed": len(timed), "trainable": trainable,
           "dtypes": dtypes, "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available()
           else float("nan")}
    if "prof" in holder:
        out.update(profile_summary(holder["prof"], window[1] - window[0], args.top))
    return out


def main(argv=None):
    args = parse(argv)
    setup_env()
    import torch

    from bench.train_gpu import SHAPES, build_model_dir, synthetic_records
    from sftpipe.model.loading import dtype_for

    print(f"machine: {machine()}")
    if torch.cuda.is_available():
        print(f"GPU: {torch.cuda.get_device_name()}")
    import peft
    import transformers
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}")
    shape = SHAPES["tiny" if args.tiny else "qwen2-0.5b"]
    with tempfile.TemporaryDirectory(prefix="sftprof-assets-") as work:
        model_dir = Path(work) / "model"
        build_model_dir(model_dir, shape, args.seed, dtype_for("auto"))
        records = synthetic_records(args.steps * args.batch_size, args.seq_len, shape["vocab_size"], args.median_len,
                                    args.seed, False)
        names = [v.strip() for v in args.variants.split(",") if v.strip()]
        res = {}
        if not args.no_warmup:
            run_variant(names[0], records, model_dir, args)
        for n in names:
            res[n] = r = run_variant(n, records, model_dir, args)
            print(f"\n== {n}: step {r['step_ms']:.0f} ms (median of {r['n_timed']}), trainable {r['trainable'] / 1e6:.2f}M, "
                  f"params {','.join(r['dtypes'])} (* = trained), peak {r['peak_gib']:.1f} GiB")
            if "busy_ms" in r:
                print(f"   profiled steps: GPU busy {r['busy_ms']:.0f} ms/step, {r['launches']:.0f} kernel launches/step, "
                      f"CPU self time {r['cpu_ms']:.0f} ms/step (profiler overhead included)")
                print("   top kernels (ms/step, launches/step):")
                k_steps = 2
                for name, (us, cnt) in r["kernels"]:
                    print(f"     {us / 1e3 / k_steps:8.2f} {cnt / k_steps:6.0f}  {name[:110]}")
                print("   top operators by self GPU time (GPU ms/step, CPU ms/step, calls/step):")
                for key, g, c, cnt in r["ops"]:
                    print(f"     {g:8.2f} {c:8.2f} {cnt:6.0f}  {key[:100]}")
        print("\n| variant | step ms | vs full | GPU busy ms/step | kernel launches/step | peak GiB |")
        print("|---|---:|---:|---:|---:|---:|")
        for n, r in res.items():
            rel = f"{r['step_ms'] / res['full']['step_ms']:.2f}x" if "full" in res else "-"
            print(f"| {n} | {r['step_ms']:.0f} | {rel} | {r.get('busy_ms', float('nan')):.0f} | "
                  f"{r.get('launches', float('nan')):.0f} | {r['peak_gib']:.1f} |")


if __name__ == "__main__":
    main()
