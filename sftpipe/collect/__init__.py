"""Collect: every source into one canonical dataset, bad rows quarantined with a reason.

``readers`` (files -> raw rows with their locations), ``formats`` (alpaca,
ShareGPT, OpenAI -> canonical messages), ``sources`` (the stage: all sources,
ids checked, quarantine).
"""
