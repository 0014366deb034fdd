"""Training throughput: ours (padding-free and padded) against TRL's SFTTrainer, same process, interleaved.

Same tiny model (params.yaml shape, random weights), same rows, same max length (256), same
per-device batch (16, no accumulation), same number of optimizer steps, same LoRA (r8, alpha 16,
dropout 0.05, all-linear, built by ``sftpipe.model.train.peft_config``), same optimizer, schedule and
seed, fp32 on CPU, no gradient checkpointing, SDPA attention.

* ``pf``     ours: ``sftpipe.model.train.fit`` with ``packing=padding_free`` (DataCollatorWithFlattening)
* ``padded`` ours: ``fit`` with ``packing=padded`` (DataCollatorForSeq2Seq, group_by_length sampler)
* ``trl``    TRL ``SFTTrainer`` on a conversational "messages" dataset, assistant-only loss, its default
             padding (packing=False, padding_free=False, no length grouping). Our ChatML template has
             no ``{% generation %}`` markers, with which TRL refuses assistant_only_loss (the bench shows
             the error), so TRL gets the same ChatML with the markers added (it renders byte-identical
             text; the bench checks that, and compares TRL's token ids and loss masks with ours).
             TRL's own defaults gradient_checkpointing=True and bf16=True are turned off to match ours.
Optional (``--configs``): ``trl_gc`` (TRL with its default gradient checkpointing), ``trl_full`` (TRL,
full-sequence loss on the unmodified template), ``trl_grouped`` (TRL with the length-grouped sampler
ours uses, to separate batching from the rest of the step).

Throughput counts real (non-padding) input tokens the same way for every config: the Trainer's own
``include_num_input_tokens_seen="non_padding"`` counter, read at each ``on_step_end``. By default a
run is exactly one epoch (rows = steps x batch size), so every config trains on the same rows and
the same real tokens; time runs from ``on_train_begin`` (after setup and tokenization) to the end of
the last step (data loading, logging and optimizer included; the final checkpoint save excluded;
setup is reported separately). ``--warmup-steps N`` leaves the first N steps of each run untimed.
Each config first runs once, shorter, untimed (warm-up run); the order alternates between repeats
and ratios are taken per repeat.

Peak RSS: each config also runs once in a fresh child process that reports its VmHWM (the in-process
figure cannot separate configs), next to the floor of a process that only imports and loads. The
analysis (on by default; ``--no-analyze``) explains padding-free vs padded on CPU and ours vs TRL: one
epoch of every trainer's own batches (ours padding-free, padded, padded without pad-to-8; TRL random
and length-grouped), counted (positions, attention-score elements) and timed forward+backward on its
own model and loss path (TRL's compute_loss), alternating batch by batch, which is far less noisy
than whole runs; ours is also profiled (share of SDPA and matmul time), and the mask SDPA receives
is shown.

    PYTHONPATH=. python bench/train_throughput.py                 # ~6 min on 2 shared cores
    PYTHONPATH=. python bench/train_throughput.py --steps 60 --repeats 5
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import (THREADS_HELP, RssSampler, assets, child_peak_rss, command_line,  # noqa: E402
                           hwm_rss_mb, interleave, machine, median_of, peak_rss_mb, pick,
                           ratios, set_threads, setup_env, spread, table)


# Our ChatML (sftpipe.model.templates.CHATML) with TRL's {% generation %} markers around what our loss
# masks train under loss_on=response: each reply and its <|im_end|>; the newline after it is not.
CHATML_GENERATION = (
    "{% for m in messages %}"
    "{% if m['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\n' }}{% generation %}{{ m['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{{ '\n' }}"
    "{% else %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>' + '\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

LABELS = {"pf": "ours padding-free", "padded": "ours padded", "trl": "TRL SFTTrainer",
          "trl_gc": "TRL, grad ckpt (its default)", "trl_full": "TRL, full-seq loss",
          "trl_grouped": "TRL, group_by_length"}


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30, help="optimizer steps per run (scale knob)")
    ap.add_argument("--warmup-steps", type=int, default=0,
                    help="steps at the start of each run not timed (default 0: every config already had a "
                         "warm-up run, and timing the whole epoch makes every config process the same rows)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats after one warm-up run each")
    ap.add_argument("--rows", type=int, default=None,
                    help="training rows drawn from the sample (default steps x batch size: each run is exactly "
                         "one epoch, so every config trains on the same rows and the same real tokens)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--configs", default="pf,padded,trl", help=f"comma list of {', '.join(LABELS)}")
    ap.add_argument("--threads", type=int, default=1, help=THREADS_HELP)
    ap.add_argument("--rows-per-lang", type=int, default=600, help="sample size to draw --rows from")
    ap.add_argument("--assets", default=None, help="directory to build/reuse the model and rows in")
    ap.add_argument("--no-rss", action="store_true", help="skip the per-config child processes for peak RSS")
    ap.add_argument("--no-analyze", action="store_true", help="skip the padding-free vs padded analysis")
    ap.add_argument("--analyze-batches", type=int, default=8, help="batches profiled per config in --analyze")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)  # internal: one run, print JSON
    return ap.parse_args(argv)


# --------------------------------------------------------------------------- runs

def make_timer():
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """(time, global_step, non-padding tokens seen) at the end of every optimizer step."""

        def __init__(self):
            self.marks: list[tuple[float, int, int]] = []
            self.t_begin = None

        def on_train_begin(self, args, state, control, **kw):
            _sync()
            self.t_begin = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            _sync()  # GPU work queued by this step counts in this step
            self.marks.append((time.perf_counter(), state.global_step, state.num_input_tokens_seen))

    return StepTimer()


def _sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def summarise(timer, t_start: float, warm: int, rss: RssSampler | None) -> dict:
    marks = [(timer.t_begin, 0, 0), *timer.marks]  # step 0 = train begin (tokens count from 0 here)
    if len(marks) <= warm + 1:
        raise SystemExit(f"only {len(marks) - 1} steps ran; need more than --warmup-steps {warm}")
    t0, s0, k0 = marks[warm]
    t1, s1, k1 = marks[-1]
    steps = [b[0] - a[0] for a, b in zip(marks[warm:-1], marks[warm + 1:])]
    out = {"tokens_per_s": (k1 - k0) / (t1 - t0), "step_ms": 1e3 * statistics.median(steps), "tokens": k1 - k0,
           "tokens_per_step": (k1 - k0) / (s1 - s0), "seconds": t1 - t0, "setup_s": timer.t_begin - t_start}
    if rss is not None:
        out["rss_peak_mb"] = rss.peak
    return out


@contextlib.contextmanager
def timer_in_fit(train_module, timer, no_final_save: bool = False):
    """Add the step timer (a TrainerCallback: its train-begin, step-begin and step-end hooks are called) to
    the callbacks ``fit`` builds (its own Throughput callback stays).

    ``no_final_save`` cancels the checkpoint the Trainer writes after the last step (fit saves by
    steps, and the Trainer always saves at the end then): untimed anyway, but for a full fine-tune
    of a 0.5B model it is gigabytes of disk writes per run.
    """
    original = train_module._callbacks

    def with_timer():
        base = original()

        class Timed(base):
            def on_train_begin(self, args, state, control, **kw):
                super().on_train_begin(args, state, control, **kw)
                timer.on_train_begin(args, state, control, **kw)

            def on_step_begin(self, args, state, control, **kw):
                super().on_step_begin(args, state, control, **kw)
                timer.on_step_begin(args, state, control, **kw)
                return control

            def on_step_end(self, args, state, control, **kw):
                timer.on_step_end(args, state, control, **kw)
                if no_final_save:
                    control.should_save = False
                return control

        return Timed

    train_module._callbacks = with_timer
    try:
        yield
    finally:
        train_module._callbacks = original


def quiet():
    """Swallow what the Trainer prints (with disable_tqdm=True its PrinterCallback prints every log)."""
    import io

    return contextlib.redirect_stdout(io.StringIO())


def train_params(args, steps: int, packing: str, **kw):
    from sftpipe.config import TrainParams

    # save/eval far beyond the run: no intermediate checkpoints; fit has no validation rows here
    return TrainParams(max_steps=steps, batch_size=args.batch_size, max_length=args.max_length, packing=packing,
                       save_steps=10**9, eval_steps=10**9, **kw)


def run_ours(records, mp, args, steps: int, packing: str, keep: dict | None = None) -> dict:
    import sftpipe.model.train
    from sftpipe.config import LoraParams

    mod = sftpipe.model.train
    timer = make_timer()
    with tempfile.TemporaryDirectory(prefix="sftbench-train-") as d, timer_in_fit(mod, timer), quiet(), \
            RssSampler() as rss:
        t_start = time.perf_counter()
        trainer, _tok, _tmpl, summary = mod.fit(records, [], mp, train_params(args, steps, packing), LoraParams(),
                                                Path(d) / "ckpt", Path(d) / "live")
    if keep is not None:
        keep.update(trainer=trainer, summary=summary)
    out = summarise(timer, t_start, args.warmup_steps if steps > args.warmup_steps else 0, rss)
    out["packing"] = summary["packing"]
    return out


def trl_setup(records, mp, args, steps: int, variant: str, timer=None, out_dir=None, tp=None, callbacks=()):
    """An SFTTrainer configured like ours (see the module docstring).

    variant: trl, trl_gc, trl_full, trl_grouped; a ``_pf`` suffix turns on TRL's padding_free (needs
    flash-attention). ``tp`` (TrainParams) defaults to ours' for this bench; on a GPU the model and
    mixed precision follow ``tp.precision`` exactly as ``sftpipe.model.train.fit`` sets them.
    """
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from sftpipe.config import LoraParams
    from sftpipe.model.loading import dtype_for, load_model, load_tokenizer, weights_precision
    from sftpipe.model.templates import apply_template
    from sftpipe.model.train import peft_config

    tp = tp or train_params(args, steps, "padded")
    on_gpu = torch.cuda.is_available()
    dtype = dtype_for(tp.precision)
    padding_free = variant.endswith("_pf")
    variant = variant.removesuffix("_pf")
    tok = load_tokenizer(mp)
    apply_template(tok, mp.template)
    assistant_only = variant != "trl_full"
    if assistant_only:
        tok.chat_template = CHATML_GENERATION
    model = load_model(mp, precision=weights_precision(tp.method, tp.precision))
    cfg = SFTConfig(
        output_dir=str(out_dir), per_device_train_batch_size=tp.batch_size,
        gradient_accumulation_steps=tp.grad_accum, learning_rate=tp.lr, max_steps=tp.max_steps,
        lr_scheduler_type=tp.scheduler, warmup_steps=tp.warmup_ratio, weight_decay=tp.weight_decay,
        logging_steps=tp.logging_steps, save_strategy="no", eval_strategy="no", report_to=[], disable_tqdm=True,
        dataloader_num_workers=0, use_cpu=not on_gpu, seed=tp.seed, data_seed=tp.seed,
        # TRL's padding_free does not enforce max_length without packing: rows must already fit
        max_length=None if padding_free else tp.max_length, packing=False, padding_free=padding_free,
        assistant_only_loss=assistant_only, gradient_checkpointing=variant == "trl_gc",
        bf16=on_gpu and dtype == torch.bfloat16, fp16=on_gpu and dtype == torch.float16,
        train_sampling_strategy="group_by_length" if variant == "trl_grouped" else "random",
        include_num_input_tokens_seen="non_padding")
    ds = Dataset.from_dict({"messages": [r["messages"] for r in records]})
    return SFTTrainer(model=model, args=cfg, train_dataset=ds, processing_class=tok,
                      peft_config=peft_config(tp, LoraParams(), []),
                      callbacks=[*([timer] if timer else []), *callbacks] or None)


def run_trl(records, mp, args, steps: int, variant: str = "trl", keep: dict | None = None) -> dict:
    timer = make_timer()
    with tempfile.TemporaryDirectory(prefix="sftbench-trl-") as d, quiet(), RssSampler() as rss:
        t_start = time.perf_counter()
        trainer = trl_setup(records, mp, args, steps, variant, timer, d)
        trainer.train()
    if keep is not None:
        keep.update(train_dataset=trainer.train_dataset)  # not the trainer: it would keep the model alive
    return summarise(timer, t_start, args.warmup_steps if steps > args.warmup_steps else 0, rss)


def runner(name: str, records, mp, args, steps: int, keep=None):
    if name == "pf":
        return lambda: run_ours(records, mp, args, steps, "padding_free", keep=keep)
    if name == "padded":
        return lambda: run_ours(records, mp, args, steps, "padded", keep=keep)
    if name in ("trl", "trl_gc", "trl_full", "trl_grouped"):
        return lambda: run_trl(records, mp, args, steps, name, keep=keep)
    raise SystemExit(f"unknown config {name!r}; choose from {', '.join(LABELS)}")


# --------------------------------------------------------------------------- checks

def template_checks(records, mp, args) -> list[str]:
    """What TRL does with our template as it is, and whether the marked copy renders the same text."""
    from sftpipe.model.loading import load_tokenizer
    from sftpipe.model.templates import apply_template

    notes = []
    tok = load_tokenizer(mp)
    name = apply_template(tok, mp.template)
    ours = [tok.apply_chat_template(r["messages"], tokenize=False) for r in records]
    marked = [tok.apply_chat_template(r["messages"], tokenize=False, chat_template=CHATML_GENERATION)
              for r in records]
    same = sum(a == b for a, b in zip(ours, marked))
    notes.append(f"template '{name}' vs the same ChatML with generation markers: {same}/{len(records)} rows "
                 f"render byte-identical")
    if same != len(records):
        raise SystemExit("the marked template does not render like ours; the TRL comparison would be unfair")
    try:
        from trl import SFTConfig, SFTTrainer

        with tempfile.TemporaryDirectory() as d:
            from datasets import Dataset

            SFTTrainer(model=_tiny_model_for_check(mp), processing_class=tok,
                       train_dataset=Dataset.from_dict({"messages": [records[0]["messages"]]}),
                       args=SFTConfig(output_dir=d, assistant_only_loss=True, bf16=False, use_cpu=True,
                                      report_to=[], max_steps=1))
        notes.append("TRL accepted assistant_only_loss=True with our unmodified template")
    except (ValueError, RuntimeError) as e:
        notes.append(f"TRL with our unmodified template and assistant_only_loss=True refuses: "
                     f"{type(e).__name__}: {str(e).splitlines()[0]}")
    return notes


def _tiny_model_for_check(mp):
    from sftpipe.model.loading import load_model

    return load_model(mp, precision="fp32")


def compare_tokenization(records, mp, args, trl_dataset) -> str:
    """TRL's prepared rows against ours (tokenize_rows): same ids, same trained positions?"""
    from sftpipe.config import TrainParams
    from sftpipe.model.formatting import IGNORE
    from sftpipe.model.loading import load_tokenizer
    from sftpipe.model.templates import apply_template
    from sftpipe.model.train import tokenize_rows

    tok = load_tokenizer(mp)
    apply_template(tok, mp.template)
    ours, _ = tokenize_rows(records, tok, TrainParams(max_length=args.max_length))
    theirs = trl_dataset
    a_ids, a_lab = ours["input_ids"], ours["labels"]
    b_ids, b_lab = theirs["input_ids"], theirs["labels"]
    if len(a_ids) != len(b_ids):
        return f"row counts differ: ours {len(a_ids)}, TRL {len(b_ids)} (compared by content)"
    ids_same = sum(x == y for x, y in zip(a_ids, b_ids))
    mask_same = sum([t != IGNORE for t in x] == [t != IGNORE for t in y] for x, y in zip(a_lab, b_lab))
    tok_a, tok_b = sum(map(len, a_ids)), sum(map(len, b_ids))
    tgt_a = sum(sum(t != IGNORE for t in x) for x in a_lab)
    tgt_b = sum(sum(t != IGNORE for t in x) for x in b_lab)
    return (f"tokenization vs ours: {ids_same}/{len(a_ids)} rows same input_ids, {mask_same}/{len(a_ids)} same "
            f"loss mask; tokens {tok_b} (ours {tok_a}), trained tokens {tgt_b} (ours {tgt_a})")


# --------------------------------------------------------------------------- analysis

def spaced(batches: list, n: int) -> list:
    """n batches evenly spaced over the epoch, starting half a stride in (the length-grouped sampler
    puts its longest batch first, which would not be typical)."""
    step = max(1, len(batches) // n)
    return batches[step // 2::step][:n]


SDPA_OPS = ("aten::scaled_dot_product_attention", "aten::_scaled_dot_product_flash_attention_for_cpu_backward",
            "aten::_scaled_dot_product_efficient_attention_backward",
            "aten::_scaled_dot_product_attention_math_backward")
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm")


ANALYSIS = {"pf": "ours padding-free", "padded": "ours padded", "padded_trim": "ours padded, no pad-8",
            "trl": "TRL (random batches)", "trl_grouped": "TRL, group_by_length"}


def _trim(batch: dict) -> dict:
    """A padded batch cut to its longest real row: what the collator gives without pad_to_multiple_of=8."""
    w = int(batch["attention_mask"].sum(1).max())
    return {k: v[:, :w] if hasattr(v, "dim") and v.dim() == 2 else v for k, v in batch.items()}


def analyze(records, mp, args, n_profiled: int) -> str:
    """Where the time goes, with per-batch interleaving (much less noisy than whole runs).

    One epoch of each trainer's own batches (the same rows every way): counted (positions, attention
    score elements), then forward+backward timed batch by batch, configs alternating, on each
    trainer's own model and loss path (TRL's ``compute_loss`` with its fused LM head). Profiles of
    ours both ways give the SDPA and matmul share; the mask SDPA receives is shown too.
    """
    import torch
    from torch.profiler import ProfilerActivity, profile
    from transformers.masking_utils import create_causal_mask

    batches, steps = {}, {}
    keys = ("input_ids", "attention_mask", "labels", "position_ids")

    def ours_step(model):
        def step(b):
            model(**{k: v for k, v in b.items() if k in keys}).loss.backward()
            model.zero_grad(set_to_none=True)
        return step

    def trl_step(trainer):
        def step(b):
            trainer.compute_loss(trainer.model, dict(b)).backward()
            trainer.model.zero_grad(set_to_none=True)
        return step

    for name, packing in (("pf", "padding_free"), ("padded", "padded")):
        keep: dict = {}
        run_ours(records, mp, args, 1, packing, keep=keep)
        batches[name] = list(keep["trainer"].get_train_dataloader())
        steps[name] = ours_step(keep["trainer"].model.train())
    batches["padded_trim"] = [_trim(b) for b in batches["padded"]]
    steps["padded_trim"] = steps["padded"]
    tmp = tempfile.TemporaryDirectory()
    for name in ("trl", "trl_grouped"):
        with quiet():
            tr = trl_setup(records, mp, args, 1, name, None, tmp.name)
        tr.model.train()
        batches[name] = list(tr.get_train_dataloader())
        steps[name] = trl_step(tr)

    stats = {}
    for name, bs in batches.items():
        real = pos = att = 0
        for b in bs:
            ids = b["input_ids"]
            pos += ids.numel()
            if "attention_mask" in b:
                real += int(b["attention_mask"].sum())
                att += ids.shape[0] * ids.shape[1] ** 2
            else:  # one packed row: SDPA gets a dense (T x T) block-diagonal mask
                real += ids.numel()
                att += ids.shape[1] ** 2
        stats[name] = {"real": real, "pos": pos, "att": att, "n": len(bs)}

    names = list(batches)
    for name in names:  # warm every path
        steps[name](batches[name][0])
    secs = dict.fromkeys(names, 0.0)
    for i in range(max(len(b) for b in batches.values())):
        for name in (names if i % 2 == 0 else names[::-1]):
            if i < len(batches[name]):
                t0 = time.perf_counter()
                steps[name](batches[name][i])
                secs[name] += time.perf_counter() - t0

    shares = {}
    for name in ("pf", "padded"):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for b in spaced(batches[name], n_profiled):
                steps[name](b)
        ev = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in ev)
        attn = sum(e.cpu_time_total for e in ev if e.key in SDPA_OPS)
        mm = sum(e.self_cpu_time_total for e in ev if e.key in MATMUL_OPS)
        shares[name] = (attn / total, mm / total)

    cfg = mp and _config_of(mp)
    masks = {}
    for name in ("pf", "padded"):
        b = sorted(batches[name], key=lambda x: x["input_ids"].shape[1])[len(batches[name]) // 2]  # median width
        emb = torch.zeros(*b["input_ids"].shape, cfg.hidden_size)
        t0 = time.perf_counter()
        m = create_causal_mask(config=cfg, inputs_embeds=emb, attention_mask=b.get("attention_mask"),
                               past_key_values=None, position_ids=b.get("position_ids"))
        masks[name] = (None if m is None else tuple(m.shape), None if m is None else float(m.float().mean()),
                       time.perf_counter() - t0)
    tmp.cleanup()

    base = stats["padded"]["real"] / secs["padded"]
    rows = []
    for name in names:
        st = stats[name]
        tps = st["real"] / secs[name]
        rows.append([ANALYSIS[name], st["n"], st["real"], st["pos"], f"{100 * (st['pos'] / st['real'] - 1):.0f}%",
                     st["att"] / st["n"], secs[name], tps, f"{tps / base:.2f}x",
                     f"{100 * shares[name][0]:.0f}%" if name in shares else "-",
                     f"{100 * shares[name][1]:.0f}%" if name in shares else "-"])
    lines = [table(["one epoch", "batches", "real tok", "positions", "pad", "attn elems/batch", "fwd+bwd s",
                    "tok/s", "vs padded", "SDPA share", "matmul share"], rows,
                   title=f"analysis: one epoch of each trainer's own batches (same rows), forward+backward only, "
                         f"alternating batch by batch; op shares from torch.profiler on {n_profiled} batches "
                         f"(attn elems = score entries per head and layer)")]
    for name in ("pf", "padded"):
        shape, density, dt = masks[name]
        lines.append(f"  mask SDPA receives, {ANALYSIS[name]} (median-width batch): "
                     + ("None (is_causal)" if shape is None else
                        f"bool {shape}, {100 * density:.1f}% True, built in {1e3 * dt:.1f} ms"))
    pf, pd = stats["pf"], stats["padded"]
    lines.append(f"  over the epoch padding-free feeds {pd['pos'] / pf['pos']:.2f}x fewer positions than padded but "
                 f"{pf['att'] / pd['att']:.1f}x more attention-score elements; forward+backward real tokens/s "
                 f"padded / padding-free = {(pd['real'] / secs['padded']) / (pf['real'] / secs['pf']):.2f}")
    return "\n".join(lines)


def _config_of(mp):
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(mp.name_or_path)
    cfg._attn_implementation = "sdpa"
    return cfg


# --------------------------------------------------------------------------- main

def child_main(args):
    setup_env()
    set_threads(args.threads)
    from sftpipe.config import ModelParams

    records, model_dir, _ = assets(args)
    records = pick(records, args.rows or args.steps * args.batch_size)
    mp = ModelParams(name_or_path=str(model_dir))
    if args.child == "floor":  # what every config pays before training: imports, model, tokenizer
        import trl  # noqa: F401

        from sftpipe.model.loading import load_model, load_tokenizer

        load_model(mp, precision="fp32"), load_tokenizer(mp)
        res = {}
    else:
        res = runner(args.child, records, mp, args, args.steps)()
    print(json.dumps({"config": args.child, "peak_rss_mb": hwm_rss_mb(), **res}))


def main(argv=None):
    args = parse(argv)
    if args.child:
        return child_main(args)
    setup_env()
    threads = set_threads(args.threads)
    import trl

    from sftpipe.config import ModelParams

    print(f"machine: {machine()}; trl {trl.__version__}")
    tmp = None
    if not args.assets:
        tmp = tempfile.TemporaryDirectory(prefix="sftbench-assets-")
        args.assets = tmp.name
    records, model_dir, _ = assets(args)
    args.rows = args.rows or args.steps * args.batch_size
    records = pick(records, args.rows)
    mp = ModelParams(name_or_path=str(model_dir))
    names = [c.strip() for c in args.configs.split(",") if c.strip()]

    for note in template_checks(records, mp, args):
        print(note)

    keep_trl: dict = {}
    runs = {n: runner(n, records, mp, args, args.steps) for n in names}
    warm = {n: runner(n, records, mp, args, max(args.warmup_steps + 3, args.steps // 4),
                      keep=keep_trl if n == "trl" else None) for n in names}
    print(f"runs: {names}; {args.steps} steps each ({args.warmup_steps} untimed), batch {args.batch_size}, "
          f"max_length {args.max_length}, {len(records)} rows; 1 short warm-up run each, then {args.repeats} "
          f"interleaved repeats")
    res = interleave(runs, args.repeats, warmup=warm)
    if keep_trl.get("train_dataset") is not None:
        print(compare_tokenization(records, mp, args, keep_trl.pop("train_dataset")))

    rss = {}
    if not args.no_rss:
        print("peak RSS: one run per config in a fresh process ...")
        base = [str(Path(__file__).resolve()), "--assets", args.assets, "--rows", str(args.rows),
                "--steps", str(args.steps), "--warmup-steps", str(args.warmup_steps), "--threads", str(threads),
                "--batch-size", str(args.batch_size), "--max-length", str(args.max_length)]
        for n in ["floor", *names]:
            rss[n] = child_peak_rss([*base, "--child", n])["peak_rss_mb"]
        print(f"peak RSS floor (fresh process: imports, model and tokenizer loaded, no training): "
              f"{rss['floor']:.0f} MiB")

    ref = "trl" if "trl" in res else None
    rows = []
    for n in names:
        rs = res[n]
        rows.append([LABELS[n], median_of(rs, "tokens_per_s"), median_of(rs, "step_ms"), median_of(rs, "seconds"),
                     int(median_of(rs, "tokens")), median_of(rs, "setup_s"),
                     f"{rss[n]:.0f}" if n in rss else "-", median_of(rs, "rss_peak_mb"),
                     spread(ratios(rs, res[ref], "tokens_per_s")) if ref else "-",
                     spread(ratios(rs, res["padded"], "tokens_per_s")) if "padded" in res else "-"])
    print()
    print(table(["config", "tokens/s", "step ms", "timed s", "tokens", "setup s", "peak RSS MiB", "in-proc RSS",
                 "vs TRL", "vs ours padded"], rows,
                title=f"training throughput, LoRA r8 all-linear, {threads} torch thread(s), {args.repeats} repeats "
                      f"(median; ratios = median [min..max] of per-repeat ratios)"))
    print("tokens = real (non-padding) input tokens, Trainer's non_padding counter, over the timed steps; "
          "peak RSS = VmHWM of a fresh process running that config alone; in-proc RSS = highest RSS sampled "
          "during the run in this process (includes what earlier runs left allocated)")
    if ref:
        for n in names:
            if n != ref:
                r = statistics.median(ratios(res[n], res[ref], "tokens_per_s"))
                print(f"{LABELS[n]}: {r:.2f}x TRL" + (" (target >= 1.0x: met)" if n in ("pf", "padded") and r >= 1
                                                       else " (target >= 1.0x: NOT met)" if n in ("pf", "padded")
                                                       else ""))
    if not args.no_analyze:
        print()
        print(analyze(records, mp, args, args.analyze_batches))
    print(f"\npeak RSS (this process, ru_maxrss): {peak_rss_mb():.0f} MiB")
    print(f"command: {command_line()}")


if __name__ == "__main__":
    main()
