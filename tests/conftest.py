import contextlib
import os

import pytest

from sftpipe.model.templates import TEMPLATES

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """A real byte-level BPE tokenizer with a ChatML template, trained offline in ~1 s."""
    from sftpipe.model.basemodel import train_tokenizer
    from sftpipe.sample import pretrain_corpus

    return train_tokenizer(pretrain_corpus(["en", "zh"], 400, seed=0), 600)


@pytest.fixture(params=sorted(TEMPLATES))
def tok(request, tiny_tokenizer):
    """The tiny tokenizer with each named template in turn."""
    import copy

    from sftpipe.model.templates import apply_template

    t = copy.deepcopy(tiny_tokenizer)
    apply_template(t, request.param)
    t.template_name = request.param
    return t


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer):
    """A randomly initialised 2-layer LLaMA saved like a hub model (safetensors + tokenizer)."""
    import torch

    from sftpipe.model.basemodel import build_model
    from sftpipe.config import BaseParams

    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("tiny_base")
    model = build_model(BaseParams(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64), tiny_tokenizer)
    model.save_pretrained(d, safe_serialization=True)
    tiny_tokenizer.save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def lookup_model_dir(tmp_path_factory, tiny_tokenizer):
    """The tiny LLaMA trained on tests/lookup_model.LOOKUP (a few seconds), saved like a hub model.
    Greedy decoding reproduces every lookup reply, so generations are real, prompt-dependent text."""
    from lookup_model import train_lookup_model

    d = tmp_path_factory.mktemp("lookup_base")
    model, _ = train_lookup_model(tiny_tokenizer)
    model.save_pretrained(d, safe_serialization=True)
    tiny_tokenizer.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray of 2 CPUs for the whole test module (the stages find it connected and use it as it is)."""
    import ray

    from sftpipe.config import RayParams
    from sftpipe.ray_session import ray_session

    with ray_session(RayParams(num_cpus=2), "tests"):
        yield
    assert not ray.is_initialized()


@contextlib.contextmanager
def torch_threads(n: int):
    """torch at ``n`` threads inside the block, as before after it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
