"""A job's identity in MLflow: its run name, tags and configuration hash, and reuse of a finished run.

Kept apart from the stages so `pipeline.execute` reads as the steps of a job.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from mlflow.entities import Run

from qa_compress import prune, quantize
from qa_compress.evaluate import timing
from qa_compress.job.config import JobConfig
from qa_compress.model import models
from qa_compress.tracking import cache, results, runs

log = logging.getLogger(__name__)

SKIPPED_FILE = "skipped.json"  # left in a job's output directory when it reused a finished run
UNCOMPRESSED_HASH = "uncompressed_hash"  # tag of uncompressed jobs: equal for every spelling of "no compression"


def run_name(job: JobConfig) -> str:
    """`amount | quantization | pruning method | model` ("0.3 | dynamic_int8 | l1_unstructured | minilm_l6"), as
    the MLflow UI and the summary line show it: what tells a sweep's jobs apart comes first, where the UI's
    narrow name column still shows it; the model is a tag too, and in the sweep's parent run's name."""
    amount = prune.details(job.pruning)
    parts = (amount or job.pruning.name, job.quantization.name, job.pruning.name if amount else "", job.model.name)
    return " | ".join(part for part in parts if part)


def is_uncompressed(job: JobConfig) -> bool:
    """Whether the job leaves the model as trained: the reference its sweep compares against."""
    return prune.get(job.pruning.name).is_identity(job.pruning) and quantize.get(job.quantization.name).identity


NOT_IDENTITY = {"paths", "tracking", "report", "force", "cache_lock_timeout_s"}  # where and how, not what


def _inputs(job: JobConfig, files: dict[str, str | None]) -> dict[str, str]:
    """The content of what a job reads: the model's files and the given data files that exist."""
    inputs = {"model": models.fingerprint(job.model.name_or_path)}
    for key, path in files.items():
        if path is not None and Path(path).is_file():
            inputs[key] = cache.input_digest(Path(path))
    return inputs


def _data_files(job: JobConfig) -> dict[str, str | None]:
    files = {key: getattr(job.dataset, key) for key in ("train_file", "validation_file")}
    files["threshold_file"] = job.predict.threshold_file
    return files


def job_hash(job: JobConfig) -> str:
    """Identity of a job's result: its settings and the content of its inputs, not where it writes.

    Two jobs with the same hash produce the same metrics (up to timing noise), so a rerun may reuse one; a
    method's `revision` (above 1) joins it, so a run made before the method's results changed is not reused.
    """
    settings = job.model_dump(exclude=NOT_IDENTITY)
    identity = {"settings": settings, "inputs": _inputs(job, {**_data_files(job), **job.quantization.data_files()})}
    methods = {"pruning": prune.get(job.pruning.name), "quantization": quantize.get(job.quantization.name)}
    revised = {stage: method.revision for stage, method in methods.items() if method.revision > 1}
    if revised:  # left out at revision 1, so the hashes of runs made before revisions existed still match
        identity["revisions"] = revised
    return cache.key(identity)


def uncompressed_hash(job: JobConfig) -> str:
    """Identity of an uncompressed job's result whichever way it says so (`pruning=none`, `l1_unstructured` at
    amount 0, ...): its settings and inputs without the compression choices, which change nothing."""
    settings = job.model_dump(exclude=NOT_IDENTITY | {"pruning", "quantization"})
    return cache.key({"uncompressed": settings, "inputs": _inputs(job, _data_files(job))})


SLURM_TAGS = {  # tag: the variable SLURM sets in a job; what `sacct -j` and `scancel` take
    "slurm_job_id": "SLURM_JOB_ID",
    "slurm_array_job_id": "SLURM_ARRAY_JOB_ID",
    "slurm_array_task_id": "SLURM_ARRAY_TASK_ID",
    "slurm_cluster": "SLURM_CLUSTER_NAME",
    "slurm_node": "SLURMD_NODENAME",
}


def tags(job: JobConfig, num_threads: int, versions: dict[str, str], overrides: list[str]) -> dict[str, str]:
    """What a run is tagged with: its choices, its provenance, the machine (and SLURM job) it ran on, its
    configuration hash, and the command-line overrides that reproduce it (the report's `python run.py ...` line)."""
    result = {
        "git_commit": runs.git_commit(job.paths.root_dir),
        "model": job.model.name,
        "dataset": job.dataset.name,
        "training": job.training.name,
        "pruning": job.pruning.name,
        "pruning_label": prune.describe(job.pruning),
        "quantization": job.quantization.name,
        "quantization_label": quantize.get(job.quantization.name).label(job.quantization),
        "uncompressed": str(is_uncompressed(job)).lower(),
        "num_threads": str(num_threads),
        "cpu": timing.cpu_description(),
        "cpu_count": str(os.cpu_count()),
        "overrides": json.dumps(overrides),
        "versions": json.dumps(versions),
        "config_hash": job_hash(job),
    }
    if is_uncompressed(job):
        result[UNCOMPRESSED_HASH] = uncompressed_hash(job)
    result.update({tag: os.environ[variable] for tag, variable in SLURM_TAGS.items() if variable in os.environ})
    if job.model.trust_remote_code:
        result["trust_remote_code"] = "true"
    return result


def reuse_finished(
    experiment: str, tags: dict[str, str], parent: str | None, output_dir: Path, name: str
) -> Run | None:
    """The FINISHED run with this configuration, if any (for an uncompressed job, any equivalent uncompressed
    run), recorded as one of the sweep's jobs (the job is then skipped)."""
    previous = runs.finished_run(experiment, "config_hash", tags["config_hash"])
    same = "finished already as run"
    if previous is None and UNCOMPRESSED_HASH in tags:
        previous = runs.finished_run(experiment, UNCOMPRESSED_HASH, tags[UNCOMPRESSED_HASH])
        same = "the same uncompressed model finished already as run"
    if previous is None:
        return None
    registered = previous.data.tags.get(results.REGISTERED_TAG)
    kept = f", registered as models:/{registered}" if registered else ""
    log.info("Skipping %s: %s %s%s (force=true reruns it)", name, same, previous.info.run_id, kept)
    runs.mark_reused(previous.info.run_id, parent)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / SKIPPED_FILE).write_text(json.dumps({"run_id": previous.info.run_id, "name": name}))
    return previous
