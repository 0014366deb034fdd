"""Peak memory of label_noise and perplexity on generated rows: two passes over the file vs in memory.

Input: ``--rows`` N canonical records (the stage's input schema) of the sample's task families
(sftpipe.sample.tasks: short English and Chinese instruction rows, a system prompt on 10%), labelled
by family, with 5% of the labels drawn at random (noise for cleanlab to find; the family is kept in
``meta.family``, and label_noise's drops are scored against it: precision, recall, F1). Files are cached
under ``--data-dir``.

Each measurement runs in a freshly spawned process, which reports its own peak RSS (``VmHWM``) and
wall time, files included:

* ``label_noise-stream``: label_noise.label_noise_jsonl (what the stage runs);
  ``label_noise-memory``: io.read_jsonl + label_noise_records + ledger.write_filter_outputs;
* ``perplexity-stream``: perplexity.scan_file + filter_file, ``perplexity.chunk_rows`` rows at a time (what
  the stage runs); ``perplexity-memory``: io.read_jsonl + score_rows + ifd_rows + perplexity_filter +
  write_filter_outputs, with the built-in base model (``models/base``, run ``dvc repro base`` first);

and the outputs of the two paths are compared byte for byte (for perplexity only when N is at most
``chunk_rows``: beyond it the batches differ, so scores may differ in their last bits). Params: params.yaml.

    OMP_NUM_THREADS=1 PYTHONPATH=. python bench/back_memory.py --rows 100000 300000 --stages label_noise
    OMP_NUM_THREADS=1 PYTHONPATH=. python bench/back_memory.py --rows 300000 1000000 --stages label_noise \
        --paths stream --fit-rows 100000      # past label_noise.fit_rows: fitted on a sample
    OMP_NUM_THREADS=1 PYTHONPATH=. python bench/back_memory.py --rows 20000 100000 --stages perplexity \
        --chunk-rows 20000
"""

from __future__ import annotations

import argparse
import filecmp
import multiprocessing
import os
import random
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.dedup_memory import _hwm_mb  # noqa: E402
from sftpipe.io import dumps  # noqa: E402
from sftpipe.sample.tasks import CATEGORIES, GENERATORS, SYSTEM, WEIGHTS  # noqa: E402

OUTPUTS = ("kept.jsonl", "dropped.jsonl", "details.json", "metrics.json")
NOISE = 0.05


def write_rows(path: Path, rows: int, seed: int) -> None:
    """``rows`` records of the sample's task families (short instruction rows like the sample's, English and
    Chinese, a system prompt on 10%), labelled by family, 5% of the labels drawn at random."""
    tmp = path.with_suffix(".part")
    rng = random.Random(f"back-memory:{seed}")
    cats = list(CATEGORIES)
    with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
        for i in range(rows):
            lang = rng.choice(("en", "zh"))
            cat = rng.choices(cats, [WEIGHTS[c] for c in cats])[0]
            item = GENERATORS[cat](rng, lang)
            msgs = [{"role": "system", "content": SYSTEM[lang]}] if rng.random() < 0.1 else []
            msgs += [{"role": "user", "content": item.prompt}, {"role": "assistant", "content": item.response}]
            label = rng.choice(cats) if rng.random() < NOISE else cat
            fh.write(dumps({"id": f"gen:{i:09d}", "messages": msgs, "source": "gen", "label": label,
                            "meta": {"lang": lang, "family": cat}}) + "\n")
    os.replace(tmp, path)


def noisy_ids(path: Path) -> set[str]:
    """The rows whose label is not their task family (the truth label_noise is scored against)."""
    import json

    with open(path, encoding="utf-8") as fh:
        return {r["id"] for r in map(json.loads, fh) if r["label"] != r["meta"]["family"]}


def scored(out: Path, noisy: set[str]) -> str:
    """Precision / recall / F1 of the rows label_noise dropped, against the rows whose label was drawn wrong."""
    import json

    with open(out / "dropped.jsonl", encoding="utf-8") as fh:
        found = {json.loads(line)["id"] for line in fh}
    tp = len(found & noisy)
    p, r = tp / max(len(found), 1), tp / max(len(noisy), 1)
    return f"P {p:.3f} R {r:.3f} F1 {2 * p * r / max(p + r, 1e-9):.3f} ({len(noisy)} wrong labels)"


def child(mode: str, inp: Path, out: Path, chunk_rows: int, fit_rows: int | None = None) -> dict:
    """One measurement in this (fresh) process."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from sftpipe.config import load_params
    from sftpipe.io import read_jsonl
    from sftpipe.ledger import write_filter_outputs

    params = load_params(ROOT / "params.yaml")
    if fit_rows:
        params = params.model_copy(update={"label_noise": params.label_noise.model_copy(update={"fit_rows": fit_rows})})
    t = time.perf_counter()
    if mode == "label_noise-stream":
        from sftpipe.label_noise import label_noise_jsonl
        m, _ = label_noise_jsonl(inp, out, out / "metrics.json", params.label_noise)
    elif mode == "label_noise-memory":
        from sftpipe.label_noise import label_noise_records
        records = read_jsonl(inp)
        m = write_filter_outputs("label_noise", records, label_noise_records(records, params.label_noise), out,
                                 out / "metrics.json")
    else:
        from sftpipe.model.loading import load_model, load_tokenizer
        from sftpipe.perplexity import (filter_file, ifd_rows, perplexity_filter, scan_file, score_rows)

        p = params.perplexity.model_copy(update={"chunk_rows": chunk_rows})
        mp = params.model.model_copy(update={"name_or_path": str(ROOT / "models" / "base")})
        model, tok = load_model(mp).eval(), load_tokenizer(mp)

        def score(rows):
            s = score_rows(model, tok, rows, p)
            return s, ifd_rows(model, tok, rows, p, s)

        if mode == "perplexity-stream":
            m, _, _ = filter_file(inp, out, out / "metrics.json", scan_file(inp, p.chunk_rows, p, score), p)
        else:
            records = read_jsonl(inp)
            s, f = score(records)
            m = write_filter_outputs("perplexity", records, perplexity_filter(records, s, p, f), out,
                                     out / "metrics.json")
    return {"mode": mode, "rows": m["rows_in"], "secs": time.perf_counter() - t, "peak_mb": _hwm_mb(), "metrics": m}


def run_child(mode: str, inp: Path, out: Path, chunk_rows: int, fit_rows: int | None = None) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(child, mode, inp, out, chunk_rows, fit_rows).result()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[100_000])
    ap.add_argument("--stages", nargs="+", choices=("label_noise", "perplexity"), default=["label_noise", "perplexity"])
    ap.add_argument("--paths", nargs="+", choices=("memory", "stream"), default=["memory", "stream"])
    ap.add_argument("--chunk-rows", type=int, default=None, help="perplexity.chunk_rows (default: params.yaml)")
    ap.add_argument("--fit-rows", type=int, default=None,
                    help="label_noise.fit_rows (default: params.yaml); rows past it are scored by the fold models")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-dir", default="/tmp/backmem")
    args = ap.parse_args(argv)

    from sftpipe.config import load_params
    chunk_rows = args.chunk_rows or load_params(ROOT / "params.yaml").perplexity.chunk_rows
    data = Path(args.data_dir)
    data.mkdir(parents=True, exist_ok=True)
    print(f"params.yaml; perplexity.chunk_rows {chunk_rows}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
    results = []
    for n in sorted(args.rows):
        src = data / f"rows-{n}-seed{args.seed}.jsonl"
        if not src.exists():
            write_rows(src, n, args.seed)
            print(f"generated {n} rows ({src.stat().st_size / 1e6:.0f} MB)", flush=True)
        noisy = noisy_ids(src) if "label_noise" in args.stages else set()
        for stage in args.stages:
            for path in args.paths:
                r = run_child(f"{stage}-{path}", src, data / f"run-{stage}-{path}-{n}", chunk_rows, args.fit_rows)
                results.append(r)
                m = r["metrics"]
                quality = ""
                if stage == "label_noise":
                    quality = (f"; fit on {m.get('fit_rows', m['checked'])} rows; "
                               f"{scored(data / f'run-{stage}-{path}-{n}', noisy)}")
                print(f"{r['mode']:20s} {n:>9d} rows  {r['secs']:7.0f} s  {r['rows'] / r['secs']:7.0f} rows/s  "
                      f"peak RSS {r['peak_mb']:7.0f} MB  out {m['kept']} kept, {m['dropped']} dropped{quality}",
                      flush=True)
            if len(args.paths) == 2 and (stage == "label_noise" or n <= chunk_rows):
                a, b = (data / f"run-{stage}-{p}-{n}" for p in args.paths)
                same = all(filecmp.cmp(a / f, b / f, shallow=False) for f in OUTPUTS)
                print(f"{stage:20s} {n:>9d} rows  stream vs memory outputs byte-identical: {'yes' if same else 'NO'}",
                      flush=True)
            for p in args.paths:
                shutil.rmtree(data / f"run-{stage}-{p}-{n}", ignore_errors=True)
    print(f"\n{'stage, path':20s} {'rows':>10s} {'seconds':>8s} {'rows/s':>8s} {'peak RSS MB':>12s}")
    for r in results:
        print(f"{r['mode']:20s} {r['rows']:>10d} {r['secs']:8.0f} {r['rows'] / r['secs']:8.0f} {r['peak_mb']:12.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
