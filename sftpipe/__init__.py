"""sftpipe: a versioned data-and-model pipeline for supervised fine-tuning, driven by DVC.

One package per stage that owns several files (``collect``, ``dedup``, ``model``,
``sample``), one module per single-file stage (``label_noise``, ``perplexity``,
``split``, ``report``), and the few pieces every stage shares: ``config`` (the
params schema), ``errors``, ``io``, ``schema`` (the record schema) and ``ledger``.
The click commands that DVC runs live in the top-level ``stages`` package.
"""
