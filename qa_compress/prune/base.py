"""What a pruning method is: its settings, what it needs, how it checks, prunes and names itself.

One subclass of `PruningMethod` per method, in its own module, registered in `registry`.
The pipeline finds the layers (`layers.prunable_layers`), calls `apply`, optionally runs
recovery fine-tuning with any masks still on, then folds the masks in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field, model_validator

from qa_compress.registry import Registry
from qa_compress.schema import Section

if TYPE_CHECKING:
    import torch
    from datasets import Dataset
    from torch import nn

    from qa_compress.config import JobConfig


class PruningSettings(Section):
    """Keys every pruning method takes (`conf/pruning/none.yaml`); a method's own settings add to them."""

    name: str
    layer_patterns: list[str] | None = None  # None: the model family's Linear layers
    include_qa_head: bool = False
    include_embeddings: bool = False
    finetune_steps: int = Field(default=0, ge=0)
    finetune_learning_rate: float = Field(default=5e-5, gt=0, le=1)
    finetune_batch_size: int = Field(default=16, gt=0)

    @model_validator(mode="after")
    def _patterns_not_empty(self) -> PruningSettings:
        if self.layer_patterns is not None and not self.layer_patterns:
            raise ValueError("pruning.layer_patterns=[]: give at least one pattern, or null for the model family's")
        return self


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

    def needs_training_data(self, settings: PruningSettings) -> bool:
        """Whether the job must prepare training windows (recovery fine-tuning, data-driven importance)."""
        return settings.finetune_steps > 0

    def check(self, job: JobConfig, model_config: Any) -> str | None:
        """Why this job cannot run with this method on a model with `model_config`, or None."""
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


def describe(settings: PruningSettings) -> str:
    """The one label of a pruning choice: method, amount and recovery steps ("l1_unstructured 0.3 +200 steps")."""
    text = " ".join(part for part in (settings.name, get(settings.name).label(settings)) if part)
    if settings.finetune_steps:
        text += f" +{settings.finetune_steps} steps"
    return text


class UnstructuredSettings(PruningSettings):
    amount: float = Field(default=0.3, ge=0, le=1)


class UnstructuredMethod(PruningMethod):
    """Zeros in place, chosen per method by `mask`; the shapes stay, so only gzip and sparse kernels gain."""

    settings: ClassVar[type[PruningSettings]] = UnstructuredSettings

    def mask(self, layers: dict[str, nn.Module], amount: float, seed: int) -> None:
        raise NotImplementedError

    def apply(self, model, layers, settings, context) -> dict[str, float]:
        if settings.amount > 0:
            self.mask(layers, settings.amount, context.seed)
        return {}

    def label(self, settings: PruningSettings) -> str:
        return f"{settings.amount:g}"

    def is_identity(self, settings: PruningSettings) -> bool:
        return settings.amount == 0


def layer_patterns(settings: PruningSettings, model_type: str) -> list[str] | None:
    """The configured layer patterns, or the model family's when none are configured (None: no family)."""
    if settings.layer_patterns is not None:
        return list(settings.layer_patterns)
    from qa_compress import families

    family = families.of(model_type)
    return list(family.layer_patterns) if family is not None else None
