"""Pruning as a job applies it: select the layers, prune, recover by fine-tuning, then make it permanent.

Recovery fine-tunes with the masks in the forward pass, so pruned weights stay zero; with a gradual
schedule the masks start dense and tighten stage by stage, and a staged method (structured) prunes
for good stage by stage with recovery after each. Masks are folded into the weights last (`fold_in`).
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from datasets import Dataset

from qa_compress.errors import UserError
from qa_compress.model import distill, train
from qa_compress.prune import layers as prune_layers
from qa_compress.prune import schedule
from qa_compress.prune.base import PruneContext, PruningSettings, get, layer_patterns

log = logging.getLogger(__name__)

SCORES_BEFORE_RECOVERY = ("f1", "exact", "HasAns_f1", "NoAns_f1")


@dataclass
class Pruned:
    """The layers pruning considered, their original sizes, and what it logged."""

    layers: dict[str, torch.nn.Module]
    original_sizes: dict[str, int]
    metrics: dict[str, float]


@dataclass(frozen=True)
class Recovery:
    """What pruning and recovery use besides the model and the pruning settings."""

    tokenizer: Any
    train_features: Dataset | None
    training: dict[str, Any]  # the job's training settings, which recovery's start from
    seed: int
    device: torch.device
    teacher: distill.Teacher | None = None


def prune_once(model: Any, settings: PruningSettings, recovery: Recovery) -> Pruned:
    """Apply the pruning method; unstructured masks stay on until `fold_in` (after any recovery)."""
    patterns = layer_patterns(settings, model.config.model_type) or []
    layers = prune_layers.prunable_layers(model, patterns, settings.include_qa_head, settings.include_embeddings)
    if not layers and settings.name != "none":
        raise UserError(f"pruning.layer_patterns={patterns}: no Linear layer of the model matches")
    original = {name: module.weight.numel() for name, module in layers.items()}
    context = PruneContext(seed=recovery.seed, train_features=recovery.train_features, device=recovery.device)
    metrics = {"prunable_layers": len(layers), **get(settings.name).apply(model, layers, settings, context)}
    return Pruned(layers, original, metrics)


def before_recovery(pruned: Pruned, scores: dict[str, float]) -> dict[str, float]:
    """Sparsity and scores of the pruned model before recovery, to log beside the final ones."""
    rows = prune_layers.layer_sparsity(pruned.layers, pruned.original_sizes)
    kept = {f"{key}_before_recovery": scores[key] for key in SCORES_BEFORE_RECOVERY if key in scores}
    return {"sparsity_before_recovery": prune_layers.sparsity(rows), **kept}


def recovery_settings(settings: PruningSettings, training: dict[str, Any], steps: int) -> dict[str, Any]:
    """The training settings of `steps` recovery steps: the job's, with pruning's learning rate and batch size."""
    return {
        **training,
        "learning_rate": settings.finetune_learning_rate,
        "max_steps": steps,
        "batch_size": settings.finetune_batch_size,
        "gradient_accumulation_steps": 1,
        "warmup_ratio": 0.1,
        "logging_steps": max(1, min(training["logging_steps"], steps // 5 or 1)),
    }


def recover(model: Any, settings: PruningSettings, pruned: Pruned, recovery: Recovery) -> dict[str, float]:
    """Recovery fine-tuning of the pruned model, tightening a gradual schedule's masks as it goes."""
    callbacks = []
    if settings.gradual():
        callbacks.append(
            schedule.GradualMasks(
                get(settings.name),
                pruned.layers,
                settings.amount,
                settings.gradual_stages,
                settings.gradual_end,
                recovery.seed,
                settings.finetune_steps,
            )
        )
    teacher = recovery.teacher
    log.info("Recovery fine-tuning for %d steps%s", settings.finetune_steps, " with distillation" if teacher else "")
    result = train.fine_tune(
        model,
        recovery.tokenizer,
        recovery.train_features,
        recovery_settings(settings, recovery.training, settings.finetune_steps),
        recovery.seed,
        callbacks,
        teacher,
    )
    metrics = {f"recovery_{k}": v for k, v in result.items()}
    if callbacks:
        metrics["gradual_stages_applied"] = len(callbacks[0].applied)
    return metrics


def prune_in_stages(model: Any, settings: PruningSettings, recovery: Recovery) -> tuple[Pruned, dict[str, float]]:
    """A staged method's gradual schedule: pruned for good stage by stage, recovery fine-tuning after each."""
    lengths = schedule.stage_lengths(settings.finetune_steps, settings.gradual_stages, settings.gradual_end)
    stages = get(settings.name).stages(model, settings, schedule.cubic(1.0, settings.gradual_stages))
    first: Pruned | None = None
    removed: dict[str, float] = {}
    trained = []
    for stage, length in zip(stages, lengths, strict=True):
        pruned = prune_once(model, stage, recovery)
        first = first or pruned  # its layers and original sizes describe the model before any stage
        for key, value in pruned.metrics.items():
            if key != "prunable_layers":
                removed[key] = removed.get(key, 0) + value
        log.info("Pruning stage %d of %d; recovery for %d steps", len(trained) + 1, len(lengths), length)
        steps = recovery_settings(settings, recovery.training, length)
        trained.append(
            train.fine_tune(
                model, recovery.tokenizer, recovery.train_features, steps, recovery.seed, [], recovery.teacher
            )
        )
    steps = sum(r["train_steps"] for r in trained)
    metrics = {
        **removed,
        "gradual_stages_applied": len(trained),
        "recovery_train_steps": steps,
        "recovery_train_loss": sum(r.get("train_loss", math.nan) * r["train_steps"] for r in trained) / steps,
        "recovery_train_runtime": sum(r.get("train_runtime", 0.0) for r in trained),
    }
    return first, metrics


def prune_and_recover(
    model: Any,
    settings: PruningSettings,
    recovery: Recovery,
    scores: Callable[[Any], dict[str, float]],
) -> tuple[list[dict], dict[str, float]]:
    """Prune `model` in place as the settings say, recovering when they ask, and make it permanent.

    `scores(model)` evaluates a pruned model before recovery. Returns the per-layer sparsity rows and the
    metrics to log.
    """
    if settings.gradual() and get(settings.name).staged:
        one_shot = copy.deepcopy(model)  # what pruning at once, without recovery, would have left
        pruned_at_once = prune_once(one_shot, settings, recovery)
        metrics = before_recovery(pruned_at_once, scores(one_shot))
        del one_shot, pruned_at_once
        pruned, staged = prune_in_stages(model, settings, recovery)
        metrics.update({**pruned.metrics, **staged})
    else:
        pruned = prune_once(model, settings, recovery)
        metrics = dict(pruned.metrics)
        if settings.finetune_steps:
            metrics.update(before_recovery(pruned, scores(model)))
            metrics.update(recover(model, settings, pruned, recovery))
    rows = fold_in(pruned)
    metrics["sparsity"] = prune_layers.sparsity(rows)
    return rows, metrics


def fold_in(pruned: Pruned) -> list[dict]:
    """Make the pruning permanent (masks folded into the weights); returns the per-layer sparsity rows."""
    prune_layers.make_permanent(pruned.layers)
    return prune_layers.layer_sparsity(pruned.layers, pruned.original_sizes)
