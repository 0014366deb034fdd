"""Supervised fine-tuning on ``transformers.Trainer`` with peft adapters.

* methods (``train.method``): lora, dora, rslora, full, prompt_tuning, prefix_tuning
* prompts rendered with the chat template (or a named template), loss masks per
  ``train.loss_on`` (see :mod:`sftpipe.model.formatting`)
* padding-free packing (``DataCollatorWithFlattening``: one row of concatenated
  sequences, ``position_ids`` restart per sequence, attention kept inside each
  sequence by SDPA/flash-attention), or padded batches grouped by length
* cosine schedule with warmup, gradient accumulation, gradient checkpointing,
  bf16/fp16 on GPU, evaluation on the validation split, optional early stopping
* dvclive logs loss, learning rate, tokens/s and (on GPU) peak memory; on a terminal one progress
  bar shows the latest loss and tokens/s (the Trainer's printed log dicts are switched off)
* resumable: checkpoints live in a persistent directory with a fingerprint of
  everything that shapes the run; a matching fingerprint resumes, else it restarts; a finished
  run leaves only a fixed README there
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..config import LoraParams, ModelParams, TrainParams
from ..errors import UserError
from .formatting import IGNORE, encode
from .loading import INFO_FILE
from .templates import apply_template

log = logging.getLogger("sftpipe")
ADAPTER_METHODS = ("lora", "dora", "rslora")
# Code that shapes a run: a checkpoint written by other code is never resumed.
CODE_FILES = [Path(__file__).with_name(n) for n in ("train.py", "formatting.py", "templates.py", "loading.py")]
# What a finished run leaves in the checkpoint directory (a DVC output, warned about when empty).
CHECKPOINT_README = "README.txt"
CHECKPOINT_README_TEXT = ("Checkpoints of an interrupted train run, from which the next run resumes;\n"
                          "emptied when a run finishes.\n")


@dataclass
class TokenStats:
    rows: int = 0
    truncated: int = 0
    dropped_too_long: int = 0
    dropped_no_target: int = 0
    tokens: int = 0
    target_tokens: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def tokenize_rows(records: list[dict], tokenizer, train_params: TrainParams):
    """A ``datasets.Dataset`` of input_ids/labels, and what truncation did."""
    from datasets import Dataset

    def enc(batch):
        out = {"input_ids": [], "labels": [], "truncated": []}
        for row in batch["row"]:
            r = json.loads(row)
            e = encode(tokenizer, r["messages"], train_params.loss_on, max_length=train_params.max_length,
                       tools=r.get("tools"), reasoning=train_params.reasoning)
            out["input_ids"].append(e.input_ids)
            out["labels"].append(e.labels)
            out["truncated"].append(e.truncated)
        return out

    # rows as JSON text: Arrow would merge every message's keys into one struct type, giving each
    # call's arguments the keys of every other call's (as nulls) and each message a tool_calls: None
    ds = Dataset.from_dict({"row": [json.dumps({"messages": r["messages"], "tools": r.get("tools")},
                                               ensure_ascii=False) for r in records]})
    ds = ds.map(enc, batched=True, remove_columns=["row"], desc="tokenize")
    truncated = ds["truncated"]
    has_target = [any(lab != IGNORE for lab in labs) for labs in ds["labels"]]
    too_long = [t and train_params.truncation == "drop" for t in truncated]
    keep = [i for i in range(len(ds)) if has_target[i] and not too_long[i]]
    ds = ds.select(keep).remove_columns(["truncated"])
    ds = ds.add_column("length", [len(x) for x in ds["input_ids"]])
    stats = TokenStats(rows=len(ds), truncated=sum(truncated), dropped_too_long=sum(too_long),
                       dropped_no_target=sum(1 for h, d in zip(has_target, too_long) if not h and not d),
                       tokens=sum(ds["length"]),
                       target_tokens=sum(sum(lab != IGNORE for lab in labs) for labs in ds["labels"]))
    return ds, stats


def peft_config(train_params: TrainParams, lora_params: LoraParams, new_token_ids: list[int]):
    from peft import LoraConfig, PrefixTuningConfig, PromptTuningConfig, TaskType

    if train_params.method == "full":
        return None
    if train_params.method in ADAPTER_METHODS:
        kw = {"trainable_token_indices": new_token_ids} if new_token_ids else {}
        return LoraConfig(task_type=TaskType.CAUSAL_LM, r=lora_params.r, lora_alpha=lora_params.alpha,
                          lora_dropout=lora_params.dropout, target_modules=lora_params.target_modules,
                          use_dora=train_params.method == "dora", use_rslora=train_params.method == "rslora", **kw)
    if train_params.method == "prompt_tuning":
        return PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=train_params.num_virtual_tokens)
    return PrefixTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=train_params.num_virtual_tokens)


def adapter_input_casting(model, method: str, autocast: bool):
    """Skip peft's cast of each adapted layer's input to the adapter's fp32 while autocast runs.

    peft keeps LoRA weights in fp32 over a bf16/fp16 base and casts every adapted layer's input to fp32
    (a copy per layer), applies dropout in fp32, and then autocast casts it back to bf16 for the adapter's
    matmul (another copy): the matmul runs in bf16 either way, and dropout's scaling rounds to the same
    bf16 values, so the copies buy nothing. Profiled on an H100 (bench/train_profile_gpu.py, Qwen2-0.5B
    shape, r8 all-linear), they were ~35 ms of GPU time and ~1,300 of ~7,000 kernel launches per step.
    The fp32 master weights stay, and so does the Adam update's precision. Only for plain LoRA/rsLoRA
    (DoRA's variant forward is left as peft wrote it) and only under autocast: without it (CPU, fp32),
    the cast is what makes the dtypes match, and nothing changes there.
    """
    from peft.helpers import disable_input_dtype_casting

    return disable_input_dtype_casting(model, active=autocast and method in ("lora", "rslora"))


def packing_mode(train_params: TrainParams, attn: str) -> str:
    """padding_free where the attention runs varlen kernels on the packed row (flash-attention reads the
    sequence boundaries from position_ids); virtual-token methods prepend tokens per sequence, so they
    need padded batches. SDPA and eager also keep packed sequences apart, but through a dense
    (total_tokens x total_tokens) block-diagonal mask, so attention over the flattened batch costs the
    square of the batch's total tokens: ``auto`` picks padded (length-grouped) batches there."""
    if train_params.method in ("prompt_tuning", "prefix_tuning"):
        if train_params.packing == "padding_free":
            raise UserError(f"train.packing=padding_free does not work with train.method={train_params.method}; "
                            "use padded")
        return "padded"
    if train_params.packing != "auto":
        return train_params.packing
    return "padding_free" if attn in ("flash_attention_2", "flash_attention_3") else "padded"


def fingerprint(parts: dict, files: list[str | Path]) -> str:
    h = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode())
    for f in files:
        if Path(f).is_file():
            h.update(Path(f).read_bytes())
    return h.hexdigest()[:16]


def world_size() -> int:
    """Processes training together: ``WORLD_SIZE``, which torch.distributed.run and accelerate launch set."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def per_device_batch(batch_size: int, world: int) -> int:
    """Each process's share of ``batch_size``, the batch of all processes together."""
    if batch_size % world:
        raise UserError(f"batch_size {batch_size} does not split over {world} processes (it is the batch of "
                        f"all of them together): give a multiple of {world}, or run on another number of processes "
                        f"(num_processes)")
    return batch_size // world


def run_parts(model_params: ModelParams, train_params: TrainParams, lora_params: LoraParams, packing: str,
              world: int) -> dict:
    """What a checkpoint must match to be resumed: the params that shape the run and the number of
    processes that ran it (a checkpoint holds one RNG state per process), not how that number was asked
    for (``num_processes``: auto or N, or the environment)."""
    parts = {"model": model_params.model_dump(), "train": train_params.model_dump(exclude={"num_processes"}),
             "lora": lora_params.model_dump(), "packing": packing}
    if world > 1:  # only then, so a one-process run's fingerprint is what it was
        parts["world_size"] = world
    return parts


def _resumable(ckpt: Path, world_size: int) -> bool:
    """Whether ``ckpt`` holds all an exact resume reads. transformers writes the weights, the optimizer, the
    scheduler and the RNG states, then ``trainer_state.json``; but when it loads one it silently skips a
    missing optimizer, scheduler or RNG file, and the rotation (``save_total_limit``) deletes old
    checkpoints file by file, so a kill at the wrong moment can leave a checkpoint with its state but not
    its optimizer: it would resume, inexactly, without a word. Under several processes a checkpoint counts
    only once every process's RNG state is in it: rank 0 writes ``trainer_state.json`` without waiting for
    the other ranks' ``rng_state_<rank>.pth``. (FSDP saves its optimizer as ``optimizer_0/`` and its weights
    as ``pytorch_model_fsdp_0/``: anything named ``optimizer*`` / holding weights counts.)"""
    rng = [f"rng_state_{i}.pth" for i in range(world_size)] if world_size > 1 else ["rng_state.pth"]
    if not all((ckpt / f).is_file() for f in ["trainer_state.json", "scheduler.pt", *rng]):
        return False
    names = [p.name for p in ckpt.iterdir()]
    if not any(n.startswith("optimizer") for n in names) or \
            not any(n.endswith(".safetensors") or n.startswith(("pytorch_model", "model.safetensors")) for n in names):
        return False
    try:
        json.loads((ckpt / "trainer_state.json").read_text())
    except (ValueError, OSError):
        return False
    return True


def last_checkpoint(ckpt_dir: Path, fp: str, world_size: int = 1) -> str | None:
    """The newest complete checkpoint (:func:`_resumable`) of a run with the same fingerprint; wipes
    checkpoints of other runs. Called on the main process only (it deletes and writes)."""
    stamp = ckpt_dir / "fingerprint.json"
    if ckpt_dir.exists():
        same = stamp.is_file() and json.loads(stamp.read_text()).get("fingerprint") == fp
        if not same:
            shutil.rmtree(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps({"fingerprint": fp}) + "\n")
    steps = sorted((p for p in ckpt_dir.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[1].isdigit()),
                   key=lambda p: int(p.name.split("-")[1]))
    for p in reversed(steps):
        if _resumable(p, world_size):
            log.info("resuming from %s (%s)", p.name, ", ".join(sorted(x.name for x in p.iterdir())))
            return str(p)
        log.warning("checkpoint %s is incomplete (a run killed while writing or deleting it): not resumed from", p.name)
    return None


def _callbacks():
    from transformers import TrainerCallback

    class Throughput(TrainerCallback):
        """Adds tokens/s (non-padding tokens) and, on GPU, peak memory to every log line."""

        rate: float | None = None  # tokens/s of this process's steps (a resumed run counts only its own)

        def on_train_begin(self, args, state, control, **kw):
            self.t0, self.tok0 = time.perf_counter(), state.num_input_tokens_seen

        def _update(self, state):
            dt = time.perf_counter() - self.t0
            if dt > 0 and state.num_input_tokens_seen > self.tok0:
                self.rate = round((state.num_input_tokens_seen - self.tok0) / dt, 1)

        def on_log(self, args, state, control, logs=None, **kw):
            import torch

            if logs is None or "loss" not in logs:
                return
            self._update(state)
            if self.rate is not None:
                logs["tokens_per_s"] = self.rate
            if torch.cuda.is_available():
                logs["peak_mem_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)

        def on_train_end(self, args, state, control, **kw):
            self._update(state)

    return Throughput


def _progress_callback():
    """The class of the training progress bar: one tqdm bar over the optimizer steps, the latest
    loss and tokens/s in its postfix. Shown only when stderr is a terminal (``disable=None``, like
    the stages' bars); dvclive keeps every number, so nothing is printed per step."""
    from tqdm import tqdm
    from transformers import TrainerCallback

    class ProgressBar(TrainerCallback):
        bar = None

        def on_train_begin(self, args, state, control, **kw):
            if state.is_world_process_zero:
                self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="train", unit="step",
                                leave=False, disable=None, mininterval=1.0)

        def on_step_end(self, args, state, control, **kw):
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)

        def on_log(self, args, state, control, logs=None, **kw):
            if self.bar is None or not logs or "loss" not in logs:
                return
            postfix = {"loss": f"{logs['loss']:.4g}"}
            if logs.get("tokens_per_s") is not None:
                postfix["tokens/s"] = f"{logs['tokens_per_s']:.0f}"
            self.bar.set_postfix(postfix, refresh=False)

        def on_train_end(self, args, state, control, **kw):
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    return ProgressBar


def _trainer_class():
    """``Trainer`` whose length-grouped sampler draws each epoch's order from ``data_seed + epoch``.

    transformers' ``LengthGroupedSampler`` shuffles with the global torch RNG when the iterator is created.
    A run resumed mid-epoch creates it before the checkpoint's RNG state is restored, so it trained that
    epoch's remaining batches in another order than the uninterrupted run (the adapter differed after
    resume). Seeding by epoch makes the order a function of (data_seed, epoch) alone, like accelerate's
    seedable random sampler does for padding-free runs, and the same on every process.

    Under several processes accelerate cuts the sampler's index order into per-process batches of
    ``per_device_batch`` taken in turn, so each optimizer step reads the next ``global batch`` indices.
    The sampler groups by length with batch size ``per_device_batch x grad_accum x world_size`` (the
    rows of one optimizer step; transformers passes it without the world size), so N processes at
    per-device batch B/N read the same rows per step, in the same order, as one process at batch B.
    """
    import torch
    from transformers import Trainer
    from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices

    class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
        def __init__(self, *args, seed: int, **kw):
            super().__init__(*args, **kw)
            self.seed, self.epoch = seed, 0

        def set_epoch(self, epoch: int) -> None:
            self.epoch = epoch

        def __iter__(self):
            gen = torch.Generator().manual_seed(self.seed + self.epoch)
            return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=gen))

    class SFTTrainer(Trainer):
        def _get_train_sampler(self, train_dataset=None):
            sampler = super()._get_train_sampler(train_dataset)
            if type(sampler) is LengthGroupedSampler:
                return EpochSeededLengthGroupedSampler(sampler.batch_size * self.args.world_size,
                                                       lengths=sampler.lengths, seed=self.args.data_seed)
            return sampler

    return SFTTrainer


def train(train_rows: list[dict], val_rows: list[dict], model_params: ModelParams, train_params: TrainParams,
          lora_params: LoraParams, out_dir: str | Path, ckpt_dir: str | Path, live_dir: str | Path,
          data_files: list[str] = ()) -> dict:
    """Fine-tune, then save the adapter (or weights) to ``out_dir``; returns the run summary."""
    trainer, tokenizer, template, summary = fit(train_rows, val_rows, model_params, train_params, lora_params,
                                                ckpt_dir, live_dir, data_files)
    if trainer.is_world_process_zero():
        save(trainer.model, tokenizer, train_params, model_params, template, Path(out_dir))
        finish_checkpoints(Path(ckpt_dir))
    return summary


def finish_checkpoints(ckpt_dir: Path) -> None:
    """Empty the checkpoint directory of a finished run, leaving only the fixed :data:`CHECKPOINT_README`.

    Checkpoints only ever serve to resume an interrupted run: emptying the directory means a rerun starts
    afresh, and every finished run leaves the same DVC output, so switching between experiments never makes
    the train stage look changed. The README (the same bytes every run) keeps DVC from warning that the
    output is empty; :func:`last_checkpoint` ignores it."""
    for entry in ckpt_dir.iterdir():
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    (ckpt_dir / CHECKPOINT_README).write_bytes(CHECKPOINT_README_TEXT.encode())


def fit(train_rows: list[dict], val_rows: list[dict], model_params: ModelParams, train_params: TrainParams,
        lora_params: LoraParams, ckpt_dir: str | Path, live_dir: str | Path, data_files: list[str] = ()):
    """Run training (resuming when a matching checkpoint exists): (trainer, tokenizer, template, summary)."""
    import torch
    from dvclive import Live
    from peft import get_peft_model
    from transformers import (DataCollatorForSeq2Seq, DataCollatorWithFlattening, EarlyStoppingCallback,
                              PrinterCallback, TrainingArguments, set_seed)
    from transformers.integrations import DVCLiveCallback

    from .growth import grow_depth
    from .loading import (attn_implementation, dtype_for, fit_embeddings, load_model, load_tokenizer,
                          weights_precision)

    set_seed(train_params.seed)
    tokenizer = load_tokenizer(model_params)
    template = apply_template(tokenizer, model_params.template)
    model = load_model(model_params, precision=weights_precision(train_params.method, train_params.precision))
    new_ids = fit_embeddings(model, tokenizer)
    if train_params.grow_depth > 1:
        layers = model.config.num_hidden_layers
        grow_depth(model, train_params.grow_depth)
        log.info("train: grew %d decoder layers to %d (grow_depth %d: copies with zeroed output projections)",
                 layers, model.config.num_hidden_layers, train_params.grow_depth)
    train_ds, stats = tokenize_rows(train_rows, tokenizer, train_params)
    val_ds, _ = tokenize_rows(val_rows, tokenizer, train_params) if val_rows else (None, None)
    if len(train_ds) == 0:
        raise UserError("train: no training rows left after tokenization (check train.max_length)")
    log.info("train: %d rows (%d truncated, %d dropped), %d tokens, %d target tokens", len(train_ds),
             stats.truncated, stats.dropped_too_long + stats.dropped_no_target, stats.tokens, stats.target_tokens)

    cfg = peft_config(train_params, lora_params, new_ids)
    if cfg is not None:
        model = get_peft_model(model, cfg)
    if train_params.gradient_checkpointing:
        model.config.use_cache = False
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    packing = packing_mode(train_params, attn_implementation(model_params))
    if packing == "padding_free":
        collator = DataCollatorWithFlattening(return_position_ids=True, separator_id=IGNORE)
    else:
        # multiples of 8 help tensor cores; on CPU they only add positions (4% more on the sample data)
        collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE,
                                          pad_to_multiple_of=8 if torch.cuda.is_available() else None)

    dtype = dtype_for(train_params.precision)
    on_gpu = torch.cuda.is_available()
    has_val = val_ds is not None and len(val_ds) > 0
    early = train_params.early_stopping_patience is not None and has_val
    ckpt_dir = Path(ckpt_dir)
    world = world_size()
    per_device = per_device_batch(train_params.batch_size, world)
    args = TrainingArguments(
        output_dir=str(ckpt_dir), per_device_train_batch_size=per_device,
        per_device_eval_batch_size=per_device, gradient_accumulation_steps=train_params.grad_accum,
        learning_rate=train_params.lr, num_train_epochs=train_params.epochs, max_steps=train_params.max_steps,
        lr_scheduler_type=train_params.scheduler, warmup_steps=train_params.warmup_ratio,
        weight_decay=train_params.weight_decay, logging_steps=train_params.logging_steps,
        eval_strategy="steps" if has_val else "no", eval_steps=train_params.eval_steps,
        save_strategy="steps", save_steps=train_params.save_steps, save_total_limit=2,
        load_best_model_at_end=early, metric_for_best_model="eval_loss" if early else None,
        greater_is_better=False if early else None,
        seed=train_params.seed, data_seed=train_params.seed, bf16=on_gpu and dtype == torch.bfloat16,
        fp16=on_gpu and dtype == torch.float16, activation_checkpointing=train_params.gradient_checkpointing,
        train_sampling_strategy="group_by_length" if packing == "padded" else "random",
        length_column_name="length", include_num_input_tokens_seen="non_padding",
        remove_unused_columns=True, report_to=[], disable_tqdm=True, dataloader_num_workers=0,
        use_cpu=not on_gpu, save_only_model=False)
    fp = fingerprint(run_parts(model_params, train_params, lora_params, packing, world), [*data_files, *CODE_FILES])
    # rank 0 alone looks up (and may wipe) the checkpoints, and every process resumes from its answer
    resume = last_checkpoint(ckpt_dir, fp, world) if args.process_index == 0 else None
    if world > 1:
        from accelerate.utils import broadcast_object_list

        resume = broadcast_object_list([resume], from_process=0)[0]
    throughput = _callbacks()()
    # the bar after Throughput, which adds tokens/s to the logs it shows
    callbacks = [throughput, _progress_callback()()]
    if args.process_index == 0:  # dvclive's files are written by rank 0 alone (Live() clears its directory)
        live = Live(dir=str(live_dir), resume=resume is not None, dvcyaml=False, save_dvc_exp=False)
        callbacks.insert(1, DVCLiveCallback(live=live))
    if early:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=train_params.early_stopping_patience))
    trainer = _trainer_class()(model=model, args=args, train_dataset=train_ds,
                               eval_dataset=val_ds if has_val else None, data_collator=collator,
                               processing_class=tokenizer, callbacks=callbacks)
    # disable_tqdm=True makes the Trainer add PrinterCallback, which prints every log dict; dvclive keeps
    # every number and the bar shows the latest, so it goes
    trainer.remove_callback(PrinterCallback)
    if resume:
        log.info("train: resuming from %s", resume)
    t0 = time.perf_counter()
    with adapter_input_casting(trainer.model, train_params.method, autocast=args.bf16 or args.fp16):
        result = trainer.train(resume_from_checkpoint=resume)
    wall = time.perf_counter() - t0
    summary = {"method": train_params.method, "packing": packing, "template": template,
               "trainable_params": trainable, "total_params": total, "train_loss": round(result.training_loss, 4),
               "global_step": trainer.state.global_step, "resumed_from_step": _step_of(resume),
               "tokens_per_s": throughput.rate,
               "train_wall_s": round(wall, 1), **{f"data_{k}": v for k, v in stats.as_dict().items()}}
    if has_val:  # token-weighted, like the evaluate stage (the Trainer's eval_loss averages per-batch means)
        from .evaluation import response_loss

        loss, _ = response_loss(trainer.model.eval(), tokenizer, val_rows, train_params.batch_size,
                                train_params.max_length)
        summary["val_loss"] = round(loss, 4)
    return trainer, tokenizer, template, summary


def _step_of(ckpt: str | None) -> int:
    return int(ckpt.rsplit("-", 1)[1]) if ckpt else 0


def save(model, tokenizer, train_params: TrainParams, model_params: ModelParams, template: str,
         out_dir: Path) -> None:
    """Adapter (or full weights) in the standard format, safetensors only; optional merged model.
    Nothing run-dependent (timings) goes in here, so the same run gives the same bytes."""
    from ..io import atomic_path, write_json

    with atomic_path(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        _sort_target_modules(tmp / "adapter_config.json")
        tokenizer.save_pretrained(tmp)
        info = {"method": train_params.method, "base_model": model_params.name_or_path, "template": template,
                "adapter": train_params.method != "full", "merged": False}
        if train_params.grow_depth > 1:      # only then, so an ungrown run's bytes are what they were
            info["grow_depth"] = train_params.grow_depth
        if train_params.merge and train_params.method in ADAPTER_METHODS:
            merged = model.merge_and_unload()
            merged.save_pretrained(tmp / "merged", safe_serialization=True)
            tokenizer.save_pretrained(tmp / "merged")
            info["merged"] = True
        write_json(tmp / INFO_FILE, info)


def _sort_target_modules(path: Path) -> None:
    """peft writes target_modules from a set, in hash-seed order; sort it so equal runs give equal bytes."""
    if not path.is_file():
        return
    cfg = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(cfg.get("target_modules"), list):
        cfg["target_modules"] = sorted(cfg["target_modules"])
        path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
