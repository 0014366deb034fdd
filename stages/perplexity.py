"""perplexity: score every row with a reference causal LM; drop rows outside the bounds."""

import contextlib
import shutil
from pathlib import Path

import click

from stages._common import log, progress, stage


@stage("perplexity", help="Score rows with a reference LM and drop outliers.")
@click.option("--inp", default="data/label_noise/kept.jsonl", show_default=True)
@click.option("--out", default="data/perplexity", show_default=True)
@click.option("--metrics", default="metrics/perplexity.json", show_default=True)
@click.option("--plot", default="metrics/plots/perplexity.csv", show_default=True)
@click.option("--picture", default="metrics/plots/perplexity.png", show_default=True)
def cli(params, inp, out, metrics, plot, picture):
    from sftpipe.io import atomic_path, write_csv
    from sftpipe.model.loading import load_model, load_tokenizer
    from sftpipe.perplexity import (fit_reference, filter_file, ifd_rows, reference_choice, scan_file, score_rows,
                                    scoring_unit)
    from sftpipe.plots import perplexity_png
    from sftpipe.twopass import chunks, count_rows

    # two passes over the file, ppl.chunk_rows records at a time: the scores, then the rows as judged
    ppl_params = params.perplexity
    if not ppl_params.enabled:
        m, groups, hist = filter_file(inp, out, metrics, None, ppl_params)
    else:
        kind, why = reference_choice(params)
        if kind == "fit":
            # a model of the rows' own text, only for scoring, versioned with the stage's output
            ref_dir = str(Path(out) / "reference")
            rows = (r for chunk in chunks(inp, ppl_params.chunk_rows) for r in chunk)
            with atomic_path(ref_dir) as tmp:
                fitted = fit_reference(rows, ppl_params, params.base, tmp, log=log.info)
            model_params = params.model.model_copy(update={"name_or_path": ref_dir, "revision": None,
                                                           "trust_remote_code": False})
            reference = {"kind": kind, "why": why, "model": ref_dir, **fitted}
            log.info("reference LM: fitted on %d rows (%d tokens), %d steps (%.2f epochs), final loss %.3f, "
                     "in %.1fs -> %s (%s)", fitted["rows"], fitted["tokens"], fitted["steps"], fitted["epochs"],
                     fitted["final_loss"], fitted["fit_s"], ref_dir, why)
        else:
            shutil.rmtree(Path(out) / "reference", ignore_errors=True)   # a fitted one from an earlier run
            model_params = params.model.model_copy(
                update={"name_or_path": ppl_params.model or params.model.name_or_path})
            reference = {"kind": kind, "why": why, "model": model_params.name_or_path}
            log.info("reference LM: %s (%s)", model_params.name_or_path, why)
        reference["unit"] = scoring_unit(ppl_params, kind)     # auto resolved for this reference
        ppl_params = ppl_params.model_copy(update={"unit": reference["unit"]})
        tokenizer = load_tokenizer(model_params)
        n = count_rows(inp)
        with contextlib.ExitStack() as engine:
            if ppl_params.engine == "ray":   # the model goes to the actors only; the rows are encoded here
                from sftpipe.ray_session import ray_session
                from sftpipe.perplexity import RayModelPool

                engine.enter_context(ray_session(params.ray, "perplexity", log=log.info))
                model = engine.enter_context(RayModelPool(model_params, ppl_params, params.ray))
                log.info("scoring on %d Ray actors (%g CPUs, %g GPUs each)", ppl_params.ray.actors,
                         ppl_params.ray.num_cpus_per_actor, ppl_params.ray.num_gpus_per_actor)
            else:
                model = load_model(model_params, precision=ppl_params.precision).eval()
            bar = engine.enter_context(progress(n, "perplexity"))
            ifd_bar = engine.enter_context(progress(n, "ifd")) if ppl_params.ifd else None

            def score_chunk(rows):
                scores = score_rows(model, tokenizer, rows, ppl_params, bar)
                ifd = ifd_rows(model, tokenizer, rows, ppl_params, scores, ifd_bar) if ppl_params.ifd else None
                return scores, ifd

            scan = scan_file(inp, ppl_params.chunk_rows, ppl_params, score_chunk)
        m, groups, hist = filter_file(inp, out, metrics, scan, ppl_params, {"reference": reference})
    write_csv(plot, ["group", "log10_ppl", "kept", "dropped"], hist)
    perplexity_png(groups, picture)
    log.info("%d rows in, %d kept, dropped %s (median ppl %s)", m["rows_in"], m["kept"], m["dropped_by_reason"],
             m.get("median_ppl"))


if __name__ == "__main__":
    cli()
