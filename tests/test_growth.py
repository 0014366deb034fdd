"""Depth growth (train.grow_depth, the create pipeline's teacher): the grown model computes the base's
function exactly, saves and reloads in its grown shape, and full fine-tuning trains the new layers."""

import json

import pytest

from sftpipe.config import LoraParams, ModelParams, TrainParams
from sftpipe.errors import UserError
from sftpipe.model.growth import grow_depth


def _tiny(layers=2, seed=0, arch="llama"):
    import torch
    import transformers

    torch.manual_seed(seed)
    # Qwen2 (the README's hub example) adds q/k/v biases and a per-layer layer_types list to LLaMA's shape
    name = {"llama": "Llama", "qwen2": "Qwen2"}[arch]
    cfg = getattr(transformers, f"{name}Config")(
        vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=layers, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True)
    model = getattr(transformers, f"{name}ForCausalLM")(cfg).eval()
    with torch.no_grad():       # non-zero biases-free weights everywhere, incl. the projections that get zeroed
        for p in model.parameters():
            p.normal_(0, 0.2)
    return model


@pytest.mark.parametrize("factor,arch", [(2, "llama"), (3, "llama"), (2, "qwen2")])
def test_grown_model_has_the_same_logits_and_generations(tmp_path, factor, arch):
    import torch
    from transformers import AutoModelForCausalLM

    base = _tiny(arch=arch)
    ids = torch.randint(0, 64, (3, 17), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = base(input_ids=ids).logits
        want_gen = base.generate(ids[:, :5], max_new_tokens=8, do_sample=False, pad_token_id=0)
    grown = grow_depth(_tiny(arch=arch), factor)
    assert grown.config.num_hidden_layers == 2 * factor and len(grown.model.layers) == 2 * factor
    if arch == "qwen2":
        assert grown.config.layer_types == base.config.layer_types * factor
    assert [layer.self_attn.layer_idx for layer in grown.model.layers] == list(range(2 * factor))
    # copies sit right after their layer, with the same weights but for the zeroed output projections
    first, twin = grown.model.layers[0], grown.model.layers[1]
    assert torch.equal(first.self_attn.q_proj.weight, twin.self_attn.q_proj.weight)
    assert twin.self_attn.o_proj.weight.abs().sum() == 0 and twin.mlp.down_proj.weight.abs().sum() == 0
    assert first.self_attn.o_proj.weight.abs().sum() > 0
    assert sum(p.numel() for p in grown.parameters()) > sum(p.numel() for p in base.parameters())
    with torch.no_grad():
        assert torch.allclose(grown(input_ids=ids).logits, want, atol=1e-5)
        # greedy generation goes through the KV cache, indexed by layer_idx
        assert torch.equal(grown.generate(ids[:, :5], max_new_tokens=8, do_sample=False, pad_token_id=0), want_gen)
    grown.save_pretrained(tmp_path, safe_serialization=True)
    again = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert again.config.num_hidden_layers == 2 * factor
    with torch.no_grad():
        assert torch.allclose(again(input_ids=ids).logits, want, atol=1e-5)


def test_factor_one_is_the_model_itself():
    model = _tiny()
    layers = list(model.model.layers)
    assert grow_depth(model, 1) is model and list(model.model.layers) == layers


def test_a_decoder_of_another_shape_is_one_clear_error():
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=2, n_positions=32))
    with pytest.raises(UserError, match="not a LLaMA-shaped decoder.*grow_depth: 1"):
        grow_depth(gpt2, 2)


def test_grow_depth_needs_full_fine_tuning():
    with pytest.raises(ValueError, match="grow_depth 2 needs method full"):
        TrainParams(method="lora", grow_depth=2)
    with pytest.raises(ValueError):
        TrainParams(method="full", grow_depth=0)
    assert TrainParams(method="full", grow_depth=2).grow_depth == 2


ROWS = [{"id": f"s:{i}", "label": "x", "source": "s", "meta": {},
         "messages": [{"role": "user", "content": f"What is {i} + {i}?"},
                      {"role": "assistant", "content": f"{i} + {i} = {2 * i}."}]} for i in range(16)]


def test_training_a_grown_model_moves_the_new_layers_and_saves_the_grown_shape(tmp_path, tiny_model_dir):
    import torch

    from sftpipe.model.loading import load_model, load_sft
    from sftpipe.model.train import fit, save

    mp = ModelParams(name_or_path=str(tiny_model_dir))
    layers = load_model(mp).config.num_hidden_layers
    t = TrainParams(method="full", grow_depth=2, max_steps=3, batch_size=4, lr=5e-3, logging_steps=1,
                    save_steps=10, eval_steps=10, max_length=64)
    trainer, tok, template, summary = fit(ROWS, ROWS[:4], mp, t, LoraParams(), tmp_path / "ckpt", tmp_path / "live")
    model = trainer.model
    assert model.config.num_hidden_layers == 2 * layers
    assert summary["total_params"] > sum(p.numel() for p in load_model(mp).parameters())
    # the zeroed projections of the copies got gradients and moved
    assert model.model.layers[1].self_attn.o_proj.weight.abs().sum() > 0
    assert model.model.layers[1].mlp.down_proj.weight.abs().sum() > 0
    save(model, tok, t, mp, template, tmp_path / "out")
    info = json.loads((tmp_path / "out" / "sft_info.json").read_text())
    assert info["grow_depth"] == 2 and info["adapter"] is False
    loaded, _ = load_sft(mp, tmp_path / "out")
    assert loaded.config.num_hidden_layers == 2 * layers
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=ids).logits, model.eval()(input_ids=ids).logits, atol=1e-5)


def test_a_killed_grown_run_resumes_bit_identical(tmp_path, tiny_model_dir):
    """The teacher stage killed mid-run: the rerun grows the base again, resumes the grown weights, optimizer
    and RNG from the last checkpoint, and ends with the uninterrupted run's weights, bit for bit."""
    import shutil

    import torch

    from sftpipe.model.train import fit

    mp = ModelParams(name_or_path=str(tiny_model_dir))
    t = TrainParams(method="full", grow_depth=2, epochs=2, batch_size=4, lr=5e-3, logging_steps=1, save_steps=4,
                    eval_steps=100, max_length=64)
    first, _, _, done = fit(ROWS, [], mp, t, LoraParams(), tmp_path / "ckpt", tmp_path / "live")
    uninterrupted = {k: v.clone() for k, v in first.model.state_dict().items()}
    steps = sorted(int(p.name.split("-")[1]) for p in (tmp_path / "ckpt").glob("checkpoint-*"))
    assert steps[-1] == done["global_step"] == 8 and steps[0] == 4
    shutil.rmtree(tmp_path / "ckpt" / f"checkpoint-{steps[-1]}")  # killed after the save at step 4
    second, _, _, again = fit(ROWS, [], mp, t, LoraParams(), tmp_path / "ckpt", tmp_path / "live")
    assert again["resumed_from_step"] == 4 and again["global_step"] == 8
    resumed = second.model.state_dict()
    assert second.model.config.num_hidden_layers == first.model.config.num_hidden_layers
    assert [k for k in uninterrupted if not torch.equal(uninterrupted[k], resumed[k])] == []
    # an ungrown run of the same params otherwise never resumes the grown run's checkpoints
    _, _, _, other = fit(ROWS, [], mp, t.model_copy(update={"grow_depth": 1}), LoraParams(), tmp_path / "ckpt",
                         tmp_path / "live")
    assert other["resumed_from_step"] == 0
