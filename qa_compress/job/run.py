"""One job as one MLflow run: reused when it finished before, else its stages run inside the run.

The run ends FINISHED, FAILED or KILLED (`tracking.runs.job_run`); the job's summary line is the
last thing it prints.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from pathlib import Path

import datasets
import huggingface_hub
import hydra
import mlflow
import omegaconf
import torch
import transformers
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from qa_compress.data import sources
from qa_compress.job import bookkeeping, checks
from qa_compress.job.config import JobConfig, job_section
from qa_compress.job.stages import Outcome, execute
from qa_compress.tracking import cache, disk, locks, results, runs, store

log = logging.getLogger(__name__)


def summary(name: str, outcome: Outcome, run_id: str, baseline_f1: float | None, batch_size: int) -> str:
    """The one line a user reads at the end of a job: its figures, then its run (and registered model), which the
    next step (`qa_compress.export`, `mlflow models serve`) takes."""
    metrics = outcome.metrics
    change = f" ({metrics['f1'] - baseline_f1:+.2f} vs uncompressed)" if baseline_f1 is not None else ""
    speed = (
        f"{metrics['latency_ms']:.1f} ms per batch of {batch_size}" if "latency_ms" in metrics else "not benchmarked"
    )
    if "speedup" in metrics:
        speed += (
            f", {metrics['speedup']:.2f}x the uncompressed model's speed "
            f"(IQR {metrics['speedup_q1']:.2f}-{metrics['speedup_q3']:.2f})"
        )
    kept = f" | registered as models:/{outcome.registered}" if outcome.registered else ""
    return (
        f"{name}: F1 {metrics['f1']:.2f}{change}, HasAns {metrics.get('HasAns_f1', math.nan):.2f}, "
        f"NoAns {metrics.get('NoAns_f1', math.nan):.2f}, always-no-answer {metrics['always_no_answer_f1']:.2f} | "
        f"{metrics['size_mb']:.1f} MB | {speed} | baseline {outcome.baseline_origin} | run {run_id}{kept}"
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
    """A log file gets no progress bars (datasets, transformers, the Hub client, MLflow's artifact downloads),
    unless `hydra.verbose` is true."""
    verbose = HydraConfig.get().verbose if HydraConfig.initialized() else False
    if sys.stderr.isatty() or verbose is True:
        return
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    huggingface_hub.utils.disable_progress_bars()
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"


def _versions() -> dict[str, str]:
    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "datasets": datasets.__version__,
        "mlflow": mlflow.__version__,
        "hydra": hydra.__version__,
        "omegaconf": omegaconf.__version__,
    }


KEPT_ON_FAILURE = (".hydra", "*.log", "config.yaml")  # what a failed job's directory keeps: how it was run


def _model_bytes(job: JobConfig) -> int:
    """The size of a local checkpoint's weights (0 for a Hub model): what a job writes per copy of its model."""
    name = job.model.name_or_path
    if not sources.looks_like_path(name):
        return 0
    return sum(p.stat().st_size for p in Path(name).expanduser().glob("*.safetensors"))


def out_of_space(job: JobConfig, output_dir: Path, started: float, err: BaseException) -> disk.DiskFull:
    """Remove what the job half-wrote (its files, its run's local artifacts) and say where space ran out."""
    artifacts = runs.local_artifact_dir()
    places = [output_dir, Path(job.paths.cache_dir), *([artifacts] if artifacts else [])]
    place = disk.place_of(err, places)
    freed = disk.remove_written_since(output_dir, started, KEPT_ON_FAILURE)
    if artifacts is not None:
        freed += disk.remove_written_since(artifacts, started)
    return disk.DiskFull(disk.full_message(place, max(_model_bytes(job), freed), freed))


def run(cfg: DictConfig, checked: JobConfig | None = None) -> dict[str, float | str]:
    """Run one job as one MLflow run; returns every metric it logged and its `run_id` (what a sweeper optimises).

    A job that finished before with the same configuration is not run again: its metrics are returned.

    `checked` is the job's config when its inputs were checked already (run.py does that before it
    imports this module); otherwise they are checked here, the store included.
    """
    _progress_bars_only_on_a_terminal()
    _quiet_library_logs()
    job = checked if checked is not None else checks.job(cfg)
    torch.set_num_threads(job.benchmark.num_threads or torch.get_num_threads())
    locks.wait_for_locks(job.tracking.lock_wait_s)
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
        previous = None if job.force else bookkeeping.reuse_finished(experiment, tags, parent, output_dir, name)
        if previous is not None:
            return {**previous.data.metrics, "run_id": previous.info.run_id}
        with runs.job_run(experiment, name, parent, tags) as run_id:
            started = time.time()
            try:
                resolved = OmegaConf.to_container(job_section(cfg), resolve=True)
                runs.log_params(runs.flatten(resolved))
                output_dir.mkdir(parents=True, exist_ok=True)
                (output_dir / "config.yaml").write_text(OmegaConf.to_yaml(resolved))
                runs.log_artifacts([output_dir / "config.yaml"])
                outcome = execute(job, output_dir)
                runs.mark_complete()
            except Exception as err:
                if not disk.is_full(err):
                    raise
                raise out_of_space(job, output_dir, started, err) from None
    log.info(summary(name, outcome, run_id, _sweep_baseline_f1(parent, uri), job.benchmark.batch_size))
    return {**outcome.metrics, "run_id": run_id}
