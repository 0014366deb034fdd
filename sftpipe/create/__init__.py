"""Creating training data: generation backends (distillation, K candidates per prompt)."""
