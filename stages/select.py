"""select: score the training rows and choose them to a budget (random, top, diverse, k-center)."""

from pathlib import Path

import click

from stages._common import log, progress, stage


def _extra_scores(params, records):
    """This run's reward-model and LLM-judge scores per row ({} when both are off)."""
    extra = [{} for _ in records]
    sp = params.select
    if sp.reward_model.model:
        from sftpipe.select.reward import reward_rows

        with progress(len(records), "reward model") as bar:
            for e, v in zip(extra, reward_rows(records, sp.reward_model, bar)):
                e["reward"] = None if v is None else round(float(v), 5)
    if sp.judge.enabled:
        from sftpipe.select.judge import judge_rows

        with progress(len(records), "judge") as bar:
            judged = judge_rows(records, sp.judge, progress=bar)
        failed = sum(j["error"] is not None for j in judged)
        for e, j in zip(extra, judged):
            e["judge"] = j["score"]
            if j["error"]:      # kept with the row (meta.judge_error): the reply's raw text, never a crash
                e["_judge_error"] = {"error": j["error"], "raw": j["raw"][:500]}
        log.info("judge: %d rows scored (%d from the cache), %d without a score (meta.judge_error)",
                 len(judged) - failed, sum(j["cached"] for j in judged), failed)
    return extra


OUT_FILES = ("train.jsonl", "dropped.jsonl", "details.json", "coverage.json")   # what the stage writes in --out


def _forget_outputs(*paths) -> None:
    """Remove the previous run's output files, and the temporaries of a run killed while writing them,
    before anything new is written. Each file is written atomically, but one after another: without
    this, a run killed between two of them left, e.g., a new ledger and metrics beside the last run's
    train.jsonl, every file complete and the set inconsistent. Now a killed run leaves an output
    missing (the picture is written last), which DVC and a rerun both see."""
    import shutil

    for path in map(Path, paths):
        for p in [path, *path.parent.glob(f".{path.name}.*")]:   # atomic_path's and the plots' temporaries
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink(missing_ok=True)


@stage("select", help="Score the training rows and choose them to a budget.")
@click.option("--inp", default="data/split/train.jsonl", show_default=True)
@click.option("--out", default="data/select", show_default=True)
@click.option("--metrics", default="metrics/select.json", show_default=True)
@click.option("--plot", default="metrics/plots/select_distribution.csv", show_default=True)
@click.option("--picture", default="metrics/plots/select.png", show_default=True)
def cli(params, inp, out, metrics, plot, picture):
    import numpy as np

    from sftpipe.io import read_jsonl, write_csv, write_json, write_jsonl
    from sftpipe.ledger import write_filter_outputs
    from sftpipe.select.choose import choose, embed_rows
    from sftpipe.select.report import coverage, distributions, select_png

    sp = params.select
    records = read_jsonl(inp)
    extra = _extra_scores(params, records)
    X = None
    if sp.method != "all" and records:
        if sp.engine == "ray" and sp.embedding.method == "base_model":   # tfidf is fitted here either way
            from sftpipe.ray_session import ray_session

            with ray_session(params.ray, "select", log=log.info):
                X = embed_rows(records, sp, params.ray.max_retries)
        else:
            X = embed_rows(records, sp)
    result = choose(records, sp, extra, X)
    ids = {r["id"]: i for i, r in enumerate(records)}
    chosen = np.array([ids[r["id"]] for r in result.kept], dtype=np.int64)
    dist = distributions(records, result.kept)
    cov = coverage(X, chosen, sp.seed) if X is not None else {}
    result.extra_metrics.update({f"coverage_{k}": v for k, v in cov.items()})
    result.details["distributions"] = [dict(zip(("dimension", "value", "before", "after"), d)) for d in dist]
    out = Path(out)
    _forget_outputs(*(out / f for f in OUT_FILES), metrics, plot, picture)
    m = write_filter_outputs("select", records, result, out, metrics, write_kept=False)
    if X is not None:
        write_json(out / "coverage.json", cov)
    write_jsonl(out / "train.jsonl", result.kept)
    write_csv(plot, ["dimension", "value", "before", "after"], dist)
    every = [r["meta"]["scores"] for r in result.kept] + [d["record"]["meta"]["scores"] for d in result.dropped]
    pool = {k: [s.get(k) for s in every] for k in ("length", "ifd")}
    sel = {k: [r["meta"]["scores"].get(k) for r in result.kept] for k in ("length", "ifd")}
    select_png(dist, pool, sel, X, chosen, picture)   # the last output: written only when all others are
    log.info("%d rows in, %d selected by %s (budget %d), dropped %s%s", m["rows_in"], m["kept"], sp.method,
             m["budget"], m["dropped_by_reason"],
             f"; coverage {cov.get('covered_at_0.8')} of the pool within cosine 0.8" if cov else "")


if __name__ == "__main__":
    cli()
