"""``sftpipe <stage>``: one console script for every pipeline stage (imports are lazy)."""

from __future__ import annotations

import importlib

import click

STAGES = {
    "sample": "Generate the offline sample dataset with known defects",
    "base": "Build the tiny offline base model (tokenizer + pretraining)",
    "collect": "Read all sources into the canonical schema",
    "clean": "Repair broken text (mojibake, HTML, whitespace) and mask PII",
    "dedup": "Remove exact and near duplicates (MinHash LSH)",
    "label-noise": "Find mislabeled rows with cleanlab",
    "perplexity": "Score rows with a reference LM and drop outliers",
    "split": "Leakage-free train/validation/test split",
    "select": "Score the training rows and choose them to a budget",
    "train": "Fine-tune the model (LoRA and friends, or full)",
    "evaluate": "Score base and SFT models on the test split",
    "report": "Write the data card",
    # the create pipeline (create/dvc.yaml)
    "prompts": "Fresh unlabeled prompts for distillation and best-of-K",
    "generate": "Replies from a generator: distillation rows or K candidates per prompt",
    "reward": "Score generated candidates (rules, reward model, judge, log-probability)",
    "best-of-k": "Keep the best candidate per prompt; reject prompts without a good one",
    "augment": "Instruction paraphrases and format variants of the training rows",
    "self-instruct": "New instructions from seed tasks, kept only when novel",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return list(STAGES)

    def get_command(self, ctx, name):
        if name not in STAGES:
            return None
        return importlib.import_module(f"stages.{name.replace('-', '_')}").cli

    def format_commands(self, ctx, formatter):
        with formatter.section("Stages"):
            formatter.write_dl(list(STAGES.items()))


@click.group(cls=LazyGroup, help="SFT data-and-model pipeline. Each command is one DVC stage.")
def main():
    pass


if __name__ == "__main__":
    main()
