"""Function-preserving depth growth: a larger model that starts as the model it grew from.

Offline there is no stronger model to distil from, and a larger one pretrained from scratch on the base's
corpus and compute is undertrained (README, "Creating data"). Growing the trained base instead costs no
pretraining: every decoder layer is followed by ``factor - 1`` copies of itself whose two residual-writing
projections (attention ``o_proj``, MLP ``down_proj``) are zero. A copy then adds nothing to the residual
stream, so the grown model computes exactly the base's function (same logits), and fine-tuning in full
puts the new layers to work from the first step (their inputs, queries, keys and MLP weights are the
copied ones, so the zeroed projections get non-zero gradients at once). The same idea as Net2Net's
identity layers (Chen et al., 2016) and the zero-initialised output projections of LoRA's B matrix.

It applies to decoders shaped like LLaMA (Qwen2, Mistral, ...): ``model.model.layers`` a ``ModuleList``
whose layers have ``self_attn.o_proj`` and ``mlp.down_proj``.
"""

from __future__ import annotations

import copy

from ..errors import UserError

ZEROED = ("self_attn.o_proj", "mlp.down_proj")


def grow_depth(model, factor: int):
    """Grow ``model`` in place to ``factor`` times its decoder layers; returns it. ``factor`` 1 is a no-op.

    Layer ``i`` becomes layers ``i * factor`` (the original) to ``i * factor + factor - 1`` (copies with
    :data:`ZEROED` projections, and biases, set to zero). ``config.num_hidden_layers`` (and a per-layer
    ``config.layer_types`` list, where the architecture has one) follow, so ``save_pretrained`` writes a
    model that ``from_pretrained`` loads as the grown shape."""
    import torch

    if factor == 1:
        return model
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if not isinstance(layers, torch.nn.ModuleList) or not all(_has(layer, name) for layer in layers
                                                               for name in ZEROED):
        raise UserError(f"grow_depth: {type(model).__name__} is not a LLaMA-shaped decoder (model.layers with "
                        "self_attn.o_proj and mlp.down_proj); set grow_depth: 1")
    grown = []
    for layer in layers:
        grown.append(layer)
        for _ in range(factor - 1):
            twin = copy.deepcopy(layer)
            for name in ZEROED:
                proj = twin.get_submodule(name)
                with torch.no_grad():
                    proj.weight.zero_()
                    if getattr(proj, "bias", None) is not None:
                        proj.bias.zero_()
            grown.append(twin)
    for i, layer in enumerate(grown):       # the KV cache indexes layers by this
        if hasattr(getattr(layer, "self_attn", None), "layer_idx"):
            layer.self_attn.layer_idx = i
    inner.layers = torch.nn.ModuleList(grown)
    cfg = model.config
    n = len(layers)
    cfg.num_hidden_layers = n * factor
    types = getattr(cfg, "layer_types", None)
    if isinstance(types, list) and len(types) == n:
        cfg.layer_types = [t for t in types for _ in range(factor)]
    return model


def _has(module, name: str) -> bool:
    try:
        module.get_submodule(name)
    except AttributeError:
        return False
    return True
