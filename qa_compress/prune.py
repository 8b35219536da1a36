"""Unstructured magnitude pruning of a transformer's Linear layers, made permanent.

Prunable layers are found by module type and by regular expressions over module names,
never by attribute paths, so one config serves DistilBERT (`q_lin`, `ffn.lin1`, ...) and
BERT (`query`, `dense`, ...) alike.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

QA_HEAD = "qa_outputs"


def prunable_layers(
    model: nn.Module,
    layer_patterns: Sequence[str],
    include_qa_head: bool = False,
    include_embeddings: bool = False,
) -> dict[str, nn.Module]:
    """Modules whose weights pruning touches, by qualified name, in model order.

    Linear layers whose name matches any of `layer_patterns` (re.search); the QA head and the
    embedding tables only when asked for.
    """
    compiled = [re.compile(p) for p in layer_patterns]
    chosen = {}
    for name, module in model.named_modules():
        is_head = name == QA_HEAD or name.endswith(f".{QA_HEAD}")
        if (
            isinstance(module, nn.Linear)
            and ((is_head and include_qa_head) or (not is_head and any(p.search(name) for p in compiled)))
            or include_embeddings
            and isinstance(module, nn.Embedding)
        ):
            chosen[name] = module
    return chosen


def l1_unstructured(layers: dict[str, nn.Module], amount: float) -> None:
    """Zero the `amount` fraction of smallest-magnitude weights in each layer, then drop the masks."""
    for module in layers.values():
        torch_prune.l1_unstructured(module, name="weight", amount=amount)
        torch_prune.remove(module, "weight")


def sparsity(layers: dict[str, nn.Module]) -> float:
    """Fraction of exact zeros over all weights of `layers`."""
    zeros = total = 0
    for module in layers.values():
        weight = module.weight.detach()
        zeros += int(torch.count_nonzero(weight == 0))
        total += weight.numel()
    return zeros / total if total else 0.0


def apply(
    model: nn.Module,
    method: str,
    amount: float,
    layer_patterns: Sequence[str],
    include_qa_head: bool,
    include_embeddings: bool,
) -> dict[str, nn.Module]:
    """Prune `model` in place with `method` and return the layers it considered."""
    layers = prunable_layers(model, layer_patterns, include_qa_head, include_embeddings)
    if not layers:
        raise ValueError(f"no layer matches pruning.layer_patterns={list(layer_patterns)}")
    if method == "l1_unstructured" and amount > 0:
        l1_unstructured(layers, amount)
    elif method not in {"none", "l1_unstructured"}:
        raise ValueError(f"unknown pruning method {method!r}")
    return layers
