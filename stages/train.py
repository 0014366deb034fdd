"""train: SFT with transformers.Trainer + peft; resumable; dvclive logs; adapter under models/."""

import logging
import os
import shlex
import shutil
import sys
import threading
import time
from pathlib import Path

import click

from stages._common import log, stage


def launch_command(argv: list[str], env: dict, gpus: int, num_processes: int | str = "auto",
                   key: str = "train.num_processes") -> list[str] | None:
    """The command that reruns ``python -m stages.train argv`` as several processes, or None for one.

    How many processes on this machine: ``num_processes`` (the section's param, named ``key`` in errors;
    ``auto``: one per GPU when several GPUs are visible, else one), unless the environment variable
    ``SFTPIPE_NUM_PROCESSES`` overrides it for a run. Either only changes the speed: ``batch_size`` is the
    batch of all processes together.

    - inside a launched process (``LOCAL_RANK`` set), or ``SFTPIPE_SINGLE_PROCESS`` set: None.
    - ``SFTPIPE_ACCELERATE_CONFIG=file``: ``accelerate launch --config_file file`` (DDP, FSDP, several
      machines: configs/accelerate/), whatever the GPU count; a number of processes given by the
      environment or the param overrides the file's num_processes, ``SFTPIPE_ACCELERATE_ARGS`` adds launch
      options (``--machine_rank 1`` on the second node).
    - N > 1 processes: one per GPU when there are GPUs (``accelerate launch --multi_gpu``), else N CPU
      processes under ``torch.distributed.run --standalone`` (gloo; accelerate's own CPU launch needs
      mpirun). N = 1: one process.
    """
    from sftpipe.errors import UserError

    if "LOCAL_RANK" in env or env.get("SFTPIPE_SINGLE_PROCESS"):
        return None
    raw = env.get("SFTPIPE_NUM_PROCESSES", "").strip()
    if raw:
        if not (raw.isdigit() and int(raw) >= 1):
            raise UserError(f"SFTPIPE_NUM_PROCESSES={raw!r}: give a whole number of processes, 1 or more")
        n, source = int(raw), f"SFTPIPE_NUM_PROCESSES={raw}"
    else:
        n, source = (None if num_processes == "auto" else int(num_processes)), f"{key}: {num_processes}"
    config = env.get("SFTPIPE_ACCELERATE_CONFIG")
    script = ["-m", "stages.train", *argv]
    if config:
        if not Path(config).is_file():
            raise UserError(f"SFTPIPE_ACCELERATE_CONFIG={config}: no such file")
        how = ["--config_file", config, *(["--num_processes", str(n)] if n else []),
               *shlex.split(env.get("SFTPIPE_ACCELERATE_ARGS", ""))]
        return [_accelerate(), "launch", *how, *script]
    if n == 1 or (n is None and gpus < 2):
        return None
    if n is None:
        n = gpus
    if gpus:
        if n > gpus:
            raise UserError(f"{source} but {gpus} GPU(s) visible: one process per GPU")
        return [_accelerate(), "launch", "--multi_gpu", "--num_processes", str(n), *script]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n), *script]


def _accelerate() -> str:
    return shutil.which("accelerate") or str(Path(sys.executable).with_name("accelerate"))


def _own_args() -> list[str]:
    """This command's options as parsed, spelled out: the same whether it ran as ``sftpipe train ...``
    (what dvc.yaml runs; sys.argv[1:] would start with the group's "train") or ``python -m stages.train``."""
    ctx = click.get_current_context()
    args = []
    for p in ctx.command.params:
        if isinstance(p, click.Option) and p.expose_value and ctx.params.get(p.name) is not None:
            args += [p.opts[0], str(ctx.params[p.name])]
    return args


def exit_with_launcher(launcher: int | None = None, interval: float = 1.0) -> None:
    """End this process (within ``interval`` seconds) when its parent, the launcher, is gone.

    torch.distributed.run (under accelerate launch too) starts every worker in a session of its own, so
    a launcher killed with SIGKILL (the OOM killer, ``kill -9`` of dvc's process group) leaves its
    workers training on as orphans, writing checkpoints and models/sft behind the next run's back.
    SIGINT and SIGTERM need none of this: the launcher passes them on. ``launcher``: its pid, when known
    (a launcher killed before this runs has already left this process to another parent)."""
    parent = launcher or os.getppid()

    def watch():
        while True:
            if os.getppid() != parent:
                sys.stderr.write(f"[train] the launcher (pid {parent}) is gone: rank "
                                 f"{os.environ.get('RANK', '?')} stops\n")
                sys.stderr.flush()
                os._exit(1)
            time.sleep(interval)

    threading.Thread(target=watch, name="exit-with-launcher", daemon=True).start()


def _relaunch(num_processes: int | str = "auto", key: str = "train.num_processes") -> None:
    """Re-execute this command as several processes when :func:`launch_command` says so."""
    import torch

    if "LOCAL_RANK" in os.environ and os.environ.get("TORCHELASTIC_RUN_ID"):  # a worker of torch.distributed.run
        exit_with_launcher(int(os.environ.get("SFTPIPE_LAUNCHER_PID") or 0) or None)
    if int(os.environ.get("RANK", "0")) > 0:  # a launched replica: rank 0's log lines tell the story once
        log.setLevel(logging.WARNING)
    cmd = launch_command(_own_args(), dict(os.environ), torch.cuda.device_count(), num_processes, key)
    if cmd is None:
        return
    env = dict(os.environ, SFTPIPE_LAUNCHER_PID=str(os.getpid()))  # execve keeps the pid: the launcher's
    if cmd[0] == sys.executable and "OMP_NUM_THREADS" not in env:
        # CPU processes: torch's default of one thread per core in each would oversubscribe the cores
        n = int(cmd[cmd.index("--nproc_per_node") + 1])
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // n))
    log.info("relaunching: %s", " ".join(cmd[1:]))
    os.execve(cmd[0], cmd, env)


@stage("train", help="Fine-tune the model (LoRA, DoRA, rsLoRA, full, prompt or prefix tuning).")
@click.option("--data", default="data/split", show_default=True, help="holds validation.jsonl")
@click.option("--train", "train_file", default="data/select/train.jsonl", show_default=True,
              help="the training rows (select's choice of data/split/train.jsonl)")
@click.option("--out", default="models/sft", show_default=True)
@click.option("--checkpoints", default="models/checkpoints", show_default=True)
@click.option("--live", default="metrics/dvclive", show_default=True)
@click.option("--metrics", default="metrics/train.json", show_default=True)
@click.option("--picture", default="metrics/plots/training_curves.png", show_default=True)
@click.option("--section", type=click.Choice(["train", "teacher"]), default="train", show_default=True,
              help="the params group of the run (teacher: the create pipeline's teacher)")
def cli(params, data, train_file, out, checkpoints, live, metrics, picture, section):
    _relaunch(getattr(params, section).num_processes, f"{section}.num_processes")
    from sftpipe.io import read_jsonl, write_json
    from sftpipe.model.train import train
    from sftpipe.plots import by_epoch, read_dvclive_history, training_curves_png

    files = [Path(train_file), Path(data) / "validation.jsonl"]
    summary = train(read_jsonl(files[0]), read_jsonl(files[1]), params.model, getattr(params, section), params.lora,
                    out, checkpoints, live, data_files=files)
    if int(os.environ.get("RANK", "0")) == 0:
        write_json(metrics, summary)
        # dvclive's series: "loss" per logging step, "eval/loss" per evaluation ("train/loss" is the run's mean)
        history = read_dvclive_history(Path(live) / "plots")
        training_curves_png(by_epoch(history, ("loss", "eval/loss")), picture, x_label="epoch")
    log.info("%s on %d rows: %d steps, train loss %.4f, validation loss %s, %.0f tokens/s, %.2f%% params trainable",
             summary["method"], summary["data_rows"], summary["global_step"], summary["train_loss"],
             summary.get("val_loss"), summary["tokens_per_s"] or 0,
             100 * summary["trainable_params"] / summary["total_params"])


if __name__ == "__main__":
    cli()
