"""Fine-tune a QA model with `transformers.Trainer`, and reuse the result across jobs.

A sweep over compression settings needs one fine-tuned baseline, not one per job. The
baseline is cached under a key made of everything that determines it (starting weights,
training data content, feature and training settings, seed, library versions) and nothing
else, so one baseline can be evaluated on any data without retraining.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets
import torch
import transformers
from datasets import Dataset
from transformers import (
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    default_data_collator,
)

from qa_compress.data import features
from qa_compress.model import distill
from qa_compress.tracking import cache

log = logging.getLogger(__name__)

BASELINE_FORMAT = 2  # 2: batches trimmed of unneeded padding
BASELINE_FILES = ("config.json", "model.safetensors", "baseline.json")  # weights as safetensors, never pickles


def weight_libraries() -> dict[str, str]:
    """The versions of the libraries that shape trained weights: part of every cache key of a trained model."""
    return {"torch": torch.__version__, "transformers": transformers.__version__, "datasets": datasets.__version__}


def baseline_key(
    model_fingerprint: str, train_digest: str, max_seq_length: int, doc_stride: int, training: dict[str, Any], seed: int
) -> str:
    """Cache key of a fine-tuned baseline."""
    return cache.key(
        {
            "format": BASELINE_FORMAT,
            "model": model_fingerprint,
            "train_data": train_digest,
            "max_seq_length": max_seq_length,
            "doc_stride": doc_stride,
            "training": training,
            "seed": seed,
            **weight_libraries(),
        }
    )


def _collate(rows: list[dict]) -> dict[str, torch.Tensor]:
    """Stack training windows into a batch without the padding none of them needs."""
    return features.trim_padding(default_data_collator(rows))


def mixed_precision(setting: str) -> dict[str, bool]:
    """Trainer flags for `setting`; "auto" means bf16 or fp16 on a GPU that has it, FP32 on a CPU."""
    if setting == "auto":
        if not torch.cuda.is_available():
            setting = "no"
        else:
            setting = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return {"bf16": setting == "bf16", "fp16": setting == "fp16"}


def fine_tune(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train_features: Dataset,
    training: dict[str, Any],
    seed: int,
    callbacks: list[TrainerCallback],
    teacher: distill.Teacher | None = None,
) -> dict[str, float]:
    """Train `model` in place on `train_features`; returns summary metrics (train_loss, train_runtime, ...).

    With a `teacher`, the loss mixes its cached logits with the labels (`distill`).
    """
    with tempfile.TemporaryDirectory() as scratch:
        args = TrainingArguments(
            output_dir=scratch,
            learning_rate=training["learning_rate"],
            num_train_epochs=training["num_train_epochs"],
            max_steps=training["max_steps"] if training["max_steps"] is not None else -1,
            per_device_train_batch_size=training["batch_size"],
            gradient_accumulation_steps=training["gradient_accumulation_steps"],
            weight_decay=training["weight_decay"],
            warmup_steps=training["warmup_ratio"],
            lr_scheduler_type=training["lr_scheduler_type"],
            max_grad_norm=training["max_grad_norm"],
            logging_steps=training["logging_steps"],
            seed=seed,
            save_strategy="no",
            report_to="none",
            disable_tqdm=not sys.stderr.isatty(),
            dataloader_pin_memory=torch.cuda.is_available(),
            remove_unused_columns=teacher is None,  # the distillation loss reads each window's index
            **mixed_precision(training["mixed_precision"]),
        )
        common = {
            "model": model,
            "args": args,
            "data_collator": _collate,
            "processing_class": tokenizer,
            "callbacks": callbacks,
        }
        if teacher is None:
            trainer = Trainer(train_dataset=train_features, **common)
        else:
            windows = distill.training_windows(train_features, model)
            trainer = distill.DistillationTrainer(train_dataset=windows, teacher=teacher, **common)
        result = trainer.train()
    summary = {k: v for k, v in result.metrics.items() if k.startswith("train_")}
    return {**summary, "train_steps": result.global_step, "train_epochs": result.metrics.get("epoch", 0.0)}


def batches(train_features: Dataset, batch_size: int, count: int, seed: int) -> Iterator[dict[str, torch.Tensor]]:
    """`count` shuffled (seeded) batches of training windows, labels included, as tensors."""
    chosen = train_features.shuffle(seed=seed, keep_in_memory=True)  # never writes into the feature cache
    chosen = chosen.select(range(min(len(train_features), batch_size * count)), keep_in_memory=True)
    columns = [c for c in chosen.column_names if c not in {"example_id", "offset_mapping"}]
    chosen = chosen.with_format("torch", columns=columns)
    for begin in range(0, len(chosen), batch_size):
        yield chosen[begin : begin + batch_size]


def save_baseline(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, entry: Path, record: dict[str, Any]
) -> None:
    """Store a fine-tuned baseline (safetensors) with the record of how it was made."""
    with cache.building(entry) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        (tmp / "baseline.json").write_text(json.dumps(record, indent=2, default=str))
    log.info("Baseline cached at %s", entry)
