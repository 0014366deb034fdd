"""train: SFT with transformers.Trainer + peft; resumable; dvclive logs; adapter under models/."""

import os
import shutil
import sys
from pathlib import Path

import click

from stages._common import log, stage


def _relaunch_on_multi_gpu() -> None:
    """With several GPUs visible, rerun this command under `accelerate launch`: DDP over all of them,
    or the accelerate config file named by SFTPIPE_ACCELERATE_CONFIG (e.g. configs/accelerate/fsdp.yaml)."""
    import torch

    n = torch.cuda.device_count()
    if n > 1 and "LOCAL_RANK" not in os.environ and not os.environ.get("SFTPIPE_SINGLE_PROCESS"):
        launcher = shutil.which("accelerate") or str(Path(sys.executable).with_name("accelerate"))
        config = os.environ.get("SFTPIPE_ACCELERATE_CONFIG")
        how = ["--config_file", config] if config else ["--multi_gpu", "--num_processes", str(n)]
        log.info("%d GPUs visible: relaunching under accelerate launch %s", n, " ".join(how))
        os.execv(launcher, [launcher, "launch", *how, "-m", "stages.train", *sys.argv[1:]])


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
    _relaunch_on_multi_gpu()
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
