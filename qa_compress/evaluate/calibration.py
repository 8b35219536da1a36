"""Data that calibrated quantization reads, drawn from the training side only, never from the evaluation file.

- Calibration windows: a seeded draw of windows (from the job's training windows, or from a
  user's calibration file) on which static quantization measures activation ranges. Their
  digest (the token ids drawn) is logged as a run input.
- Held-out questions: a seeded draw of training questions on which accuracy-controlled
  quantization scores its candidates with the same decoding and SQuAD 2.0 F1 as the job.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from datasets import Dataset

from qa_compress.data import squad
from qa_compress.data.features import SEQUENCE_COLUMNS
from qa_compress.evaluate import predict, score


@dataclass(frozen=True)
class Calibration:
    """The windows drawn to calibrate on, where they came from and a digest of their content."""

    windows: Dataset
    digest: str
    source: str

    def __len__(self) -> int:
        return len(self.windows)

    def items(self, input_names: list[str]) -> list[dict[str, np.ndarray]]:
        """One window per item, as int64 arrays of shape (1, tokens) without the padding it does not use."""
        columns = [name for name in input_names if name in self.windows.column_names]
        rows = self.windows.with_format("numpy", columns=columns)
        items = []
        for row in rows:
            length = int(row["attention_mask"].sum()) if "attention_mask" in row else len(row["input_ids"])
            items.append({name: np.asarray(row[name][:length], dtype=np.int64)[None, :] for name in columns})
        return items

    def batches(self, input_names: list[str], batch_size: int) -> list[dict[str, torch.Tensor]]:
        """The windows in batches of full-length tensors, as a PyTorch model takes them."""
        columns = [name for name in input_names if name in self.windows.column_names]
        rows = self.windows.with_format("torch", columns=columns)
        return [rows[begin : begin + batch_size] for begin in range(0, len(rows), batch_size)]


def draw(windows: Dataset, samples: int, seed: int, source: str) -> Calibration:
    """`samples` windows drawn without replacement (all of them when there are fewer), seeded."""
    order = np.random.default_rng(seed).permutation(len(windows))[:samples]
    chosen = windows.select(sorted(order.tolist()), keep_in_memory=True)
    chosen = chosen.select_columns([c for c in SEQUENCE_COLUMNS if c in chosen.column_names])
    digest = hashlib.sha256(source.encode())
    for ids in chosen.with_format("numpy", columns=["input_ids"])["input_ids"]:
        digest.update(np.asarray(ids, dtype=np.int64).tobytes())
    return Calibration(chosen, digest.hexdigest(), source)


def held_out_examples(examples: squad.Examples, count: int, seed: int) -> squad.Examples:
    """`count` questions drawn (seeded) from the training examples, to score candidate models on."""
    order = np.random.default_rng(seed + 1).permutation(len(examples.dataset))[:count]
    digest = hashlib.sha256(f"{examples.digest}:held-out:{count}:{seed}".encode()).hexdigest()
    return squad.Examples(examples.dataset.select(sorted(order.tolist())), digest, examples.source)


@dataclass
class HeldOut:
    """Held-out training questions and their evaluation windows; scores a model on all of them or a subset."""

    examples: Dataset
    features: Dataset
    input_names: list[str]
    decoding: dict[str, Any]  # n_best_size, max_answer_length, null_score_diff_threshold
    batch_size: int = 16
    _windows_of: dict[str, list[int]] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        for index, example_id in enumerate(self.features["example_id"]):
            self._windows_of.setdefault(example_id, []).append(index)

    def __len__(self) -> int:
        return len(self.examples)

    def f1(self, model: Any, questions: Iterable[int] | None = None) -> tuple[float, list[float]]:
        """SQuAD 2.0 F1 of `model` on the held-out questions (or the given indices), and each question's F1."""
        indices = list(range(len(self.examples))) if questions is None else [int(i) for i in questions]
        if not indices:
            return 0.0, []
        examples = self.examples.select(indices)
        windows = sorted(w for example_id in examples["id"] for w in self._windows_of[example_id])
        features = self.features.select(windows)
        inputs = predict.forward_inputs(features, self.input_names)
        starts, ends = predict.logits(model, inputs, self.batch_size, torch.device("cpu"))
        predictions = predict.decode(examples, features, starts, ends, **self.decoding)
        _, per_question, _ = score.get_raw_scores(squad.gold_answers(examples), predictions.answers)
        values = [100.0 * per_question[example_id] for example_id in examples["id"]]
        return float(np.mean(values)), values
