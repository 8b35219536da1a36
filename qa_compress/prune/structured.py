"""Structured pruning: whole attention heads and feed-forward neurons removed, so the matrices really shrink.

The same number of heads and neurons leaves every layer, ranked by weight norm or by a
first-order Taylor score on training batches. The feed-forward width goes into the config
(the family's `ffn_width_key`); removed heads go into `pruned_heads`, which loading reads
(`families.from_config`) to rebuild the shapes before the safetensors weights are loaded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from qa_compress.model import families
from qa_compress.model.families import Block
from qa_compress.prune.base import PruningMethod, PruningSettings, register

if TYPE_CHECKING:
    import torch
    from torch import nn
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)

Scores = list[tuple["torch.Tensor", "torch.Tensor"]]  # per layer: head scores, neuron scores


class StructuredSettings(PruningSettings):
    heads_amount: float = Field(default=0.25, ge=0, lt=1)
    ffn_amount: float = Field(default=0.5, ge=0, lt=1)
    importance: Literal["weight_norm", "gradient"] = "weight_norm"
    importance_batches: int = Field(default=8, gt=0)


def _group_scores(block: Block, per_weight: Callable[[nn.Linear], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Sums of `per_weight` over each head's and each feed-forward neuron's weights."""
    d = block.head_size
    rows = sum(per_weight(layer).sum(dim=1) for layer in block.per_head)
    cols = per_weight(block.attention_out).sum(dim=0)
    heads = (rows + cols).reshape(-1, d).sum(dim=1)
    neurons = per_weight(block.ffn_in).sum(dim=1) + per_weight(block.ffn_out).sum(dim=0)
    return heads, neurons


def weight_norm_importance(blocks: list[Block]) -> Scores:
    """Per layer: the L2 norm of each head's and each neuron's incoming and outgoing weights."""
    import torch

    with torch.no_grad():
        return [tuple(s.sqrt() for s in _group_scores(b, lambda layer: layer.weight.float() ** 2)) for b in blocks]


def gradient_importance(model: nn.Module, blocks: list[Block], batches: Iterable[dict[str, torch.Tensor]]) -> Scores:
    """Per layer: first-order Taylor importance |sum(w * dL/dw)| of each head and neuron, summed over batches.

    This estimates how much the QA loss would change if the group were removed (Molchanov et
    al., 2019); `batches` carry start and end positions, as training features do.
    """
    import torch

    totals: Scores | None = None
    was_training = model.training
    model.eval()  # no dropout: the score should not depend on a dropout draw
    device = next(model.parameters()).device
    for batch in batches:
        model.zero_grad(set_to_none=True)
        loss = model(**{k: v.to(device) for k, v in batch.items()}).loss
        loss.backward()
        with torch.no_grad():
            scores = [_group_scores(b, lambda layer: layer.weight * layer.weight.grad) for b in blocks]
            scores = [(h.abs(), n.abs()) for h, n in scores]
        if totals is not None:
            scores = [(h + th, n + tn) for (h, n), (th, tn) in zip(scores, totals, strict=True)]
        totals = scores
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    if totals is None:
        raise ValueError("gradient importance needs at least one batch of training data")
    return totals


def shrink(model: PreTrainedModel, heads_amount: float, ffn_amount: float, importance: Scores) -> dict[str, int]:
    """Remove the least important `heads_amount` of heads and `ffn_amount` of FFN neurons from every layer.

    Amounts are fractions of the heads and neurons present now. Every layer keeps the same
    number of heads and of neurons (at least one of each), so the config describes the new
    shapes, with removed heads named by their original index across stages; returns how
    many heads and neurons this call removed.
    """
    import torch

    family = families.of_model(model)
    if family is None:
        raise ValueError(f"structured pruning knows no layer layout for {type(model).__name__}")
    earlier = {int(k): list(v) for k, v in (getattr(model.config, "pruned_heads", None) or {}).items()}
    pruned_heads: dict[int, list[int]] = {}
    removed_heads = removed_neurons = 0
    width = None
    for index, (block, (head_scores, neuron_scores)) in enumerate(zip(family.blocks(model), importance, strict=True)):
        drop = min(round(heads_amount * block.heads), block.heads - 1)
        gone = earlier.get(index, [])  # original indices removed by an earlier stage
        present = [h for h in range(block.heads + len(gone)) if h not in set(gone)]
        if drop:
            heads = sorted(torch.argsort(head_scores)[:drop].tolist())
            families.remove_heads(block, heads)
            gone = sorted(gone + [present[h] for h in heads])
            removed_heads += drop
        if gone:
            pruned_heads[index] = gone
        ffn_width = block.ffn_in.out_features
        keep = max(ffn_width - round(ffn_amount * ffn_width), 1)
        neurons = torch.sort(torch.argsort(neuron_scores, descending=True)[:keep]).values
        if keep < ffn_width:
            families.keep_neurons(block, neurons)
            removed_neurons += ffn_width - keep
        width = keep
    setattr(model.config, family.ffn_width_key, width)
    model.config.pruned_heads = {str(k): v for k, v in pruned_heads.items()}
    return {"heads_removed": removed_heads, "ffn_neurons_removed": removed_neurons}


class Structured(PruningMethod):
    name = "structured"
    description = "Remove whole attention heads and feed-forward neurons from every layer; the matrices really shrink."
    settings: ClassVar[type[PruningSettings]] = StructuredSettings

    def needs_training_data(self, settings: PruningSettings) -> bool:
        return settings.finetune_steps > 0 or settings.importance == "gradient"

    def check(self, settings, model_config) -> str | None:
        if families.of(model_config.model_type) is None:
            return (
                f"structured pruning knows the layer layout of {', '.join(families.known_model_types())} models, "
                f"not model_type={model_config.model_type!r}"
            )
        return None

    def apply(self, model, layers, settings, context) -> dict[str, float]:
        from qa_compress.model import train

        family = families.of_model(model)
        blocks = family.blocks(model)
        if family.shared_layers:
            log.info(
                "%s shares one layer's weights among its %d layers: the heads and neurons removed leave every one",
                family.description.split(" ")[0],
                model.config.num_hidden_layers,
            )
        if settings.importance == "gradient":
            batches = train.batches(
                context.train_features, settings.finetune_batch_size, settings.importance_batches, context.seed
            )
            importance = gradient_importance(model.to(context.device), blocks, batches)
        else:
            importance = weight_norm_importance(blocks)
        return shrink(model, settings.heads_amount, settings.ffn_amount, importance)

    staged = True

    def stages(self, model, settings, fractions):
        """Each stage removes from every layer the heads and neurons that take the counts removed so far to its
        share of those one-shot pruning would remove; amounts are of what is present (`shrink` rounds back)."""
        block = families.of_model(model).blocks(model)[0]
        heads, width = block.heads, block.ffn_in.out_features
        final = (
            min(round(settings.heads_amount * heads), heads - 1),
            min(round(settings.ffn_amount * width), width - 1),
        )
        removed = (0, 0)
        for fraction in fractions:
            target = (round(fraction * final[0]), round(fraction * final[1]))
            block = families.of_model(model).blocks(model)[0]
            amounts = {
                "heads_amount": (target[0] - removed[0]) / block.heads,
                "ffn_amount": (target[1] - removed[1]) / block.ffn_in.out_features,
            }
            removed = target
            yield settings.model_copy(update=amounts)

    def label(self, settings: PruningSettings) -> str:
        return f"heads {settings.heads_amount:g} ffn {settings.ffn_amount:g}"

    def is_identity(self, settings: PruningSettings) -> bool:
        return settings.heads_amount == 0 and settings.ffn_amount == 0 and not settings.finetune_steps


METHOD = register(Structured())
