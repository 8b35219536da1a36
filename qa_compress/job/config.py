"""Typed, range-checked view of the composed Hydra config.

Hydra composes YAML; this module turns the result into typed objects and rejects a bad
value with one line that names it, before any data or model is loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any, Literal

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException
from pydantic import Field, SerializeAsAny, ValidationError, model_validator

from qa_compress import prune, quantize
from qa_compress.errors import UserError
from qa_compress.model import families
from qa_compress.prune import PruningSettings
from qa_compress.quantize import QuantizationSettings
from qa_compress.registry import Registry
from qa_compress.schema import Section

CONFIG_DIR = Path(__file__).resolve().parents[2] / "conf"  # the project's Hydra config: every default is written there


@cache
def _primary() -> DictConfig:
    return OmegaConf.load(CONFIG_DIR / "config.yaml")


def default(key: str) -> Any:
    """A setting's default as conf/config.yaml writes it, for code that runs without a composed config."""
    return OmegaConf.select(_primary(), key, throw_on_missing=True)


class ModelConfig(Section):
    name: str
    name_or_path: str = Field(min_length=1)
    model_type: str | None = None  # a preset's family: a checkpoint of another model_type is refused; null: any
    trust_remote_code: bool

    @model_validator(mode="after")
    def _known_type(self) -> ModelConfig:
        if self.model_type is not None and families.of(self.model_type) is None:
            raise ValueError(
                f"model.model_type={self.model_type!r}: not a model_type any family describes "
                f"({', '.join(families.known_model_types())}); null accepts any checkpoint"
            )
        return self


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
    learning_rate: float = Field(gt=0, le=1)
    num_train_epochs: float = Field(gt=0)
    max_steps: int | None = Field(gt=0)
    batch_size: int = Field(gt=0)
    gradient_accumulation_steps: int = Field(gt=0)
    weight_decay: float = Field(ge=0)
    warmup_ratio: float = Field(ge=0, lt=1)
    lr_scheduler_type: str
    max_grad_norm: float = Field(gt=0)
    logging_steps: int = Field(gt=0)
    mixed_precision: Literal["auto", "no", "fp16", "bf16"]

    def key_fields(self) -> dict:
        """The settings that determine the fine-tuned weights (logging does not)."""
        return self.model_dump(exclude={"logging_steps"})


class PredictConfig(Section):
    batch_size: int = Field(gt=0)
    n_best_size: int = Field(gt=0)
    max_answer_length: int = Field(gt=0)
    null_score_diff_threshold: float = Field(allow_inf_nan=False)
    null_threshold: Literal["fixed", "calibrate"]
    threshold_questions: int = Field(gt=0)
    threshold_file: str | None

    def calibrates(self) -> bool:
        """Whether each job picks its own null threshold (on questions carved from the training data, or a file)."""
        return self.null_threshold == "calibrate"

    def carves_training_data(self) -> bool:
        return self.calibrates() and self.threshold_file is None


class BenchmarkConfig(Section):
    enabled: bool
    batch_size: int = Field(gt=0)
    warmup: int = Field(ge=0)
    repeats: int = Field(gt=0)
    num_threads: int | None = Field(gt=0)
    reference: bool


class ReportConfig(Section):
    max_f1_drop: float = Field(ge=0, allow_inf_nan=False)


class PathsConfig(Section):
    root_dir: str
    cache_dir: str
    mlruns_dir: str
    output_dir: str


class TrackingConfig(Section):
    experiment_name: str = Field(min_length=1)
    uri: str | None
    lock_wait_s: float = Field(ge=0, le=86400)


class JobConfig(Section):
    seed: int = Field(ge=0, lt=2**32)  # numpy's generators take at most 32 bits
    force: bool
    save_model: bool
    export: bool
    export_name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,255}$")
    cache_lock_timeout_s: float = Field(gt=0)
    model: ModelConfig
    dataset: DatasetConfig
    training: TrainingConfig
    pruning: SerializeAsAny[PruningSettings]  # the chosen method's own settings class
    quantization: SerializeAsAny[QuantizationSettings]
    predict: PredictConfig
    benchmark: BenchmarkConfig
    report: ReportConfig
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
            users = self.training_data_users()
            if users:
                raise ValueError(
                    f"dataset.train_file=null: {' and '.join(users)} with these settings read training data; "
                    "set dataset.train_file=<path>"
                )
        return self

    def reads_training_data(self) -> bool:
        """Whether the job needs training windows at all: to fine-tune, or for a compression method."""
        return self.training.name != "none" or bool(self.training_data_users())

    def training_data_users(self) -> list[str]:
        """The settings of this job, fine-tuning aside, that read training data."""
        threshold = ["predict.null_threshold=calibrate"] if self.predict.carves_training_data() else []
        return threshold + self.compression_data_users()

    def compression_data_users(self) -> list[str]:
        """The compression methods of this job that read training windows."""
        users = []
        if prune.get(self.pruning.name).needs_training_data(self.pruning):
            users.append(f"pruning={self.pruning.name}")
        reads = quantize.get(self.quantization.name).reads(self.quantization)
        if reads & {quantize.TRAINING_WINDOWS, quantize.HELD_OUT_QUESTIONS}:
            users.append(f"quantization={self.quantization.name}")
        return users


def _describe(error: dict, prefix: str = "") -> str:
    where = prefix + ".".join(str(part) for part in error["loc"])
    if error["type"] == "value_error":
        return error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return f"{where}: unknown key"
    return f"{where}={error['input']!r}: {error['msg']}"


def job_section(cfg: DictConfig) -> DictConfig:
    """The config without Hydra's own `hydra` node (which only resolves inside a launched job)."""
    return OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])


def _method_settings(container: dict[str, Any], key: str, registry: Registry) -> list[str]:
    """Validate the `key` section with its method's own settings class, in place; returns the problems."""
    section = container.get(key)
    if not isinstance(section, dict) or not isinstance(section.get("name"), str):
        return [f"{key}.name is missing: choose {key}=<{'|'.join(registry.names())}>"]
    try:
        method = registry.get(section["name"])
    except UserError as err:
        return [str(err)]
    try:
        container[key] = method.settings.model_validate(section)
    except ValidationError as err:
        return [_describe(e, f"{key}.") for e in err.errors()]
    return []


def from_hydra(cfg: DictConfig) -> JobConfig:
    """Resolve and check a composed config; raises UserError naming the first bad values."""
    return _checked(job_section(cfg))


def _checked(section: DictConfig) -> JobConfig:
    """A job's section of the config (no `hydra` node), resolved and checked."""
    try:
        container = OmegaConf.to_container(section, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as err:
        raise UserError(str(err).splitlines()[0]) from None
    problems = _method_settings(container, "pruning", prune.registry)
    problems += _method_settings(container, "quantization", quantize.registry)
    if problems:
        raise UserError("; ".join(problems))
    try:
        return JobConfig.model_validate(container)
    except ValidationError as err:
        raise UserError("; ".join(_describe(e) for e in err.errors())) from None


def compose_job(config_name: str, overrides: Sequence[str], output_dir: str | Path) -> JobConfig:
    """A job of a sweep as Hydra will launch it, composed in the current Hydra context and checked (`compose_jobs`)."""
    return compose_jobs(config_name, [overrides], output_dir)[0]


def compose_jobs(config_name: str, jobs: Sequence[Sequence[str]], output_dir: str | Path) -> list[JobConfig]:
    """Jobs of a sweep as Hydra will launch them, in the current Hydra context, each checked; raises UserError (or
    Hydra's own error) naming the first bad value. Their output directory, unknown before launch, is `output_dir`.

    The config is composed once for each set of group choices and Hydra settings (`pruning=...`,
    `hydra.launcher.n_jobs=...`), and each job's own values are applied to a copy of the job's section as Hydra
    applies command-line values, so hundreds of jobs are checked in seconds. The Hydra config in force before
    is put back.
    """
    import copy

    from hydra import compose
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser

    repository = GlobalHydra.instance().config_loader().repository
    parser = OverridesParser.create()
    hydra_config = HydraConfig.instance()
    previous = hydra_config.cfg
    sections: dict[tuple[str, ...], DictConfig] = {}
    checked = []
    try:
        for overrides in jobs:
            parsed = parser.parse_overrides(list(overrides))
            shared = [
                o.package is not None or repository.group_exists(o.key_or_group) or o.key_or_group.startswith("hydra")
                for o in parsed
            ]
            base = tuple(o.input_line for o, in_base in zip(parsed, shared, strict=True) if in_base)
            if base not in sections:
                job_cfg = compose(config_name=config_name, overrides=list(base), return_hydra_config=True)
                with open_dict(job_cfg):
                    job_cfg.hydra.runtime.output_dir = str(output_dir)
                hydra_config.set_config(job_cfg)  # lets ${hydra:...} resolve as in the job
                sections[base] = job_section(job_cfg)
            section = copy.deepcopy(sections[base])
            ConfigLoaderImpl._apply_overrides_to_config(
                [o for o, in_base in zip(parsed, shared, strict=True) if not in_base], section
            )  # as compose applies them
            checked.append(_checked(section))
    finally:
        if previous is not None:
            hydra_config.set_config(previous)
    return checked
