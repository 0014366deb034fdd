"""Run a stage command in this process with the committed params.yaml and some sections replaced."""

from __future__ import annotations

from pathlib import Path

import yaml
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]


def run_stage(d: Path, stage: str, sections: dict, *args):
    """``sftpipe <stage>`` in this process with the committed params.yaml, ``sections`` replacing
    whole sections' keys (the params file is written to ``d``)."""
    from stages.cli import main

    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    for k, v in sections.items():
        data[k] = {**data.get(k, {}), **v}
    pfile = d / "params.yaml"
    pfile.write_text(yaml.safe_dump(data))
    return CliRunner().invoke(main, [stage, "--params", str(pfile), *map(str, args)])
