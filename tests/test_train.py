"""Training on the tiny model: every peft method runs, exports reload with identical generations,
and an interrupted run resumes from its last checkpoint."""

import json

import pytest

from sftpipe.config import LoraParams, ModelParams, TrainParams
from sftpipe.evaluation import generate
from sftpipe.train import fit, load_sft, save, tokenize_rows

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


@pytest.mark.parametrize("method,packing", [("lora", "padding_free"), ("lora", "padded"), ("dora", "auto"),
                                            ("rslora", "auto"), ("full", "auto"), ("prompt_tuning", "auto"),
                                            ("prefix_tuning", "auto")])
def test_every_method_trains_and_reloads_with_identical_generations(tmp_path, tiny_model_dir, method, packing):
    mp = ModelParams(name_or_path=str(tiny_model_dir))
    t = tp(method=method, packing=packing, merge=method == "lora")
    trainer, tok, template, summary = fit(ROWS, ROWS[:4], mp, t, LoraParams(r=4), tmp_path / "ckpt", tmp_path / "live")
    assert summary["global_step"] == 4 and summary["method"] == method and template == "tokenizer"
    # auto: padded under SDPA (the tiny model's default attention), padding-free only with flash-attention
    assert summary["packing"] == ("padded" if method.endswith("tuning") else
                                  "padding_free" if packing == "padding_free" else "padded")
    assert 0 < summary["trainable_params"] <= summary["total_params"]
    if method != "full":
        assert summary["trainable_params"] < summary["total_params"] / 2
    save(trainer.model, tok, t, mp, template, tmp_path / "sft")
    files = {p.name for p in (tmp_path / "sft").iterdir()}
    assert not any(f.endswith((".bin", ".pt", ".pkl")) for f in files)
    assert ("adapter_model.safetensors" in files) == (method != "full")
    probe = ROWS[:3] + ROWS[-1:]
    in_memory = generate(trainer.model.eval(), tok, probe, max_new_tokens=8, batch_size=2)
    model, tok2 = load_sft(mp, tmp_path / "sft")
    assert generate(model, tok2, probe, max_new_tokens=8, batch_size=2) == in_memory
    if method == "lora":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        merged = AutoModelForCausalLM.from_pretrained(tmp_path / "sft" / "merged", use_safetensors=True).eval()
        assert generate(merged, AutoTokenizer.from_pretrained(tmp_path / "sft" / "merged"), probe, 8, 2) == in_memory


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
    from sftpipe.modeling import load_tokenizer

    tok = load_tokenizer(ModelParams(name_or_path=str(tiny_model_dir)))
    ds, stats = tokenize_rows(ROWS, tok, tp(max_length=40, truncation="drop"))
    assert stats.truncated == 8 == stats.dropped_too_long and len(ds) == len(ROWS) - 8 == stats.rows
    ds2, stats2 = tokenize_rows(ROWS, tok, tp(max_length=40, truncation="truncate"))
    assert stats2.truncated == 8 and stats2.dropped_too_long == 0 and len(ds2) == len(ROWS)
    assert all(len(x) <= 40 for x in ds2["input_ids"]) and ds2["length"] == [len(x) for x in ds2["input_ids"]]
