"""Gradual pruning: the target reached in stages over the recovery steps, along Zhu & Gupta's cubic curve.

Stage k of n prunes to amount * (1 - (1 - k/n)^3): large steps first, while the network has
many redundant weights, small ones near the end. The stages start evenly over the first
`gradual_end` of the recovery steps; the remaining steps train at the final sparsity.
"""

from __future__ import annotations

from transformers import TrainerCallback

from qa_compress.prune.base import UnstructuredMethod
from qa_compress.prune.layers import effective_weights, set_masks


def cubic(fraction: float, stages: int) -> list[float]:
    """The fraction of the final amount reached after each of `stages` stages; the last is exactly 1."""
    return [fraction * (1 - (1 - k / stages) ** 3) if k < stages else fraction for k in range(1, stages + 1)]


def stage_starts(steps: int, stages: int, end: float) -> list[int]:
    """The recovery step at which each stage begins: evenly over the first `end` of `steps`, the first at 0."""
    span = max(stages, round(end * steps))
    return [(k * span) // stages for k in range(stages)]


def stage_lengths(steps: int, stages: int, end: float) -> list[int]:
    """Recovery steps trained after each stage; the last stage also gets the steps after `end`."""
    starts = stage_starts(steps, stages, end)
    return [following - start for start, following in zip(starts, [*starts[1:], steps], strict=True)]


class GradualMasks(TrainerCallback):
    """Tightens an unstructured method's masks at each stage start, in place, so training sees each stage.

    Scores are taken on the weights under this schedule's own previous masks (dense at the
    first stage), so a weight pruned at one stage stays pruned and the one-shot masks a job
    evaluates before recovery play no part.
    """

    def __init__(
        self, method: UnstructuredMethod, layers: dict, amount: float, stages: int, end: float, seed: int, steps: int
    ) -> None:
        self.method, self.layers, self.seed = method, layers, seed
        self.plan = dict(zip(stage_starts(steps, stages, end), (amount * f for f in cubic(1.0, stages)), strict=True))
        self.masks: dict | None = None
        self.applied: list[tuple[int, float]] = []  # (step, amount), for the record

    def prune_to(self, amount: float) -> None:
        self.masks = self.method.masks(effective_weights(self.layers, self.masks), amount, self.seed)
        set_masks(self.layers, self.masks)

    def on_step_begin(self, args, state, control, **kwargs):
        amount = self.plan.get(state.global_step)
        if amount is not None and (not self.applied or self.applied[-1][0] != state.global_step):
            self.prune_to(amount)
            self.applied.append((state.global_step, amount))
