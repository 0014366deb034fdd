"""Shared by the benchmark scripts: offline assets, interleaved timing, ratios, memory, tables.

Every figure the benches print is meant to be read as a ratio against a baseline that
ran in the same process, interleaved with it, because the machine may be shared:
absolute numbers move with the load, ratios of neighbouring runs move much less.
"""

from __future__ import annotations

import json
import os
import resource
import shlex
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1",
               "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_DISABLE_TELEMETRY": "1",
               "DVCLIVE_TEST": "", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}


def setup_env() -> None:
    """No network, quiet libraries. Call before importing transformers/datasets."""
    import logging
    import warnings

    for k, v in OFFLINE_ENV.items():
        if v:
            os.environ.setdefault(k, v)
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    for name in ("transformers", "datasets", "peft", "trl", "accelerate", "dvclive", "sftpipe", "httpx"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import sftpipe.config

    # the venv may hold an editable install of another checkout (/work/main):
    # make sure this checkout's modules are the ones measured.
    where = Path(sftpipe.config.__file__).resolve()
    if REPO not in where.parents:
        raise SystemExit(f"sftpipe is imported from {where}, not from {REPO}; run with PYTHONPATH=. from {REPO}")
    try:
        import datasets

        datasets.disable_progress_bars()
        datasets.disable_caching()
    except ImportError:
        pass
    try:
        import transformers

        transformers.logging.set_verbosity_error()
    except ImportError:
        pass


def command_line() -> str:
    """The exact command that produced the output, to print under every table."""
    return "PYTHONPATH=. python " + " ".join(shlex.quote(a) for a in sys.argv)


# --------------------------------------------------------------------------- assets

def sample_records(params, raw: str | Path) -> list[dict]:
    """The sample generated with ``params`` (a SampleParams) into ``raw``, read back through ``collect``
    as the pipeline reads it."""
    from sftpipe.collect.sources import collect
    from sftpipe.config import CollectParams, Source
    from sftpipe.sample import SOURCES, generate

    raw = Path(raw)
    generate(params, raw)
    return collect(CollectParams(sources=[Source(path=str(raw / f), name=n) for n, f in SOURCES.items()])).records


def build_assets(work: str | Path, rows_per_lang: int = 600, corpus_rows: int = 12000, vocab_size: int = 3000,
                 seed: int = 0, log=print) -> tuple[list[dict], Path]:
    """Sample rows (generated, then collected like the pipeline does) and the default tiny LLaMA.

    The model has the shape of ``BaseParams()`` (params.yaml's defaults: 192 hidden, 4 layers, 4 heads,
    512 intermediate) with random weights; that is enough for throughput. It is saved with
    ``save_pretrained`` so that it loads through ``ModelParams(name_or_path=dir)`` like the real one.
    Returns (records, model_dir); ``work/records.jsonl`` keeps the rows for child processes.
    """
    import torch

    from sftpipe.model.basemodel import build_model, train_tokenizer
    from sftpipe.config import BaseParams, SampleParams
    from sftpipe.io import write_jsonl
    from sftpipe.sample import pretrain_corpus

    work = Path(work)
    t0 = time.perf_counter()
    records = sample_records(SampleParams(rows_per_lang=rows_per_lang), work / "raw")
    base = BaseParams(vocab_size=vocab_size, seed=seed)
    tok = train_tokenizer(pretrain_corpus(list(base.languages), corpus_rows, seed), base.vocab_size)
    torch.manual_seed(seed)
    model = build_model(base, tok)
    model_dir = work / "base"
    model.save_pretrained(model_dir, safe_serialization=True)
    tok.save_pretrained(model_dir)
    write_jsonl(work / "records.jsonl", records)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"assets: {len(records)} collected rows, vocab {len(tok)}, {n_params / 1e6:.2f}M params "
        f"(hidden {base.hidden_size}, {base.num_layers} layers), built in {time.perf_counter() - t0:.1f}s")
    return records, model_dir


def load_assets(work: str | Path) -> tuple[list[dict], Path]:
    from sftpipe.io import read_jsonl

    work = Path(work)
    return read_jsonl(work / "records.jsonl"), work / "base"


def assets(args, log=print) -> tuple[list[dict], Path, tempfile.TemporaryDirectory | None]:
    """Reuse ``--assets DIR`` when given (and built), else build into a temp dir."""
    if getattr(args, "assets", None) and (Path(args.assets) / "records.jsonl").is_file():
        recs, d = load_assets(args.assets)
        return recs, d, None
    if getattr(args, "assets", None):
        Path(args.assets).mkdir(parents=True, exist_ok=True)
        recs, d = build_assets(args.assets, rows_per_lang=args.rows_per_lang, log=log)
        return recs, d, None
    tmp = tempfile.TemporaryDirectory(prefix="sftbench-")
    recs, d = build_assets(tmp.name, rows_per_lang=args.rows_per_lang, log=log)
    return recs, d, tmp


def pick(records: list[dict], n: int | None, seed: int = 0) -> list[dict]:
    """A fixed, seeded subset (all rows when n is None or larger than the pool)."""
    import random

    if n is None or n >= len(records):
        return list(records)
    idx = sorted(random.Random(seed).sample(range(len(records)), n))
    return [records[i] for i in idx]


def set_threads(n: int | None) -> int:
    """torch intra-op threads for the run (returned). See the ``--threads`` help of the benches."""
    import torch

    if n:
        torch.set_num_threads(n)
    return torch.get_num_threads()


THREADS_HELP = ("torch intra-op threads (default 1). With 2 threads on this 2-core machine, any other "
                "busy process makes torch's OpenMP barriers stall: a single-row forward of the tiny model "
                "went from ~4.6 ms (1 thread) to ~500 ms median (2 threads) while another agent trained. "
                "One thread keeps the ratios meaningful on a shared machine; use 0 for torch's default "
                "on an idle one")


class OtherLoad:
    """How busy the machine was with work other than this process, over a ``with`` block.

    From ``/proc/stat`` (all CPUs' busy and steal time) minus this process's own CPU time, in cores:
    0.0 on an idle machine, 1.0 when another process kept one core busy throughout. Steal is time the
    hypervisor gave the CPUs to other guests. Multi-threaded timings are only comparable when both are
    near 0, since a thread that loses its core stalls the others at every OpenMP barrier.
    ``None`` where ``/proc/stat`` does not exist.
    """

    @staticmethod
    def _sample():
        try:
            fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except OSError:
            return None
        hz = os.sysconf("SC_CLK_TCK")
        busy = sum(fields[i] for i in (0, 1, 2, 5, 6)) / hz  # user nice system irq softirq
        t = os.times()
        return time.perf_counter(), busy, fields[7] / hz if len(fields) > 7 else 0.0, t.user + t.system

    def __enter__(self):
        self.start, self.other, self.steal = self._sample(), None, None
        return self

    def __exit__(self, *exc):
        end = self._sample()
        if self.start and end:
            wall = end[0] - self.start[0]
            self.other = max(0.0, (end[1] - self.start[1]) - (end[3] - self.start[3])) / wall
            self.steal = (end[2] - self.start[2]) / wall

    @property
    def busy(self) -> bool:
        return self.other is not None and (self.other >= 0.2 or self.steal >= 0.2)

    def summary(self) -> str:
        if self.other is None:
            return "other load: unknown (no /proc/stat)"
        warn = ("  WARNING: the machine was busy; multi-threaded ratios are unreliable, rerun on an idle one"
                if self.busy else "")
        return f"other load during the run: {self.other:.2f} cores by other processes, {self.steal:.2f} stolen{warn}"


# --------------------------------------------------------------------------- timing

def interleave(runs: dict[str, Callable[[], dict]], repeats: int, warmup: bool | dict[str, Callable] = True,
               log=print) -> dict[str, list[dict]]:
    """Run every config ``repeats`` times, alternating the order between repeats.

    Each callable returns a dict of measurements (at least ``seconds``). With ``warmup`` every
    config runs once first, unrecorded, so lazy initialisation, allocator growth and caches are
    not charged to whichever config happens to go first (a dict gives a cheaper warm-up callable
    per config). Repeat r runs the configs in the
    listed order when r is even and in reverse when odd, so drift in machine load over time
    hits all configs alike; ratios are then taken within each repeat.
    """
    names = list(runs)
    out: dict[str, list[dict]] = {n: [] for n in names}
    if warmup:
        for n in names:
            t0 = time.perf_counter()
            (warmup[n] if isinstance(warmup, dict) else runs[n])()
            log(f"  warm-up {n}: {time.perf_counter() - t0:.1f}s")
    for r in range(repeats):
        order = names if r % 2 == 0 else names[::-1]
        for n in order:
            res = runs[n]()
            out[n].append(res)
            log(f"  repeat {r + 1}/{repeats} {n}: " + ", ".join(f"{k}={_fmt(v)}" for k, v in res.items()
                                                               if isinstance(v, (int, float))))
    return out


def median_of(results: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in results)


def ratios(num: list[dict], den: list[dict], key: str) -> list[float]:
    """Per-repeat ratios num[key] / den[key] (repeat i of one against repeat i of the other)."""
    return [a[key] / b[key] for a, b in zip(num, den)]


def spread(xs: list[float]) -> str:
    """'median [min..max]' of a list of ratios."""
    return f"{statistics.median(xs):.2f}x [{min(xs):.2f}..{max(xs):.2f}]"


def score_sets(params, model, tok, tests: dict[str, list[dict]]) -> dict:
    """Score a model on each test set as the evaluate stage does:
    ``{name: {exact_match, rougeL, loss, per_category_em}}``."""
    from sftpipe.model.evaluation import per_category, score_model

    ev, out = params.evaluate, {}
    for name, test in tests.items():
        scores, preds = score_model("sft", model.eval(), tok, test, ev.max_new_tokens, ev.batch_size,
                                    params.train.max_length)
        out[name] = {"exact_match": scores["exact_match"], "rougeL": scores["rougeL"], "loss": scores["loss"],
                     "per_category_em": {c: v["sft"]["exact_match"]
                                         for c, v in per_category(test, {"sft": preds}).items()}}
    return out


def train_and_score(params, rows: list[dict], val: list[dict], seed: int, tests: dict[str, list[dict]]) -> dict:
    """Train the student (params.yaml's model/train/lora, ``train.seed`` = ``seed``) on ``rows``, then
    :func:`score_sets` on ``tests``."""
    from sftpipe.model.loading import load_sft
    from sftpipe.model.train import train

    tp = params.train.model_copy(update={"seed": seed})
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        train(rows, val, params.model, tp, params.lora, t / "sft", t / "ckpt", t / "live")
        return score_sets(params, *load_sft(params.model, t / "sft"), tests)


def mean_range(v: list[float]) -> str:
    """'mean [min..max]' of a metric over seeds."""
    return f"{statistics.mean(v):.4f} [{min(v):.4f}..{max(v):.4f}]"


def seed_verdict(a: list[float], b: list[float]) -> tuple[float, float, str]:
    """(mean(a) - mean(b), twice the larger seed spread (max - min) of the two, the verdict): a difference
    within twice the spread is no difference."""
    gain = statistics.mean(a) - statistics.mean(b)
    bar = 2 * max(max(a) - min(a), max(b) - min(b))
    return gain, bar, "wins" if gain > bar else "loses" if -gain > bar else "no clear difference"


def _fmt(v) -> str:
    if isinstance(v, float):
        if v == 0 or 0.01 <= abs(v) < 1e5:
            return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
        return f"{v:.3g}"
    return str(v)


# --------------------------------------------------------------------------- memory

def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def hwm_rss_mb() -> float:
    """Peak RSS of this process image (VmHWM). Unlike ``ru_maxrss``, which Linux carries over from the
    parent across fork and exec (a child of a 1.3 GiB process reports at least 1.3 GiB), this
    starts afresh at exec, so it is the figure to read in a child process."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return peak_rss_mb()


def current_rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class RssSampler:
    """Highest RSS seen while the block runs (sampled every ``interval`` s from /proc/self/statm).

    ``ru_maxrss`` only ever grows, so it cannot tell configs apart within one process; this can,
    with the caveat that memory an earlier config freed but the allocator kept still counts.
    """

    def __init__(self, interval: float = 0.005):
        self.interval, self.peak, self.start = interval, 0.0, 0.0
        self._stop = threading.Event()

    def __enter__(self):
        self.start = self.peak = current_rss_mb()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, current_rss_mb())

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, current_rss_mb())


def child_peak_rss(argv: list[str], env: dict | None = None, timeout: float = 1800) -> dict:
    """Run ``python argv`` in a fresh process; it must print one JSON line last (with its own
    :func:`hwm_rss_mb`), which is returned."""
    import subprocess

    proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"child {argv} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- output

def table(headers: list[str], rows: list[list], title: str | None = None) -> str:
    cells = [[_fmt(c) if not isinstance(c, str) else c for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths))
    out = [title] if title else []
    out += [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in cells]
    return "\n".join(out)


def machine() -> str:
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"
            f"{gpu}, load avg {os.getloadavg()[0]:.2f}")
