"""What a pruning method is: its settings, what it needs, how it checks, prunes and names itself.

One subclass of `PruningMethod` per method, in its own module, registered in `registry`.
The pipeline finds the layers (`layers.prunable_layers`), calls `apply`, optionally runs
recovery fine-tuning with any masks still on, then folds the masks in.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, model_validator

from qa_compress.registry import Registry
from qa_compress.schema import Section

if TYPE_CHECKING:
    import torch
    from datasets import Dataset
    from torch import nn


class PruningSettings(Section):
    """Keys every pruning method takes (`conf/pruning/none.yaml`); a method's own settings add to them."""

    name: str
    layer_patterns: list[str] | None = None  # None: the model family's Linear layers
    include_qa_head: bool = False
    include_embeddings: bool = False
    finetune_steps: int = Field(default=0, ge=0)
    finetune_learning_rate: float = Field(default=5e-5, gt=0, le=1)
    finetune_batch_size: int = Field(default=16, gt=0)
    distill: bool = False
    distill_temperature: float = Field(default=2.0, gt=0, le=100)
    distill_weight: float = Field(default=0.5, ge=0, le=1)
    distill_hidden_weight: float = Field(default=0.0, ge=0, le=1000)
    schedule: Literal["oneshot", "gradual"] = "oneshot"
    gradual_stages: int = Field(default=8, ge=1)
    gradual_end: float = Field(default=0.75, gt=0, le=1)

    @model_validator(mode="after")
    def _consistent(self) -> PruningSettings:
        if self.layer_patterns is not None and not self.layer_patterns:
            raise ValueError("pruning.layer_patterns=[]: give at least one pattern, or null for the model family's")
        if self.distill and not self.finetune_steps:
            raise ValueError("pruning.distill=true: distillation happens during recovery; set pruning.finetune_steps")
        if self.distill_hidden_weight and not self.distill:
            raise ValueError(
                f"pruning.distill_hidden_weight={self.distill_hidden_weight:g}: layer-wise distillation is part of "
                "distillation; set pruning.distill=true"
            )
        if self.schedule == "gradual":
            if self.name == "none":
                raise ValueError("pruning.schedule=gradual: pruning=none has nothing to prune gradually")
            if self.finetune_steps * self.gradual_end < self.gradual_stages:
                raise ValueError(
                    f"pruning.schedule=gradual: pruning.gradual_stages={self.gradual_stages} stages need at least "
                    f"that many of the first pruning.gradual_end={self.gradual_end:g} of pruning.finetune_steps="
                    f"{self.finetune_steps}"
                )
        return self

    def gradual(self) -> bool:
        return self.schedule == "gradual"


@dataclass(frozen=True)
class PruneContext:
    """What a method may use besides the model: the seed, training windows (if it asked), the device."""

    seed: int
    train_features: Dataset | None
    device: torch.device


class PruningMethod:
    """A pruning method. Subclasses set `name`, `description` and `settings`, and override `apply`."""

    name: ClassVar[str]
    description: ClassVar[str]
    settings: ClassVar[type[PruningSettings]] = PruningSettings
    staged: ClassVar[bool] = False  # gradual schedule: pruned for good in stages (`stages`), recovery between them
    inert_keys: ClassVar[frozenset[str]] = frozenset()  # settings it has that mean nothing to it (a search skips them)
    revision: ClassVar[int] = 1  # raised when the method's results change, so older runs are not reused as its own

    def stages(self, model: nn.Module, settings: PruningSettings, fractions: list[float]) -> Iterator[PruningSettings]:
        """For a staged method: the settings of each stage, computed as the stage comes, that together reach
        `fractions[i]` of what `settings` prune after stage i."""
        raise NotImplementedError

    def needs_training_data(self, settings: PruningSettings) -> bool:
        """Whether the job must prepare training windows (recovery fine-tuning, data-driven importance)."""
        return settings.finetune_steps > 0

    def check(self, settings: PruningSettings, model_config: Any) -> str | None:
        """Why these settings cannot prune a model with `model_config`, or None."""
        return None

    def apply(
        self, model: nn.Module, layers: dict[str, nn.Module], settings: PruningSettings, context: PruneContext
    ) -> dict[str, float]:
        """Prune `model` in place; `layers` are the selected Linear layers. Returns metrics to log.

        Unstructured methods leave PyTorch pruning masks on `layers` (folded in after recovery).
        """
        raise NotImplementedError

    def label(self, settings: PruningSettings) -> str:
        """How much this choice prunes, as a user would say it ("0.3", "heads 0.25 ffn 0.5")."""
        return ""

    def is_identity(self, settings: PruningSettings) -> bool:
        """Whether this choice leaves the model as it is (the sweep's uncompressed reference)."""
        return False


registry: Registry[PruningMethod] = Registry("pruning method", "pruning")


register = registry.register  # pruning=<method.name>, with a YAML file or ConfigStore entry for its keys
get = registry.get


def details(settings: PruningSettings) -> str:
    """A pruning choice's amount and recovery, without the method's name ("0.3 gradual +200 steps distilled")."""
    parts = [get(settings.name).label(settings)]
    if settings.gradual():
        parts.append("gradual")
    if settings.finetune_steps:
        parts.append(f"+{settings.finetune_steps} steps")
    if settings.distill:
        parts.append("distilled layer-wise" if settings.distill_hidden_weight else "distilled")
    return " ".join(part for part in parts if part)


def describe(settings: PruningSettings) -> str:
    """The one label of a pruning choice: method, amount and recovery ("l1_unstructured 0.3 gradual +200 steps")."""
    return " ".join(part for part in (settings.name, details(settings)) if part)


class UnstructuredSettings(PruningSettings):
    amount: float = Field(default=0.3, ge=0, le=1)


class UnstructuredMethod(PruningMethod):
    """Zeros in place, the lowest-scoring weights per layer (or over all layers at once, `global_threshold`).

    The shapes stay, so only gzip and sparse kernels gain. Masks sit in the forward pass
    (PyTorch's pruning hooks) until folded in; a gradual schedule tightens them in place.
    """

    settings: ClassVar[type[PruningSettings]] = UnstructuredSettings
    global_threshold: ClassVar[bool] = False

    def importance(self, weights: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
        """A score per weight, same shapes as `weights`: the lowest scores are pruned first."""
        raise NotImplementedError

    def masks(self, weights: dict[str, torch.Tensor], amount: float, seed: int) -> dict[str, torch.Tensor]:
        """Keep-masks that zero `amount` of the weights (of each layer, or of all of them together)."""
        from qa_compress.prune.layers import lowest_masks

        return lowest_masks(self.importance(weights, seed), amount, self.global_threshold)

    def apply(self, model, layers, settings, context) -> dict[str, float]:
        from qa_compress.prune.layers import effective_weights, set_masks

        if settings.amount > 0:
            set_masks(layers, self.masks(effective_weights(layers), settings.amount, context.seed))
        return {}

    def label(self, settings: PruningSettings) -> str:
        return f"{settings.amount:g}"

    def is_identity(self, settings: PruningSettings) -> bool:
        return settings.amount == 0 and not settings.finetune_steps  # recovery training would change the weights


def layer_patterns(settings: PruningSettings, model_type: str) -> list[str] | None:
    """The configured layer patterns, or the model family's when none are configured (None: no family)."""
    if settings.layer_patterns is not None:
        return list(settings.layer_patterns)
    from qa_compress.model import families

    family = families.of(model_type)
    return list(family.layer_patterns) if family is not None else None
