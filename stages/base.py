"""base: train a tokenizer and briefly pretrain a tiny LLaMA, saved like any hub model."""

import click

from stages._common import log, stage


@stage("base", help="Build the tiny offline base model (tokenizer + pretraining).")
@click.option("--out", default="models/base", show_default=True)
@click.option("--metrics", default="metrics/base.json", show_default=True)
def cli(params, out, metrics):
    from sftpipe.model.basemodel import pretrain
    from sftpipe.io import atomic_path, write_json, write_jsonl
    from sftpipe.sample import heldout_corpus, pretrain_corpus

    base_params = params.base
    corpus = pretrain_corpus(base_params.languages, base_params.corpus_rows, base_params.seed,
                             tool_share=base_params.tool_docs)
    with atomic_path(out) as tmp:
        summary = pretrain(base_params, corpus, tmp, log=log.info)
        # general text of the same kind, never trained on: evaluate's forgetting check
        write_jsonl(f"{tmp}/heldout.jsonl", [{"text": t} for t in heldout_corpus(base_params, corpus)])
    write_json(metrics, summary)
    log.info("base model: %.2fM params, final loss %.3f, %.0f tokens/s -> %s",
             summary["params_m"], summary["final_loss"], summary["tokens_per_s"], out)


if __name__ == "__main__":
    cli()
