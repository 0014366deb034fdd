"""Talking to language models over the network (OpenAI-compatible endpoints)."""
