"""The data one job reads, each piece logged as a run input: evaluation and training questions, their
windows, the questions set aside for the null threshold, calibration windows and held-out questions."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from datasets import Dataset

from qa_compress.data import features, squad, synthetic
from qa_compress.errors import UserError
from qa_compress.evaluate import calibration, threshold
from qa_compress.job.config import JobConfig
from qa_compress.model import models
from qa_compress.quantize import CalibrationSettings, HeldOutSettings
from qa_compress.tracking import runs

log = logging.getLogger(__name__)


def examples(job: JobConfig, split: str) -> squad.Examples:
    """Examples of one split ("train" or "validation"), limited to the configured number, logged as a run input."""
    ds = job.dataset
    cache_dir = Path(job.paths.cache_dir)
    if ds.source == "hub":
        found = squad.load_hub(ds.hub_name, split)
    else:
        if ds.source == "synthetic":
            paragraphs = ds.train_paragraphs if split == "train" else ds.eval_paragraphs
            seed = ds.generator_seed + (0 if split == "train" else 1)  # disjoint draws for train and eval
            name = f"{ds.name}-{split}-{paragraphs}-{seed}.json"
            path = synthetic.write(cache_dir / "synthetic" / name, paragraphs, seed)
        else:
            path = Path(ds.train_file if split == "train" else ds.validation_file)
        found = squad.load_squad_json(path, f"dataset.{split}_file")
    found = squad.limit(found, ds.max_train_samples if split == "train" else ds.max_eval_samples)
    context = "training" if split == "train" else "evaluation"
    runs.log_dataset(f"{ds.name}/{split}", found.source, split, found.digest, context)
    return found


def windows(job: JobConfig, questions: squad.Examples, tokenizer: Any, split: str) -> Dataset:
    """Windows of `questions` for "train" (with labels) or "eval" (with offsets), from the shared cache."""
    ds = job.dataset
    return features.prepare(
        questions.dataset,
        questions.digest,
        tokenizer,
        ds.max_seq_length,
        ds.doc_stride,
        split,
        Path(job.paths.cache_dir),
        job.cache_lock_timeout_s,
    )


def threshold_split(
    job: JobConfig, train: squad.Examples, evaluation: squad.Examples
) -> tuple[squad.Examples, squad.Examples]:
    """Training examples less the paragraphs carved out to pick the null threshold on, and those paragraphs."""
    evaluation_ids = set(evaluation.dataset["id"])
    split = threshold.carve(train, job.predict.threshold_questions, job.seed, evaluation_ids)
    if not len(split.calibration.dataset) or not len(split.train.dataset):
        raise UserError(
            f"predict.threshold_questions={job.predict.threshold_questions}: the training data "
            f"({len(train.dataset)} questions) cannot give that many to threshold calibration "
            "and keep some to train on"
        )
    log.info("Null threshold calibrated on %d training questions set aside", len(split.calibration.dataset))
    if job.training.name == "none":
        log.warning(
            "training=none: if model.name_or_path was fine-tuned on dataset.train_file, the questions set aside "
            "for the null threshold are ones it has seen, and a threshold picked on them leans toward answering"
        )
    carved = split.calibration
    runs.log_dataset(f"{job.dataset.name}/threshold", carved.source, "train", carved.digest, "threshold")
    return split.train, carved


def threshold_file(job: JobConfig, evaluation: squad.Examples) -> squad.Examples:
    """The user's own held-out questions to pick the null threshold on (any evaluation question left out)."""
    path = Path(job.predict.threshold_file)
    found = squad.load_squad_json(path, "predict.threshold_file")
    evaluation_ids = set(evaluation.dataset["id"])
    kept = [i for i, qid in enumerate(found.dataset["id"]) if qid not in evaluation_ids]
    if len(kept) < len(found.dataset):
        found = squad.Examples(found.dataset.select(kept), f"{found.digest}:less-evaluation", found.source)
    log.info("Null threshold calibrated on %d questions of %s", len(found.dataset), path)
    runs.log_dataset(f"{job.dataset.name}/threshold", found.source, "threshold", found.digest, "threshold")
    return found


def calibration_windows(
    job: JobConfig, tokenizer: Any, train: squad.Examples | None, train_windows: Dataset | None
) -> calibration.Calibration:
    """The windows a static quantization calibrates on: drawn from its calibration file or the training windows."""
    settings: CalibrationSettings = job.quantization  # what every method reading CALIBRATION_WINDOWS takes
    if settings.calibration_file is not None:
        source = squad.load_squad_json(Path(settings.calibration_file), "quantization.calibration_file")
        drawn_from = windows(job, source, tokenizer, "train")
    else:
        source, drawn_from = train, train_windows
    drawn = calibration.draw(drawn_from, settings.calibration_samples, job.seed, source.source)
    log.info("Calibrating on %d windows from %s", len(drawn), source.source)
    runs.log_dataset(f"{job.dataset.name}/calibration", source.source, "train", drawn.digest, "calibration")
    return drawn


def held_out(job: JobConfig, tokenizer: Any, model: Any, train: squad.Examples) -> calibration.HeldOut:
    """Training questions set aside for accuracy-controlled quantization to score candidates on."""
    settings: HeldOutSettings = job.quantization  # what every method reading HELD_OUT_QUESTIONS takes
    held = calibration.held_out_examples(train, settings.held_out_questions, job.seed)
    runs.log_dataset(f"{job.dataset.name}/held_out", held.source, "train", held.digest, "held_out")
    p = job.predict
    decoding = {
        "n_best_size": p.n_best_size,
        "max_answer_length": p.max_answer_length,
        "null_score_diff_threshold": p.null_score_diff_threshold,
    }
    return calibration.HeldOut(
        held.dataset,
        windows(job, held, tokenizer, "eval"),
        models.input_names(tokenizer, model),
        decoding,
        p.batch_size,
    )
