"""The recommendation of a sweep: which jobs stay within the allowed F1 loss, and the fastest and smallest of them.

Pure decisions on `results.Job`s; `tables` and `plots` show them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mlflow.tracking import MlflowClient

from qa_compress.evaluate import bootstrap
from qa_compress.job.config import default
from qa_compress.sweep import front
from qa_compress.tracking.results import Job, baseline_of, question_f1

DEFAULT_MAX_F1_DROP = float(default("report.max_f1_drop"))
NOISY_TIMING = 0.15  # a speed-up whose interquartile range is wider than this fraction of it is flagged


def change_intervals(client: MlflowClient, jobs: Sequence[Job]) -> dict[str, tuple[float, float]]:
    """Each finished job's ΔF1 interval against the sweep's uncompressed job, by run id (see `bootstrap`):
    only for jobs scored on the very questions the uncompressed job was."""
    baseline = baseline_of(jobs)
    reference = question_f1(client, baseline.run_id) if baseline is not None else None
    if not reference:
        return {}
    intervals = {}
    for job in jobs:
        if job.done and job.run_id != baseline.run_id:
            scores = question_f1(client, job.run_id)
            interval = bootstrap.change_interval(scores, reference) if scores else None
            if interval is not None:
                intervals[job.run_id] = interval
    return intervals


def speed_cost(jobs: Sequence[Job]) -> tuple[str, Callable[[Job], float]]:
    """What "faster" means in this sweep: the paired `speedup` when every finished job has one (negated, so lower
    is better like a latency), else the median latency each job measured on its own."""
    done = [job for job in jobs if job.done]
    if done and all("speedup" in job.metrics for job in done):
        return "speedup", lambda job: -job.metrics["speedup"]
    return "latency_ms", lambda job: job.metrics["latency_ms"]


def pareto_marks(jobs: Sequence[Job]) -> dict[str, list[str]]:
    """For each finished job, the costs (speed, size) on whose Pareto front against F1 it lies."""
    marks: dict[str, list[str]] = {job.run_id: [] for job in jobs if job.done}
    speed_metric, speed = speed_cost(jobs)
    costs = {"speed": (speed_metric, speed), "size": ("size_mb", lambda job: job.metrics["size_mb"])}
    for name, (metric, cost) in costs.items():
        candidates = [job for job in jobs if job.done and metric in job.metrics]
        for i in front.front([(cost(job), job.metrics["f1"]) for job in candidates], (front.MINIMIZE, front.MAXIMIZE)):
            marks[candidates[i].run_id].append(name)
    return marks


def noisy(job: Job) -> bool:
    """Whether the job's paired timing spread too widely to trust its speed-up."""
    m = job.metrics
    return "speedup_iqr" in m and m["speedup_iqr"] > NOISY_TIMING * m["speedup"]


def speedup(job: Job, reference: Job | None) -> float:
    """How many times faster than the reference: the job's own paired `speedup` when it logged one."""
    if "speedup" in job.metrics:
        return job.metrics["speedup"]
    if reference is None or "latency_ms" not in job.metrics or "latency_ms" not in reference.metrics:
        return math.nan
    return reference.metrics["latency_ms"] / job.metrics["latency_ms"]


def shrink(job: Job, reference: Job | None) -> float:
    """How many times smaller on disk than the reference."""
    if reference is None or "size_mb" not in job.metrics or "size_mb" not in reference.metrics:
        return math.nan
    return reference.metrics["size_mb"] / job.metrics["size_mb"]


def f1_drop(job: Job, reference: Job | None) -> float:
    """F1 points lost against the reference (negative: gained)."""
    if reference is None or not job.done:
        return math.nan
    return reference.metrics["f1"] - job.metrics["f1"]


@dataclass(frozen=True)
class Recommendation:
    """The best jobs of a sweep within `max_f1_drop` F1 of its uncompressed job, and those beyond it."""

    reference: Job | None
    max_f1_drop: float
    fastest: Job | None
    smallest: Job | None
    losers: list[Job]  # finished jobs that lose more than max_f1_drop


def recommend(jobs: Sequence[Job], max_f1_drop: float = DEFAULT_MAX_F1_DROP) -> Recommendation:
    """Fastest and smallest finished jobs within `max_f1_drop` of the reference (ties: higher F1 first)."""
    reference = baseline_of(jobs)
    if reference is None:
        return Recommendation(None, max_f1_drop, None, None, [])
    within = [job for job in jobs if job.done and f1_drop(job, reference) <= max_f1_drop + 1e-9]

    def best(metric: str, cost: Callable[[Job], float]) -> Job | None:
        """The cheapest job that is cheaper than the reference (a job as large as it is no size win, however
        accurate), else the reference itself."""
        scored = [job for job in within if metric in job.metrics]
        if metric in reference.metrics:
            scored = [job for job in scored if job is reference or cost(job) < cost(reference)]
        return min(scored, key=lambda job: (cost(job), -job.metrics["f1"]), default=None)

    speed_metric, speed = speed_cost(jobs)
    fastest = best(speed_metric, speed)
    smallest = best("size_mb", lambda job: job.metrics["size_mb"])
    losers = [job for job in jobs if job.done and f1_drop(job, reference) > max_f1_drop + 1e-9]
    return Recommendation(reference, max_f1_drop, fastest, smallest, losers)


def picks(rec: Recommendation) -> dict[str, Job]:
    """The jobs a sweep's registered models are aliased by: `recommended` is the fastest within the allowed loss
    (the smallest when the sweep timed nothing), `fastest` and `smallest` each pick."""
    chosen = {"recommended": rec.fastest or rec.smallest, "fastest": rec.fastest, "smallest": rec.smallest}
    return {alias: job for alias, job in chosen.items() if job is not None}
