"""dedup: exact then MinHash-LSH near-duplicate removal; one deterministic survivor per cluster."""

import click

from stages._common import log, stage


@stage("dedup", help="Remove exact and near duplicates (MinHash LSH, datasketch-compatible).")
@click.option("--inp", default="data/clean/kept.jsonl", show_default=True)
@click.option("--out", default="data/dedup", show_default=True)
@click.option("--metrics", default="metrics/dedup.json", show_default=True)
@click.option("--plot", default="metrics/plots/dedup_clusters.csv", show_default=True)
@click.option("--picture", default="metrics/plots/dedup_clusters.png", show_default=True)
def cli(params, inp, out, metrics, plot, picture):
    from sftpipe.dedup.stream import dedup_jsonl

    # the stage streams: the in-memory path's bytes in bounded memory (sftpipe/dedup/stream.py), on either engine
    log.info("streaming %s (engine %s)", inp, params.dedup.engine)
    if params.dedup.engine == "ray":
        from sftpipe.dedup.ray_engine import RayEngine
        from sftpipe.ray_session import ray_session

        with ray_session(params.ray, "dedup", log=log.info):
            m, details = dedup_jsonl(inp, out, metrics, params.dedup, engine=RayEngine(params.dedup.ray, params.ray))
    else:
        m, details = dedup_jsonl(inp, out, metrics, params.dedup)
    _plots(details["cluster_size_hist"], plot, picture)
    log.info("%d rows in, %d kept, dropped %s", m["rows_in"], m["kept"], m["dropped_by_reason"])


def _plots(hist: dict, plot: str, picture: str) -> None:
    from sftpipe.io import write_csv
    from sftpipe.plots import cluster_sizes_png

    write_csv(plot, ["cluster_size", "clusters"], sorted((int(k), v) for k, v in hist.items()))
    cluster_sizes_png({int(k): v for k, v in hist.items()}, picture)


if __name__ == "__main__":
    cli()
