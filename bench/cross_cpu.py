"""Do the data decisions depend on the CPU? Label-noise (and perplexity) outputs computed with this
machine's native kernels and with forced AVX2 kernels, each in a fresh process, compared.

numpy/scipy (OpenBLAS and numpy's own SIMD) and torch (ATen, MKL, oneDNN) choose kernels by
instruction set when they load, and different kernels round differently, so an AVX2 laptop and an
AVX-512 server compute slightly different floats from the same inputs. This script uses the
libraries' own switches to make this machine run the AVX2 kernels. It needs an AVX-512 machine for
the comparison to mean anything. For each stage it compares what the stage decides (the ids it
drops) and what it stores (the rounded scores in ``meta``).

    PYTHONPATH=. python bench/cross_cpu.py                    # label_noise, 3 sample seeds, ~3 min
    PYTHONPATH=. python bench/cross_cpu.py --tols 1e-4,1e-6   # also at sklearn's default tolerance
    PYTHONPATH=. python bench/cross_cpu.py --perplexity models/base   # also perplexity (after dvc repro)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import child_peak_rss, command_line, machine, sample_records, setup_env, table  # noqa: E402

# The kernels an AVX2-only x86-64 CPU gets, forced on a newer one.
AVX2 = {"OPENBLAS_CORETYPE": "Haswell", "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
        "ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="1234,1,2", help="sample seeds (1234 is params.yaml's)")
    ap.add_argument("--rows-per-lang", type=int, default=2400)
    ap.add_argument("--tols", default=None, help="label_noise.tol values to try (default: the params default)")
    ap.add_argument("--perplexity", default=None, metavar="MODEL_DIR", help="also compare perplexity scoring")
    ap.add_argument("--child", choices=["label_noise", "perplexity"], help=argparse.SUPPRESS)
    ap.add_argument("--rows", help=argparse.SUPPRESS)
    ap.add_argument("--tol", type=float, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def child(args) -> dict:
    """One stage's decisions and stored values, as the pipeline computes them, in this process's kernels."""
    from sftpipe.config import LabelNoiseParams, ModelParams, PerplexityParams
    from sftpipe.io import read_jsonl

    records = read_jsonl(args.rows)
    if args.child == "label_noise":
        from sftpipe.label_noise import label_noise_records

        res = label_noise_records(records, LabelNoiseParams(tol=args.tol))
        key = "label_quality"
    else:
        from sftpipe.model.loading import load_model, load_tokenizer
        from sftpipe.perplexity import perplexity_filter, score_rows

        mp, p = ModelParams(name_or_path=args.perplexity), PerplexityParams()
        model, tok = load_model(mp, precision=p.precision).eval(), load_tokenizer(mp)
        res = perplexity_filter(records, score_rows(model, tok, records, p), p)
        key = "ppl"
    rows = res.kept + [d["record"] for d in res.dropped]
    return {"dropped": sorted(d["id"] for d in res.dropped),
            "stored": {r["id"]: r["meta"].get(key) for r in rows}}


def sample_rows(seed: int, rows_per_lang: int, work: Path) -> Path:
    from sftpipe.config import SampleParams
    from sftpipe.io import write_jsonl

    path = work / f"rows{seed}.jsonl"
    write_jsonl(path, sample_records(SampleParams(seed=seed, rows_per_lang=rows_per_lang), work / f"raw{seed}"))
    return path


def compare(argv: list[str]) -> list:
    """Run ``argv`` natively and with AVX2 kernels; (dropped, ids decided differently, stored values differing)."""
    clear = {k: "" for k in AVX2}  # the native run must not inherit a forced setting
    native, avx2 = child_peak_rss(argv, env=clear), child_peak_rss(argv, env=AVX2)
    flipped = set(native["dropped"]) ^ set(avx2["dropped"])
    differ = sum(native["stored"][k] != avx2["stored"][k] for k in native["stored"])
    return [len(native["dropped"]), len(avx2["dropped"]), len(flipped), differ, len(native["stored"])]


def main(argv=None):
    args = parse(argv)
    setup_env()
    if args.child:
        print(json.dumps(child(args)))
        return
    import torch

    from sftpipe.config import LabelNoiseParams

    print(f"machine: {machine()}")
    if torch.backends.cpu.get_cpu_capability() != "AVX512":
        print("WARNING: this CPU has no AVX-512, so native and forced AVX2 kernels are the same: nothing to compare")
    tols = [float(t) for t in args.tols.split(",")] if args.tols else [LabelNoiseParams().tol]
    me = str(Path(__file__).resolve())
    rows = []
    with tempfile.TemporaryDirectory(prefix="sftcross-") as work:
        for seed in (int(s) for s in args.seeds.split(",")):
            path = sample_rows(seed, args.rows_per_lang, Path(work))
            for tol in tols:
                argv_ = [me, "--child", "label_noise", "--rows", str(path), "--tol", str(tol)]
                rows.append([f"label_noise tol={tol:g}", seed, *compare(argv_)])
                print(f"  {rows[-1]}", flush=True)
            if args.perplexity:
                argv_ = [me, "--child", "perplexity", "--rows", str(path), "--perplexity", args.perplexity]
                rows.append(["perplexity", seed, *compare(argv_)])
                print(f"  {rows[-1]}", flush=True)
    print()
    print(table(["stage", "sample seed", "dropped native", "dropped AVX2", "ids decided differently",
                 "stored scores differing", "rows"], rows,
                title="native kernels vs forced AVX2 kernels (fresh process each)"))
    print("\ndecisions identical across kernels:", all(r[4] == 0 for r in rows))
    print(f"command: {command_line()}")


if __name__ == "__main__":
    main()
