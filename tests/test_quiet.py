"""What a stage prints: one progress bar (loss, tokens/s) instead of the Trainer's log dicts, no
third-party noise once the stage's logging is set up, and a finished run's checkpoint directory
that holds one fixed README which resuming ignores."""

from __future__ import annotations

import io
import os
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from sftpipe.config import LoraParams, ModelParams, TrainParams
from sftpipe.model import train as train_module

ROOT = Path(__file__).resolve().parents[1]
ROWS = [{"id": f"s:{i}", "label": "x", "source": "s", "meta": {},
         "messages": [{"role": "user", "content": f"What is {i} + {i}?"},
                      {"role": "assistant", "content": f"{i} + {i} = {2 * i}."}]} for i in range(16)]


class Terminal(io.StringIO):
    """A stderr that says it is a terminal, so bars made with ``disable=None`` draw."""

    def isatty(self):
        return True


def _state(**kw):
    return SimpleNamespace(**{"is_world_process_zero": True, "max_steps": 10, "global_step": 0, **kw})


def test_progress_bar_counts_steps_and_shows_loss_and_tokens_per_s(monkeypatch):
    monkeypatch.setattr(sys, "stderr", Terminal())
    cb = train_module._progress_callback()()
    state = _state()
    cb.on_train_begin(None, state, None)
    bar = cb.bar
    assert bar is not None and not bar.disable and bar.total == 10 and bar.n == 0
    state.global_step = 3
    cb.on_step_end(None, state, None)
    assert bar.n == 3
    cb.on_log(None, state, None, logs={"loss": 0.86213, "grad_norm": 0.3, "tokens_per_s": 2456.7})
    shown = str(bar)
    assert "loss=0.8621" in shown and "tokens/s=2457" in shown and "grad_norm" not in shown, shown
    # evaluation logs and the final summary log carry no "loss": the postfix keeps the training loss
    before = bar.postfix
    cb.on_log(None, state, None, logs={"eval_loss": 5.0})
    cb.on_log(None, state, None, logs={"train_loss": 7.0, "train_runtime": 1.0})
    assert bar.postfix == before
    cb.on_log(None, state, None, logs={"loss": 0.5})  # no tokens/s yet (Throughput adds it once it has a rate)
    assert "loss=0.5" in str(bar) and "tokens/s" not in str(bar)
    state.global_step = 10
    cb.on_step_end(None, state, None)
    assert bar.n == 10
    cb.on_train_end(None, state, None)
    assert cb.bar is None and bar.disable  # closed
    assert "{'loss'" not in sys.stderr.getvalue()


def test_progress_bar_starts_at_the_resumed_step_and_only_on_the_main_process(monkeypatch):
    monkeypatch.setattr(sys, "stderr", Terminal())
    cb = train_module._progress_callback()()
    cb.on_train_begin(None, _state(global_step=4), None)
    assert cb.bar.n == 4 and cb.bar.total == 10
    other = train_module._progress_callback()()
    other.on_train_begin(None, _state(is_world_process_zero=False), None)
    other.on_log(None, _state(), None, logs={"loss": 1.0})
    other.on_step_end(None, _state(global_step=1), None)
    assert other.bar is None


def test_progress_bar_is_silent_when_stderr_is_no_terminal(capsys):
    cb = train_module._progress_callback()()
    cb.on_train_begin(None, _state(), None)
    cb.on_log(None, _state(), None, logs={"loss": 1.0, "tokens_per_s": 10.0})
    cb.on_step_end(None, _state(global_step=1), None)
    cb.on_train_end(None, _state(), None)
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""


def test_trainer_prints_no_log_dicts(tmp_path, tiny_model_dir, capfd):
    from transformers import PrinterCallback, ProgressCallback

    mp = ModelParams(name_or_path=str(tiny_model_dir))
    tp = TrainParams(max_steps=3, batch_size=4, logging_steps=1, save_steps=100, eval_steps=100, max_length=64)
    trainer, *_ = train_module.fit(ROWS, [], mp, tp, LoraParams(r=2), tmp_path / "ckpt", tmp_path / "live")
    kinds = [type(cb) for cb in trainer.callback_handler.callbacks]
    assert PrinterCallback not in kinds and ProgressCallback not in kinds
    assert [k.__name__ for k in kinds].count("ProgressBar") == 1
    out = capfd.readouterr()
    assert "'loss'" not in out.out + out.err and "grad_norm" not in out.out + out.err
    # dvclive still has every logged step's numbers
    plots = tmp_path / "live" / "plots" / "metrics"
    for name in ("loss", "tokens_per_s"):
        assert len((plots / f"{name}.tsv").read_text().splitlines()) == 1 + 3, name


LOAD = """
import sys
if sys.argv[2] == "setup":
    from stages._common import _setup_logging
    _setup_logging("check")
from sftpipe.config import ModelParams
from sftpipe.model.loading import load_model, load_tokenizer
mp = ModelParams(name_or_path=sys.argv[1])
load_model(mp), load_tokenizer(mp)
"""


# the switches a stage's logging setup sets: a test that ran a stage in-process may have left them set
SWITCHES = ("TRANSFORMERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS")


def _run(code: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in SWITCHES}
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env=env)


@pytest.mark.parametrize("setup", ["setup", "bare"])
def test_loading_a_model_prints_nothing_after_stage_setup(tiny_model_dir, setup):
    proc = _run(LOAD, str(tiny_model_dir), setup)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    if setup == "setup":
        assert proc.stderr == ""
    else:  # without the stage's setup transformers draws its bar: what the check above would catch
        assert "Loading weights" in proc.stderr


TRAIN = """
import sys
from pathlib import Path
from stages._common import _setup_logging
_setup_logging("check")
import warnings
from sftpipe.config import LoraParams, ModelParams, TrainParams
from sftpipe.model.train import train
rows = [{"id": f"s:{i}", "label": "x", "source": "s", "meta": {},
         "messages": [{"role": "user", "content": f"What is {i} + {i}?"},
                      {"role": "assistant", "content": f"{i} + {i} = {2 * i}."}]} for i in range(16)]
out = Path(sys.argv[2])
tp = TrainParams(max_steps=4, batch_size=4, logging_steps=1, save_steps=2, eval_steps=2, max_length=64)
train(rows, rows[:4], ModelParams(name_or_path=sys.argv[1]), tp, LoraParams(r=2), out / "sft", out / "ckpt",
      out / "live")
# the filter is narrow: the same FutureWarning from elsewhere, or another one from there, still shows
warnings.warn_explicit("`is_gradient_checkpointing` is deprecated (elsewhere)", FutureWarning, "x.py", 1,
                       module="sftpipe.other")
warnings.warn_explicit("something else", FutureWarning, "modeling_utils.py", 1,
                       module="transformers.modeling_utils")
"""


def test_a_training_run_prints_only_its_log_lines(tmp_path, tiny_model_dir):
    """Stage setup + train(): no log dicts, no FutureWarning, no loading or tokenize bars; and the
    finished run leaves exactly the checkpoint README."""
    proc = _run(TRAIN, str(tiny_model_dir), str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    noise = [ln for ln in lines if not ln.startswith("[check] ")]
    # only the two warnings the script raises itself, each with its source line
    assert [ln for ln in noise if "Warning" in ln] == [
        "x.py:1: FutureWarning: `is_gradient_checkpointing` is deprecated (elsewhere)",
        "modeling_utils.py:1: FutureWarning: something else"], proc.stderr
    assert len(noise) == 2, proc.stderr
    assert any("train: 16 rows" in ln for ln in lines)
    ckpt = tmp_path / "ckpt"
    assert [p.name for p in ckpt.iterdir()] == [train_module.CHECKPOINT_README]
    assert (ckpt / "README.txt").read_bytes() == train_module.CHECKPOINT_README_TEXT.encode()


def test_checkpoint_readme_is_the_same_bytes_and_never_resumed_from(tmp_path):
    ckpt = tmp_path / "ckpt"
    (ckpt / "checkpoint-2").mkdir(parents=True)
    (ckpt / "checkpoint-2" / "trainer_state.json").write_text("{}")
    (ckpt / "fingerprint.json").write_text(json.dumps({"fingerprint": "abc"}))
    train_module.finish_checkpoints(ckpt)
    assert [p.name for p in ckpt.iterdir()] == ["README.txt"]
    first = (ckpt / "README.txt").read_bytes()
    assert b"interrupted" in first
    train_module.finish_checkpoints(ckpt)  # a second finished run: same bytes
    assert (ckpt / "README.txt").read_bytes() == first
    # after a finished run: nothing to resume, a fresh stamp
    assert train_module.last_checkpoint(ckpt, "abc") is None
    assert json.loads((ckpt / "fingerprint.json").read_text()) == {"fingerprint": "abc"}
    # the README next to real checkpoints of the same run is ignored, not parsed as one
    for step in (2, 4):
        complete_checkpoint(ckpt / f"checkpoint-{step}")
    (ckpt / "README.txt").write_bytes(first)
    assert train_module.last_checkpoint(ckpt, "abc") == str(ckpt / "checkpoint-4")


def complete_checkpoint(d, world_size: int = 1):
    """The files transformers writes into a checkpoint (their contents do not matter here)."""
    d.mkdir(parents=True, exist_ok=True)
    rng = [f"rng_state_{i}.pth" for i in range(world_size)] if world_size > 1 else ["rng_state.pth"]
    for f in ["model.safetensors", "optimizer.pt", "scheduler.pt", *rng]:
        (d / f).write_bytes(b"x")
    (d / "trainer_state.json").write_text("{}")


@pytest.mark.parametrize("damage", ["optimizer.pt", "scheduler.pt", "rng_state.pth", "model.safetensors",
                                    "truncated_state", "other_rank_rng"])
def test_an_incomplete_checkpoint_is_not_resumed_from(tmp_path, damage):
    """transformers silently skips a missing optimizer, scheduler or RNG file when it resumes, so a checkpoint
    that lost one (a kill while it was written or rotated out) would resume inexactly without a word: the
    newest complete one is used instead."""
    from sftpipe.model import train as train_module

    ckpt = tmp_path / "ckpt"
    world = 2 if damage == "other_rank_rng" else 1
    for step in (5, 10):
        complete_checkpoint(ckpt / f"checkpoint-{step}", world)
    (ckpt / "fingerprint.json").write_text(json.dumps({"fingerprint": "abc"}))
    assert train_module.last_checkpoint(ckpt, "abc", world) == str(ckpt / "checkpoint-10")
    newest = ckpt / "checkpoint-10"
    if damage == "truncated_state":
        (newest / "trainer_state.json").write_text('{"global_step": 1')
    elif damage == "other_rank_rng":
        (newest / "rng_state_1.pth").unlink()
    else:
        (newest / damage).unlink()
    assert train_module.last_checkpoint(ckpt, "abc", world) == str(ckpt / "checkpoint-5")
    # FSDP's layout: the optimizer and the weights as directories
    fsdp = ckpt / "checkpoint-15"
    complete_checkpoint(fsdp, world)
    for f in ("optimizer.pt", "model.safetensors"):
        (fsdp / f).unlink()
    (fsdp / "optimizer_0").mkdir()
    (fsdp / "pytorch_model_fsdp_0").mkdir()
    assert train_module.last_checkpoint(ckpt, "abc", world) == str(fsdp)


def test_transformers_warnings_stay_off_after_transformers_is_imported():
    """transformers sets its logger's level when first imported (from TRANSFORMERS_VERBOSITY), undoing
    a setLevel done before: its warnings (e.g. the checkpoint-rotation 'mtime may not be reliable',
    which fast saves trigger) must still not print; its errors must."""
    code = ("from stages._common import _setup_logging\n_setup_logging('check')\n"
            "from transformers.trainer_utils import logger\n"
            "logger.warning('mtime may not be reliable on this filesystem')\nlogger.error('an error')\n")
    proc = _run(code)
    assert proc.returncode == 0, proc.stderr
    assert "mtime" not in proc.stderr and "an error" in proc.stderr
