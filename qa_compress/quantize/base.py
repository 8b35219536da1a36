"""What a quantization (or precision) method is: settings, where it runs, checks, apply, save and load.

One subclass of `QuantizationMethod` per method, in its own module, registered in
`registry` (the shape of transformers' `HfQuantizer`: the method declares what it needs
and refuses what it cannot do before any work). A method returns a model object that the
prediction and benchmark code call like a PyTorch QA model (`model(**batch)` with
`start_logits`/`end_logits`), so every option is scored and timed the same way.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from qa_compress.registry import Registry
from qa_compress.schema import Section

if TYPE_CHECKING:
    import numpy as np
    import torch
    from datasets import Dataset
    from torch import nn

    from qa_compress.evaluate.calibration import Calibration, HeldOut
    from qa_compress.model.distill import Teacher

SAVED_RECORD = "compression.json"  # beside a saved model: which method wrote it, so loading needs no hint
TRAINING_WINDOWS = "training_windows"  # the job's training windows, labels included (calibration draws, QAT)
CALIBRATION_WINDOWS = "calibration_windows"  # a seeded draw of windows to calibrate activation ranges on
HELD_OUT_QUESTIONS = "held_out_questions"  # training questions set aside to score candidates on (never evaluation)


class QuantizationSettings(Section):
    """Keys every quantization method takes; a method's own settings add to them."""

    name: str

    def data_files(self) -> dict[str, str]:
        """Files these settings read besides the job's data, by key: checked before the job, part of its identity."""
        return {}


class HeldOutSettings(QuantizationSettings):
    """Keys of the methods that score candidate models on held-out training questions (HELD_OUT_QUESTIONS)."""

    held_out_questions: int = Field(default=200, ge=1, le=100_000)  # training questions candidates are scored on


class CalibrationSettings(QuantizationSettings):
    """Keys of the methods that calibrate activation ranges on sample windows (static quantization)."""

    calibration_samples: int = Field(default=300, ge=1, le=100_000)  # windows drawn (seeded) to calibrate on
    calibration_file: str | None = None  # a SQuAD 2.0 JSON file to draw them from instead of the training data

    def data_files(self) -> dict[str, str]:
        return {} if self.calibration_file is None else {"calibration_file": self.calibration_file}

    def calibration_reads(self) -> frozenset[str]:
        """The data calibrating reads: calibration windows, drawn from the training windows unless a file is given."""
        if self.calibration_file is None:
            return frozenset({CALIBRATION_WINDOWS, TRAINING_WINDOWS})
        return frozenset({CALIBRATION_WINDOWS})


@dataclass(frozen=True)
class QuantizeContext:
    """What a method may use besides the model: its input names, a scratch directory, the thread count,
    and the data it `reads`: training windows, calibration windows, held-out questions to score on,
    the training settings (for training steps of its own), a scorer on the evaluation set, and a maker of
    distillation teachers (`teacher(model, temperature=, weight=, tag=)`: its cached logits on the training
    windows, their cache hit or miss tagged on the run as `tag`)."""

    input_names: list[str]
    workdir: Path
    num_threads: int
    train_features: Dataset | None = None
    calibration: Calibration | None = None
    held_out: HeldOut | None = None
    training: dict[str, Any] | None = None
    seed: int = 0
    evaluate: Callable[[Any], dict[str, float]] | None = None  # scores of a model on the evaluation set
    teacher: Callable[..., Teacher] | None = None


class QuantizationMethod:
    """A quantization or precision method. Subclasses set `name`, `description`, and override `apply`."""

    name: ClassVar[str]
    description: ClassVar[str]
    settings: ClassVar[type[QuantizationSettings]] = QuantizationSettings
    runs_on: ClassVar[Literal["cpu", "gpu", "any"]] = "any"  # "cpu": CPU kernels only; "gpu": refused without one
    needs: ClassVar[frozenset[str]] = frozenset()  # data it reads whatever its settings (see `reads`)
    identity: ClassVar[bool] = False  # leaves the model as it is (the sweep's uncompressed reference)
    revision: ClassVar[int] = 1  # raised when the method's results change, so older runs are not reused as its own
    serving_requirements: ClassVar[tuple[str, ...]] = ()  # packages a served model of this method imports besides torch

    def reads(self, settings: QuantizationSettings) -> frozenset[str]:
        """The data this method reads with these settings: TRAINING_WINDOWS, CALIBRATION_WINDOWS, HELD_OUT_QUESTIONS."""
        return self.needs

    def label(self, settings: QuantizationSettings) -> str:
        """How this choice quantizes when the method has several ways ("QAT"), as a user would say it; "" if one."""
        return ""

    def check(self, settings: QuantizationSettings, model_config: Any) -> str | None:
        """Why these settings cannot run here (missing hardware or library), or None."""
        return None

    def apply(self, model: nn.Module, settings: QuantizationSettings, context: QuantizeContext) -> Any:
        """Return `model` compressed (a PyTorch module, or a runtime session with the same call)."""
        raise NotImplementedError

    def device(self) -> torch.device:
        """Where the compressed model runs: the GPU when there is one and the method can use it."""
        import torch

        use_gpu = torch.cuda.is_available() and self.runs_on != "cpu"
        return torch.device("cuda" if use_gpu else "cpu")

    def stored_tensors(self, model: Any) -> dict[str, torch.Tensor | np.ndarray]:
        """The values the model stores, by name, tied weights once: what its size and parameter count are of."""
        return unique_tensors(
            {k: v.detach() for k, v in model.state_dict().items() if hasattr(v, "is_quantized") and not v.is_quantized}
        )

    def serialized(self, model: Any) -> bytes:
        """The model's weights as they are stored: safetensors bytes unless the method stores another format."""
        from safetensors.torch import save

        return save({k: v.contiguous() for k, v in self.stored_tensors(model).items()})

    def save(self, model: Any, directory: Path) -> None:
        """Write the compressed model to `directory` without pickles (safetensors here)."""
        model.save_pretrained(str(directory), safe_serialization=True)

    def load(self, directory: Path, num_threads: int) -> Any:
        """Load what `save` wrote; runs no code from the files."""
        from qa_compress.model import models

        return models.load_weights(directory)


def cpu_has_bf16() -> bool:
    """Whether this CPU runs bf16 natively (AVX512-BF16 or AMX tiles): what the bf16 options need."""
    import torch

    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def unique_tensors(tensors: dict[str, Any]) -> dict[str, Any]:
    """Drop tensors that share storage with an earlier one (tied embeddings are stored once)."""
    unique, seen = {}, set()
    for name, tensor in tensors.items():
        storage = tensor.untyped_storage().data_ptr() if hasattr(tensor, "untyped_storage") else id(tensor)
        if tensor.numel() and storage in seen:
            continue
        seen.add(storage)
        unique[name] = tensor
    return unique


registry: Registry[QuantizationMethod] = Registry("quantization method", "quantization")


register = registry.register  # quantization=<method.name>, with a YAML file or ConfigStore entry for its keys
get = registry.get


def save(model: Any, settings: QuantizationSettings, directory: Path, extra: dict[str, Any] | None = None) -> None:
    """Save a compressed model with the record that says how to load it back."""
    directory.mkdir(parents=True, exist_ok=True)
    get(settings.name).save(model, directory)
    record = {"quantization": settings.name, "settings": settings.model_dump(), **(extra or {})}
    (directory / SAVED_RECORD).write_text(json.dumps(record, indent=2))
    _usual_modes(directory)


def _usual_modes(directory: Path) -> None:
    """Give every saved file the mode a new file gets here (safetensors writes 0600, unlike the files beside it)."""
    umask = os.umask(0)
    os.umask(umask)
    for path in directory.rglob("*"):
        if path.is_file():
            path.chmod(0o666 & ~umask)


def load(directory: Path, num_threads: int = 1) -> Any:
    """Load a model written by `save`, with the method named in its record."""
    record = json.loads((directory / SAVED_RECORD).read_text())
    return get(record["quantization"]).load(directory, num_threads)
