"""Structured pruning: whole layers, attention heads and feed-forward neurons removed, so the model really shrinks.

Layers go first (`layers_amount`, ranked by how little they change their input, or by position);
then the same number of heads and neurons leaves every remaining layer, ranked by weight norm or by a
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
    layers_amount: float = Field(default=0.0, ge=0, lt=1)
    importance: Literal["weight_norm", "gradient"] = "weight_norm"
    layers_importance: Literal["block_influence", "position"] = "block_influence"
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


def block_influence(model: nn.Module, batches: Iterable[dict[str, torch.Tensor]]) -> torch.Tensor:
    """Per layer: how much it changes what flows through it, 1 - cos(input, output) averaged over the real tokens
    of the batches (Men et al., 2024): a layer whose output is nearly its input is the cheapest to remove."""
    import torch

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    totals, tokens = None, 0
    with torch.no_grad():
        for batch in batches:
            inputs = {k: v.to(device) for k, v in batch.items() if k not in ("start_positions", "end_positions")}
            states = model.base_model(**inputs, output_hidden_states=True).hidden_states
            real = inputs["attention_mask"].bool()
            change = torch.stack(
                [
                    1 - torch.cosine_similarity(a, b, dim=-1)[real].sum()
                    for a, b in zip(states[:-1], states[1:], strict=True)
                ]
            )
            totals = change if totals is None else totals + change
            tokens += int(real.sum())
    model.train(was_training)
    if totals is None:
        raise ValueError("block influence needs at least one batch of training data")
    return totals / tokens


def layers_to_keep(count: int, drop: int, influence: torch.Tensor | None) -> list[int]:
    """Which of `count` layers stay when `drop` go: the least influential (`influence` per layer), or, by position,
    the ones just below the last (the QA head was trained on the last layer's output, so it always stays)."""
    import torch

    drop = min(drop, count - 1)
    candidates = list(range(count - 1))  # never the last layer
    if influence is None:
        gone = candidates[len(candidates) - drop :] if drop else []
    else:
        gone = torch.argsort(influence[: count - 1])[:drop].tolist()
    return [i for i in range(count) if i not in set(gone)]


def remove_layers(model: PreTrainedModel, amount: float, influence: torch.Tensor | None) -> dict[str, int]:
    """Remove `amount` of the present layers (rounded; the last always stays); returns how many went."""
    count = families.depth(model)
    keep = layers_to_keep(count, round(amount * count), influence)
    if len(keep) < count:
        families.keep_layers(model, keep)
    return {"layers_removed": count - len(keep)}


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
    description = (
        "Remove whole layers, and attention heads and feed-forward neurons from every layer; the model really shrinks."
    )
    settings: ClassVar[type[PruningSettings]] = StructuredSettings

    def needs_training_data(self, settings: PruningSettings) -> bool:
        measures_layers = settings.layers_amount > 0 and settings.layers_importance == "block_influence"
        return settings.finetune_steps > 0 or settings.importance == "gradient" or measures_layers

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
        removed = {}
        if settings.layers_amount > 0:
            influence = None
            if settings.layers_importance == "block_influence":
                batches = train.batches(
                    context.train_features, settings.finetune_batch_size, settings.importance_batches, context.seed
                )
                influence = block_influence(model.to(context.device), batches)
            removed = remove_layers(model, settings.layers_amount, influence)
        blocks = family.blocks(model)
        if family.shared_layers and (settings.heads_amount or settings.ffn_amount):
            log.info(
                "%s shares one layer's weights among its %d layers: the heads and neurons removed leave every one",
                model.config.model_type,
                model.config.num_hidden_layers,
            )
        if settings.importance == "gradient":
            batches = train.batches(
                context.train_features, settings.finetune_batch_size, settings.importance_batches, context.seed
            )
            importance = gradient_importance(model.to(context.device), blocks, batches)
        else:
            importance = weight_norm_importance(blocks)
        return {**removed, **shrink(model, settings.heads_amount, settings.ffn_amount, importance)}

    staged = True

    def stages(self, model, settings, fractions):
        """Each stage removes from every layer the heads and neurons that take the counts removed so far to its
        share of those one-shot pruning would remove; amounts are of what is present (`shrink` rounds back)."""
        block = families.of_model(model).blocks(model)[0]
        heads, width, depth = block.heads, block.ffn_in.out_features, families.depth(model)
        final = (
            min(round(settings.heads_amount * heads), heads - 1),
            min(round(settings.ffn_amount * width), width - 1),
            min(round(settings.layers_amount * depth), depth - 1),
        )
        removed = (0, 0, 0)
        for fraction in fractions:
            target = tuple(round(fraction * total) for total in final)
            block = families.of_model(model).blocks(model)[0]
            amounts = {
                "heads_amount": (target[0] - removed[0]) / block.heads,
                "ffn_amount": (target[1] - removed[1]) / block.ffn_in.out_features,
                "layers_amount": (target[2] - removed[2]) / families.depth(model),
            }
            removed = target
            yield settings.model_copy(update=amounts)

    def label(self, settings: PruningSettings) -> str:
        depth = f"layers {settings.layers_amount:g} " if settings.layers_amount else ""
        return f"{depth}heads {settings.heads_amount:g} ffn {settings.ffn_amount:g}"

    def is_identity(self, settings: PruningSettings) -> bool:
        untouched = settings.heads_amount == 0 and settings.ffn_amount == 0 and settings.layers_amount == 0
        return untouched and not settings.finetune_steps


METHOD = register(Structured())


class LayersSettings(StructuredSettings):
    heads_amount: float = Field(default=0.0, ge=0, lt=1)
    ffn_amount: float = Field(default=0.0, ge=0, lt=1)
    layers_amount: float = Field(default=0.5, ge=0, lt=1)


class Layers(Structured):
    """Depth pruning: structured pruning that removes whole layers and, unless asked, leaves the rest whole."""

    name = "layers"
    description = "Remove whole layers (the least influential, or those below the last); the model gets shallower."
    settings: ClassVar[type[PruningSettings]] = LayersSettings

    def label(self, settings: PruningSettings) -> str:
        if settings.heads_amount or settings.ffn_amount:
            return super().label(settings)
        return f"{settings.layers_amount:g}"


LAYERS = register(Layers())
