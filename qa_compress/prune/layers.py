"""Finding the layers pruning touches, and measuring what it left."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

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


def effective_weights(
    layers: dict[str, nn.Module], masks: dict[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """Each layer's weights as its forward pass sees them, or under `masks` instead of its own mask (if any)."""
    weights = {}
    for name, module in layers.items():
        original = module.weight_orig if torch_prune.is_pruned(module) else module.weight
        mask = masks[name] if masks is not None else getattr(module, "weight_mask", None)
        weights[name] = (original * mask if mask is not None else original).detach()
    return weights


def lowest_masks(scores: dict[str, torch.Tensor], amount: float, global_threshold: bool) -> dict[str, torch.Tensor]:
    """Keep-masks (1 = kept) zeroing the `amount` lowest-scoring entries of each layer, or of all layers together.

    The count pruned is round(amount * size), as PyTorch's pruning functions count it.
    """
    if global_threshold:
        flat = torch.cat([s.flatten() for s in scores.values()])
        keep = _keep_mask(flat, round(amount * flat.numel()))
        masks, begin = {}, 0
        for name, s in scores.items():
            masks[name] = keep[begin : begin + s.numel()].view_as(s)
            begin += s.numel()
        return masks
    return {name: _keep_mask(s.flatten(), round(amount * s.numel())).view_as(s) for name, s in scores.items()}


def _keep_mask(flat: torch.Tensor, prune: int) -> torch.Tensor:
    mask = torch.ones_like(flat)
    if prune:
        mask[torch.topk(flat, prune, largest=False).indices] = 0
    return mask


@torch.no_grad()
def set_masks(layers: dict[str, nn.Module], masks: dict[str, torch.Tensor]) -> None:
    """Put `masks` on the layers' forward passes; a layer that has a mask has it replaced in place.

    In place, so an optimizer holding the layers' parameters keeps training the same tensors.
    """
    for name, module in layers.items():
        if torch_prune.is_pruned(module):
            module.weight_mask.copy_(masks[name])
            module.weight = module.weight_orig * module.weight_mask
        else:
            torch_prune.custom_from_mask(module, "weight", masks[name])


def make_permanent(layers: dict[str, nn.Module]) -> None:
    """Fold pruning masks into the weights and drop them (a no-op on unmasked layers)."""
    for module in layers.values():
        if torch_prune.is_pruned(module):
            torch_prune.remove(module, "weight")


def layer_sparsity(layers: dict[str, nn.Module], original_sizes: dict[str, int]) -> list[dict[str, float | str]]:
    """Per layer: its original and present weight count, non-zero weights, and the fraction gone.

    "Gone" counts both weights set to zero and weights removed by shrinking the layer.
    """
    rows = []
    for name, module in layers.items():
        weight = module.weight.detach()
        nonzero = int(torch.count_nonzero(weight))
        original = original_sizes[name]
        rows.append(
            {
                "layer": name,
                "shape": "x".join(str(d) for d in weight.shape),
                "params_original": original,
                "params_now": weight.numel(),
                "params_nonzero": nonzero,
                "sparsity": 1 - nonzero / original if original else 0.0,
            }
        )
    return rows


def sparsity(rows: Iterable[dict]) -> float:
    """Fraction of the prunable layers' original weights that are now zero or removed."""
    rows = list(rows)
    original = sum(r["params_original"] for r in rows)
    return 1 - sum(r["params_nonzero"] for r in rows) / original if original else 0.0
