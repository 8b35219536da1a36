"""One job: check inputs, then load -> (fine-tune or reuse) -> prune -> quantize -> predict -> score -> benchmark.

Every check that can fail on a user's input runs before the MLflow run starts and before
any model or data is loaded; heavy stages run inside the job's MLflow run, which ends
FINISHED, FAILED or KILLED.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import re
import shutil
import sys
import time
from pathlib import Path

import datasets
import hydra
import mlflow
import omegaconf
import torch
import transformers
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from qa_compress import (
    benchmark,
    cache,
    data,
    features,
    models,
    onnxrt,
    predict,
    prune,
    quantize,
    report,
    score,
    synthetic,
    tracking,
    train,
)
from qa_compress.config import JobConfig, from_hydra, job_section
from qa_compress.errors import UserError

log = logging.getLogger(__name__)

SKIPPED_FILE = "skipped.json"  # left in a job's output directory when it reused a finished run


@functools.lru_cache(maxsize=64)
def _checked_squad_json(path: str, mtime_ns: int, key: str) -> None:
    data.validate_squad_json(Path(path), key)


def _check_file(path: str | None, key: str) -> None:
    if path is None:
        return
    file = Path(path)
    if not file.is_file():
        raise UserError(f"{key}={path}: no such file")
    _checked_squad_json(str(file.resolve()), file.stat().st_mtime_ns, key)


def _check_model_config(job: JobConfig) -> None:
    """What the model's config alone can refuse: windows longer than its positions, an unprunable layout."""
    name = job.model.name_or_path
    try:
        config = transformers.AutoConfig.from_pretrained(
            name, trust_remote_code=job.model.trust_remote_code, local_files_only=models.is_cached(name)
        )
    except (OSError, ValueError) as err:
        raise UserError(f"model.name_or_path={name}: its config could not be read ({err})") from None
    positions = getattr(config, "max_position_embeddings", None)
    if positions is not None and job.dataset.max_seq_length > positions:
        raise UserError(
            f"dataset.max_seq_length={job.dataset.max_seq_length}: longer than the {positions} positions of "
            f"model.name_or_path={name}; use at most {positions}"
        )
    if job.pruning.name == "structured":
        reason = prune.unsupported_model(config.model_type)
        if reason:
            raise UserError(f"pruning=structured: {reason} (model.name_or_path={name})")


def check_inputs(job: JobConfig) -> None:
    """Everything about a job's inputs that can be checked without loading a model or training."""
    models.check_available(job.model.name_or_path)
    _check_model_config(job)
    if job.dataset.source == "json":
        _check_file(job.dataset.validation_file, "dataset.validation_file")
        if job.training.name != "none":
            _check_file(job.dataset.train_file, "dataset.train_file")
    elif job.dataset.source == "hub":
        data.check_hub_dataset(job.dataset.hub_name)
    for pattern in job.pruning.layer_patterns:
        try:
            re.compile(pattern)
        except re.error as err:
            raise UserError(f"pruning.layer_patterns: {pattern!r} is not a regular expression ({err})") from None
    reason = quantize.supported(job.quantization.name)
    if reason:
        raise UserError(f"quantization={job.quantization.name}: {reason}")


def validate(cfg: DictConfig) -> JobConfig:
    """Typed config with every input checked; raises UserError on the first problem."""
    job = from_hydra(cfg)
    check_inputs(job)
    return job


def _examples(job: JobConfig, split: str) -> data.Examples:
    """Examples of one split ("train" or "validation"), limited to the configured number."""
    ds = job.dataset
    cache_dir = Path(job.paths.cache_dir)
    if ds.source == "hub":
        examples = data.load_hub(ds.hub_name, split)
    else:
        if ds.source == "synthetic":
            paragraphs = ds.train_paragraphs if split == "train" else ds.eval_paragraphs
            seed = ds.generator_seed + (0 if split == "train" else 1)  # disjoint draws for train and eval
            path = synthetic.write(
                cache_dir / "synthetic" / f"{ds.name}-{split}-{paragraphs}-{seed}.json", paragraphs, seed
            )
        else:
            path = Path(ds.train_file if split == "train" else ds.validation_file)
        examples = data.load_squad_json(path, f"dataset.{split}_file", cache_dir)
    return data.limit(examples, ds.max_train_samples if split == "train" else ds.max_eval_samples)


def _load(job: JobConfig, name_or_path: str):
    transformers.set_seed(job.seed)  # a fresh QA head is drawn from the seeded generator
    return models.load(name_or_path, job.model.trust_remote_code)


def _baseline(job: JobConfig) -> tuple[torch.nn.Module, transformers.PreTrainedTokenizerBase, dict[str, str]]:
    """The model to compress: fine-tuned (or reused from the cache), or as given with training=none."""
    if job.training.name == "none":
        model, tokenizer = _load(job, job.model.name_or_path)
        return model, tokenizer, {"baseline_cache": "none"}
    train_examples = _examples(job, "train")
    tracking.log_dataset(f"{job.dataset.name}/train", train_examples.source, "train", train_examples.digest, "training")
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
        tags = {"baseline_key": key, "baseline_cache": "hit" if hit else "miss"}
        tracking.set_tags(tags)
        if hit:
            log.info("Baseline %s from cache %s", key, entry)
            model, tokenizer = models.load(str(entry), job.model.trust_remote_code, safetensors_only=True)
            return model, tokenizer, tags
        model, tokenizer = _load(job, job.model.name_or_path)
        train_features, _ = features.prepare(
            train_examples.dataset,
            train_examples.digest,
            tokenizer,
            job.dataset.max_seq_length,
            job.dataset.doc_stride,
            "train",
            Path(job.paths.cache_dir),
            job.cache_lock_timeout_s,
        )
        log.info(
            "Fine-tuning %s on %d questions (%d windows)",
            job.model.name,
            len(train_examples.dataset),
            len(train_features),
        )
        metrics = train.fine_tune(
            model, tokenizer, train_features, job.training.model_dump(), job.seed, [tracking.TrainingCurves()]
        )
        tracking.log_metrics(metrics)
        record = {
            "key": key,
            "model": job.model.name_or_path,
            "train_data": train_examples.source,
            "training": job.training.model_dump(),
            "seed": job.seed,
        }
        train.save_baseline(model, tokenizer, entry, record)
    return model, tokenizer, tags


def _features(job: JobConfig, examples: data.Examples, tokenizer, split: str):
    features_, _ = features.prepare(
        examples.dataset,
        examples.digest,
        tokenizer,
        job.dataset.max_seq_length,
        job.dataset.doc_stride,
        split,
        Path(job.paths.cache_dir),
        job.cache_lock_timeout_s,
    )
    return features_


def _train_features(job: JobConfig, tokenizer):
    """Training windows with answer labels (for gradient importance and recovery fine-tuning)."""
    examples = _examples(job, "train")
    tracking.log_dataset(f"{job.dataset.name}/train", examples.source, "train", examples.digest, "training")
    return _features(job, examples, tokenizer, "train")


def _evaluate(job: JobConfig, model, tokenizer, eval_examples: data.Examples, eval_features, device) -> tuple:
    """Predictions and SQuAD 2.0 scores of `model` on the evaluation set, and the seconds it took."""
    inputs = predict.forward_inputs(eval_features, models.input_names(tokenizer, model))
    started = time.perf_counter()
    start_logits, end_logits = predict.logits(model, inputs, job.predict.batch_size, device)
    predictions = predict.decode(
        eval_examples.dataset,
        eval_features,
        start_logits,
        end_logits,
        job.predict.n_best_size,
        job.predict.max_answer_length,
        job.predict.null_score_diff_threshold,
    )
    elapsed = time.perf_counter() - started
    scores, _ = score.evaluate(data.gold_answers(eval_examples.dataset), predictions.answers, predictions.na_probs)
    return predictions, scores, elapsed, inputs


def _prune(job: JobConfig, model, train_features, device) -> tuple[dict, dict[str, int], dict[str, float]]:
    """Apply the pruning method; returns the prunable layers, their original sizes and pruning metrics.

    Unstructured methods leave their masks on (folded in by `prune.make_permanent` after recovery).
    """
    p = job.pruning
    layers = prune.prunable_layers(model, p.layer_patterns, p.include_qa_head, p.include_embeddings)
    if not layers:
        raise UserError(f"pruning.layer_patterns={list(p.layer_patterns)}: no Linear layer of the model matches")
    original = {name: module.weight.numel() for name, module in layers.items()}
    metrics: dict[str, float] = {"prunable_layers": len(layers)}
    if p.name in prune.UNSTRUCTURED:
        prune.mask(layers, p.name, p.amount, job.seed)
    elif p.name == "structured":
        if p.importance == "gradient":
            batches = train.batches(train_features, p.finetune_batch_size, p.importance_batches, job.seed)
            importance = prune.gradient_importance(model.to(device), batches)
        else:
            importance = prune.weight_norm_importance(model)
        metrics.update(prune.structured(model, p.heads_amount, p.ffn_amount, importance))
    return layers, original, metrics


def _recover(job: JobConfig, model, tokenizer, train_features) -> dict[str, float]:
    """Recovery fine-tuning of the pruned model; masked weights stay zero (the masks sit in the forward pass)."""
    p = job.pruning
    settings = {
        **job.training.model_dump(),
        "learning_rate": p.finetune_learning_rate,
        "max_steps": p.finetune_steps,
        "batch_size": p.finetune_batch_size,
        "gradient_accumulation_steps": 1,
        "warmup_ratio": 0.1,
        "logging_steps": max(1, min(job.training.logging_steps, p.finetune_steps // 5 or 1)),
    }
    log.info("Recovery fine-tuning for %d steps", p.finetune_steps)
    result = train.fine_tune(model, tokenizer, train_features, settings, job.seed, [])
    return {f"recovery_{k}": v for k, v in result.items()}


def _log_layer_table(rows: list[dict], output_dir: Path) -> Path:
    """Per-layer sparsity as an MLflow table and a CSV next to the job's other outputs."""
    columns = {key: [row[key] for row in rows] for key in rows[0]} if rows else {}
    tracking.log_table(columns, "pruning/layer_sparsity.json")
    path = output_dir / "layer_sparsity.csv"
    lines = [",".join(columns)] + [",".join(str(row[k]) for k in columns) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def execute(job: JobConfig, output_dir: Path) -> tuple[dict[str, float], str]:
    """The heavy part of a job, inside its MLflow run; returns the metrics it logged and the baseline's origin."""
    eval_examples = _examples(job, "validation")
    tracking.log_dataset(
        f"{job.dataset.name}/validation", eval_examples.source, "validation", eval_examples.digest, "evaluation"
    )
    model, tokenizer, cache_tags = _baseline(job)
    eval_features = _features(job, eval_examples, tokenizer, "eval")
    output_dir.mkdir(parents=True, exist_ok=True)
    device = quantize.device_for(job.quantization.name)
    train_device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tracking.set_tags({"device": str(device)})

    train_features = _train_features(job, tokenizer) if job.pruning.needs_training_data() else None
    layers, original_sizes, metrics = _prune(job, model, train_features, train_device)
    if job.pruning.finetune_steps:
        metrics["sparsity_before_recovery"] = prune.sparsity(prune.layer_sparsity(layers, original_sizes))
        _, before, _, _ = _evaluate(job, model.to(train_device), tokenizer, eval_examples, eval_features, train_device)
        metrics.update(
            {f"{k}_before_recovery": before[k] for k in ("f1", "exact", "HasAns_f1", "NoAns_f1") if k in before}
        )
        metrics.update(_recover(job, model, tokenizer, train_features))
    prune.make_permanent(layers)
    rows = prune.layer_sparsity(layers, original_sizes)
    metrics["sparsity"] = prune.sparsity(rows)

    model = quantize.apply(
        model.to("cpu") if quantize.runs_on_cpu_only(job.quantization.name) else model,
        job.quantization.name,
        models.input_names(tokenizer, model),
        output_dir / "onnx",
        torch.get_num_threads(),
        job.quantization.per_channel,
    )
    model.to(device)

    predictions, scores, metrics["predict_s"], inputs = _evaluate(
        job, model, tokenizer, eval_examples, eval_features, device
    )
    metrics.update(scores)
    floor = score.always_no_answer(data.gold_answers(eval_examples.dataset))
    metrics["always_no_answer_exact"], metrics["always_no_answer_f1"] = floor["exact"], floor["f1"]
    metrics["eval_features"] = len(eval_features)

    metrics.update(benchmark.sizes(model))
    if job.benchmark.enabled:
        b = job.benchmark
        metrics.update(
            benchmark.run(
                model,
                inputs,
                b.batch_size,
                b.warmup,
                b.repeats,
                device,
                questions_per_feature=len(eval_examples.dataset) / len(eval_features),
            )
        )
    tracking.log_metrics(metrics)

    files = {
        "predictions.json": predictions.answers,
        "na_probs.json": predictions.na_probs,
        "metrics.json": metrics,
    }
    for name, content in files.items():
        (output_dir / name).write_text(json.dumps(content, indent=2))
    tracking.log_artifacts([output_dir / name for name in files] + [_log_layer_table(rows, output_dir)])
    if job.save_model:
        _save_model(model, tokenizer, job.quantization.name, output_dir / "model")
    return metrics, cache_tags["baseline_cache"]


def _save_model(model, tokenizer, quantization: str, directory: Path) -> None:
    """Keep the compressed model (safetensors or ONNX, never pickles) in the job's directory and its MLflow run."""
    directory.mkdir(parents=True, exist_ok=True)
    if quantization == "dynamic_int8":
        quantize.save(model, directory)
    elif quantization == "onnx_int8":
        shutil.copyfile(model.path, directory / onnxrt.QUANTIZED_FILE)
    else:
        model.save_pretrained(str(directory), safe_serialization=True)
    tokenizer.save_pretrained(str(directory))
    tracking.log_artifact_dir(directory, "model")


def summary(
    name: str, metrics: dict[str, float], baseline_cache: str, baseline_f1: float | None, batch_size: int
) -> str:
    """The one line a user reads at the end of a job."""
    change = f" ({metrics['f1'] - baseline_f1:+.2f} vs uncompressed)" if baseline_f1 is not None else ""
    speed = (
        f"{metrics['latency_ms']:.1f} ms per batch of {batch_size}" if "latency_ms" in metrics else "not benchmarked"
    )
    return (
        f"{name}: F1 {metrics['f1']:.2f}{change}, HasAns {metrics.get('HasAns_f1', math.nan):.2f}, "
        f"NoAns {metrics.get('NoAns_f1', math.nan):.2f}, always-no-answer {metrics['always_no_answer_f1']:.2f} | "
        f"{metrics['size_mb']:.1f} MB | {speed} | baseline {baseline_cache}"
    )


def _sweep_baseline_f1(parent_run_id: str | None, uri: str) -> float | None:
    """F1 of the sweep's uncompressed job, if it has finished already."""
    if parent_run_id is None:
        return None
    baseline = report.baseline_of(report.sweep_jobs(MlflowClient(uri), parent_run_id))
    return baseline.metrics["f1"] if baseline else None


def _hydra_context() -> tuple[str | None, Path]:
    """The sweep parent run id (multirun only) and the job's output directory."""
    if not HydraConfig.initialized():
        return None, Path.cwd()
    hc = HydraConfig.get()
    parent = tracking.sweep_parent(Path(hc.sweep.dir)) if hc.mode == RunMode.MULTIRUN else None
    return parent, Path(hc.runtime.output_dir)


def job_hash(job: JobConfig) -> str:
    """Identity of a job's result: its settings and the content of its inputs, not where it writes.

    Two jobs with the same hash produce the same metrics (up to timing noise), so a rerun may reuse one.
    """
    settings = job.model_dump(exclude={"paths", "tracking", "force", "cache_lock_timeout_s"})
    inputs = {"model": models.fingerprint(job.model.name_or_path)}
    for key in ("train_file", "validation_file"):
        path = getattr(job.dataset, key)
        if path is not None and Path(path).is_file():
            inputs[key] = cache.file_sha256(Path(path))
    return cache.key({"settings": settings, "inputs": inputs})


def _progress_bars_only_on_a_terminal() -> None:
    if not sys.stderr.isatty():
        datasets.disable_progress_bars()
        transformers.utils.logging.disable_progress_bar()


def run(cfg: DictConfig) -> float:
    """Validate, then run one job as one MLflow run; returns its F1 (what a sweeper would optimise)."""
    _progress_bars_only_on_a_terminal()
    job = validate(cfg)
    torch.set_num_threads(job.benchmark.num_threads or torch.get_num_threads())
    parent, output_dir = _hydra_context()
    uri = tracking.tracking_uri(job.tracking.uri, job.paths.mlruns_dir)
    experiment = tracking.experiment_id(uri, job.tracking.experiment_name, job.paths.mlruns_dir)
    tags = {
        "git_commit": tracking.git_commit(job.paths.root_dir),
        "model": job.model.name,
        "dataset": job.dataset.name,
        "training": job.training.name,
        "pruning": job.pruning.name,
        "quantization": job.quantization.name,
        "num_threads": str(torch.get_num_threads()),
        "versions": json.dumps(
            {
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "datasets": datasets.__version__,
                "mlflow": mlflow.__version__,
                "hydra": hydra.__version__,
                "omegaconf": omegaconf.__version__,
            }
        ),
    }
    if job.model.trust_remote_code:
        tags["trust_remote_code"] = "true"
    p = job.pruning
    amount = f"heads {p.heads_amount:g} ffn {p.ffn_amount:g}" if p.name == "structured" else p.amount
    if p.finetune_steps:
        amount = (
            f"{amount:g} +{p.finetune_steps} steps"
            if isinstance(amount, float)
            else f"{amount} +{p.finetune_steps} steps"
        )
    name = tracking.run_name(job.model.name, p.name, amount, job.quantization.name)
    resolved = OmegaConf.to_container(job_section(cfg), resolve=True)
    tags["config_hash"] = job_hash(job)
    previous = None if job.force else tracking.finished_run(experiment, tags["config_hash"])
    if previous is not None:
        log.info("Skipping %s: finished already as run %s (force=true reruns it)", name, previous.info.run_id)
        tracking.mark_reused(previous.info.run_id, parent)
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / SKIPPED_FILE).write_text(json.dumps({"run_id": previous.info.run_id, "name": name}))
        return previous.data.metrics.get("f1", math.nan)
    with tracking.job_run(experiment, name, parent, tags):
        tracking.log_params(tracking.flatten(resolved))
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(resolved))
        tracking.log_artifacts([output_dir / "config.yaml"])
        metrics, baseline_cache = execute(job, output_dir)
    log.info(summary(name, metrics, baseline_cache, _sweep_baseline_f1(parent, uri), job.benchmark.batch_size))
    return metrics["f1"]
