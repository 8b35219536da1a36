"""The stages of one job: baseline -> prune -> (recover) -> quantize -> evaluate -> measure -> log.

Every check that can fail on a user's input ran before (`checks`); the stages run inside the
job's MLflow run (`run`). The methods themselves live in `prune` and `quantize`; the data the
job reads comes from `inputs`; evaluating and timing are `measure`'s. The stages share one `Context`.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import transformers

from qa_compress import quantize
from qa_compress.data import squad
from qa_compress.errors import UserError
from qa_compress.evaluate import bootstrap, predict
from qa_compress.job import bookkeeping, inputs
from qa_compress.job.config import JobConfig
from qa_compress.job.context import CPU, Context, Evaluation
from qa_compress.job.measure import against_reference, calibrate_threshold, evaluate, measured, scores
from qa_compress.model import distill, models, train
from qa_compress.prune import recovered_cache, recovery
from qa_compress.serve import export
from qa_compress.tracking import cache, results, runs

log = logging.getLogger(__name__)


# Stages --------------------------------------------------------------------------------------


def read_data(job: JobConfig, output_dir: Path) -> Context:
    """The job's questions: evaluation, training (when anything trains or calibrates) and the threshold's."""
    ctx = Context(job, output_dir, evaluation=inputs.examples(job, "validation"))
    ctx.train = inputs.examples(job, "train") if job.reads_training_data() else None
    if job.predict.calibrates():
        if job.predict.threshold_file is not None:
            ctx.threshold = inputs.threshold_file(job, ctx.evaluation)
        else:
            ctx.train, ctx.threshold = inputs.threshold_split(job, ctx.train, ctx.evaluation)
    return ctx


def baseline(ctx: Context) -> tuple[Any, str]:
    """The model to compress: fine-tuned (or reused from the cache), or as given with training=none.

    Returns the model and where it came from (hit, miss or none); sets the tokenizer, and the
    training windows when fine-tuning prepared them.
    """
    job = ctx.job
    if job.training.name == "none":
        transformers.set_seed(job.seed)  # a fresh QA head is drawn from the seeded generator
        model, ctx.tokenizer = models.load(job.model.name_or_path, job.model.trust_remote_code)
        ctx.baseline_id = f"{models.fingerprint(job.model.name_or_path)}:seed{job.seed}"
        return model, "none"
    key = train.baseline_key(
        models.fingerprint(job.model.name_or_path),
        ctx.train.digest,
        job.dataset.max_seq_length,
        job.dataset.doc_stride,
        job.training.key_fields(),
        job.seed,
    )
    entry = Path(job.paths.cache_dir) / "baselines" / key
    ctx.baseline_id = key
    with cache.locked(entry, job.cache_lock_timeout_s):  # parallel jobs: one trains, the others wait
        hit = cache.usable(entry, required=train.BASELINE_FILES)
        runs.set_tags({"baseline_key": key, "baseline_cache": "hit" if hit else "miss"})
        if hit:
            log.info("Baseline %s from cache %s", key, entry)
            model, ctx.tokenizer = models.load(str(entry), job.model.trust_remote_code)
            return model, "hit"
        transformers.set_seed(job.seed)
        model, ctx.tokenizer = models.load(job.model.name_or_path, job.model.trust_remote_code)
        ctx.train_windows = inputs.windows(job, ctx.train, ctx.tokenizer, "train")
        log.info(
            "Fine-tuning %s on %d questions (%d windows)",
            job.model.name,
            len(ctx.train.dataset),
            len(ctx.train_windows),
        )
        metrics = train.fine_tune(
            model, ctx.tokenizer, ctx.train_windows, job.training.model_dump(), job.seed, [runs.TrainingCurves()]
        )
        runs.log_metrics(metrics)
        record = {
            "key": key,
            "model": job.model.name_or_path,
            "train_data": ctx.train.source,
            "training": job.training.model_dump(),
            "seed": job.seed,
        }
        train.save_baseline(model, ctx.tokenizer, entry, record)
    return model, "miss"


def prepare_windows(ctx: Context, model: Any) -> None:
    """The evaluation windows and their model inputs, and training windows when compression reads them."""
    ctx.eval_windows = inputs.windows(ctx.job, ctx.evaluation, ctx.tokenizer, "eval")
    ctx.model_inputs = predict.forward_inputs(ctx.eval_windows, ctx.input_names(model))
    if ctx.train_windows is None and ctx.job.compression_data_users():
        ctx.train_windows = inputs.windows(ctx.job, ctx.train, ctx.tokenizer, "train")
    ctx.train_device = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def teacher(
    ctx: Context,
    model: Any,
    device: torch.device,
    temperature: float,
    weight: float,
    tag: str = "teacher_cache",
    hidden_weight: float = 0.0,
) -> distill.Teacher:
    """`model`'s logits on every training window (cached), for distillation during recovery or QAT; with a
    `hidden_weight`, a frozen copy of `model` too, whose hidden states layer-wise distillation reads."""
    job = ctx.job
    start, end, origin = distill.teacher_logits(
        model,
        ctx.train_windows,
        ctx.input_names(model),
        job.predict.batch_size,
        device,
        Path(job.paths.cache_dir),
        job.cache_lock_timeout_s,
    )
    runs.set_tags({tag: origin})
    if not hidden_weight:
        return distill.Teacher(start, end, temperature, weight)
    frozen = copy.deepcopy(model).to(device).eval().requires_grad_(False)
    return distill.Teacher(start, end, temperature, weight, frozen, hidden_weight)


def pruned(ctx: Context, model: Any) -> tuple[Any, list[dict], dict[str, float]]:
    """The pruned model, its per-layer sparsity rows and the metrics; a recovery that trains is cached, so jobs
    that differ only after pruning (quantization, runtime, threshold) share it."""
    job = ctx.job
    if not job.pruning.finetune_steps:
        return model, *prune(ctx, model)
    entry = recovered_cache.entry(
        Path(job.paths.cache_dir),
        {
            "baseline": ctx.baseline_id,
            "train_data": ctx.train.digest,
            "eval_data": ctx.evaluation.digest,  # the scores before recovery are on the evaluation questions
            "dataset": job.dataset.model_dump(),
            "pruning": job.pruning.model_dump(),
            "training": job.training.key_fields(),
            "predict": job.predict.model_dump(),
            "seed": job.seed,
            "device": ctx.train_device.type,
        },
    )
    with cache.locked(entry, job.cache_lock_timeout_s, "another job is still recovering this pruned model"):
        if cache.usable(entry, required=recovered_cache.FILES):
            model, rows, metrics, made_by = recovered_cache.load(entry, job.model.trust_remote_code)
            runs.set_tags({"recovery_key": entry.name, "recovery_cache": "hit", "recovered_by_run": made_by})
            log.info("Pruned and recovered model from cache %s (recovered by run %s)", entry, made_by)
            return model, rows, metrics
        rows, metrics = prune(ctx, model)
        recovered_cache.save(model, ctx.tokenizer, entry, rows, metrics, runs.active_run_id())
    runs.set_tags({"recovery_key": entry.name, "recovery_cache": "miss"})
    return model, rows, metrics


def prune(ctx: Context, model: Any) -> tuple[list[dict], dict[str, float]]:
    """Prune `model` in place (recovering when the settings ask); the per-layer sparsity rows and the metrics."""
    job, p = ctx.job, ctx.job.pruning
    distilled = None
    if p.distill:
        distilled = teacher(
            ctx, model, ctx.train_device, p.distill_temperature, p.distill_weight, hidden_weight=p.distill_hidden_weight
        )
    settings = recovery.Recovery(
        ctx.tokenizer, ctx.train_windows, job.training.model_dump(), job.seed, ctx.train_device, distilled
    )

    def scored(candidate: Any) -> dict[str, float]:
        return evaluate(ctx, candidate.to(ctx.train_device), ctx.train_device).scores

    return recovery.prune_and_recover(model, p, settings, scored)


def quantized(ctx: Context, model: Any, device: torch.device | None) -> Any:
    """Apply the quantization method with the data it reads; CPU-only methods get the model on the CPU.

    `device`: where the method's own scoring of candidates evaluates them (None: it may not score).
    """
    job = ctx.job
    method = quantize.get(job.quantization.name)
    reads = method.reads(job.quantization)
    if method.runs_on == "cpu":
        model = model.to("cpu")
    calibrate, scores_held_out = quantize.CALIBRATION_WINDOWS in reads, quantize.HELD_OUT_QUESTIONS in reads
    context = quantize.QuantizeContext(
        input_names=ctx.input_names(model),
        workdir=ctx.output_dir / method.name,
        num_threads=torch.get_num_threads(),
        train_features=ctx.train_windows if quantize.TRAINING_WINDOWS in reads else None,
        calibration=inputs.calibration_windows(job, ctx.tokenizer, ctx.train, ctx.train_windows) if calibrate else None,
        held_out=inputs.held_out(job, ctx.tokenizer, model, ctx.train) if scores_held_out else None,
        training=job.training.model_dump(),
        seed=job.seed,
        evaluate=(lambda candidate: evaluate(ctx, candidate, device).scores) if device is not None else None,
        teacher=partial(teacher, ctx, device=CPU),
    )
    return method.apply(model, job.quantization, context).to(method.device())


def quantization_record(ctx: Context, model: Any) -> dict[str, float]:
    """What the quantization method measured while it worked: numbers become metrics, the rest an artifact."""
    record = getattr(model, "record", None) or {}
    if record:
        path = ctx.output_dir / "quantization.json"
        path.write_text(json.dumps(record, indent=2, default=str))
        runs.log_artifacts([path])
    return {k: float(v) for k, v in record.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def log_layer_table(rows: list[dict], output_dir: Path) -> Path:
    """Per-layer sparsity as an MLflow table and a CSV next to the job's other outputs."""
    columns = {key: [row[key] for row in rows] for key in rows[0]} if rows else {}
    runs.log_table(columns, "pruning/layer_sparsity.json")
    path = output_dir / "layer_sparsity.csv"
    lines = [",".join(columns)] + [",".join(str(row[k]) for k in columns) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def log_results(ctx: Context, metrics: dict, evaluation: Evaluation, rows: list[dict]) -> None:
    """Metrics, the answers, and each question's F1 (what the sweep report's ΔF1 interval resamples)."""
    runs.log_metrics(metrics)
    gold = squad.gold_answers(ctx.evaluation.dataset)
    files = {
        "predictions.json": evaluation.predictions.answers,
        "na_probs.json": evaluation.predictions.na_probs,
        results.QUESTION_F1: bootstrap.question_f1(gold, evaluation.predictions.answers),
        "metrics.json": metrics,
    }
    for name, content in files.items():
        (ctx.output_dir / name).write_text(json.dumps(content, indent=2))
    runs.log_artifacts([ctx.output_dir / name for name in files] + [log_layer_table(rows, ctx.output_dir)])


def save_model(ctx: Context, model: Any, directory: Path) -> None:
    """Keep the compressed model (never pickles) in the job's directory and its MLflow run."""
    job = ctx.job
    quantize.save(model, job.quantization, directory, {"pruning": job.pruning.model_dump()})
    ctx.tokenizer.save_pretrained(str(directory))
    runs.log_artifact_dir(directory, "model")


def register(ctx: Context, metrics: dict[str, float], directory: Path) -> str:
    """Log the saved model as a pyfunc model of this run and register it under `export_name`; returns NAME/VERSION."""
    job = ctx.job
    info = export.log_model(directory, export.Serving.of_job(job, metrics), job.quantization.name, job.export_name)
    return f"{job.export_name}/{info.registered_model_version}"


# The job -------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What a job's stages leave: the metrics logged, where the baseline came from, the model registered."""

    metrics: dict[str, float]
    baseline_origin: str  # hit (cache), miss (fine-tuned now), or the checkpoint as given
    registered: str | None = None  # NAME/VERSION in the Model Registry (export=true)


def execute(job: JobConfig, output_dir: Path) -> Outcome:
    """The stages of a job, inside its MLflow run."""
    output_dir.mkdir(parents=True, exist_ok=True)
    ctx = read_data(job, output_dir)
    model, origin = baseline(ctx)
    prepare_windows(ctx, model)
    # The uncompressed model, kept to time against the compressed one in the same process.
    # (An uncompressed job is that model: its speed-up is 1 by definition, not timed against itself.)
    timed_against = job.benchmark.enabled and job.benchmark.reference and not bookkeeping.is_uncompressed(job)
    reference = copy.deepcopy(model).cpu() if timed_against else None
    model, rows, metrics = pruned(ctx, model)

    device = quantize.get(job.quantization.name).device()
    model = quantized(ctx, model, device)
    metrics.update(quantization_record(ctx, model))
    runs.set_tags({"device": str(device)})
    evaluation = evaluate(ctx, model, device)
    if ctx.threshold is not None:
        evaluation, calibrated = calibrate_threshold(ctx, model, evaluation, device)
        metrics.update(calibrated)
    metrics.update(scores(ctx, evaluation))
    metrics.update(measured(ctx, model, device))
    if reference is not None:
        metrics.update(against_reference(ctx, model, reference, device))
        del reference

    log_results(ctx, metrics, evaluation, rows)
    if job.save_model or job.export:
        save_model(ctx, model, output_dir / "model")
    registered = register(ctx, metrics, output_dir / "model") if job.export else None
    return Outcome(metrics, origin, registered)


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
        raise UserError(
            f"{'; '.join(dict.fromkeys(readers))}: this job reads data to compress; run it as a job "
            "(save_model=true) to time its model"
        )
    ctx = Context(job, workdir)
    model, _ = baseline(ctx)
    settings = recovery.Recovery(ctx.tokenizer, None, job.training.model_dump(), job.seed, CPU)
    recovery.fold_in(recovery.prune_once(model, job.pruning, settings))
    return quantized(ctx, model, None)
