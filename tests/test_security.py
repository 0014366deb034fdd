"""Security defaults: no remote code, safetensors only, no pickles, safe YAML, secrets from env."""

import ast
import re
from pathlib import Path

import pytest

from sftpipe.config import ModelParams, Params, load_params

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "sftpipe").rglob("*.py")) + sorted((ROOT / "stages").rglob("*.py"))


def _safe_loaders() -> set[str]:
    import yaml

    from sftpipe import config

    names = {n for n, v in vars(config).items() if isinstance(v, type) and issubclass(v, yaml.SafeLoader)}
    return names | {"yaml.SafeLoader", "yaml.CSafeLoader"}


SAFE_LOADERS = _safe_loaders()


def test_defaults_do_not_trust_remote_code():
    assert ModelParams().trust_remote_code is False
    assert load_params(ROOT / "params.yaml").model.trust_remote_code is False


def test_no_param_can_hold_a_token():
    fields = set()

    def walk(model):
        for name, f in model.model_fields.items():
            fields.add(name)
            ann = f.annotation
            if isinstance(ann, type) and hasattr(ann, "model_fields"):
                walk(ann)

    walk(Params)
    # select.judge.api_key_env names the environment variable that holds the key, never the key
    assert not {f for f in fields if re.search(r"token|secret|password|api_key", f)} - {
        "num_virtual_tokens", "max_new_tokens", "max_tokens", "api_key_env"}
    from sftpipe.config import JudgeParams

    assert re.fullmatch(r"[A-Z_][A-Z0-9_]*", JudgeParams().api_key_env)
    with pytest.raises(Exception):
        JudgeParams(api_key_env="sk-abc123")


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_source_has_no_unsafe_loading(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n and n.split(".")[0] in ("pickle", "dill", "joblib", "marshal", "shelve") for n in names)
        if isinstance(node, ast.Call):
            fn = ast.unparse(node.func)
            kw = {k.arg: ast.unparse(k.value) for k in node.keywords}
            assert fn not in ("eval", "exec", "yaml.unsafe_load", "yaml.full_load"), fn
            if fn == "yaml.load":  # only with a SafeLoader subclass (plain data, no Python objects)
                assert kw.get("Loader") in SAFE_LOADERS, f"{path.name}: yaml.load with {kw.get('Loader')}"
            if fn == "torch.load":
                assert kw.get("weights_only") == "True"
            if fn.endswith("from_pretrained") and "Tokenizer" not in fn and fn != "PeftModel.from_pretrained":
                assert kw.get("use_safetensors") == "True", f"{path.name}: {fn} without use_safetensors=True"
            assert kw.get("trust_remote_code") not in ("True",), f"{path.name}: hard-coded trust_remote_code"


def test_model_loading_passes_the_safe_flags(monkeypatch, tmp_path):
    import transformers

    from sftpipe.model import loading as modeling

    seen = {}

    class Fake:
        def to(self, _):
            return self

    def fake_from_pretrained(path, **kw):
        seen.update(kw)
        return Fake()

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fake_from_pretrained)
    monkeypatch.setenv("HF_TOKEN", "hf_from_env")
    modeling.load_model(ModelParams(name_or_path=str(tmp_path)))
    assert seen["use_safetensors"] is True and seen["trust_remote_code"] is False and seen["token"] == "hf_from_env"
    seen.clear()
    modeling.load_model(ModelParams(name_or_path=str(tmp_path), trust_remote_code=True))
    assert seen["trust_remote_code"] is True


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def test_models_the_product_saves_are_safetensors_only(tmp_path):
    """The base stage's pretrain() and the train stage's save() (adapter, full weights, merged model)."""
    from sftpipe.model.basemodel import pretrain
    from sftpipe.config import BaseParams, LoraParams, TrainParams
    from sftpipe.sample import pretrain_corpus
    from sftpipe.model.train import fit, save

    p = BaseParams(corpus_rows=100, vocab_size=300, hidden_size=16, num_layers=1, num_heads=1, intermediate_size=16,
                   seq_len=16, batch_size=2, steps=2)
    pretrain(p, pretrain_corpus(["en", "zh"], p.corpus_rows, seed=0), tmp_path / "base", log=lambda *_: None)
    mp = ModelParams(name_or_path=str(tmp_path / "base"))
    rows = [{"id": f"s:{i}", "source": "s", "label": None, "meta": {},
             "messages": [{"role": "user", "content": f"{i} + {i}?"}, {"role": "assistant", "content": str(2 * i)}]}
            for i in range(4)]
    for method in ("lora", "full"):
        t = TrainParams(method=method, max_steps=1, batch_size=2, merge=method == "lora", max_length=32)
        trainer, tok, template, _ = fit(rows, [], mp, t, LoraParams(r=2), tmp_path / f"ckpt_{method}",
                                        tmp_path / f"live_{method}")
        save(trainer.model, tok, t, mp, template, tmp_path / f"sft_{method}")
    saved = [f for d in ("base", "sft_lora", "sft_full") for f in (tmp_path / d).rglob("*") if f.is_file()]
    names = {f.relative_to(tmp_path).as_posix() for f in saved}
    assert {"base/model.safetensors", "sft_lora/adapter_model.safetensors", "sft_lora/merged/model.safetensors",
            "sft_full/model.safetensors"} <= names
    assert [n for n in names if n.endswith(PICKLE_SUFFIXES)] == []
    for f in saved:  # nothing pickled under another name: raw pickle (protocol 2+) or torch.save's zip of one
        head = f.read_bytes()[:4]
        assert head[:1] != b"\x80", f
        if head == b"PK\x03\x04":
            import zipfile

            assert not any(n.endswith(".pkl") for n in zipfile.ZipFile(f).namelist()), f
