"""What every stage command shares: the params option, logging, and one-line errors."""

from __future__ import annotations

import functools
import logging
import os
import sys
import time
import warnings

import click

log = logging.getLogger("sftpipe")


def _setup_logging(stage: str) -> None:
    """What a stage prints: its own log lines, its own progress bars, errors; known library noise is
    silenced here, at the process level, so library code (sftpipe.*) stays quiet-neutral."""
    logging.basicConfig(level=logging.INFO, format=f"[{stage}] %(message)s", stream=sys.stderr, force=True)
    for noisy in ("transformers", "datasets", "httpx", "urllib3", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    # transformers resets its logger's level from this when first imported (after the setLevel above)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    # transformers 5 draws a "Loading weights" bar for every from_pretrained, datasets one per map
    # ("tokenize"): a second of work each, drawn even when stderr is no terminal. Both libraries read these
    # switches when first imported, which stages do only after this (set to 0 to see the bars again).
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' own bars follow the hub's
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    # peft asks the model `is_gradient_checkpointing`, a property transformers 5 deprecated for v6
    warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning,
                            module=r"transformers\.modeling_utils")


def stage(name: str, help: str):
    """Decorate ``fn(params, **options)`` into a click command with ``--params`` and clean errors."""

    def deco(fn):
        @click.command(name=name, help=help)
        @click.option("--params", "params_path", default="params.yaml", show_default=True,
                      help="params file to read")
        @functools.wraps(fn)
        def cmd(params_path, **kw):
            _setup_logging(name)
            from sftpipe.config import load_params
            from sftpipe.errors import UserError

            t0 = time.perf_counter()
            try:
                fn(load_params(params_path), **kw)
            except UserError as e:
                if os.environ.get("SFTPIPE_DEBUG"):
                    raise
                click.echo(f"error: {e}", err=True)
                sys.exit(e.exit_code)
            except KeyboardInterrupt:
                click.echo("error: interrupted", err=True)
                sys.exit(130)
            except Exception as e:  # internal bug: still one line unless debugging
                if os.environ.get("SFTPIPE_DEBUG"):
                    raise
                click.echo(f"error: {name}: internal error {type(e).__name__}: {e} "
                           f"(rerun with SFTPIPE_DEBUG=1 for the traceback)", err=True)
                sys.exit(1)
            log.info("done in %.1fs", time.perf_counter() - t0)

        return cmd

    return deco


def progress(total: int | None, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="row", leave=False, disable=None, mininterval=1.0)
