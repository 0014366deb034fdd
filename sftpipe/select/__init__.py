"""Select: scores per row (IFD, reward model, LLM judge, cheap signals) and the choice of training
rows to a budget (random, top, diverse, k-center; mixture weights and balanced quotas)."""
