"""What the stages of one job share (`Context`), and what evaluating a model on its questions gives (`Evaluation`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset

from qa_compress.data import squad
from qa_compress.evaluate import predict
from qa_compress.job.config import JobConfig
from qa_compress.model import models

CPU = torch.device("cpu")


@dataclass(frozen=True)
class Evaluation:
    """A model's answers on the evaluation set, their SQuAD 2.0 scores, and the seconds prediction took."""

    predictions: predict.Predictions
    scores: dict[str, float]
    seconds: float


@dataclass
class Context:
    """What the stages of one job share: its settings and output directory, the data it reads, the
    tokenizer, the evaluation windows and their model inputs, and the device training runs on."""

    job: JobConfig
    output_dir: Path
    evaluation: squad.Examples | None = None
    train: squad.Examples | None = None
    threshold: squad.Examples | None = None  # questions the null threshold is calibrated on
    tokenizer: Any = None
    eval_windows: Dataset | None = None
    model_inputs: Dataset | None = None  # the evaluation windows as the model takes them
    train_windows: Dataset | None = None
    train_device: torch.device = CPU
    baseline_id: str = ""  # what identifies the baseline in cache keys: its own key, or the checkpoint's digest

    def input_names(self, model: Any) -> list[str]:
        return models.input_names(self.tokenizer, model)
