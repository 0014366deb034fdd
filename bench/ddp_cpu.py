"""Training on two CPU processes (DDP over gloo) against one process, through sftpipe's own ``fit``.

Three questions, each answered by runs of ``sftpipe.model.train.fit`` on the default model and rows
(``models/base``, ``data/select/train.jsonl``, the params' train/lora settings except as stated):

1. Loss: 2 processes against 1, both at ``batch_size`` G (the batch of all processes together: G/2
   rows each under 2; the same rows per optimizer step), dropout 0 so nothing random differs; and 1 process at batch G/2 x
   grad_accum 2, which changes only how the batch is cut into micro-batches, as the 2-process run does:
   it shows what reduction order alone costs. Per-step loss difference, final-weight difference, and
   whether every step saw the same number of tokens (the data order check).
2. Resume, through the train stage itself (``python -m stages.train`` with ``SFTPIPE_NUM_PROCESSES=2``,
   which relaunches itself under torch.distributed.run): a 2-process run (the params' LoRA dropout, 0.05,
   so each process's RNG stream matters) whose launcher is killed with SIGKILL once checkpoint-S is
   complete (its workers must stop on their own), then rerun, which resumes; against the same run
   uninterrupted: the saved adapters should be bit-identical.
3. Several nodes: configs/accelerate/multinode.yaml's launch path (accelerate launch -> torch.distributed.run,
   static rendezvous) as two single-process "nodes" on this host, against the 2-process stage run.
4. Wall time of each run (process start to exit, including imports; the machine may be shared).

    PYTHONPATH=. python bench/ddp_cpu.py                  # default model, 20 steps at G=16, ~6 min on 2 busy cores
    PYTHONPATH=. python bench/ddp_cpu.py --tiny --steps 12 --save-steps 6   # a 2-layer model built here, ~3 min
    PYTHONPATH=. python bench/ddp_cpu.py worker ...       # (internal) one run; under torch.distributed.run for 2

Each process runs one torch thread (OMP_NUM_THREADS=1): 2 processes use the machine's 2 cores, the
1-process runs use one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPO = Path(__file__).resolve().parents[1]
LOSS_TOL = 1e-4  # |per-step loss, 2 processes - 1 process|: fp32 reduction order only (measured ~1e-6)


# --------------------------------------------------------------------------- one run (in each process)

def worker(a) -> None:
    from bench._common import setup_env

    setup_env()
    import torch
    from safetensors.torch import save_file

    from sftpipe.config import load_params
    from sftpipe.io import read_jsonl
    from sftpipe.model.train import fit

    params = load_params(a.params)
    mp = params.model.model_copy(update={"name_or_path": a.model})
    tp = params.train.model_copy(update={"max_steps": a.steps, "batch_size": a.batch_size, "grad_accum": a.grad_accum,
                                         "logging_steps": 1, "save_steps": a.save_steps, "eval_steps": 10**9})
    lora = params.lora.model_copy(update={"dropout": a.dropout})
    rows = read_jsonl(a.train)
    t0 = time.perf_counter()
    trainer, _, _, summary = fit(rows, [], mp, tp, lora, Path(a.dir) / "ckpt", Path(a.dir) / "live")
    if trainer.is_world_process_zero():
        out = Path(a.dir)
        weights = {k: v.detach().contiguous().clone() for k, v in trainer.model.named_parameters() if v.requires_grad}
        save_file(weights, out / "weights.safetensors")
        logs = [h for h in trainer.state.log_history if "loss" in h and "step" in h]
        (out / "run.json").write_text(json.dumps({
            "world_size": trainer.args.world_size, "fit_s": time.perf_counter() - t0, "summary": summary,
            "steps": [{"step": h["step"], "loss": h["loss"], "tokens": h.get("num_input_tokens_seen")} for h in logs],
            "threads": torch.get_num_threads()}))


# --------------------------------------------------------------------------- the driver

def launch(a, d: Path, procs: int, batch: int, accum: int, dropout: float) -> dict:
    """One run of :func:`worker` as its own process(es); its rank 0's record, plus the wall time."""
    d.mkdir(parents=True, exist_ok=True)
    args = ["worker", "--dir", str(d), "--params", a.params, "--model", a.model, "--train", a.train,
            "--steps", str(a.steps), "--save-steps", str(a.save_steps), "--batch-size", str(batch),
            "--grad-accum", str(accum), "--dropout", str(dropout)]
    me = str(Path(__file__).resolve())
    cmd = ([sys.executable, me, *args] if procs == 1 else
           [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs), me, *args])
    t0 = time.perf_counter()
    with open(d / "log.txt", "w") as log:
        rc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)},
                            stdout=log, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        raise SystemExit(f"run failed (exit {rc}); see {d}/log.txt")
    run = json.loads((d / "run.json").read_text())
    run["wall_s"] = time.perf_counter() - t0
    return run


def stage_params(a, d: Path, batch: int) -> Path:
    """The params file with the bench's model, steps, batch and checkpoint interval (no evaluation)."""
    import yaml

    p = yaml.safe_load(Path(a.params).read_text(encoding="utf-8"))
    p["model"]["name_or_path"] = a.model
    p["train"].update(max_steps=a.steps, batch_size=batch, grad_accum=1, logging_steps=1, save_steps=a.save_steps,
                      eval_steps=10**9)
    d.mkdir(parents=True, exist_ok=True)
    (d / "data").mkdir(exist_ok=True)
    (d / "data" / "validation.jsonl").write_text("")
    (d / "params.yaml").write_text(yaml.safe_dump(p, allow_unicode=True), encoding="utf-8")
    return d / "params.yaml"


def stage(a, d: Path, procs: int, batch: int, kill_at: int | None = None) -> dict:
    """The train stage as dvc runs it, on ``procs`` processes (``SFTPIPE_NUM_PROCESSES``), outputs under ``d``.

    With ``kill_at``: once checkpoint-<kill_at> holds the trainer state and every rank's RNG state, SIGKILL
    the launcher alone (the stage's own pid, which exec'd into torch.distributed.run) and time how long its
    workers take to stop by themselves."""
    import psutil

    params = stage_params(a, d, batch)
    cmd = [sys.executable, "-m", "stages.train", "--params", str(params), "--data", str(d / "data"),
           "--train", a.train, "--out", str(d / "sft"), "--checkpoints", str(d / "ckpt"), "--live", str(d / "live"),
           "--metrics", str(d / "train.json"), "--picture", str(d / "curves.png")]
    env = {**os.environ, "SFTPIPE_NUM_PROCESSES": str(procs), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    t0 = time.perf_counter()
    log = open(d / "log.txt", "a")
    p = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    if kill_at is None:
        if p.wait() != 0:
            raise SystemExit(f"the stage failed (exit {p.returncode}); see {d}/log.txt")
        return {**json.loads((d / "train.json").read_text()), "wall_s": time.perf_counter() - t0}
    ck = d / "ckpt" / f"checkpoint-{kill_at}"
    need = ["trainer_state.json", *(f"rng_state_{i}.pth" for i in range(procs))]
    while p.poll() is None and not all((ck / f).is_file() for f in need):
        time.sleep(0.05)
    if p.poll() is not None:
        raise SystemExit(f"the run ended before checkpoint-{kill_at} could be killed; see {d}/log.txt")
    workers = psutil.Process(p.pid).children()
    p.kill()
    p.wait()
    t_kill = time.perf_counter()
    while any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers):
        if time.perf_counter() - t_kill > 30:
            raise SystemExit(f"workers {[w.pid for w in workers]} still run 30 s after their launcher was killed")
        time.sleep(0.05)
    done = sorted(int(c.name.split("-")[1]) for c in (d / "ckpt").glob("checkpoint-*"))
    return {"killed_with_checkpoints": done, "workers": len(workers), "workers_stop_s": time.perf_counter() - t_kill,
            "wall_s": t_kill - t0}


def multinode(a, d: Path, batch: int) -> dict:
    """configs/accelerate/multinode.yaml's launch path on one host: two "nodes" of one CPU process each
    (``--machine_rank 0`` and ``1``, rendezvous at 127.0.0.1), each started as ``python -m stages.train``
    with ``SFTPIPE_ACCELERATE_CONFIG``, writing to one directory (a shared filesystem)."""
    import socket

    params = stage_params(a, d, batch)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "stages.train", "--params", str(params), "--data", str(d / "data"),
           "--train", a.train, "--out", str(d / "sft"), "--checkpoints", str(d / "ckpt"), "--live", str(d / "live"),
           "--metrics", str(d / "train.json"), "--picture", str(d / "curves.png")]
    t0 = time.perf_counter()
    nodes = []
    for rank in (0, 1):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO),
               "SFTPIPE_ACCELERATE_CONFIG": str(REPO / "configs/accelerate/multinode.yaml"),
               "SFTPIPE_ACCELERATE_ARGS": f"--machine_rank {rank} --num_processes 2 --main_process_ip 127.0.0.1 "
                                          f"--main_process_port {port}"}
        nodes.append(subprocess.Popen(cmd, env=env, cwd=REPO, stdout=open(d / f"node{rank}.log", "w"),
                                      stderr=subprocess.STDOUT))
    if any(n.wait() != 0 for n in nodes):
        raise SystemExit(f"a node failed; see {d}/node*.log")
    return {**json.loads((d / "train.json").read_text()), "wall_s": time.perf_counter() - t0}


def weights(d: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(d / "weights.safetensors")


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def tiny_assets(d: Path) -> tuple[str, str]:
    """A 2-layer LLaMA and 640 rows of the sample (the test suite's tiny shape, a little wider)."""
    import torch

    from bench._common import setup_env

    setup_env()
    from sftpipe.config import BaseParams
    from sftpipe.io import write_jsonl
    from sftpipe.model.basemodel import build_model, train_tokenizer
    from sftpipe.sample import pretrain_corpus

    tok = train_tokenizer(pretrain_corpus(["en", "zh"], 400, seed=0), 600)
    torch.manual_seed(0)
    model = build_model(BaseParams(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128), tok)
    model.save_pretrained(d / "model", safe_serialization=True)
    tok.save_pretrained(d / "model")
    rows = [{"id": f"a:{i}", "source": "s", "label": "x", "meta": {},
             "messages": [{"role": "user", "content": f"What is {i} + {i * 7 % 13}?" + " Please." * (i % 5)},
                          {"role": "assistant", "content": f"{i} + {i * 7 % 13} = {i + i * 7 % 13}."}]}
            for i in range(640)]
    write_jsonl(d / "train.jsonl", rows)
    return str(d / "model"), str(d / "train.jsonl")


def main(a) -> None:
    from bench._common import command_line

    with tempfile.TemporaryDirectory(prefix="ddp_cpu_") as tmp:
        tmp = Path(tmp)
        if a.tiny:
            a.model, a.train = tiny_assets(tmp)
        for f in (a.model, a.train):
            if not Path(f).exists():
                raise SystemExit(f"{f}: missing (run `dvc repro` first, or use --tiny)")
        from sftpipe.config import load_params

        g, dropout = a.global_batch, load_params(a.params).lora.dropout
        runs = {}
        print(f"model {a.model}, rows {a.train}, {a.steps} steps, global batch {g}, checkpoint every {a.save_steps}",
              flush=True)
        for name, procs, batch, accum, drop in [("1p", 1, g, 1, 0.0), ("2p", 2, g, 1, 0.0),
                                                ("1p_accum", 1, g // 2, 2, 0.0)]:
            runs[name] = launch(a, tmp / name, procs, batch, accum, drop)
            print(f"  {name}: {procs} process(es), batch_size {batch} x accum {accum}, dropout {drop}: "
                  f"{runs[name]['wall_s']:.1f} s wall ({runs[name]['fit_s']:.1f} s in fit), "
                  f"train loss {runs[name]['summary']['train_loss']}", flush=True)
        killed = stage(a, tmp / "resume", 2, g, kill_at=a.save_steps)
        print(f"  resume: stage on 2 processes, launcher SIGKILLed with checkpoints "
              f"{killed['killed_with_checkpoints']} "
              f"after {killed['wall_s']:.1f} s; its {killed['workers']} workers stopped "
              f"{killed['workers_stop_s']:.1f} s later", flush=True)
        resumed = stage(a, tmp / "resume", 2, g)
        whole = stage(a, tmp / "whole", 2, g)
        print(f"  rerun: resumed from step {resumed['resumed_from_step']} to {resumed['global_step']} in "
              f"{resumed['wall_s']:.1f} s; uninterrupted stage run: {whole['wall_s']:.1f} s", flush=True)
        if a.multinode:
            mn = multinode(a, tmp / "multinode", g)
            print(f"  multinode.yaml: 2 nodes x 1 process on this host: {mn['global_step']} steps in "
                  f"{mn['wall_s']:.1f} s", flush=True)

        def per_step(x, y):
            ls = [abs(p["loss"] - q["loss"]) for p, q in zip(x["steps"], y["steps"], strict=True)]
            same_tokens = all(p["tokens"] == q["tokens"] for p, q in zip(x["steps"], y["steps"]))
            return max(ls), ls[-1], same_tokens

        print(f"\nLoss, same global batch ({g} rows per optimizer step), dropout 0, {a.steps} steps "
              f"(tolerance {LOSS_TOL:g} on every logged step):")
        print(f"{'comparison':34} {'max |dloss|':>12} {'|dloss| last':>12} {'max |dweight|':>14}  same tokens/step")
        for name, x, y in [("2 processes vs 1", "2p", "1p"), ("1 process, accum 2 vs batch G", "1p_accum", "1p"),
                           ("2 processes vs 1 process accum 2", "2p", "1p_accum")]:
            worst, last, same = per_step(runs[x], runs[y])
            dw = max_diff(weights(tmp / x), weights(tmp / y))
            print(f"{name:34} {worst:12.2e} {last:12.2e} {dw:14.2e}  {same}")
        worst = per_step(runs["2p"], runs["1p"])[0]
        print(f"2 processes vs 1 within {LOSS_TOL:g}: {'yes' if worst <= LOSS_TOL else 'NO'}")
        from safetensors.torch import load_file

        dw = max_diff(*(load_file(tmp / r / "sft" / "adapter_model.safetensors") for r in ("resume", "whole")))
        print(f"\nResume under 2 processes (the stage, LoRA dropout {dropout}): killed after "
              f"checkpoint-{a.save_steps}, rerun, vs uninterrupted: adapter max |dweight| = {dw:g} "
              f"({'bit-identical' if dw == 0 else 'DIFFERENT'}); "
              f"train loss of the rerun's own steps {resumed['train_loss']} vs the whole run's {whole['train_loss']}")
        if a.multinode:
            dw = max_diff(*(load_file(tmp / r / "sft" / "adapter_model.safetensors") for r in ("multinode", "whole")))
            print(f"multinode.yaml's launch (2 nodes x 1 process, static rendezvous on 127.0.0.1) vs "
                  f"SFTPIPE_NUM_PROCESSES=2: adapter max |dweight| = {dw:g}")
        print(f"\nWall (s, process start to exit): 1 process {runs['1p']['wall_s']:.1f}, 2 processes "
              f"{runs['2p']['wall_s']:.1f}; in fit: {runs['1p']['fit_s']:.1f} vs {runs['2p']['fit_s']:.1f}")
        print(command_line())


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd")
    w = sub.add_parser("worker")
    for k, v in [("--dir", None), ("--params", None), ("--model", None), ("--train", None)]:
        w.add_argument(k, required=True)
    for k in ("--steps", "--save-steps", "--batch-size", "--grad-accum"):
        w.add_argument(k, type=int, required=True)
    w.add_argument("--dropout", type=float, required=True)
    ap.add_argument("--params", default=str(REPO / "params.yaml"))
    ap.add_argument("--model", default=str(REPO / "models/base"))
    ap.add_argument("--train", default=str(REPO / "data/select/train.jsonl"))
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--save-steps", type=int, default=10)
    ap.add_argument("--global-batch", type=int, default=16)
    ap.add_argument("--tiny", action="store_true", help="a 2-layer model and 640 rows built here")
    ap.add_argument("--no-multinode", dest="multinode", action="store_false",
                    help="skip the run of configs/accelerate/multinode.yaml as two nodes on this host")
    a = ap.parse_args()
    if a.cmd == "worker":
        worker(a)
    else:
        main(a)
