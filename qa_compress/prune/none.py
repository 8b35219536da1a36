"""No pruning: the model as trained. Its layer selection still defines where `sparsity` is measured."""

from __future__ import annotations

from typing import ClassVar

from pydantic import model_validator

from qa_compress.prune.base import PruningMethod, PruningSettings, register


class NoPruningSettings(PruningSettings):
    @model_validator(mode="after")
    def _nothing_to_recover(self) -> NoPruningSettings:
        if self.finetune_steps:
            raise ValueError(f"pruning.finetune_steps={self.finetune_steps} needs a pruning method (pruning=none)")
        return self


class NoPruning(PruningMethod):
    name = "none"
    description = "No pruning. The layer selection still defines which weights `sparsity` is measured on."
    settings: ClassVar[type[PruningSettings]] = NoPruningSettings
    # Recovery and its schedule need something pruned: a search never sets them with pruning=none.
    inert_keys: ClassVar[frozenset[str]] = frozenset(
        {
            "finetune_steps",
            "finetune_learning_rate",
            "finetune_batch_size",
            "distill",
            "distill_temperature",
            "distill_weight",
            "distill_hidden_weight",
            "schedule",
            "gradual_stages",
            "gradual_end",
        }
    )

    def apply(self, model, layers, settings, context) -> dict[str, float]:
        return {}

    def is_identity(self, settings: PruningSettings) -> bool:
        return True


METHOD = register(NoPruning())
