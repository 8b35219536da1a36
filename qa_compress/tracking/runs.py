"""Everything that talks to MLflow: the store, sweep parent runs, job runs and their end states.

Store: `MLFLOW_TRACKING_URI` when set, else a SQLite database under `paths.mlruns_dir`
with artifacts beside it, whatever Hydra's working directory is. A multirun gets one
parent run, created before its first job; each job is a child run that ends FINISHED,
FAILED (an exception) or KILLED (Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import mlflow
from mlflow.data.huggingface_dataset_source import HuggingFaceDatasetSource
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from transformers import TrainerCallback

from qa_compress.tracking import store
from qa_compress.tracking.interrupts import held, scope, take_interrupt
from qa_compress.tracking.locks import write

log = logging.getLogger(__name__)

PARENT_RUN_FILE = "mlflow_parent_run_id"
MAX_PARAM_LENGTH = 6000
MAX_RUN_NAME_LENGTH = 250  # MLflow's runs.name column; PostgreSQL and MySQL refuse longer, SQLite does not check


# Opens the experiment in the MLflow UI's model-training view (runs, metrics, charts), not its GenAI
# view (traces, prompts), which MLflow 3 shows an experiment without this tag.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def experiment_id(uri: str, name: str) -> str:
    """Select (creating if needed) the experiment; a SQLite store keeps artifacts beside its database file."""
    mlflow.set_tracking_uri(uri)
    artifacts = None
    database = store.sqlite_path(uri)
    if database is not None:
        database.parent.mkdir(parents=True, exist_ok=True)
        artifacts = (database.resolve().parent / "artifacts").as_uri()
    with held(), store.creation_lock(uri):
        experiment = mlflow.get_experiment_by_name(name)
        if experiment is None:
            try:
                experiment = mlflow.get_experiment(
                    mlflow.create_experiment(name, artifact_location=artifacts, tags=EXPERIMENT_KIND)
                )
            except mlflow.exceptions.MlflowException:  # created meanwhile by a parallel job
                experiment = mlflow.get_experiment_by_name(name)
        if any(experiment.tags.get(key) != value for key, value in EXPERIMENT_KIND.items()):
            for key, value in EXPERIMENT_KIND.items():
                MlflowClient().set_experiment_tag(experiment.experiment_id, key, value)
        return experiment.experiment_id


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> {"dotted.key": "value"} strings, as MLflow params."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)[:MAX_PARAM_LENGTH]
    return flat


def git_commit(directory: str) -> str:
    """The checked-out commit of `directory` (with "-dirty" for uncommitted changes), or "unknown"."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=directory,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


COMPLETE_TAG = "complete"  # the last write of a job that logged everything it promises: reuse trusts only these


@contextlib.contextmanager
def job_run(experiment: str, name: str, parent_run_id: str | None, tags: dict[str, str]) -> Iterator[str]:
    """An MLflow run for one job; yields its id and ends it FINISHED, FAILED or KILLED.

    SIGTERM (what a cluster sends at a time limit) is treated like Ctrl-C while the run is open.
    """
    started: list[Run] = []  # filled inside the write, so a signal held during the start finds the run open

    def start() -> None:
        started.append(
            mlflow.start_run(
                experiment_id=experiment,
                run_name=run_name(name),
                parent_run_id=parent_run_id,
                tags={**tags, **owner_tags()},
            )
        )

    with scope():
        try:
            write(start)  # retried while the store is locked; a signal held meanwhile is raised here
            yield started[0].info.run_id
        except KeyboardInterrupt as err:
            take_interrupt()  # further signals must not break the run's ending
            if started:
                _end_failed_run("KILLED", f"interrupted ({err})" if str(err) else "interrupted")
            raise
        except BaseException as err:
            take_interrupt()
            if started:
                _end_failed_run("FAILED", f"{type(err).__name__}: {err}"[:5000])
            raise
        else:
            _end_run("FINISHED")


def _end_run(status: str, error: str | None = None) -> None:
    """End the active run: its status first (retried while the store is locked), then why, best effort.

    The run leaves MLflow's stack of active runs whatever happens, so nothing (not even MLflow's exit handler)
    can end a failed run FINISHED later. A status that cannot be written leaves the run RUNNING in the store,
    never reused, until a later job marks it KILLED (`reap_dead_runs`).
    """
    run_id = active_run_id()
    try:
        with held():
            mlflow.end_run(status)  # leaves the stack of active runs first, then writes the status
    except Exception:  # the write failed (the run is off the stack already): again, while the store is locked
        write(MlflowClient().set_terminated, run_id, status)
    if error is not None:
        try:
            write(MlflowClient().set_tag, run_id, "error", error)
        except Exception as err:  # the status is what a reader trusts; the reason is a courtesy
            log.warning("Run %s ended %s; its error tag could not be written (%s)", run_id, status, err)


def _end_failed_run(status: str, error: str) -> None:
    """End a run that did not finish; when the store refuses even that, say so and let the first error stand."""
    try:
        _end_run(status, error)
    except Exception as err:
        log.error("Could not mark the run %s (%s); a later job marks it KILLED", status, str(err).splitlines()[0])


def mark_complete() -> None:
    """The job logged everything it promises: its last write before the run ends FINISHED."""
    set_tags({COMPLETE_TAG: "true"})


def finished_run(experiment: str, tag: str, value: str) -> Run | None:
    """A complete FINISHED run of the experiment tagged `tag=value` (a configuration hash), with its metrics."""
    wanted = f"tags.{tag} = '{value}' and attributes.status = 'FINISHED' and tags.{COMPLETE_TAG} = 'true'"
    runs = write(MlflowClient().search_runs, [experiment], filter_string=wanted, max_results=10)
    return next((run for run in runs if "f1" in run.data.metrics), None)


REUSE_TAG_PREFIX = "reused_by_sweep."


def reuse_tag(parent_run_id: str) -> str:
    return f"{REUSE_TAG_PREFIX}{parent_run_id}"


def mark_reused(run_id: str, parent_run_id: str | None) -> None:
    """Record that a sweep counts an earlier run as one of its jobs (runs have one parent only)."""
    if parent_run_id is not None:
        write(MlflowClient().set_tag, run_id, reuse_tag(parent_run_id), "true")


def log_params(params: Mapping[str, str]) -> None:
    write(mlflow.log_params, dict(params))


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    write(mlflow.log_metrics, {k: float(v) for k, v in metrics.items()}, step=step)


def log_table(columns: Mapping[str, list], artifact_file: str) -> None:
    """A table the MLflow UI shows in its artifact view and can compare across runs."""
    if columns:
        write(mlflow.log_table, data=dict(columns), artifact_file=artifact_file)


def active_run_id() -> str:
    """The id of the job's run, to name it in what the job leaves for others (a cache entry)."""
    return mlflow.active_run().info.run_id


def set_tags(tags: Mapping[str, str]) -> None:
    write(mlflow.set_tags, dict(tags))


def log_artifacts(paths: list[Path]) -> None:
    for path in paths:
        write(mlflow.log_artifact, str(path))


def log_dataset(name: str, source: str, split: str, digest: str, context: str) -> None:
    """Record a data set as an input of the active run, with a digest of its content.

    `source` is a local file (read with the `json` builder) or `hub:<name>/<split>`. Only metadata
    is sent: MLflow does not read the data again.
    """
    if source.startswith("hub:"):
        origin = HuggingFaceDatasetSource(path=source.removeprefix("hub:").rsplit("/", 1)[0], split=split)
    else:
        origin = HuggingFaceDatasetSource(path="json", data_files=source)
    dataset = MetaDataset(origin, name=name, digest=digest[:16])
    try:
        write(mlflow.log_input, dataset, context=context)
    except mlflow.exceptions.MlflowException:
        # Parallel jobs may register the same data set at the same moment; the loser retries and finds it.
        time.sleep(1.0)
        write(mlflow.log_input, dataset, context=context)


def local_artifact_dir() -> Path | None:
    """The active run's artifact directory when the artifact store is a local directory, else None."""
    uri = mlflow.get_artifact_uri()
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme not in ("", "file"):
        return None
    return Path(urllib.request.url2pathname(parsed.path))


def log_artifact_dir(directory: Path, artifact_path: str) -> None:
    write(mlflow.log_artifacts, str(directory), artifact_path)


class TrainingCurves(TrainerCallback):
    """Sends the Trainer's periodic logs (loss, learning rate, ...) to the active run as `train/...` curves."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        numbers = {f"train/{k}": v for k, v in (logs or {}).items() if isinstance(v, (int, float))}
        if numbers:
            log_metrics(numbers, step=state.global_step)


# --- Sweeps -----------------------------------------------------------------------------------


def owner_tags() -> dict[str, str]:
    """Which process on which machine holds a run open, so that a later job can tell a dead owner."""
    return {"host": socket.gethostname(), "pid": str(os.getpid())}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def reap_dead_runs(uri: str, experiment: str) -> list[str]:
    """Mark KILLED the RUNNING runs that a process on this machine opened and that process is gone.

    What `kill -9` or a power loss leaves behind; runs owned by other machines are left alone.
    Returns the ids of the runs marked.
    """
    client = MlflowClient(uri)
    host = socket.gethostname()
    with held():
        running = f"attributes.status = 'RUNNING' and tags.host = '{host}'"
        stale = client.search_runs([experiment], filter_string=running, max_results=1000)
        marked = []
        for run in stale:
            pid = run.data.tags.get("pid", "")
            if pid.isdigit() and not _alive(int(pid)):
                client.set_terminated(run.info.run_id, "KILLED")
                client.set_tag(run.info.run_id, "error", f"its process (pid {pid} on {host}) died without ending it")
                marked.append(run.info.run_id)
    if marked:
        log.warning("Marked %d run(s) KILLED whose process died: %s", len(marked), ", ".join(marked))
    return marked


def run_name(name: str) -> str:
    """A run name every MLflow store keeps: cut to its column's length, the cut marked."""
    return name if len(name) <= MAX_RUN_NAME_LENGTH else name[: MAX_RUN_NAME_LENGTH - 1] + "…"


def start_sweep(uri: str, experiment: str, sweep_dir: Path, name: str, tags: dict[str, str]) -> str:
    """Create the parent run of a multirun and leave its id in the sweep directory for the jobs."""
    client = MlflowClient(uri)
    tags = {**tags, **owner_tags(), "sweep_dir": str(sweep_dir)}
    run = client.create_run(experiment, run_name=run_name(name), tags=tags)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / PARENT_RUN_FILE).write_text(run.info.run_id)
    return run.info.run_id


def adopt_sweep(sweep_dir: Path, parent_run_id: str) -> None:
    """Let this sweep's jobs report under an existing parent run (a rerun whose every job finished there)."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / PARENT_RUN_FILE).write_text(parent_run_id)


def sweep_parent(sweep_dir: Path) -> str | None:
    """The parent run id that the sweep's launcher left for its jobs, if any."""
    path = sweep_dir / PARENT_RUN_FILE
    return path.read_text().strip() if path.is_file() else None


def sweep_status(job_statuses: list[str], planned: int | None = None, interrupted: bool = False) -> str:
    """The parent run's end state from its jobs': KILLED if any was, else FAILED if any did not finish.

    A sweep that stopped before all `planned` jobs ran is KILLED if a signal stopped it, else FAILED.
    """
    if "KILLED" in job_statuses:
        return "KILLED"
    if planned is not None and len(job_statuses) < planned:
        return "KILLED" if interrupted else "FAILED"
    if not job_statuses or any(status != "FINISHED" for status in job_statuses):
        return "FAILED"
    return "FINISHED"


def end_sweep(
    uri: str, parent_run_id: str, job_statuses: list[str], planned: int | None = None, interrupted: bool = False
) -> str:
    """End the parent run with a status that reflects its jobs; returns that status."""
    client = MlflowClient(uri)
    if client.get_run(parent_run_id).info.status != "RUNNING":
        return client.get_run(parent_run_id).info.status
    status = sweep_status(job_statuses, planned, interrupted)
    write(client.set_terminated, parent_run_id, status)
    log.info("Sweep run %s ended %s (%d jobs)", parent_run_id, status, len(job_statuses))
    return status
