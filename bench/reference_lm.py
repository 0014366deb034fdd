"""Perplexity filter on a user's own data: the built-in base model as reference vs a reference LM fitted
on the rows (``perplexity.reference: model`` vs ``fit``), against ground truth.

"User data" that is not the generated sample, built at run time, offline, from real English text on
this machine: one instruction row per documented public function, class or method of a fixed list of
standard-library modules (and numpy's, when installed). The prompt asks what the object does
("Explain what `json.dumps` does."), in one of a few phrasings; the response is the first paragraph of
its docstring. Rows whose response repeats another's (inherited docstrings) are left out, as dedup
would. Then ``--garbage`` of the rows (5%) get a garbage response from the project's own generator
(``sftpipe.sample.defects.garbage``, every kind in turn, as the sample injects them), and the truth is
kept. The rows go through ``collect`` (language detection, ids) and ``clean`` as in the pipeline.

Both references score the same rows with params.yaml's perplexity settings (bounds: mad_k, group_by,
...); the figures are the share of garbage rows the filter removes and the share of clean rows it
removes, per garbage kind too. The fit time is the whole fit (tokenizer, steps, saving).

    PYTHONPATH=. python bench/reference_lm.py                          # ~10 min on 2 shared cores
    PYTHONPATH=. python bench/reference_lm.py --fit-epochs 2 --mode full
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import REPO, command_line, machine, set_threads, setup_env, table  # noqa: E402

MODULES = [
    "abc", "argparse", "array", "ast", "asyncio", "base64", "bisect", "bz2", "calendar", "cmd", "codecs",
    "collections", "concurrent.futures", "configparser", "contextlib", "copy", "csv", "dataclasses", "datetime",
    "decimal", "difflib", "dis", "email.message", "email.utils", "enum", "filecmp", "fileinput", "fnmatch",
    "fractions", "ftplib", "functools", "getopt", "gettext", "glob", "gzip", "hashlib", "heapq", "hmac", "html",
    "html.parser", "http.client", "http.cookies", "http.server", "imaplib", "importlib", "inspect", "io",
    "ipaddress", "itertools", "json", "keyword", "linecache", "locale", "logging", "logging.handlers", "lzma",
    "mailbox", "math", "mimetypes", "multiprocessing", "netrc", "numbers", "operator", "os", "os.path", "pathlib",
    "pdb", "pickle", "pickletools", "pkgutil", "platform", "plistlib", "poplib", "pprint", "profile", "pstats",
    "queue", "quopri", "random", "re", "reprlib", "sched", "secrets", "selectors", "shelve", "shlex", "shutil",
    "signal", "smtplib", "socket", "socketserver", "sqlite3", "ssl", "stat", "statistics", "string", "struct",
    "subprocess", "symtable", "sysconfig", "tabnanny", "tarfile", "tempfile", "textwrap", "threading", "timeit",
    "token", "tokenize", "trace", "traceback", "tracemalloc", "types", "typing", "unicodedata", "unittest",
    "urllib.parse", "urllib.request", "uuid", "warnings", "wave", "weakref", "webbrowser", "xml.dom.minidom",
    "xml.etree.ElementTree", "zipfile", "zlib", "zoneinfo",
    "numpy", "numpy.linalg", "numpy.random", "numpy.fft", "numpy.ma", "numpy.polynomial.polynomial",
]
PROMPTS = ["Explain what `{}` does.", "What does `{}` do in Python?", "Describe the purpose of `{}`.",
           "In a sentence or two, what is `{}` for?", "Summarize the documentation of `{}`."]


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=3000, help="rows (before garbage) drawn from the docstrings")
    ap.add_argument("--garbage", type=float, default=0.05, help="share of rows given a garbage response")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--base-model", default=str(REPO / "models" / "base"),
                    help="today's default reference (the base stage's output)")
    ap.add_argument("--fit-epochs", default=None, help="comma list: a fitted run per value (default: params)")
    ap.add_argument("--fit-max-steps", type=int, default=None)
    ap.add_argument("--fit-vocab", type=int, default=None)
    ap.add_argument("--mode", choices=["response", "full"], default=None, help="default: params")
    ap.add_argument("--units", default="token,byte",
                    help="comma list of perplexity.unit values, each measured on the same fitted reference")
    ap.add_argument("--no-model", action="store_true", help="skip the built-in base model's run (to try fit knobs)")
    ap.add_argument("--keep", default=None, help="directory to keep the rows and fitted models in")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--max-ifd-sweep", type=float, nargs="*", default=[1.0, 1.05, 1.1, 1.2],
                    help="other perplexity.max_ifd values to measure on the fitted reference's scores")
    return ap.parse_args(argv)


def first_paragraph(doc: str) -> str | None:
    para = " ".join(line.strip() for line in doc.strip().split("\n\n")[0].splitlines()).strip()
    if not 30 <= len(para) <= 600 or ">>>" in para or "(" in para.split(" ")[0]:
        return None     # too short or long, an example, or a C signature line ("dumps(obj) -> str")
    return para


def docstring_pairs() -> list[tuple[str, str]]:
    """(qualified name, first docstring paragraph) for the public objects of MODULES, in a fixed order."""
    out, seen_obj = [], set()
    for modname in MODULES:
        try:
            mod = importlib.import_module(modname)
        except ImportError:
            continue
        for name, obj in sorted(vars(mod).items()):
            if name.startswith("_") or id(obj) in seen_obj:
                continue
            if not (inspect.isclass(obj) or inspect.isfunction(obj) or inspect.isbuiltin(obj)
                    or type(obj).__name__ == "ufunc"):
                continue
            if str(getattr(obj, "__module__", None) or modname).split(".")[0].lstrip("_") \
                    != modname.split(".")[0]:
                continue    # re-exported from elsewhere
            seen_obj.add(id(obj))
            members = [(f"{modname}.{name}", obj)]
            if inspect.isclass(obj):
                members += [(f"{modname}.{name}.{m}", v) for m, v in sorted(vars(obj).items())
                            if not m.startswith("_") and callable(v)]
            for qual, o in members:
                doc = inspect.getdoc(o) if qual.count(".") == modname.count(".") + 1 else getattr(o, "__doc__", None)
                para = first_paragraph(doc) if isinstance(doc, str) else None
                if para:
                    out.append((qual, para))
    return out


def build_rows(args, work: Path) -> tuple[list[dict], dict[str, str | None]]:
    """The collected, cleaned rows and truth (id -> garbage kind or None)."""
    from sftpipe.clean import clean_records
    from sftpipe.collect.sources import collect
    from sftpipe.config import CleanParams, CollectParams, Source
    from sftpipe.sample import pretrain_corpus
    from sftpipe.sample.defects import GARBAGE_TYPES, garbage

    rng = random.Random(args.seed)
    pairs, seen = [], set()
    for qual, para in docstring_pairs():
        if para not in seen:
            seen.add(para)
            pairs.append((qual, para))
    total = len(pairs)
    rng.shuffle(pairs)
    pairs = pairs[: args.rows]
    zh_texts = [d for d in pretrain_corpus(["zh"], 200, args.seed)]   # only the bytes mojibake is made of
    k = round(len(pairs) * args.garbage)
    garb = set(rng.sample(range(len(pairs)), k))
    rows, kinds = [], []
    for i, (qual, para) in enumerate(pairs):
        kind = None
        response = para
        if i in garb:
            kind = GARBAGE_TYPES[len([j for j in garb if j < i]) % len(GARBAGE_TYPES)]
            response = garbage(rng, kind, "en", para, rng.choice(zh_texts))
        rows.append({"id": f"doc{i:05d}", "instruction": rng.choice(PROMPTS).format(qual), "input": "",
                     "output": response})
        kinds.append(kind)
    path = work / "docstrings.json"
    path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    res = collect(CollectParams(sources=[Source(path=str(path), name="docstrings", format="alpaca")]))
    by_raw = {r["id"]: k for r, k in zip(rows, kinds)}
    recs = res.records
    truth = {}
    for r in recs:
        raw_id = r["id"].split(":", 1)[-1]
        truth[r["id"]] = by_raw.get(raw_id)
    cleaned = clean_records(recs, CleanParams()).kept
    print(f"rows: {len(pairs)} of {total} unique docstring paragraphs, {k} garbage "
          f"({len(recs)} collected, {len(cleaned)} after clean); "
          f"lang: {dict(sorted(_count(r['meta']['lang'] for r in cleaned).items()))}")
    return cleaned, truth


def _count(xs):
    from collections import Counter

    return Counter(xs)


def without_rules(ppl_params):
    """Perplexity bounds only: no text rules, no IFD cap."""
    return ppl_params.model_copy(update={"rules": ppl_params.rules.model_copy(update={"enabled": False}),
                                         "max_ifd": None})


def variants(label: str, records, truth, scores, ifd, ppl_params, keep, extra) -> list[list]:
    """The stage's filter on one reference's scores: bounds only, + text rules, + the IFD cap (defaults)."""
    rules_only = ppl_params.model_copy(update={"max_ifd": None})
    if keep is not None:     # per row, to look into and to try other IFD caps on
        with open(keep / f"scores {label}.jsonl", "w", encoding="utf-8") as fh:
            for r, s, f in zip(records, scores, ifd if ifd is not None else [None] * len(records)):
                fh.write(json.dumps({"id": r["id"], "garbage": truth[r["id"]], "lang": r["meta"]["lang"], "ppl": s,
                                     "ifd": f, "response": r["messages"][-1]["content"][:200]},
                                    ensure_ascii=False) + "\n")
    return [measure(label + ", perplexity only", records, truth, scores, without_rules(ppl_params)) + extra,
            measure("  + text rules", records, truth, scores, rules_only) + ["", "", ""],
            measure(f"  + text rules + IFD > {ppl_params.max_ifd} (the stage's defaults)", records, truth, scores,
                    ppl_params, ifd=ifd) + ["", "", ""]]


def measure(name: str, records: list[dict], truth: dict, scores, ppl_params, ifd=None) -> list:
    """One table row: the perplexity stage's filter (bounds, and the text rules when enabled in
    ``ppl_params``) on these scores."""
    from sftpipe.perplexity import perplexity_filter

    res = perplexity_filter(records, scores, ppl_params, ifd)
    dropped = {d["id"] for d in res.dropped}
    garb = [r["id"] for r in records if truth[r["id"]]]
    clean = [r["id"] for r in records if not truth[r["id"]]]
    per_kind = {}
    for r in records:
        k = truth[r["id"]]
        if k:
            a, b = per_kind.get(k, (0, 0))
            per_kind[k] = (a + (r["id"] in dropped), b + 1)
    g = sum(i in dropped for i in garb) / len(garb)
    c = sum(i in dropped for i in clean) / len(clean)
    kinds = " ".join(f"{k} {a}/{b}" for k, (a, b) in sorted(per_kind.items()))
    med_c = _median([s for r, s in zip(records, scores) if not truth[r["id"]] and s])
    med_g = _median([s for r, s in zip(records, scores) if truth[r["id"]] and s])
    return [name, f"{100 * g:.1f}%", f"{100 * c:.1f}%", med_c, med_g, kinds]


def _median(xs):
    import statistics

    return round(statistics.median(xs), 2) if xs else None


def main(argv=None):
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    args = parse(argv)
    setup_env()
    threads = set_threads(args.threads)
    from sftpipe.config import BaseParams, ModelParams, load_params
    from sftpipe.model.loading import load_model, load_tokenizer
    from sftpipe.perplexity import fit_reference, ifd_rows, score_rows

    params = load_params(REPO / "params.yaml")
    ppl = params.perplexity
    if args.mode:
        ppl = ppl.model_copy(update={"mode": args.mode})
    tmp = None
    if args.keep:
        work = Path(args.keep)
        work.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="refbench-")
        work = Path(tmp.name)
    records, truth = build_rows(args, work)
    rows = []

    if not args.no_model:
        t0 = time.perf_counter()
        mp = ModelParams(name_or_path=args.base_model)
        model, tok = load_model(mp, precision=ppl.precision).eval(), load_tokenizer(mp)
        for unit in args.units.split(","):
            pu = ppl.model_copy(update={"unit": unit})
            scores = score_rows(model, tok, records, pu)
            ifd = ifd_rows(model, tok, records, pu, conditioned_ppl=scores)
            rows += variants(f"model ({Path(args.base_model).name}), per {unit}", records, truth, scores, ifd, pu,
                             Path(args.keep) if args.keep else None, ["-", "-", round(time.perf_counter() - t0, 1)])
            print(*rows[-3:], sep="\n")
    base: BaseParams = params.base
    for ep in (args.fit_epochs.split(",") if args.fit_epochs else [None]):
        upd = {k: v for k, v in {"fit_epochs": None if ep is None else float(ep), "fit_max_steps": args.fit_max_steps,
                                 "fit_vocab_size": args.fit_vocab}.items() if v is not None}
        p = ppl.model_copy(update=upd)
        out = work / f"reference_e{p.fit_epochs:g}"
        t0 = time.perf_counter()
        summary = fit_reference(records, p, base, out, log=print)
        fit_s = time.perf_counter() - t0
        mp = ModelParams(name_or_path=str(out))
        model, tok = load_model(mp, precision=p.precision).eval(), load_tokenizer(mp)
        for unit in args.units.split(","):
            pu = p.model_copy(update={"unit": unit})
            t1 = time.perf_counter()
            scores = score_rows(model, tok, records, pu)
            ifd = ifd_rows(model, tok, records, pu, conditioned_ppl=scores)
            label = (f"fit ({summary['steps']} steps, {summary['epochs']:.2f} ep, vocab {summary['vocab_size']}, "
                     f"loss {summary['final_loss']:.2f}), per {unit}")
            rows += variants(label, records, truth, scores, ifd, pu, Path(args.keep) if args.keep else None,
                             [round(fit_s, 1), summary["tokens"], round(time.perf_counter() - t1, 1)])
            print(*rows[-3:], sep="\n")
            for cap in args.max_ifd_sweep:
                rows.append(measure(f"  + text rules + IFD > {cap}", records, truth, scores,
                                    pu.model_copy(update={"max_ifd": cap}), ifd=ifd) + ["", "", ""])
            # the same scores with one group: garbage that language detection puts in a group of its own
            # (mojibake of Chinese reads as Chinese) is bounded by the whole data's statistics
            rows.append(measure("  same as the defaults, group_by none", records, truth, scores,
                                pu.model_copy(update={"group_by": "none"}), ifd=ifd)
                        + ["", "", ""])
            print(rows[-1])
    # the rules alone: every score inside the bounds
    rows.append(measure("text rules alone (no reference LM)", records, truth, [1.0] * len(records),
                        ppl.model_copy(update={"mad_k": None, "max_ifd": None})) + ["-", "-", "-"])
    print(rows[-1])
    print()
    print(table(["reference", "garbage removed", "clean removed", "median ppl clean", "median ppl garbage",
                 "garbage removed per kind", "fit s", "fit tokens", "score s"], rows,
                title=f"perplexity filter on {len(records)} docstring rows ({sum(map(bool, truth.values()))} garbage), "
                      f"mode {ppl.mode}, group_by {ppl.group_by}, mad_k {ppl.mad_k}; target >= 90% / <= 5%"))
    print(f"\n{machine()}, {threads} threads\n{command_line()}")
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
