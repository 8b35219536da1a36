"""A sweep's results read back from the MLflow store: its jobs, their metrics, tags and per-question F1.

What the sweep report, the export command, the benchmarks and a job's own summary line read; it
only reads, and knows nothing of how the results are judged.
"""

from __future__ import annotations

import json
import shlex
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from qa_compress.tracking import runs

QUESTION_F1 = "question_f1.json"  # the artifact of each job: question id -> F1 (percent)


@dataclass(frozen=True)
class Job:
    """One child run of a sweep, reduced to what the report shows."""

    run_id: str
    name: str
    model: str
    dataset: str
    pruning: str
    pruning_label: str  # the method's own label of the choice ("l1_unstructured 0.3 +200 steps")
    quantization: str
    status: str
    uncompressed: bool
    error: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    overrides: tuple[str, ...] | None = None  # the job's command-line overrides; None when not recorded
    cpu: str = ""
    quantization_label: str = ""  # the method's own label of the choice ("QAT"); "" when it has one way
    registered: str = ""  # the Model Registry version its model was registered as ("NAME/VERSION"), if any

    @property
    def done(self) -> bool:
        return self.status == "FINISHED" and "f1" in self.metrics


REGISTERED_TAG = "registered_model"  # on a job's run: the version its model was registered as, "NAME/VERSION"
MAX_F1_DROP_TAG = "max_f1_drop"  # on a sweep's parent run: the F1 loss its recommendation allows
SPEEDUP_OF_THE_REFERENCE = {"speedup": 1.0, "speedup_q1": 1.0, "speedup_q3": 1.0}


def reference_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    """An uncompressed job's metrics with its speed-up: a timed one is not timed against itself, so 1 by definition."""
    if "latency_ms" in metrics and "speedup" not in metrics:
        return {**metrics, **SPEEDUP_OF_THE_REFERENCE}
    return dict(metrics)


def job_of(run: Run) -> Job:
    """A job's run, as the report reads it."""
    params, tags = run.data.params, run.data.tags
    try:
        overrides = tuple(json.loads(tags["overrides"])) if "overrides" in tags else None
    except (ValueError, TypeError):
        overrides = None
    uncompressed = tags.get("uncompressed") == "true"
    metrics = reference_metrics(run.data.metrics) if uncompressed else dict(run.data.metrics)
    return Job(
        run_id=run.info.run_id,
        name=run.info.run_name,
        model=tags.get("model", params.get("model.name", "?")),
        dataset=tags.get("dataset", params.get("dataset.name", "?")),
        pruning=tags.get("pruning", "?"),
        pruning_label=tags.get("pruning_label", "?"),
        quantization=tags.get("quantization", "?"),
        status=run.info.status,
        uncompressed=uncompressed,
        error=tags.get("error", ""),
        metrics=metrics,
        params=dict(params),
        overrides=overrides,
        cpu=f"{tags['cpu']}, {tags.get('cpu_count', '?')} cores" if "cpu" in tags else "",
        quantization_label=tags.get("quantization_label", ""),
        registered=tags.get(REGISTERED_TAG, ""),
    )


def sweep_jobs(client: MlflowClient, parent_run_id: str) -> list[Job]:
    """The jobs of a sweep: its child runs and the finished runs it reused, in start order."""
    experiment = client.get_run(parent_run_id).info.experiment_id
    found = []
    for condition in (
        f"tags.mlflow.parentRunId = '{parent_run_id}'",
        f"tags.`{runs.reuse_tag(parent_run_id)}` = 'true'",
    ):
        found += client.search_runs([experiment], filter_string=condition, max_results=10_000)
    unique = {run.info.run_id: run for run in found}.values()  # a child its own sweep reused is found twice
    return [job_of(run) for run in sorted(unique, key=lambda run: run.info.start_time)]


def latest_sweep(client: MlflowClient, experiment_name: str) -> str | None:
    """Id of the most recently started sweep parent run of the experiment."""
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return None
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string="tags.sweep_dir != ''",
        order_by=["attribute.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def baseline_of(jobs: Sequence[Job]) -> Job | None:
    """The sweep's uncompressed job (finished), the reference for every change."""
    return next((j for j in jobs if j.uncompressed and j.done), None)


def question_f1(client: MlflowClient, run_id: str) -> dict[str, float] | None:
    """A job's F1 on each evaluation question (its `question_f1.json`); None for a run that did not log one."""
    if not any(a.path == QUESTION_F1 for a in client.list_artifacts(run_id)):
        return None
    with tempfile.TemporaryDirectory() as directory:
        return json.loads(Path(client.download_artifacts(run_id, QUESTION_F1, directory)).read_text())


def reproduce_command(job: Job) -> str | None:
    """The `run.py` command that runs this job again alone, keeps its model and registers it for serving (its last
    line names the registered model); None without recorded overrides."""
    if job.overrides is None:
        return None
    dropped = {"save_model", "force", "export"}
    kept = [o for o in job.overrides if o.split("=", 1)[0].lstrip("+~") not in dropped]
    return shlex.join(["python", "run.py", *kept, "export=true"])
