"""self_instruct: new instructions from seed tasks, asked of the generator of params.distill (sampled at
self_instruct.temperature); kept only when novel and not near duplicates (the ledger says why not)."""

from pathlib import Path

import click

from stages._common import log, progress, stage


@stage("self_instruct", help="New instructions from seed tasks, kept only when novel.")
@click.option("--seeds", "seeds_file", default="data/select/train.jsonl", show_default=True)
@click.option("--out", default="data/create/self_instruct", show_default=True,
              help="prompts.jsonl (the new instructions, no replies), dropped.jsonl, details.json")
@click.option("--metrics", default="metrics/create/self_instruct.json", show_default=True)
def cli(params, seeds_file, out, metrics):
    from sftpipe.create.self_instruct import self_instruct
    from sftpipe.io import read_jsonl, write_json, write_jsonl
    from sftpipe.ledger import write_filter_outputs

    si = params.self_instruct
    seeds = read_jsonl(seeds_file)
    gp = params.distill.model_copy(update={"k": 1, "temperature": si.temperature, "seed": si.seed})
    with progress(si.n_prompts * len(si.languages), "self-instruct") as bar:
        res = self_instruct(seeds, gp, params.model, n_prompts=si.n_prompts, examples_per_prompt=si.examples_per_prompt,
                            seed=si.seed, lang=si.languages, template=si.template, n_new=si.n_new,
                            rouge_threshold=si.rouge_threshold, min_chars=si.min_chars, max_chars=si.max_chars,
                            near_dup=si.near_dup or None, progress=bar)
    candidates = [r["id"] for r in res.kept] + [d["id"] for d in res.dropped]
    m = write_filter_outputs("self_instruct", [{"id": i} for i in candidates], res, out, metrics, write_kept=False)
    m["candidates"] = m.pop("rows_in")
    write_json(metrics, m)
    write_jsonl(Path(out) / "prompts.jsonl", res.kept)
    log.info("%d requests -> %d candidate instructions, %d kept as novel; dropped %s", m.get("requests", 0),
             m["candidates"], len(res.kept), m["dropped_by_reason"])


if __name__ == "__main__":
    cli()
