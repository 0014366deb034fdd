"""Training on the tiny model: every peft method runs, exports reload with identical generations,
and an interrupted run resumes from its last checkpoint."""

import json

import pytest

from sftpipe.config import LoraParams, ModelParams, TrainParams
from sftpipe.model.evaluation import generate
from sftpipe.model.loading import load_sft
from sftpipe.model.train import fit, save, tokenize_rows

ROWS = [{"id": f"s:{i}", "label": "x", "source": "s", "meta": {},
         "messages": [{"role": "user", "content": f"What is {i} + {i}?"},
                      {"role": "assistant", "content": f"{i} + {i} = {2 * i}."}]} for i in range(24)]
ROWS += [{"id": f"z:{i}", "label": "y", "source": "s", "meta": {},
          "messages": [{"role": "user", "content": f"{i}加{i}等于多少？"}, {"role": "assistant", "content": f"等于{2 * i}。"},
                       {"role": "user", "content": "再加一呢？"}, {"role": "assistant", "content": f"等于{2 * i + 1}。"}]}
         for i in range(8)]


def tp(**kw):
    base = dict(max_steps=4, batch_size=4, lr=5e-3, logging_steps=1, save_steps=2, eval_steps=2, max_length=64)
    return TrainParams(**{**base, **kw})


def logits(model, tok, rows):
    """Next-token logits over each row's whole conversation, right-padded batch."""
    import torch

    from sftpipe.model.formatting import encode

    encs = [encode(tok, r["messages"]).input_ids for r in rows]
    width = max(map(len, encs))
    ids = torch.full((len(encs), width), tok.pad_token_id)
    att = torch.zeros((len(encs), width), dtype=torch.long)
    for i, e in enumerate(encs):
        ids[i, :len(e)], att[i, :len(e)] = torch.tensor(e), 1
    with torch.inference_mode():
        # prompt tuning prepends its virtual tokens' positions to the logits: keep the real ones
        return model(input_ids=ids, attention_mask=att).logits[:, -width:] * att[..., None]


@pytest.mark.parametrize("method,packing", [("lora", "padding_free"), ("lora", "padded"), ("dora", "auto"),
                                            ("rslora", "auto"), ("full", "auto"), ("prompt_tuning", "auto"),
                                            ("prefix_tuning", "auto")])
def test_every_method_trains_and_reloads_with_identical_generations(tmp_path, lookup_model_dir, method, packing):
    """Fine-tuning the lookup model (whose generations are real text): the loss falls, and the saved
    model reloads with the in-memory model's logits and generations, which differ from the base's."""
    import torch

    from sftpipe.model.evaluation import response_loss
    from sftpipe.model.loading import load_model, load_tokenizer

    mp = ModelParams(name_or_path=str(lookup_model_dir))
    base, tok0 = load_model(mp).eval(), load_tokenizer(mp)
    before, _ = response_loss(base, tok0, ROWS, batch_size=8, max_length=64)
    lr = 5e-2 if method.endswith("tuning") else 5e-3  # virtual tokens start random and need larger steps
    t = tp(method=method, packing=packing, merge=method == "lora", max_steps=6, lr=lr)
    trainer, tok, template, summary = fit(ROWS, ROWS[:4], mp, t, LoraParams(r=4), tmp_path / "ckpt", tmp_path / "live")
    assert summary["global_step"] == 6 and summary["method"] == method and template == "tokenizer"
    # auto: padded under SDPA (the tiny model's default attention), padding-free only with flash-attention
    assert summary["packing"] == ("padded" if method.endswith("tuning") else
                                  "padding_free" if packing == "padding_free" else "padded")
    assert 0 < summary["trainable_params"] <= summary["total_params"]
    if method != "full":
        assert summary["trainable_params"] < summary["total_params"] / 2
    trained = trainer.model.eval()
    after, _ = response_loss(trained, tok, ROWS, batch_size=8, max_length=64)
    assert after < before, f"{method}: loss {before:.3f} -> {after:.3f} did not fall"
    save(trained, tok, t, mp, template, tmp_path / "sft")
    files = {p.name for p in (tmp_path / "sft").iterdir()}
    assert not any(f.endswith((".bin", ".pt", ".pkl")) for f in files)
    assert ("adapter_model.safetensors" in files) == (method != "full")
    probe = ROWS[:3] + ROWS[-1:]
    in_memory = generate(trained, tok, probe, max_new_tokens=8, batch_size=2)
    # real text to compare (6 steps at a high lr may silence a probe or two, depending on batch order)
    assert sum(map(bool, in_memory)) >= 2 and len(set(in_memory)) >= 2, in_memory
    model, tok2 = load_sft(mp, tmp_path / "sft")
    reloaded = logits(model, tok2, probe)
    # equal up to fp32 summation order (~1e-5 on logits of magnitude ~10); the base is >100x further away
    assert (reloaded - logits(trained, tok, probe)).abs().max() < 1e-4
    assert (reloaded - logits(base, tok0, probe)).abs().max() > 1e-2, "the reloaded model is the base model"
    assert generate(model, tok2, probe, max_new_tokens=8, batch_size=2) == in_memory
    if method == "lora":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        merged = AutoModelForCausalLM.from_pretrained(tmp_path / "sft" / "merged", use_safetensors=True).eval()
        assert torch.allclose(logits(merged, tok, probe), reloaded, atol=1e-4)
        assert generate(merged, AutoTokenizer.from_pretrained(tmp_path / "sft" / "merged"), probe, 8, 2) == in_memory


@pytest.mark.parametrize("loss_on", ["response", "all", "last_turn"])
def test_trainer_receives_labels_that_follow_loss_on(tmp_path, tiny_model_dir, loss_on, monkeypatch):
    """What the Trainer computes its loss on, batch by batch, is each row's encoding under train.loss_on."""
    from transformers import Trainer

    from sftpipe.model.formatting import IGNORE, encode
    from sftpipe.model.loading import load_tokenizer

    seen = []
    original = Trainer.compute_loss

    def spy(self, model, inputs, *a, **kw):
        seen.append((inputs["input_ids"].clone(), inputs["labels"].clone(), inputs["attention_mask"].clone()))
        return original(self, model, inputs, *a, **kw)

    monkeypatch.setattr(Trainer, "compute_loss", spy)
    mp = ModelParams(name_or_path=str(tiny_model_dir))
    tok = load_tokenizer(mp)
    fit(ROWS, [], mp, tp(loss_on=loss_on, packing="padded", max_steps=8), LoraParams(r=4), tmp_path / "c",
        tmp_path / "l")
    expected = {tuple(e.input_ids): e.labels for e in (encode(tok, r["messages"], loss_on, 64) for r in ROWS)}
    rows_seen = 0
    for ids, labels, att in seen:
        for i in range(ids.shape[0]):
            n = int(att[i].sum())
            assert labels[i, n:].eq(IGNORE).all()
            assert labels[i, :n].tolist() == expected[tuple(ids[i, :n].tolist())]
            rows_seen += 1
    assert rows_seen == 8 * 4
    # the multi-turn rows tell the policies apart: what is trained differs
    multi = encode(tok, ROWS[-1]["messages"], loss_on)
    trained = sum(x != IGNORE for x in multi.labels)
    assert {"response": 0 < trained < len(multi.labels), "all": trained == len(multi.labels),
            "last_turn": trained < sum(x != IGNORE for x in encode(tok, ROWS[-1]["messages"], "response").labels)
            }[loss_on]


def test_resumes_from_last_checkpoint_with_same_fingerprint(tmp_path, tiny_model_dir):
    mp = ModelParams(name_or_path=str(tiny_model_dir))
    ckpt = tmp_path / "ckpt"
    _, _, _, first = fit(ROWS, [], mp, tp(max_steps=4), LoraParams(r=4), ckpt, tmp_path / "live")
    assert first["resumed_from_step"] == 0 and (ckpt / "checkpoint-4").is_dir()
    import shutil

    shutil.rmtree(ckpt / "checkpoint-4")  # as if killed between the saves at steps 2 and 4
    _, _, _, again = fit(ROWS, [], mp, tp(max_steps=4), LoraParams(r=4), ckpt, tmp_path / "live")
    assert again["resumed_from_step"] == 2 and again["global_step"] == 4
    # a different config never resumes from another run's checkpoints
    _, _, _, other = fit(ROWS, [], mp, tp(max_steps=4, lr=1e-3), LoraParams(r=4), ckpt, tmp_path / "live")
    assert other["resumed_from_step"] == 0
    assert json.loads((ckpt / "fingerprint.json").read_text())["fingerprint"]


def test_truncation_policy_counts(tiny_model_dir):
    from sftpipe.model.loading import load_tokenizer

    tok = load_tokenizer(ModelParams(name_or_path=str(tiny_model_dir)))
    ds, stats = tokenize_rows(ROWS, tok, tp(max_length=40, truncation="drop"))
    assert stats.truncated == 8 == stats.dropped_too_long and len(ds) == len(ROWS) - 8 == stats.rows
    ds2, stats2 = tokenize_rows(ROWS, tok, tp(max_length=40, truncation="truncate"))
    assert stats2.truncated == 8 and stats2.dropped_too_long == 0 and len(ds2) == len(ROWS)
    assert all(len(x) <= 40 for x in ds2["input_ids"]) and ds2["length"] == [len(x) for x in ds2["input_ids"]]


@pytest.mark.parametrize("packing,save_steps,grad_accum", [("padded", 4, 1), ("padding_free", 4, 1),
                                                           ("padded", 6, 1), ("padded", 2, 2)])
def test_a_resumed_run_ends_bit_identical_to_an_uninterrupted_one(tmp_path, tiny_model_dir, packing, save_steps,
                                                                   grad_accum):
    """Three epochs with dropout; resume mid-epoch (epoch 2), at an epoch boundary, and under gradient
    accumulation: every trained weight equals the uninterrupted run's, bit for bit."""
    import shutil

    import torch

    mp = ModelParams(name_or_path=str(tiny_model_dir))
    rows = [r for r in ROWS if r["id"].startswith("s:")]  # 24 rows: 6 steps per epoch at batch 4
    t = tp(epochs=3, max_steps=-1, save_steps=save_steps, eval_steps=100, packing=packing, grad_accum=grad_accum)
    lora = LoraParams(r=4, dropout=0.1)
    first, _, _, done = fit(rows, [], mp, t, lora, tmp_path / "ckpt", tmp_path / "live")
    uninterrupted = {k: v.clone() for k, v in first.model.state_dict().items()}
    steps = sorted(int(p.name.split("-")[1]) for p in (tmp_path / "ckpt").glob("checkpoint-*"))
    assert steps[-1] == done["global_step"] and len(steps) == 2
    shutil.rmtree(tmp_path / "ckpt" / f"checkpoint-{steps[-1]}")  # killed after the previous save
    second, _, _, again = fit(rows, [], mp, t, lora, tmp_path / "ckpt", tmp_path / "live")
    assert again["resumed_from_step"] == steps[0] > 0 and again["global_step"] == done["global_step"]
    resumed = second.model.state_dict()
    assert [k for k in uninterrupted if not torch.equal(uninterrupted[k], resumed[k])] == []


def test_adapter_inputs_stay_in_the_autocast_dtype_with_the_same_loss_and_gradients(tiny_model_dir):
    """Under bf16 autocast, skipping peft's fp32 cast of each adapted layer's input (two copies a layer on
    a GPU) gives bit-identical loss and adapter gradients: the adapter matmul ran in bf16 either way. The
    switch is set only inside the context, only for plain LoRA/rsLoRA and only under autocast."""
    import torch
    from peft import get_peft_model
    from peft.tuners.lora import LoraLayer

    from sftpipe.model.loading import load_model
    from sftpipe.model.train import adapter_input_casting, peft_config

    model = load_model(ModelParams(name_or_path=str(tiny_model_dir)), precision="bf16")
    model = get_peft_model(model, peft_config(tp(method="lora"), LoraParams(dropout=0.0), []))
    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    assert layers and {p.dtype for n, p in model.named_parameters() if "lora_" in n} == {torch.float32}
    torch.manual_seed(0)
    ids = torch.randint(10, 200, (2, 24))

    def loss_and_grads(autocast_flag):
        model.zero_grad()
        with adapter_input_casting(model, "lora", autocast=autocast_flag):
            assert all(m.cast_input_dtype_enabled is not autocast_flag for m in layers)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
        return loss.detach(), [p.grad.clone() for n, p in model.named_parameters() if p.requires_grad]

    cast_loss, cast_grads = loss_and_grads(False)
    loss, grads = loss_and_grads(True)
    assert all(m.cast_input_dtype_enabled for m in layers)  # restored
    assert torch.equal(loss, cast_loss)
    assert all(torch.equal(a, b) for a, b in zip(grads, cast_grads)) and any(g.abs().sum() > 0 for g in grads)
    for method, autocast_flag in (("dora", True), ("lora", False)):
        with adapter_input_casting(model, method, autocast=autocast_flag):
            assert all(m.cast_input_dtype_enabled for m in layers)
