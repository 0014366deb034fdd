"""Everything that touches a language model: loading, chat templates, tokenization
with loss masks, the offline base model, training and evaluation.

``loading`` (tokenizers, models and fine-tuned checkpoints, safely), ``templates``,
``formatting`` (encode with masks; pad_batch), ``basemodel``, ``train``,
``evaluation`` and its ``metric_modules`` (evaluate metrics loaded by path).
"""
