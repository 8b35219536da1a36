"""One job: check inputs, then baseline -> prune -> (recover) -> quantize -> evaluate -> measure -> log.

Every check that can fail on a user's input runs before the MLflow run starts and before
any model or data is loaded (`checks`); the stages run inside the job's MLflow run, which
ends FINISHED, FAILED or KILLED. The methods themselves live in `prune` and `quantize`.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import datasets
import hydra
import mlflow
import omegaconf
import torch
import transformers
from datasets import Dataset
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from qa_compress import prune, quantize
from qa_compress.data import features, squad, synthetic
from qa_compress.errors import UserError
from qa_compress.evaluate import bootstrap, calibration, predict, score, threshold, timing
from qa_compress.job import bookkeeping, checks
from qa_compress.job.config import JobConfig, from_hydra, job_section
from qa_compress.model import distill, models, train
from qa_compress.prune import layers as prune_layers
from qa_compress.prune import schedule
from qa_compress.tracking import cache, results, runs, store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Evaluation:
    """A model's answers on the evaluation set, their SQuAD 2.0 scores, and the seconds prediction took."""

    predictions: predict.Predictions
    scores: dict[str, float]
    seconds: float


@dataclass
class Pruned:
    """The layers pruning considered, their original sizes, and what it logged."""

    layers: dict[str, torch.nn.Module]
    original_sizes: dict[str, int]
    metrics: dict[str, float]


def validate(cfg: DictConfig) -> JobConfig:
    """Typed config with every input checked; raises UserError on the first problem."""
    job = from_hydra(cfg)
    checks.inputs(job)
    return job


# Data ----------------------------------------------------------------------------------------


def _examples(job: JobConfig, split: str) -> squad.Examples:
    """Examples of one split ("train" or "validation"), limited to the configured number, logged as a run input."""
    ds = job.dataset
    cache_dir = Path(job.paths.cache_dir)
    if ds.source == "hub":
        examples = squad.load_hub(ds.hub_name, split)
    else:
        if ds.source == "synthetic":
            paragraphs = ds.train_paragraphs if split == "train" else ds.eval_paragraphs
            seed = ds.generator_seed + (0 if split == "train" else 1)  # disjoint draws for train and eval
            path = synthetic.write(
                cache_dir / "synthetic" / f"{ds.name}-{split}-{paragraphs}-{seed}.json", paragraphs, seed
            )
        else:
            path = Path(ds.train_file if split == "train" else ds.validation_file)
        examples = squad.load_squad_json(path, f"dataset.{split}_file")
    examples = squad.limit(examples, ds.max_train_samples if split == "train" else ds.max_eval_samples)
    context = "training" if split == "train" else "evaluation"
    runs.log_dataset(f"{ds.name}/{split}", examples.source, split, examples.digest, context)
    return examples


def _features(job: JobConfig, examples: squad.Examples, tokenizer, split: str) -> Dataset:
    """Windows of `examples` for "train" (with labels) or "eval" (with offsets), from the shared cache."""
    return features.prepare(
        examples.dataset,
        examples.digest,
        tokenizer,
        job.dataset.max_seq_length,
        job.dataset.doc_stride,
        split,
        Path(job.paths.cache_dir),
        job.cache_lock_timeout_s,
    )


# Stages --------------------------------------------------------------------------------------


def _baseline(job: JobConfig, train_examples: squad.Examples | None) -> tuple[Any, Any, str, Dataset | None]:
    """The model to compress: fine-tuned (or reused from the cache), or as given with training=none.

    Returns the model, its tokenizer, where it came from (hit, miss or none) and the training
    windows when fine-tuning prepared them.
    """
    if job.training.name == "none":
        transformers.set_seed(job.seed)  # a fresh QA head is drawn from the seeded generator
        model, tokenizer = models.load(job.model.name_or_path, job.model.trust_remote_code)
        return model, tokenizer, "none", None
    key = train.baseline_key(
        models.fingerprint(job.model.name_or_path),
        train_examples.digest,
        job.dataset.max_seq_length,
        job.dataset.doc_stride,
        job.training.key_fields(),
        job.seed,
    )
    entry = Path(job.paths.cache_dir) / "baselines" / key
    with cache.locked(entry, job.cache_lock_timeout_s):  # parallel jobs: one trains, the others wait
        hit = cache.usable(entry, required=train.BASELINE_FILES)
        runs.set_tags({"baseline_key": key, "baseline_cache": "hit" if hit else "miss"})
        if hit:
            log.info("Baseline %s from cache %s", key, entry)
            model, tokenizer = models.load(str(entry), job.model.trust_remote_code)
            return model, tokenizer, "hit", None
        transformers.set_seed(job.seed)
        model, tokenizer = models.load(job.model.name_or_path, job.model.trust_remote_code)
        train_features = _features(job, train_examples, tokenizer, "train")
        log.info("Fine-tuning %s on %d questions (%d windows)", job.model.name, len(train_examples.dataset),
                 len(train_features))  # fmt: skip
        metrics = train.fine_tune(
            model, tokenizer, train_features, job.training.model_dump(), job.seed, [runs.TrainingCurves()]
        )
        runs.log_metrics(metrics)
        record = {"key": key, "model": job.model.name_or_path, "train_data": train_examples.source,
                  "training": job.training.model_dump(), "seed": job.seed}  # fmt: skip
        train.save_baseline(model, tokenizer, entry, record)
    return model, tokenizer, "miss", train_features


def _prune(job: JobConfig, model, train_features: Dataset | None, device: torch.device) -> Pruned:
    """Apply the pruning method; unstructured masks stay on until `_fold_in` (after any recovery)."""
    p = job.pruning
    patterns = prune.layer_patterns(p, model.config.model_type) or []
    layers = prune_layers.prunable_layers(model, patterns, p.include_qa_head, p.include_embeddings)
    if not layers and p.name != "none":
        raise UserError(f"pruning.layer_patterns={patterns}: no Linear layer of the model matches")
    original = {name: module.weight.numel() for name, module in layers.items()}
    context = prune.PruneContext(seed=job.seed, train_features=train_features, device=device)
    metrics = {"prunable_layers": len(layers), **prune.get(p.name).apply(model, layers, p, context)}
    return Pruned(layers, original, metrics)


def _before_recovery(pruned: Pruned, evaluation: Evaluation) -> dict[str, float]:
    """Sparsity and scores of the pruned model before recovery, to log beside the final ones."""
    rows = prune_layers.layer_sparsity(pruned.layers, pruned.original_sizes)
    scores = {f"{k}_before_recovery": evaluation.scores[k] for k in ("f1", "exact", "HasAns_f1", "NoAns_f1")
              if k in evaluation.scores}  # fmt: skip
    return {"sparsity_before_recovery": prune_layers.sparsity(rows), **scores}


def _teacher(job: JobConfig, model, tokenizer, train_features: Dataset, device: torch.device, temperature: float,
             weight: float, tag: str = "teacher_cache") -> distill.Teacher:  # fmt: skip
    """`model`'s logits on every training window (cached), for distillation during recovery or QAT."""
    start, end, origin = distill.teacher_logits(model, train_features, models.input_names(tokenizer, model),
                                                job.predict.batch_size, device, Path(job.paths.cache_dir),
                                                job.cache_lock_timeout_s)  # fmt: skip
    runs.set_tags({tag: origin})
    return distill.Teacher(start, end, temperature, weight)


def _recovery_settings(job: JobConfig, steps: int) -> dict[str, Any]:
    p = job.pruning
    return {
        **job.training.model_dump(),
        "learning_rate": p.finetune_learning_rate,
        "max_steps": steps,
        "batch_size": p.finetune_batch_size,
        "gradient_accumulation_steps": 1,
        "warmup_ratio": 0.1,
        "logging_steps": max(1, min(job.training.logging_steps, steps // 5 or 1)),
    }


def _recover(job: JobConfig, model, tokenizer, train_features: Dataset, teacher: distill.Teacher | None,
             pruned: Pruned) -> dict[str, float]:  # fmt: skip
    """Recovery fine-tuning of the pruned model; masked weights stay zero (the masks sit in the forward pass).

    With a gradual schedule, the masks start dense again and tighten stage by stage to the amount.
    """
    p = job.pruning
    callbacks = []
    if p.gradual():
        method = prune.get(p.name)
        callbacks.append(schedule.GradualMasks(method, pruned.layers, p.amount, p.gradual_stages, p.gradual_end,
                                               job.seed, p.finetune_steps))  # fmt: skip
    log.info("Recovery fine-tuning for %d steps%s", p.finetune_steps, " with distillation" if teacher else "")
    result = train.fine_tune(model, tokenizer, train_features, _recovery_settings(job, p.finetune_steps), job.seed,
                             callbacks, teacher)  # fmt: skip
    metrics = {f"recovery_{k}": v for k, v in result.items()}
    if callbacks:
        metrics["gradual_stages_applied"] = len(callbacks[0].applied)
    return metrics


def _prune_in_stages(job: JobConfig, model, tokenizer, train_features: Dataset, device: torch.device,
                     teacher: distill.Teacher | None) -> tuple[Pruned, dict[str, float]]:  # fmt: skip
    """A staged method's gradual schedule: pruned for good stage by stage, recovery fine-tuning after each."""
    p = job.pruning
    lengths = schedule.stage_lengths(p.finetune_steps, p.gradual_stages, p.gradual_end)
    stages = prune.get(p.name).stages(model, p, schedule.cubic(1.0, p.gradual_stages))
    first: Pruned | None = None
    removed: dict[str, float] = {}
    stage_results = []
    for stage, length in zip(stages, lengths, strict=True):
        pruned = _prune(job.model_copy(update={"pruning": stage}), model, train_features, device)
        first = first or pruned  # its layers and original sizes describe the model before any stage
        for key, value in pruned.metrics.items():
            if key != "prunable_layers":
                removed[key] = removed.get(key, 0) + value
        log.info("Pruning stage %d of %d; recovery for %d steps", len(stage_results) + 1, len(lengths), length)
        settings = _recovery_settings(job, length)
        stage_results.append(train.fine_tune(model, tokenizer, train_features, settings, job.seed, [], teacher))
    steps = sum(r["train_steps"] for r in stage_results)
    metrics = {
        **removed,
        "gradual_stages_applied": len(stage_results),
        "recovery_train_steps": steps,
        "recovery_train_loss": sum(r.get("train_loss", math.nan) * r["train_steps"] for r in stage_results) / steps,
        "recovery_train_runtime": sum(r.get("train_runtime", 0.0) for r in stage_results),
    }
    return first, metrics


def _fold_in(pruned: Pruned) -> list[dict]:
    """Make the pruning permanent (masks folded into the weights); returns the per-layer sparsity rows."""
    prune_layers.make_permanent(pruned.layers)
    return prune_layers.layer_sparsity(pruned.layers, pruned.original_sizes)


def _calibration(job: JobConfig, tokenizer, train_examples: squad.Examples | None,
                 train_features: Dataset | None) -> calibration.Calibration:  # fmt: skip
    """The windows a static quantization calibrates on: drawn from the calibration file or the training windows."""
    settings = job.quantization
    if settings.calibration_file is not None:
        examples = squad.load_squad_json(Path(settings.calibration_file), "quantization.calibration_file")
        windows = _features(job, examples, tokenizer, "train")
    else:
        examples, windows = train_examples, train_features
    drawn = calibration.draw(windows, settings.calibration_samples, job.seed, examples.source)
    log.info("Calibrating on %d windows from %s", len(drawn), examples.source)
    runs.log_dataset(f"{job.dataset.name}/calibration", examples.source, "train", drawn.digest, "calibration")
    return drawn


def _held_out(job: JobConfig, tokenizer, model, train_examples: squad.Examples) -> calibration.HeldOut:
    """Training questions set aside for accuracy-controlled quantization to score candidates on."""
    held = calibration.held_out_examples(train_examples, job.quantization.held_out_questions, job.seed)
    runs.log_dataset(f"{job.dataset.name}/held_out", held.source, "train", held.digest, "held_out")
    p = job.predict
    return calibration.HeldOut(
        held.dataset,
        _features(job, held, tokenizer, "eval"),
        models.input_names(tokenizer, model),
        {
            "n_best_size": p.n_best_size,
            "max_answer_length": p.max_answer_length,
            "null_score_diff_threshold": p.null_score_diff_threshold,
        },  # fmt: skip
        p.batch_size,
    )


def _quantize(job: JobConfig, model, tokenizer, output_dir: Path, train_examples: squad.Examples | None,
              train_features: Dataset | None, evaluate) -> Any:  # fmt: skip
    """Apply the quantization method with the data it reads; CPU-only methods get the model on the CPU."""
    method = quantize.get(job.quantization.name)
    reads = method.reads(job.quantization)
    if method.runs_on == "cpu":
        model = model.to("cpu")
    calibrate = quantize.CALIBRATION_WINDOWS in reads
    context = quantize.QuantizeContext(
        input_names=models.input_names(tokenizer, model),
        workdir=output_dir / "onnx",
        num_threads=torch.get_num_threads(),
        train_features=train_features if quantize.TRAINING_WINDOWS in reads else None,
        calibration=_calibration(job, tokenizer, train_examples, train_features) if calibrate else None,
        held_out=_held_out(job, tokenizer, model, train_examples) if quantize.HELD_OUT_QUESTIONS in reads else None,
        training=job.training.model_dump(),
        seed=job.seed,
        evaluate=evaluate,
        teacher=partial(
            _teacher,
            job,
            tokenizer=tokenizer,
            train_features=train_features,
            device=torch.device("cpu"),
            tag="qat_teacher_cache",
        ),
    )
    return method.apply(model, job.quantization, context).to(method.device())


def _quantization_record(model, output_dir: Path) -> dict[str, float]:
    """What the quantization method measured while it worked: numbers become metrics, the rest an artifact."""
    record = getattr(model, "record", None) or {}
    if record:
        path = output_dir / "quantization.json"
        path.write_text(json.dumps(record, indent=2, default=str))
        runs.log_artifacts([path])
    return {k: float(v) for k, v in record.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def _threshold_split(job: JobConfig, train_examples: squad.Examples,
                     eval_examples: squad.Examples) -> tuple[squad.Examples, squad.Examples]:  # fmt: skip
    """Training examples less the paragraphs carved out to pick the null threshold on, and those paragraphs."""
    evaluation_ids = set(eval_examples.dataset["id"])
    split = threshold.carve(train_examples, job.predict.threshold_questions, job.seed, evaluation_ids)
    if not len(split.calibration.dataset) or not len(split.train.dataset):
        raise UserError(
            f"predict.threshold_questions={job.predict.threshold_questions}: the training data "
            f"({len(train_examples.dataset)} questions) cannot give that many to threshold calibration "
            "and keep some to train on"
        )
    log.info("Null threshold calibrated on %d training questions set aside", len(split.calibration.dataset))
    if job.training.name == "none":
        log.warning(
            "training=none: if model.name_or_path was fine-tuned on dataset.train_file, the questions set aside "
            "for the null threshold are ones it has seen, and a threshold picked on them leans toward answering"
        )
    runs.log_dataset(f"{job.dataset.name}/threshold", split.calibration.source, "train",
                         split.calibration.digest, "threshold")  # fmt: skip
    return split.train, split.calibration


def _threshold_file(job: JobConfig, eval_examples: squad.Examples) -> squad.Examples:
    """The user's own held-out questions to pick the null threshold on (any evaluation question left out)."""
    path = Path(job.predict.threshold_file)
    examples = squad.load_squad_json(path, "predict.threshold_file")
    evaluation_ids = set(eval_examples.dataset["id"])
    kept = [i for i, qid in enumerate(examples.dataset["id"]) if qid not in evaluation_ids]
    if len(kept) < len(examples.dataset):
        examples = squad.Examples(examples.dataset.select(kept), f"{examples.digest}:less-evaluation", examples.source)
    log.info("Null threshold calibrated on %d questions of %s", len(examples.dataset), path)
    runs.log_dataset(f"{job.dataset.name}/threshold", examples.source, "threshold", examples.digest, "threshold")
    return examples


def _calibrate_threshold(job: JobConfig, model, tokenizer, questions: squad.Examples, evaluation: Evaluation,
                         eval_examples: squad.Examples, device: torch.device) -> tuple[Evaluation, dict]:  # fmt: skip
    """The evaluation redone at the null threshold that maximises F1 on the set-aside training questions.

    Also returns what to log: the threshold, the F1 it reached on those questions, and the
    evaluation scores at the configured (uncalibrated) threshold.
    """
    windows = _features(job, questions, tokenizer, "eval")
    inputs = predict.forward_inputs(windows, models.input_names(tokenizer, model))
    p = job.predict
    starts, ends = predict.logits(model, inputs, p.batch_size, device)
    on_split = predict.decode(questions.dataset, windows, starts, ends, p.n_best_size, p.max_answer_length,
                              p.null_score_diff_threshold)  # fmt: skip
    chosen, split_f1 = threshold.best(on_split, squad.gold_answers(questions.dataset))
    predictions = predict.rethreshold(evaluation.predictions, chosen)
    scores, _ = score.evaluate(squad.gold_answers(eval_examples.dataset), predictions.answers, predictions.na_probs)
    uncalibrated = {f"{k}_uncalibrated": evaluation.scores[k] for k in ("exact", "f1", "HasAns_f1", "NoAns_f1")
                    if k in evaluation.scores}  # fmt: skip
    record = {"null_threshold": chosen, "threshold_questions": len(questions.dataset),
              "threshold_split_f1": split_f1, **uncalibrated}  # fmt: skip
    log.info("Null threshold %.3f (F1 %.2f on the set-aside questions): evaluation F1 %.2f -> %.2f",
             chosen, split_f1, evaluation.scores["f1"], scores["f1"])  # fmt: skip
    return Evaluation(predictions, scores, evaluation.seconds), record


def _evaluate(job: JobConfig, model, inputs: Dataset, examples: squad.Examples, eval_features: Dataset,
              device: torch.device) -> Evaluation:  # fmt: skip
    """Predictions and SQuAD 2.0 scores of `model` on the evaluation set."""
    started = time.perf_counter()
    start_logits, end_logits = predict.logits(model, inputs, job.predict.batch_size, device)
    p = job.predict
    predictions = predict.decode(examples.dataset, eval_features, start_logits, end_logits, p.n_best_size,
                                 p.max_answer_length, p.null_score_diff_threshold)  # fmt: skip
    seconds = time.perf_counter() - started
    scores, _ = score.evaluate(squad.gold_answers(examples.dataset), predictions.answers, predictions.na_probs)
    return Evaluation(predictions, scores, seconds)


def _scores(evaluation: Evaluation, examples: squad.Examples, windows: int) -> dict[str, float]:
    """The official scores, the always-no-answer floor on the same questions, and how long prediction took."""
    floor = score.always_no_answer(squad.gold_answers(examples.dataset))
    return {**evaluation.scores, "predict_s": evaluation.seconds, "eval_features": windows,
            "always_no_answer_exact": floor["exact"], "always_no_answer_f1": floor["f1"]}  # fmt: skip


def _measure(job: JobConfig, model, inputs: Dataset, examples: squad.Examples, device: torch.device) -> dict:
    """Size as stored and, unless turned off, latency and throughput."""
    metrics = timing.sizes(model, quantize.get(job.quantization.name))
    if job.benchmark.enabled:
        b = job.benchmark
        metrics.update(timing.run(model, inputs, b.batch_size, b.warmup, b.repeats, device,
                                     questions_per_feature=len(examples.dataset) / len(inputs)))  # fmt: skip
    return metrics


def _against_reference(job: JobConfig, model, reference, inputs: Dataset, device: torch.device,
                       reference_device: torch.device) -> dict[str, float]:  # fmt: skip
    """Speed-up over the uncompressed model, timed in interleaved rounds in this job (see timing.paired)."""
    b = job.benchmark
    timed = timing.paired(model, reference, timing.batch_of(inputs, b.batch_size), b.warmup, b.repeats,
                             device, reference_device)  # fmt: skip
    log.info("%.2fx the uncompressed model's speed (interquartile range %.2f-%.2f over %d paired rounds)",
             timed["speedup"], timed["speedup_q1"], timed["speedup_q3"], b.repeats)  # fmt: skip
    return timed


def _log_layer_table(rows: list[dict], output_dir: Path) -> Path:
    """Per-layer sparsity as an MLflow table and a CSV next to the job's other outputs."""
    columns = {key: [row[key] for row in rows] for key in rows[0]} if rows else {}
    runs.log_table(columns, "pruning/layer_sparsity.json")
    path = output_dir / "layer_sparsity.csv"
    lines = [",".join(columns)] + [",".join(str(row[k]) for k in columns) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def _log_results(metrics: dict, evaluation: Evaluation, gold: score.Gold, rows: list[dict], output_dir: Path) -> None:
    """Metrics, the answers, and each question's F1 (what the sweep report's ΔF1 interval resamples)."""
    runs.log_metrics(metrics)
    files = {
        "predictions.json": evaluation.predictions.answers,
        "na_probs.json": evaluation.predictions.na_probs,
        results.QUESTION_F1: bootstrap.question_f1(gold, evaluation.predictions.answers),
        "metrics.json": metrics,
    }
    for name, content in files.items():
        (output_dir / name).write_text(json.dumps(content, indent=2))
    runs.log_artifacts([output_dir / name for name in files] + [_log_layer_table(rows, output_dir)])


def _save_model(job: JobConfig, model, tokenizer, directory: Path) -> None:
    """Keep the compressed model (never pickles) in the job's directory and its MLflow run."""
    quantize.save(model, job.quantization, directory, {"pruning": job.pruning.model_dump()})
    tokenizer.save_pretrained(str(directory))
    runs.log_artifact_dir(directory, "model")


def _export(job: JobConfig, metrics: dict[str, float], directory: Path) -> None:
    """Log the saved model as a pyfunc model of this run and register it under `export_name`."""
    from qa_compress.serve import export

    info = export.log_model(directory, export.Serving.of_job(job, metrics), job.quantization.name, job.export_name)
    version = f"{job.export_name}/{info.registered_model_version}"
    runs.set_tags({"registered_model": version})
    log.info("Registered the model as models:/%s", version)


def execute(job: JobConfig, output_dir: Path) -> tuple[dict[str, float], str]:
    """The stages of a job, inside its MLflow run; returns the metrics it logged and the baseline's origin."""
    output_dir.mkdir(parents=True, exist_ok=True)
    eval_examples = _examples(job, "validation")
    train_examples = _examples(job, "train") if job.reads_training_data() else None
    threshold_examples = None
    if job.predict.threshold_file is not None and job.predict.calibrates():
        threshold_examples = _threshold_file(job, eval_examples)
    elif job.predict.calibrates():
        train_examples, threshold_examples = _threshold_split(job, train_examples, eval_examples)

    model, tokenizer, baseline_cache, train_features = _baseline(job, train_examples)
    eval_features = _features(job, eval_examples, tokenizer, "eval")
    inputs = predict.forward_inputs(eval_features, models.input_names(tokenizer, model))
    if train_features is None and job.compression_data_users():
        train_features = _features(job, train_examples, tokenizer, "train")
    train_device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    teacher = None
    if job.pruning.distill:
        teacher = _teacher(job, model, tokenizer, train_features, train_device, job.pruning.distill_temperature,
                           job.pruning.distill_weight)  # fmt: skip
    # The uncompressed model, kept to time against the compressed one in the same process.
    reference = copy.deepcopy(model).cpu() if job.benchmark.enabled and job.benchmark.reference else None

    def before_recovery(candidate: Any, pruned: Pruned) -> dict[str, float]:
        evaluation = _evaluate(job, candidate.to(train_device), inputs, eval_examples, eval_features, train_device)
        return _before_recovery(pruned, evaluation)

    if job.pruning.gradual() and prune.get(job.pruning.name).staged:
        one_shot = copy.deepcopy(model)  # what pruning at once, without recovery, would have left
        metrics = before_recovery(one_shot, _prune(job, one_shot, train_features, train_device))
        del one_shot
        pruned, staged = _prune_in_stages(job, model, tokenizer, train_features, train_device, teacher)
        metrics.update({**pruned.metrics, **staged})
    else:
        pruned = _prune(job, model, train_features, train_device)
        metrics = dict(pruned.metrics)
        if job.pruning.finetune_steps:
            metrics.update(before_recovery(model, pruned))
            metrics.update(_recover(job, model, tokenizer, train_features, teacher, pruned))
    rows = _fold_in(pruned)
    metrics["sparsity"] = prune_layers.sparsity(rows)

    device = quantize.get(job.quantization.name).device()

    def evaluate(candidate) -> dict[str, float]:
        return _evaluate(job, candidate, inputs, eval_examples, eval_features, device).scores

    model = _quantize(job, model, tokenizer, output_dir, train_examples, train_features, evaluate)
    metrics.update(_quantization_record(model, output_dir))
    runs.set_tags({"device": str(device)})
    evaluation = _evaluate(job, model, inputs, eval_examples, eval_features, device)
    if threshold_examples is not None:
        evaluation, calibrated = _calibrate_threshold(job, model, tokenizer, threshold_examples, evaluation,
                                                      eval_examples, device)  # fmt: skip
        metrics.update(calibrated)
    metrics.update(_scores(evaluation, eval_examples, len(eval_features)))
    metrics.update(_measure(job, model, inputs, eval_examples, device))
    if reference is not None:
        reference_device = quantize.get("none").device()
        metrics.update(_against_reference(job, model, reference.to(reference_device), inputs, device, reference_device))
        del reference

    _log_results(metrics, evaluation, squad.gold_answers(eval_examples.dataset), rows, output_dir)
    if job.save_model or job.export:
        _save_model(job, model, tokenizer, output_dir / "model")
    if job.export:
        _export(job, metrics, output_dir / "model")
    return metrics, baseline_cache


def compressed(job: JobConfig, workdir: Path) -> Any:
    """The job's compressed model, built as `execute` builds it but not evaluated, timed or logged: for timing
    many configurations side by side in one process. Only for jobs that compress without data."""
    readers = job.training_data_users()
    if job.training.name != "none":
        readers.insert(0, f"training={job.training.name}")
    if job.pruning.finetune_steps or job.pruning.gradual():
        readers.append(f"pruning.finetune_steps={job.pruning.finetune_steps}, pruning.schedule={job.pruning.schedule}")
    if quantize.get(job.quantization.name).reads(job.quantization):
        readers.append(f"quantization={job.quantization.name}")
    if readers:
        raise UserError(f"{'; '.join(dict.fromkeys(readers))}: this job reads data to compress; run it as a job "
                        "(save_model=true) to time its model")  # fmt: skip
    model, tokenizer, _, _ = _baseline(job, None)
    _fold_in(_prune(job, model, None, torch.device("cpu")))
    return _quantize(job, model, tokenizer, workdir, None, None, None)


# The job as Hydra runs it -----------------------------------------------------------------------


def summary(
    name: str, metrics: dict[str, float], baseline_cache: str, baseline_f1: float | None, batch_size: int
) -> str:
    """The one line a user reads at the end of a job."""
    change = f" ({metrics['f1'] - baseline_f1:+.2f} vs uncompressed)" if baseline_f1 is not None else ""
    speed = (
        f"{metrics['latency_ms']:.1f} ms per batch of {batch_size}" if "latency_ms" in metrics else "not benchmarked"
    )
    if "speedup" in metrics:
        speed += (f", {metrics['speedup']:.2f}x the uncompressed model's speed "
                  f"(IQR {metrics['speedup_q1']:.2f}-{metrics['speedup_q3']:.2f})")  # fmt: skip
    return (
        f"{name}: F1 {metrics['f1']:.2f}{change}, HasAns {metrics.get('HasAns_f1', math.nan):.2f}, "
        f"NoAns {metrics.get('NoAns_f1', math.nan):.2f}, always-no-answer {metrics['always_no_answer_f1']:.2f} | "
        f"{metrics['size_mb']:.1f} MB | {speed} | baseline {baseline_cache}"
    )


def _sweep_baseline_f1(parent_run_id: str | None, uri: str) -> float | None:
    """F1 of the sweep's uncompressed job, if it has finished already."""
    if parent_run_id is None:
        return None
    baseline = results.baseline_of(results.sweep_jobs(MlflowClient(uri), parent_run_id))
    return baseline.metrics["f1"] if baseline else None


def _hydra_context() -> tuple[str | None, Path]:
    """The sweep parent run id (multirun only) and the job's output directory."""
    if not HydraConfig.initialized():
        return None, Path.cwd()
    hc = HydraConfig.get()
    parent = runs.sweep_parent(Path(hc.sweep.dir)) if hc.mode == RunMode.MULTIRUN else None
    return parent, Path(hc.runtime.output_dir)


def _overrides() -> list[str]:
    """The job's own command-line overrides (a sweep's job: its values, not the sweep's lists)."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


# Library logs with nothing for a user to act on, kept out of the default output: transformers' weight
# loading report (before fine-tuning the QA head is new by design), its tensor-parallel plan check (no
# model here is sharded), and ONNX Runtime's graph fusions.
QUIET_LOGGERS = ("transformers.modeling_utils", "transformers.distributed.tensor_parallel", "onnxruntime.transformers")


def _quiet_library_logs() -> None:
    """Raise QUIET_LOGGERS to ERROR, unless `hydra.verbose` names them (or a logger above them) or is true."""
    verbose = HydraConfig.get().verbose if HydraConfig.initialized() else False
    if verbose is True:
        return
    named = [verbose] if isinstance(verbose, str) else list(verbose or [])
    for name in QUIET_LOGGERS:
        if not any(name == n or name.startswith(f"{n}.") for n in named):
            logging.getLogger(name).setLevel(logging.ERROR)


def _progress_bars_only_on_a_terminal() -> None:
    if not sys.stderr.isatty():
        datasets.disable_progress_bars()
        transformers.utils.logging.disable_progress_bar()


def _versions() -> dict[str, str]:
    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "datasets": datasets.__version__,
        "mlflow": mlflow.__version__,
        "hydra": hydra.__version__,
        "omegaconf": omegaconf.__version__,
    }


def run(cfg: DictConfig, checked: JobConfig | None = None) -> dict[str, float | str]:
    """Run one job as one MLflow run; returns every metric it logged and its `run_id` (what a sweeper optimises).

    A job that finished before with the same configuration is not run again: its metrics are returned.

    `checked` is the job's config when its inputs were checked already (run.py does that before it
    imports this module); otherwise they are checked here, the store included.
    """
    _progress_bars_only_on_a_terminal()
    _quiet_library_logs()
    job = checked if checked is not None else validate(cfg)
    torch.set_num_threads(job.benchmark.num_threads or torch.get_num_threads())
    parent, output_dir = _hydra_context()
    uri = store.tracking_uri(job.tracking.uri, job.paths.mlruns_dir)
    experiment = runs.experiment_id(uri, job.tracking.experiment_name)
    if parent is None:  # a sweep's parent reaped before its first job
        runs.reap_dead_runs(uri, experiment)
    cache.remove_orphans(Path(job.paths.cache_dir))  # builds whose process died
    name = bookkeeping.run_name(job)
    tags = bookkeeping.tags(job, torch.get_num_threads(), _versions(), _overrides())
    # Claimed by its configuration hash: a second sweep on the same cache waits, then reuses the result.
    claim = Path(job.paths.cache_dir) / "claims" / tags["config_hash"]
    with cache.locked(claim, job.cache_lock_timeout_s, "a job with the same configuration is still running"):
        previous = (
            None if job.force else bookkeeping.reuse_finished(experiment, tags["config_hash"], parent, output_dir, name)
        )
        if previous is not None:
            return {**previous.data.metrics, "run_id": previous.info.run_id}
        with runs.job_run(experiment, name, parent, tags) as run_id:
            resolved = OmegaConf.to_container(job_section(cfg), resolve=True)
            runs.log_params(runs.flatten(resolved))
            output_dir.mkdir(parents=True, exist_ok=True)
            (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(resolved))
            runs.log_artifacts([output_dir / "config.yaml"])
            metrics, baseline_cache = execute(job, output_dir)
    log.info(summary(name, metrics, baseline_cache, _sweep_baseline_f1(parent, uri), job.benchmark.batch_size))
    return {**metrics, "run_id": run_id}
