"""Typed, range-checked view of the composed Hydra config.

Hydra composes YAML; this module turns the result into typed objects and rejects a bad
value with one line that names it, before any data or model is loaded.
"""

from __future__ import annotations

from typing import Literal

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from qa_compress.errors import UserError


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(Section):
    name: str
    name_or_path: str = Field(min_length=1)
    trust_remote_code: bool = False


class DatasetConfig(Section):
    name: str
    source: Literal["hub", "json", "synthetic"]
    hub_name: str | None = None
    train_file: str | None = None
    validation_file: str | None = None
    train_paragraphs: int | None = Field(default=None, gt=0)
    eval_paragraphs: int | None = Field(default=None, gt=0)
    generator_seed: int = 0
    max_seq_length: int = Field(ge=16, le=8192)
    doc_stride: int = Field(gt=0)
    max_train_samples: int | None = Field(default=None, gt=0)
    max_eval_samples: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> DatasetConfig:
        if self.doc_stride >= self.max_seq_length:
            raise ValueError(
                f"dataset.doc_stride={self.doc_stride} must be smaller than "
                f"dataset.max_seq_length={self.max_seq_length}"
            )
        if self.source == "hub" and not self.hub_name:
            raise ValueError("dataset.hub_name is required when dataset.source=hub")
        if self.source == "json" and not self.validation_file:
            raise ValueError("dataset.validation_file=null: dataset=squad_json needs dataset.validation_file=<path>")
        if self.source == "synthetic" and not (self.train_paragraphs and self.eval_paragraphs):
            raise ValueError(
                "dataset.train_paragraphs and dataset.eval_paragraphs are required when dataset.source=synthetic"
            )
        return self


class TrainingConfig(Section):
    name: Literal["finetune", "none"]
    learning_rate: float = Field(default=3e-5, gt=0, le=1)
    num_train_epochs: float = Field(default=2.0, gt=0)
    max_steps: int | None = Field(default=None, gt=0)
    batch_size: int = Field(default=16, gt=0)
    gradient_accumulation_steps: int = Field(default=1, gt=0)
    weight_decay: float = Field(default=0.01, ge=0)
    warmup_ratio: float = Field(default=0.1, ge=0, lt=1)
    lr_scheduler_type: str = "linear"
    max_grad_norm: float = Field(default=1.0, gt=0)
    logging_steps: int = Field(default=50, gt=0)
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = "auto"

    def key_fields(self) -> dict:
        """The settings that determine the fine-tuned weights (logging does not)."""
        return self.model_dump(exclude={"logging_steps"})


class PruningConfig(Section):
    name: Literal["none", "l1_unstructured", "global_magnitude", "random", "structured"]
    amount: float = Field(default=0.0, ge=0, le=1)
    layer_patterns: list[str] = Field(min_length=1)
    include_qa_head: bool = False
    include_embeddings: bool = False
    heads_amount: float = Field(default=0.0, ge=0, lt=1)
    ffn_amount: float = Field(default=0.0, ge=0, lt=1)
    importance: Literal["weight_norm", "gradient"] = "weight_norm"
    importance_batches: int = Field(default=8, gt=0)
    finetune_steps: int = Field(default=0, ge=0)
    finetune_learning_rate: float = Field(default=5e-5, gt=0, le=1)
    finetune_batch_size: int = Field(default=16, gt=0)

    @model_validator(mode="after")
    def _amounts_fit_method(self) -> PruningConfig:
        if self.name == "structured" and self.amount:
            raise ValueError(
                f"pruning.amount={self.amount} does not apply to pruning=structured; "
                "set pruning.heads_amount and pruning.ffn_amount"
            )
        if self.name != "structured" and (self.heads_amount or self.ffn_amount):
            raise ValueError(
                f"pruning.heads_amount / pruning.ffn_amount apply to pruning=structured only (pruning={self.name}); "
                "unstructured methods take pruning.amount"
            )
        if self.name == "none" and self.finetune_steps:
            raise ValueError(f"pruning.finetune_steps={self.finetune_steps} needs a pruning method (pruning=none)")
        return self

    def needs_training_data(self) -> bool:
        """Recovery fine-tuning and gradient importance both read training features."""
        return self.finetune_steps > 0 or (self.name == "structured" and self.importance == "gradient")


class QuantizationConfig(Section):
    name: Literal["none", "dynamic_int8", "onnx_int8", "fp16", "bf16"]
    per_channel: bool = False

    @model_validator(mode="after")
    def _per_channel_is_for_int8(self) -> QuantizationConfig:
        if self.per_channel and self.name not in {"dynamic_int8", "onnx_int8"}:
            raise ValueError(f"quantization.per_channel=true applies to dynamic_int8 and onnx_int8, not {self.name}")
        return self


class PredictConfig(Section):
    batch_size: int = Field(default=64, gt=0)
    n_best_size: int = Field(default=20, gt=0)
    max_answer_length: int = Field(default=30, gt=0)
    null_score_diff_threshold: float = 0.0


class BenchmarkConfig(Section):
    enabled: bool = True
    batch_size: int = Field(default=16, gt=0)
    warmup: int = Field(default=3, ge=0)
    repeats: int = Field(default=10, gt=0)
    num_threads: int | None = Field(default=None, gt=0)


class PathsConfig(Section):
    root_dir: str
    cache_dir: str
    mlruns_dir: str
    output_dir: str


class TrackingConfig(Section):
    experiment_name: str = Field(min_length=1)
    uri: str | None = None


class JobConfig(Section):
    seed: int = Field(ge=0)
    force: bool = False
    save_model: bool = False
    cache_lock_timeout_s: float = Field(default=86400, gt=0)
    model: ModelConfig
    dataset: DatasetConfig
    training: TrainingConfig
    pruning: PruningConfig
    quantization: QuantizationConfig
    predict: PredictConfig
    benchmark: BenchmarkConfig
    paths: PathsConfig
    tracking: TrackingConfig

    @model_validator(mode="after")
    def _training_data(self) -> JobConfig:
        if self.dataset.source == "json" and not self.dataset.train_file:
            if self.training.name != "none":
                raise ValueError(
                    "dataset.train_file=null: fine-tuning needs dataset.train_file=<path> (or training=none to "
                    "evaluate model.name_or_path as it is)"
                )
            if self.pruning.needs_training_data():
                raise ValueError(
                    "dataset.train_file=null: pruning.finetune_steps > 0 and pruning.importance=gradient need "
                    "dataset.train_file=<path>"
                )
        return self


def _describe(error: dict) -> str:
    where = ".".join(str(part) for part in error["loc"])
    if error["type"] == "value_error":
        return error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return f"{where}: unknown key"
    return f"{where}={error['input']!r}: {error['msg']}"


def job_section(cfg: DictConfig) -> DictConfig:
    """The config without Hydra's own `hydra` node (which only resolves inside a launched job)."""
    return OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])


def from_hydra(cfg: DictConfig) -> JobConfig:
    """Resolve and check a composed config; raises UserError naming the first bad values."""
    try:
        container = OmegaConf.to_container(job_section(cfg), resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as err:
        raise UserError(str(err).splitlines()[0]) from None
    try:
        return JobConfig.model_validate(container)
    except ValidationError as err:
        raise UserError("; ".join(_describe(e) for e in err.errors())) from None
