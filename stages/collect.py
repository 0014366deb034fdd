"""collect: every configured source into one canonical JSONL, bad rows quarantined."""

import os
from pathlib import Path

import click

from stages._common import log, progress, stage


@stage("collect", help="Read all sources into the canonical schema.")
@click.option("--out", default="data/collected", show_default=True)
@click.option("--metrics", default="metrics/collect.json", show_default=True)
def cli(params, out, metrics):
    from sftpipe.collect.sources import check_declared_sources, collect_to

    if _tracked_by_dvc():
        check_declared_sources(params.collect, "dvc.yaml")
    with progress(None, "collect") as bar:
        # rows go to the files as they are read (both renamed into place at the end), not held
        m = collect_to(params.collect, Path(out) / "data.jsonl", Path(out) / "quarantine.jsonl", metrics, bar)
    log.info("%d rows in, %d kept, %d quarantined %s", m["rows_in"], m["kept"], m["quarantined"],
             m["quarantined_by_reason"] or "")


def _tracked_by_dvc() -> bool:
    """A run whose sources dvc.yaml must declare: a dvc.yaml here, and either DVC runs this
    command or it reads ./params.yaml (the file the stage's params come from). A run on a
    scratch params file elsewhere (tests, one-off conversions) is not a pipeline run."""
    if not Path("dvc.yaml").is_file():
        return False
    params_path = click.get_current_context().params.get("params_path") or "params.yaml"
    return "DVC_STAGE" in os.environ or Path(params_path).resolve() == Path("params.yaml").resolve()


if __name__ == "__main__":
    cli()
