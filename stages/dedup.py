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
    from sftpipe.dedup.clusters import dedup_records
    from sftpipe.io import read_jsonl, write_csv
    from sftpipe.ledger import write_filter_outputs
    from sftpipe.plots import cluster_sizes_png

    records = read_jsonl(inp)
    if params.dedup.engine == "ray":
        from sftpipe.dedup.ray_engine import RayEngine, ray_session

        with ray_session(params.ray, "dedup", log=log.info):
            result = dedup_records(records, params.dedup, engine=RayEngine(params.dedup.ray, params.ray))
    else:
        result = dedup_records(records, params.dedup)
    m = write_filter_outputs("dedup", records, result, out, metrics)
    hist = result.details["cluster_size_hist"]
    write_csv(plot, ["cluster_size", "clusters"], sorted((int(k), v) for k, v in hist.items()))
    cluster_sizes_png({int(k): v for k, v in hist.items()}, picture)
    log.info("%d rows in, %d kept, dropped %s", m["rows_in"], m["kept"], m["dropped_by_reason"])


if __name__ == "__main__":
    cli()
