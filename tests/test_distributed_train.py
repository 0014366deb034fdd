"""Training on two CPU processes (DDP over gloo) through sftpipe's own code, shown running.

One launch of two processes (``torch.distributed.run --nproc_per_node 2``, this file as the worker, see
:func:`_worker`) checks, against a one-process run made meanwhile in the test process:

- two processes at ``batch_size`` 4 (the batch of both together: 2 rows each) train like one process at
  ``batch_size`` 4: the same rows in every optimizer step (tokens per step equal) and the same loss, step by
  step, within fp32 reduction-order noise;
- a two-process run resumed from its checkpoint ends bit-identical to the uninterrupted run (LoRA dropout
  on, so every process's RNG stream has to come back);
- the train stage's command (``sftpipe train``) run by both processes writes its outputs once, whole,
  from rank 0, and logs each line once.

Every launch costs each process ~10 s of imports on two busy cores, so the stage's own relaunch (asking
for two processes with ``SFTPIPE_NUM_PROCESSES=2`` re-executes ``sftpipe train`` under
torch.distributed.run) is checked up to the ``execve`` here, and run for real by ``bench/ddp_cpu.py``.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LOSS_TOL = 1e-4  # per-step |loss(2 processes) - loss(1 process)|; measured ~1e-6 (micro-batch shapes, fp32)
WEIGHT_TOL = 1e-5  # final trained weights; measured ~1e-7

# 120 rows of varied length: more than 50 x (per-device batch 2 x 1 accum) = 100, so transformers'
# length-grouped sampler, given the per-device batch alone, would cut the data into other mega-batches
# under two processes than under one (another row order); sftpipe gives it the global batch
ROWS = [{"id": f"s:{i}", "label": "x", "source": "s", "meta": {},
         "messages": [{"role": "user", "content": f"What is {i} + {i % 7}?" + " Quickly, please." * (i % 4)},
                      {"role": "assistant", "content": f"{i} + {i % 7} = {i + i % 7}."}]} for i in range(100)]
ROWS += [{"id": f"z:{i}", "label": "y", "source": "s", "meta": {},
          "messages": [{"role": "user", "content": f"{i}加{i}等于多少？"},
                       {"role": "assistant", "content": f"等于{2 * i}。"},
                       {"role": "user", "content": "再加一呢？"},
                       {"role": "assistant", "content": f"等于{2 * i + 1}。"}]} for i in range(20)]
STAGE_ROWS = 32  # the stage's run: 32 rows, 1 epoch, batch_size 8 (2 processes x 4 rows): 4 optimizer steps


def _tp(**kw):
    from sftpipe.config import TrainParams

    base = dict(max_steps=6, batch_size=4, lr=5e-3, logging_steps=1, save_steps=3, eval_steps=100, max_length=128)
    return TrainParams(**{**base, **kw})


def _env(**kw) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false",
            "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **kw}


def _steps(log_history) -> list[tuple[int, float, int]]:
    return [(h["step"], h["loss"], h["num_input_tokens_seen"]) for h in log_history if "loss" in h and "step" in h]


def _stage_workspace(d: Path, model_dir) -> list[str]:
    """params.yaml (the repo's, with the tiny model and a short run), rows and validation rows under ``d``;
    returns the stage's arguments."""
    import yaml

    from sftpipe.io import write_jsonl

    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    params["model"]["name_or_path"] = str(model_dir)
    params["lora"].update(r=4)
    params["train"].update(epochs=1, max_steps=-1, batch_size=8, lr=5e-3, logging_steps=1, save_steps=2,
                           eval_steps=2, max_length=128)
    d.mkdir(parents=True, exist_ok=True)
    (d / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True), encoding="utf-8")
    write_jsonl(d / "train.jsonl", ROWS[:STAGE_ROWS])
    (d / "split").mkdir(exist_ok=True)
    write_jsonl(d / "split" / "validation.jsonl", ROWS[100:104])
    return ["--params", str(d / "params.yaml"), "--data", str(d / "split"), "--train", str(d / "train.jsonl"),
            "--out", str(d / "sft"), "--checkpoints", str(d / "ckpt"), "--live", str(d / "live"),
            "--metrics", str(d / "train.json"), "--picture", str(d / "curves.png")]


def _worker(out: Path, model_dir: str) -> None:
    """Run by each of two processes: (a) the comparison run, dropout 0; (b) a run with LoRA dropout,
    uninterrupted, then resumed from its step-3 checkpoint (step 6's removed, as if killed between the
    saves); (c) ``sftpipe train`` into out/stage. Rank 0 writes the record of (a) and (b)."""
    import shutil

    import torch
    import torch.distributed as dist
    from safetensors.torch import save_file

    from sftpipe.config import LoraParams, ModelParams
    from sftpipe.model.train import fit

    mp = ModelParams(name_or_path=model_dir)
    trainer, _, _, a = fit(ROWS, [], mp, _tp(batch_size=4), LoraParams(r=4, dropout=0.0), out / "a", out / "la")
    rank0 = trainer.is_world_process_zero()
    record = {"world_size": trainer.args.world_size, "a": a, "a_steps": _steps(trainer.state.log_history)}
    if rank0:
        save_file({k: v.detach().contiguous() for k, v in trainer.model.named_parameters() if v.requires_grad},
                  out / "a.safetensors")
    lora = LoraParams(r=4, dropout=0.1)
    first, _, _, b = fit(ROWS, [], mp, _tp(batch_size=4), lora, out / "b", out / "lb")
    uninterrupted = {k: v.clone() for k, v in first.model.state_dict().items()}
    if rank0:
        record["b_checkpoints"] = sorted(p.name for p in (out / "b").glob("checkpoint-*"))
        record["b_rng_files"] = sorted(p.name for p in (out / "b" / "checkpoint-3").glob("rng_state*"))
        shutil.rmtree(out / "b" / "checkpoint-6")
    dist.barrier()
    second, _, _, again = fit(ROWS, [], mp, _tp(batch_size=4), lora, out / "b", out / "lb")
    resumed = second.model.state_dict()
    differing = [k for k in uninterrupted if not torch.equal(uninterrupted[k], resumed[k])]
    record.update(b=b, again=again, differing=differing)
    if rank0:
        (out / "record.json").write_text(json.dumps(record))

    from stages.cli import main

    main.main(["train", *_stage_workspace(out / "stage", model_dir)], standalone_mode=False)


# --------------------------------------------------------------------------- the launch command



@pytest.fixture(autouse=True)
def _restore_environ():
    """The stage commands run in-process here set the stages' logging switches in os.environ
    (HF_HUB_DISABLE_PROGRESS_BARS, ...); without this they leaked into later tests' subprocesses."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def test_launch_command_for_each_setting(tmp_path):
    from sftpipe.errors import UserError
    from stages.train import launch_command

    argv = ["--params", "params.yaml", "--section", "teacher"]
    tail = ["-m", "stages.train", *argv]
    assert launch_command(argv, {}, gpus=0) is None
    assert launch_command(argv, {}, gpus=1) is None
    assert launch_command(argv, {"SFTPIPE_NUM_PROCESSES": "1"}, gpus=4) is None
    # CPU processes: torch.distributed.run (accelerate's CPU launch needs mpirun)
    assert launch_command(argv, {"SFTPIPE_NUM_PROCESSES": "2"}, gpus=0) == [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *tail]
    # GPUs: one process per GPU, all of them unless told
    assert launch_command(argv, {}, gpus=4)[1:] == ["launch", "--multi_gpu", "--num_processes", "4", *tail]
    assert launch_command(argv, {"SFTPIPE_NUM_PROCESSES": "2"}, gpus=4)[1:5] == [
        "launch", "--multi_gpu", "--num_processes", "2"]
    # an accelerate config file: always used, with the count and launch options given
    cfg = REPO / "configs/accelerate/multinode.yaml"
    env = {"SFTPIPE_ACCELERATE_CONFIG": str(cfg),
           "SFTPIPE_ACCELERATE_ARGS": "--machine_rank 1 --main_process_ip 10.0.0.7"}
    assert launch_command(argv, env, gpus=0)[1:] == ["launch", "--config_file", str(cfg), "--machine_rank", "1",
                                                     "--main_process_ip", "10.0.0.7", *tail]
    assert launch_command(argv, {**env, "SFTPIPE_NUM_PROCESSES": "16"}, gpus=8)[3:6] == [
        str(cfg), "--num_processes", "16"]
    # inside a launched process, or when told: nothing
    assert launch_command(argv, {"SFTPIPE_NUM_PROCESSES": "2", "LOCAL_RANK": "0"}, gpus=0) is None
    assert launch_command(argv, {"SFTPIPE_SINGLE_PROCESS": "1"}, gpus=8) is None
    # the section's param, when the environment says nothing; the environment wins
    assert launch_command(argv, {}, gpus=0, num_processes=2) == [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *tail]
    assert launch_command(argv, {}, gpus=4, num_processes=1) is None
    assert launch_command(argv, {}, gpus=4, num_processes="auto")[1:5] == ["launch", "--multi_gpu", "--num_processes", "4"]
    assert launch_command(argv, {"SFTPIPE_NUM_PROCESSES": "1"}, gpus=0, num_processes=2) is None
    assert launch_command(argv, env, gpus=0, num_processes=4)[3:6] == [str(cfg), "--num_processes", "4"]
    with pytest.raises(UserError, match=r"^teacher.num_processes: 3 but 2 GPU\(s\) visible"):
        launch_command(argv, {}, gpus=2, num_processes=3, key="teacher.num_processes")
    for bad in ("0", "two", "-2"):
        with pytest.raises(UserError, match="SFTPIPE_NUM_PROCESSES"):
            launch_command(argv, {"SFTPIPE_NUM_PROCESSES": bad}, gpus=0)
    with pytest.raises(UserError, match="2 GPU"):
        launch_command(argv, {"SFTPIPE_NUM_PROCESSES": "4"}, gpus=2)
    with pytest.raises(UserError, match="no such file"):
        launch_command(argv, {"SFTPIPE_ACCELERATE_CONFIG": str(tmp_path / "nope.yaml")}, gpus=0)


@pytest.mark.parametrize("asked_by", ["param", "environment"])
def test_sftpipe_train_relaunches_itself_with_its_own_options(tmp_path, tiny_model_dir, monkeypatch, asked_by):
    """``sftpipe train ...`` (what dvc.yaml runs) asked for two CPU processes (``train.num_processes: 2`` in
    params.yaml, or ``SFTPIPE_NUM_PROCESSES=2``) execs torch.distributed.run on ``-m stages.train`` with its
    options, never the group's "train" (sys.argv[1:] would start with it)."""
    import yaml

    from click.testing import CliRunner

    from stages.cli import main

    seen = {}

    def execve(path, args, env):  # as if the process were replaced: nothing after it runs
        seen.update(path=path, args=args, env=env)
        raise SystemExit(77)

    monkeypatch.setattr(os, "execve", execve)
    for k in ("LOCAL_RANK", "RANK", "SFTPIPE_SINGLE_PROCESS", "SFTPIPE_ACCELERATE_CONFIG", "OMP_NUM_THREADS"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.delenv("SFTPIPE_NUM_PROCESSES", raising=False)
    args = _stage_workspace(tmp_path, tiny_model_dir)
    if asked_by == "environment":
        monkeypatch.setenv("SFTPIPE_NUM_PROCESSES", "2")
    else:
        params = yaml.safe_load((tmp_path / "params.yaml").read_text(encoding="utf-8"))
        params["train"]["num_processes"] = 2
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True), encoding="utf-8")
    result = CliRunner().invoke(main, ["train", *args, "--section", "train"])
    assert result.exit_code == 77, result.output
    assert seen["path"] == sys.executable
    assert seen["args"][1:7] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m"]
    assert seen["args"][7] == "stages.train" and sorted(seen["args"][8:]) == sorted([*args, "--section", "train"])
    # the workers learn the launcher's pid (this one: execve keeps it); one torch thread per core each
    assert seen["env"]["SFTPIPE_LAUNCHER_PID"] == str(os.getpid())
    assert seen["env"]["OMP_NUM_THREADS"] == str(max(1, (os.cpu_count() or 1) // 2))


def test_batch_size_is_the_batch_of_all_processes(monkeypatch):
    """train.batch_size is split over the processes (so num_processes changes the speed, not the run); a
    batch that does not split is one line naming the numbers."""
    from sftpipe.errors import UserError
    from sftpipe.model.train import per_device_batch, world_size

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert world_size() == 1
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert world_size() == 4
    assert per_device_batch(16, 1) == 16 and per_device_batch(16, 4) == 4 and per_device_batch(16, 16) == 1
    with pytest.raises(UserError, match=r"^batch_size 6 does not split over 4 processes .* multiple of 4, or .*num_processes"):
        per_device_batch(6, 4)


def test_shipped_accelerate_configs_parse():
    from accelerate.commands.config.config_args import load_config_from_file

    multi = load_config_from_file(str(REPO / "configs/accelerate/multinode.yaml"))
    assert multi.num_machines == 2 and multi.machine_rank == 0 and multi.main_process_port
    assert multi.num_processes % multi.num_machines == 0 and multi.rdzv_backend == "static" and multi.same_network
    assert multi.mixed_precision == "no"  # train.precision decides
    for name in ("ddp.yaml", "fsdp.yaml"):
        load_config_from_file(str(REPO / "configs/accelerate" / name))


def test_workers_stop_when_their_launcher_is_killed():
    """torch.distributed.run starts each worker in its own session: SIGKILL of the launcher alone would leave
    them training. The stage's workers watch their launcher and exit."""
    import psutil

    child = ("import time; from stages.train import exit_with_launcher; exit_with_launcher(interval=0.05); "
             "time.sleep(60)")
    parent = (f"import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', {child!r}], "
              "start_new_session=True); print(p.pid, flush=True); time.sleep(60)")
    launcher = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True, env=_env(),
                                cwd=REPO)
    worker = psutil.Process(int(launcher.stdout.readline()))
    time.sleep(0.5)  # the watch thread is up
    assert worker.is_running() and worker.status() != psutil.STATUS_ZOMBIE
    launcher.send_signal(signal.SIGKILL)
    launcher.wait()
    t0 = time.perf_counter()
    while worker.is_running() and worker.status() != psutil.STATUS_ZOMBIE:
        assert time.perf_counter() - t0 < 10, "the worker trains on after its launcher was killed"
        time.sleep(0.05)


# --------------------------------------------------------------------------- two processes, running


def test_two_processes_train_like_one_resume_and_write_once(tmp_path, tiny_model_dir):
    from safetensors.torch import load_file

    from sftpipe.config import LoraParams, ModelParams
    from sftpipe.model.loading import load_sft
    from sftpipe.model.train import fit

    out = tmp_path / "ddp"
    out.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", __file__,
           str(out), str(tiny_model_dir)]
    two = subprocess.Popen(cmd, env=_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:  # the one-process reference meanwhile: the same global batch (4 rows per optimizer step)
        mp = ModelParams(name_or_path=str(tiny_model_dir))
        trainer, _, _, one = fit(ROWS, [], mp, _tp(batch_size=4), LoraParams(r=4, dropout=0.0), tmp_path / "c1",
                                 tmp_path / "l1")
        log, _ = two.communicate(timeout=240)
    finally:
        two.kill()
    assert two.returncode == 0, log[-3000:]
    rec = json.loads((out / "record.json").read_text())
    assert rec["world_size"] == 2 and rec["a"]["global_step"] == one["global_step"] == 6

    # (a) the same rows in every optimizer step (each step's non-padding tokens over all processes), the same loss
    ref, got = _steps(trainer.state.log_history), rec["a_steps"]
    assert [s for s, _, _ in got] == [s for s, _, _ in ref] == list(range(1, 7))
    assert [t for _, _, t in got] == [t for _, _, t in ref]
    worst = max(abs(a - b) for (_, a, _), (_, b, _) in zip(got, ref))
    assert worst <= LOSS_TOL, f"per-step loss differs by {worst:.2e} between 2 processes and 1"
    mine = load_file(out / "a.safetensors")
    theirs = {k: v for k, v in trainer.model.named_parameters() if v.requires_grad}
    assert mine.keys() == theirs.keys()
    assert max((mine[k] - theirs[k]).abs().max().item() for k in mine) <= WEIGHT_TOL

    # (b) resume under two processes: every rank's RNG state in the checkpoint, a bit-identical end
    assert rec["b_checkpoints"] == ["checkpoint-3", "checkpoint-6"]
    assert rec["b_rng_files"] == ["rng_state_0.pth", "rng_state_1.pth"]
    assert rec["again"]["resumed_from_step"] == 3 and rec["again"]["global_step"] == 6
    assert rec["differing"] == []

    # (c) the stage on two processes: the processes split every batch, rank 0 alone writes, each log line once
    st = out / "stage"
    summary = json.loads((st / "train.json").read_text())
    assert summary["global_step"] == STAGE_ROWS // (2 * 4) and summary["data_rows"] == STAGE_ROWS
    assert summary["resumed_from_step"] == 0 and "val_loss" in summary
    assert log.count(f"lora on {STAGE_ROWS} rows: 4 steps") == 1 and log.count(f"train: {STAGE_ROWS} rows") == 1, log
    assert {p.name for p in (st / "ckpt").iterdir()} == {"README.txt"}  # finished: emptied by rank 0
    assert {"adapter_config.json", "adapter_model.safetensors", "sft_info.json", "tokenizer.json"} <= {
        p.name for p in (st / "sft").iterdir()}
    assert sorted(p.name for p in st.iterdir()) == ["ckpt", "curves.png", "live", "params.yaml", "sft", "split",
                                                    "train.json", "train.jsonl"]  # no temporary left behind
    load_sft(ModelParams(name_or_path=str(tiny_model_dir)), st / "sft")
    live = json.loads((st / "live" / "metrics.json").read_text())
    assert live["num_input_tokens_seen"] == summary["data_tokens"]  # every token once, over both ranks
    losses = (st / "live" / "plots" / "metrics" / "loss.tsv").read_text().splitlines()
    assert losses[0] == "step\tloss" and len(losses) - 1 == summary["global_step"]  # one row per step, none twice
    assert (st / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


if __name__ == "__main__":
    _worker(Path(sys.argv[1]), sys.argv[2])


def test_a_checkpoint_matches_the_process_count_not_how_it_was_asked_for():
    """num_processes auto and 1 on one process (or 2 asked by param or environment) resume each other's
    checkpoints; 1 process and 2 do not (one RNG state per process); a changed lr does not either."""
    from sftpipe.config import LoraParams, ModelParams, TrainParams
    from sftpipe.model.train import run_parts

    mp, lora = ModelParams(), LoraParams()

    def parts(world, **kw):
        return run_parts(mp, TrainParams(**kw), lora, "padded", world)

    assert parts(1, num_processes="auto") == parts(1, num_processes=1) == parts(1, num_processes=4)
    assert parts(2, num_processes=2) == parts(2, num_processes="auto")
    assert parts(2) != parts(1) and parts(1, lr=1e-3) != parts(1)
