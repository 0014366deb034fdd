"""split: group near-duplicates, stratify by label, split, decontaminate the training rows."""

import click

from stages._common import log, stage


def _eval_refs(paths):
    """(id, origin, text) rows of user-supplied eval files, read by the collect loaders."""
    from sftpipe.collect.sources import collect
    from sftpipe.config import CollectParams, Source
    from sftpipe.errors import UserError
    from sftpipe.schema import full_text

    if not paths:
        return []
    res = collect(CollectParams(sources=[Source(path=p, name=f"eval{i}") for i, p in enumerate(paths)]))
    if res.quarantine:  # an unreadable eval row cannot be decontaminated against: refuse, do not skip
        q = res.quarantine[0]
        raise UserError(f"split.eval_files: {len(res.quarantine)} row(s) could not be read, first "
                        f"{q['path']}:{q['line'] or q['record']}: {q['message']}")
    return [(r["id"], "eval_file", full_text(r)) for r in res.records]


@stage("split", help="Leakage-free train/validation/test split.")
@click.option("--inp", default="data/perplexity/kept.jsonl", show_default=True)
@click.option("--out", default="data/split", show_default=True)
@click.option("--metrics", default="metrics/split.json", show_default=True)
def cli(params, inp, out, metrics):
    from sftpipe.split import split_jsonl

    # the rows' ids, labels and groups first, then the held-out texts, then every row to its file: the
    # records are never all in memory
    m = split_jsonl(inp, out, metrics, params.split, params.dedup, _eval_refs(params.split.eval_files))
    log.info("%d rows in: train %d, validation %d, test %d, %d dropped as contaminated", m["rows_in"],
             m["train"], m["validation"], m["test"], m["dropped"])


if __name__ == "__main__":
    cli()
