"""params.yaml validation: typos, wrong types and out-of-range values give one clear line."""

from pathlib import Path

import pytest
import yaml

from sftpipe.config import load_params, parse_params
from sftpipe.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def base():
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_committed_params_validate():
    p = load_params(ROOT / "params.yaml")
    assert p.lora.r == 8 and p.train.method == "lora" and p.model.trust_remote_code is False


@pytest.mark.parametrize("path,value,message", [
    (("lora", "r"), -1, "lora.r: Input should be greater than or equal to 1 (got -1)"),
    (("lora", "rr"), 16, "lora.rr: unknown key (typo?)"),
    (("split", "train"), 0.7, "split: split fractions must sum to 1"),
    (("dedup", "threshold"), 1.5, "dedup.threshold: Input should be less than or equal to 1"),
    (("train", "lr"), "fast", "train.lr: Input should be a valid number"),
    (("train", "method"), "qlora", "train.method: Input should be 'lora', 'dora'"),
    (("perplexity", "group_by"), "lang+topic", "unknown group key(s) ['topic']"),
    (("collect", "on_error"), "ignore", "collect.on_error: Input should be 'quarantine' or 'fail'"),
    (("train", "num_processes"), 0, "train.num_processes: give auto or a whole number of processes, 1 or more (got 0)"),
    (("teacher", "num_processes"), "two", "teacher.num_processes: give auto or a whole number of processes"),
    (("train", "num_processes"), 1.5, "train.num_processes: give auto or a whole number of processes"),
])
def test_bad_params_are_reported_by_key(path, value, message):
    data = base()
    data[path[0]][path[1]] = value
    with pytest.raises(UserError) as e:
        parse_params(data)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_unknown_group_is_reported():
    data = base()
    data["loraa"] = {"r": 4}
    with pytest.raises(UserError, match="loraa: unknown key"):
        parse_params(data)


def test_invalid_yaml_names_line(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("lora:\n  r: [1,\n")
    with pytest.raises(UserError, match=r"params.yaml:\d+: invalid YAML"):
        load_params(p)


def test_schema_defaults_are_the_committed_params():
    """params.yaml and the schema's defaults are one source of truth: every key params.yaml sets
    equals the default, and every default is written out in params.yaml (collect.sources, which
    has no default, aside)."""
    from sftpipe.config import Params

    committed = base()
    committed["collect"].pop("sources")
    defaults = Params(collect={"sources": [{"path": "x"}]}).model_dump()
    defaults["collect"].pop("sources")
    drift = []

    def walk(yaml_part, default_part, path):
        if isinstance(default_part, dict):
            if not isinstance(yaml_part, dict):
                drift.append(f"{path}: params.yaml {yaml_part!r}, schema a mapping")
                return
            for k in sorted(set(default_part) | set(yaml_part)):
                walk(yaml_part.get(k, "<not in params.yaml>"), default_part.get(k, "<no default>"), f"{path}.{k}")
        elif yaml_part != default_part:
            drift.append(f"{path}: params.yaml {yaml_part!r}, schema default {default_part!r}")

    walk(committed, defaults, "")
    assert drift == []
    # the walk sees a changed default
    defaults["base"]["steps"] += 1
    walk(committed, defaults, "")
    assert drift == [".base.steps: params.yaml 250, schema default 251"]
