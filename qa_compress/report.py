"""The trade-off picture of a sweep: a table and plots, built from the MLflow store alone.

    python -m qa_compress.report                        # the latest sweep
    python -m qa_compress.report --parent-run-id ID     # a given sweep
    python -m qa_compress.report --experiment NAME --out-dir DIR

What was swept; the recommendation (the fastest and the smallest job within `--max-f1-drop` F1 of
the uncompressed job, each with its run id and the `run.py` command that reproduces it and keeps
its model; the jobs that lose more); each job's accuracy, size and speed and their change against
the uncompressed job, with its Pareto fronts marked; F1 against sparsity, latency and size.
Written to a directory and logged to the sweep's parent run; each job's run is tagged `pareto`,
`recommended` and `f1_drop_beyond_max`.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import shlex
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from qa_compress import bootstrap, search_report, store, tracking

log = logging.getLogger(__name__)

COLUMNS = ["f1", "HasAns_f1", "NoAns_f1", "exact", "size_mb", "size_gzip_mb", "latency_ms", "samples_per_s", "sparsity"]
# What each step bought, shown when some job logged it: pruned at once, then recovered, then the
# threshold calibrated (`f1` is the last); best_f1 tunes the threshold on the evaluation answers.
STEPS = {
    "f1_before_recovery": "F1 before recovery",
    "f1_uncalibrated": "F1 before threshold calibration",
    "null_threshold": "null threshold",
    "best_f1": "best_f1 (oracle)",
}
# Decimals of every figure the report shows, in report.md, report.csv and the terminal alike.
DECIMALS = {"latency_ms": 1, "samples_per_s": 1, "sparsity": 3, "null_threshold": 3, "x_faster": 2, "x_smaller": 2}
DEFAULT_DECIMALS = 2
PLOTS = ("f1_vs_sparsity.png", "f1_vs_speed.png", "f1_vs_size.png")
NOISY_TIMING = 0.15  # a speed-up whose interquartile range is wider than this fraction of it is flagged
DEFAULT_MAX_F1_DROP = 1.0
GENERATED_DATA_NOTE = (
    "> **Generated data.** These jobs ran on generated biographies (`dataset=synthetic_bios`): the figures show how "
    "the framework behaves, not what compression costs a real QA model. Sweep SQuAD 2.0 (`dataset=squad_v2`, or "
    "`dataset=squad_json` with its files) for results."
)


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

    @property
    def done(self) -> bool:
        return self.status == "FINISHED" and "f1" in self.metrics


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats: lower or equal cost and higher or equal F1, one strictly.

    Points are (cost, f1). Identical points do not dominate each other, so ties all stay on the front.
    """
    front = []
    for i, (cost, f1) in enumerate(points):
        dominated = any(
            other_cost <= cost and other_f1 >= f1 and (other_cost < cost or other_f1 > f1)
            for j, (other_cost, other_f1) in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return front


def job_of(run: Run) -> Job:
    """A job's run, as the report reads it."""
    params, tags = run.data.params, run.data.tags
    try:
        overrides = tuple(json.loads(tags["overrides"])) if "overrides" in tags else None
    except (ValueError, TypeError):
        overrides = None
    return Job(
        run_id=run.info.run_id,
        name=run.info.run_name,
        model=tags.get("model", params.get("model.name", "?")),
        dataset=tags.get("dataset", params.get("dataset.name", "?")),
        pruning=tags.get("pruning", "?"),
        pruning_label=tags.get("pruning_label", "?"),
        quantization=tags.get("quantization", "?"),
        status=run.info.status,
        uncompressed=tags.get("uncompressed") == "true",
        error=tags.get("error", ""),
        metrics=dict(run.data.metrics),
        params=dict(params),
        overrides=overrides,
        cpu=f"{tags['cpu']}, {tags.get('cpu_count', '?')} cores" if "cpu" in tags else "",
    )


def sweep_jobs(client: MlflowClient, parent_run_id: str) -> list[Job]:
    """The jobs of a sweep: its child runs and the finished runs it reused, in start order."""
    experiment = client.get_run(parent_run_id).info.experiment_id
    runs = []
    for condition in (
        f"tags.mlflow.parentRunId = '{parent_run_id}'",
        f"tags.`{tracking.reuse_tag(parent_run_id)}` = 'true'",
    ):
        runs += client.search_runs([experiment], filter_string=condition, max_results=10_000)
    unique = {run.info.run_id: run for run in runs}.values()  # a child its own sweep reused is found twice
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
    if not any(a.path == bootstrap.QUESTION_F1 for a in client.list_artifacts(run_id)):
        return None
    with tempfile.TemporaryDirectory() as directory:
        return json.loads(Path(client.download_artifacts(run_id, bootstrap.QUESTION_F1, directory)).read_text())


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


# The recommendation --------------------------------------------------------------------------------


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
        for i in pareto_front([(cost(job), job.metrics["f1"]) for job in candidates]):
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

    def best(metric: str) -> Job | None:
        scored = [job for job in within if metric in job.metrics]
        return min(scored, key=lambda job: (job.metrics[metric], -job.metrics["f1"]), default=None)

    speed_metric, speed = speed_cost(jobs)
    timed = [job for job in within if speed_metric in job.metrics]
    fastest = min(timed, key=lambda job: (speed(job), -job.metrics["f1"]), default=None)
    losers = [job for job in jobs if job.done and f1_drop(job, reference) > max_f1_drop + 1e-9]
    return Recommendation(reference, max_f1_drop, fastest, best("size_mb"), losers)


def reproduce_command(job: Job) -> str | None:
    """The `run.py` command that runs this job again alone and keeps its model; None without recorded overrides."""
    if job.overrides is None:
        return None
    kept = [o for o in job.overrides if o.split("=", 1)[0].lstrip("+~") not in {"save_model", "force"}]
    return shlex.join(["python", "run.py", *kept, "save_model=true"])


def _round(value: float, key: str) -> float:
    """The value at the report's precision for `key` (and never -0.0, which would print as a loss)."""
    if not isinstance(value, float) or math.isnan(value):
        return value
    return round(value, DECIMALS.get(key, DEFAULT_DECIMALS)) + 0.0


def _num(value: float, key: str, sign: bool = False) -> str:
    if not isinstance(value, float) or math.isnan(value):
        return ""
    return f"{_round(value, key):{'+' if sign else ''}.{DECIMALS.get(key, DEFAULT_DECIMALS)}f}"


def _label(job: Job, models: int) -> str:
    label = f"{job.pruning_label} | {job.quantization}"
    return f"{job.model} | {label}" if models > 1 else label


def f1_change(change: float, interval: tuple[float, float] | None = None) -> str:
    """A ΔF1 with its interval when known (None or NaN bounds: not known): "-0.66 [-2.39, +1.13]"."""
    text = _num(change, "f1", sign=True)
    if interval is None or math.isnan(interval[0]):
        return text
    return f"{text} [{_num(interval[0], 'f1', sign=True)}, {_num(interval[1], 'f1', sign=True)}]"


def _change(job: Job, reference: Job, intervals: Mapping[str, tuple[float, float]]) -> str:
    """ΔF1 of `job` against the reference, with its interval when known."""
    return f1_change(-f1_drop(job, reference), intervals.get(job.run_id))


def advice(
    rec: Recommendation, models: int = 1, intervals: Mapping[str, tuple[float, float]] | None = None
) -> list[str]:
    """The recommendation in three lines: fastest and smallest within the allowed loss, and the jobs beyond it
    (each ΔF1 with its interval from `change_intervals`, where known)."""
    intervals = intervals or {}
    if rec.reference is None:
        return ["No uncompressed job finished, so nothing can be recommended against it."]
    allowed = f"within {rec.max_f1_drop:g} F1 of uncompressed ({_num(rec.reference.metrics['f1'], 'f1')})"

    def line(kind: str, job: Job | None, figure: str) -> str:
        if job is None:
            return f"{kind} {allowed}: none"
        change = _change(job, rec.reference, intervals)
        where = f"run {job.run_id}"
        command = reproduce_command(job)
        if job is rec.reference or job.run_id == rec.reference.run_id:
            what = "the uncompressed model itself (no compressed job is both within the loss and better)"
        else:
            what = _label(job, models)
        return (f"{kind} {allowed}: {what}, F1 {_num(job.metrics['f1'], 'f1')} ({change}), {figure}, {where}"
                + (f": {command}" if command else ""))  # fmt: skip

    faster = rec.fastest and f"{_num(speedup(rec.fastest, rec.reference), 'x_faster')}x faster"
    lines = [
        line("Fastest", rec.fastest, faster),
        line("Smallest", rec.smallest, rec.smallest and (
            f"{_num(rec.smallest.metrics['size_mb'], 'size_mb')} MB "
            f"({_num(shrink(rec.smallest, rec.reference), 'x_smaller')}x smaller)")),
    ]  # fmt: skip
    if rec.losers:
        worst = sorted(rec.losers, key=lambda job: -f1_drop(job, rec.reference))
        listed = ", ".join(f"{_label(j, models)} ({_change(j, rec.reference, intervals)})" for j in worst)
        lines.append(f"Losing more than {rec.max_f1_drop:g} F1 (not recommended): {listed}")
    else:
        lines.append(f"No finished job loses more than {rec.max_f1_drop:g} F1.")
    return lines


# The table ---------------------------------------------------------------------------------------------


def rows(
    jobs: Sequence[Job],
    max_f1_drop: float = DEFAULT_MAX_F1_DROP,
    intervals: Mapping[str, tuple[float, float]] | None = None,
) -> list[dict[str, object]]:
    """One row per job: its run, choices, metrics and their change against the baseline (with the ΔF1
    `intervals` from `change_intervals`, where known), and its verdicts."""
    intervals = intervals or {}
    rec = recommend(jobs, max_f1_drop)
    baseline = rec.reference
    marks = pareto_marks(jobs)
    steps = [key for key in STEPS if key != "best_f1" and any(key in job.metrics for job in jobs)]
    if steps:
        steps.append("best_f1")
    chosen = {"fastest": rec.fastest, "smallest": rec.smallest}
    table = []
    for number, job in enumerate(jobs, 1):
        row: dict[str, object] = {
            "job": number,
            "run_id": job.run_id,
            "model": job.model,
            "pruning": job.pruning_label,
            "quantization": job.quantization,
            "status": job.status,
        }
        for column in COLUMNS:
            value = job.metrics.get(column, math.nan)
            reference = baseline.metrics.get(column, math.nan) if baseline else math.nan
            row[column] = _round(value, column)
            row[f"Δ{column}"] = _round(value - reference, column)
        low, high = intervals.get(job.run_id, (math.nan, math.nan))
        row["Δf1_low"], row["Δf1_high"] = _round(low, "f1"), _round(high, "f1")
        row["x_faster"] = _round(speedup(job, baseline), "x_faster")
        row["x_faster_iqr"] = _round(job.metrics.get("speedup_iqr", math.nan), "x_faster")
        row["noisy_timing"] = noisy(job)
        row["x_smaller"] = _round(shrink(job, baseline), "x_smaller")
        for key in steps:
            row[STEPS[key]] = _round(job.metrics.get(key, math.nan), key)
        row["pareto"] = ",".join(marks.get(job.run_id, []))
        row["recommended"] = ",".join(k for k, v in chosen.items() if v is not None and v.run_id == job.run_id)
        row[f"loses_more_than_{max_f1_drop:g}_f1"] = any(j.run_id == job.run_id for j in rec.losers)
        row["error"] = job.error
        table.append(row)
    return table


def write_csv(table: Sequence[dict[str, object]], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(table[0]) if table else ["job", "run_id"])
        writer.writeheader()
        writer.writerows(table)


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(table: Sequence[dict[str, object]]) -> str:
    """A table (rows of the same keys) as GitHub-flavoured Markdown."""
    if not table:
        return "(no rows)\n"
    header = list(table[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(_fmt(row[c])) for c in header) + " |" for row in table]
    return "\n".join(lines) + "\n"


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4g}" if abs(value) < 1 else f"{value:.2f}"
    return str(value)


def document(
    jobs: Sequence[Job],
    sweep: dict[str, str],
    max_f1_drop: float = DEFAULT_MAX_F1_DROP,
    table: Sequence[dict[str, object]] | None = None,
    extra: Sequence[str] = (),
) -> str:
    """The report as GitHub-flavoured Markdown: what was swept, the recommendation, `extra` (a search's
    section), then every job."""
    rec = recommend(jobs, max_f1_drop)
    table = rows(jobs, max_f1_drop) if table is None else table
    models = sorted({j.model for j in jobs}) or ["?"]
    datasets = sorted({j.dataset for j in jobs}) or ["?"]
    cpus = sorted({j.cpu for j in jobs if j.cpu})
    lines = [f"# Sweep report: {', '.join(models)} on {', '.join(datasets)}", ""]
    finished = sum(job.done for job in jobs)
    lines.append(
        f"Swept `{sweep.get('sweep_overrides', '?')}`: {len(jobs)} job(s), {finished} finished; "
        f"MLflow parent run `{sweep.get('run_id', '?')}`, started {sweep.get('started', '?')}."
    )
    if cpus:
        lines.append(f"Timed on {'; '.join(cpus)}.")
    if any(job.params.get("dataset.source") == "synthetic" for job in jobs):
        lines += ["", GENERATED_DATA_NOTE]
    if sweep.get("reference_note"):
        lines += ["", f"> {sweep['reference_note']}"]
    lines += ["", f"## Recommendation (report.max_f1_drop={max_f1_drop:g})", ""]
    known = {row["run_id"]: (row["Δf1_low"], row["Δf1_high"]) for row in table}
    lines += [f"- {line}" for line in advice(rec, len(models), known)]
    if extra:
        lines += ["", *extra]
    lines += ["", "## Jobs", ""]
    header = ["#", "job", "F1", "ΔF1", "HasAns F1", "NoAns F1", "size MB", "× smaller", "latency ms", "× faster",
              "sparsity", "Pareto", "run", "note"]  # fmt: skip
    step_names = [name for name in STEPS.values() if table and name in table[0]]
    header[12:12] = step_names
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    loses = f"loses_more_than_{max_f1_drop:g}_f1"
    step_keys = {name: key for key, name in STEPS.items()}
    for job, row in zip(jobs, table, strict=True):
        note = [] if job.status == "FINISHED" else [f"{job.status}" + (f": {job.error}" if job.error else "")]
        if row["recommended"]:
            note.append(f"recommended ({row['recommended'].replace(',', ', ')})")
        if rec.reference is not None and job.run_id == rec.reference.run_id:
            note.append("reference")
        if noisy(job):
            m = job.metrics
            note.append(f"noisy timing (× faster {m['speedup_q1']:.2f}–{m['speedup_q3']:.2f})")
        delta = f1_change(row["Δf1"], (row["Δf1_low"], row["Δf1_high"])) + (" ⚠" if row[loses] else "")
        cells = [
            str(row["job"]), _label(job, len(models)), _num(row["f1"], "f1"), delta,
            _num(row["HasAns_f1"], "f1"), _num(row["NoAns_f1"], "f1"), _num(row["size_mb"], "size_mb"),
            _num(row["x_smaller"], "x_smaller"), _num(row["latency_ms"], "latency_ms"),
            _num(row["x_faster"], "x_faster"), _num(row["sparsity"], "sparsity"),
            ", ".join(marks for marks in str(row["pareto"]).split(",") if marks),
            *[_num(row[name], step_keys[name]) for name in step_names],
            f"`{job.run_id[:8]}`", "; ".join(note),
        ]  # fmt: skip
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    interval = (
        f"; in brackets, its {bootstrap.LEVEL:.0%} interval from a paired bootstrap over the evaluation questions "
        f"({bootstrap.RESAMPLES:,} resamples): the spread another draw of such questions would show, so an interval "
        "that holds 0 is no evidence of a change"
        if any(not math.isnan(row["Δf1_low"]) for row in table)
        else ""
    )
    lines += [
        "",
        f"ΔF1 against the uncompressed job (⚠: loses more than {max_f1_drop:g} F1){interval}. × smaller: the "
        "uncompressed job's size over this job's. × faster: the median ratio of the uncompressed model's time to "
        "this model's over rounds in which the job timed both, interleaved, in its own process (so a busy machine "
        "slows both alike); noisy timing: that ratio's interquartile range is wider than "
        f"{NOISY_TIMING:.0%} of it. latency ms: this model alone, median per batch. Pareto: no other job is at "
        "least as accurate and at least as fast (speed) or as small (size), and better in one; search: on the "
        "front of the search's own objectives. `report.csv` has "
        "full run ids; the plots number points as the # column does.",
    ]
    return "\n".join(lines) + "\n"


def _place_labels(ax, points: Sequence[tuple[float, float, str]], fontsize: float) -> None:
    """Number each point, moving a label away from labels already placed so none overlap (a line joins a moved one)."""
    ax.figure.canvas.draw()  # fixes the axes limits, so data and pixels convert
    to_pixels = ax.transData.transform
    height = fontsize * ax.figure.dpi / 72 * 1.3
    placed: list[tuple[float, float, float, float]] = []
    for x, y, text in sorted(points, key=lambda p: (-p[1], p[0])):
        px, py = to_pixels((x, y))
        width = fontsize * ax.figure.dpi / 72 * 0.65 * len(text) + 4
        for step in range(60):
            dy = (step + 1) // 2 * height * (1 if step % 2 else -1)
            box = (px + 4, py + 3 + dy, px + 4 + width, py + 3 + dy + height)
            if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed):
                break
        placed.append(box)
        ax.annotate(
            text, (x, y), xytext=(box[0] - px, box[1] - py), textcoords="offset pixels", fontsize=fontsize,
            arrowprops={"arrowstyle": "-", "color": "0.5", "linewidth": 0.5} if dy else None,
        )  # fmt: skip


def plot(jobs: Sequence[Job], out_dir: Path) -> list[Path]:
    """The three trade-off plots, as PNG files in `out_dir`; points carry the job numbers of the report's table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    numbers = {job.run_id: number for number, job in enumerate(jobs, 1)}
    done = [j for j in jobs if j.done]
    baseline = baseline_of(done)
    models = sorted({j.model for j in done})
    model = ", ".join(models) or "?"
    dataset = ", ".join(sorted({j.dataset for j in done})) or "?"
    floor = next((j.metrics["always_no_answer_f1"] for j in done if "always_no_answer_f1" in j.metrics), None)
    plt.rcParams.update({"font.size": 10})

    def references(ax) -> None:
        if baseline is not None:
            ax.axhline(baseline.metrics["f1"], color="tab:green", linestyle="--", linewidth=1,
                       label=f"uncompressed ({baseline.metrics['f1']:.2f})")  # fmt: skip
        if floor is not None:
            ax.axhline(floor, color="tab:red", linestyle=":", linewidth=1, label=f"always no answer ({floor:.2f})")

    def key(fig, ax, points) -> None:
        """The job numbers' meaning beside the axes (up to 16 jobs; past that, the report's table)."""
        fig.subplots_adjust(right=0.73)
        if 0 < len(points) <= 16:
            ordered = sorted(points, key=lambda j: numbers[j.run_id])
            text = "\n".join(f"{numbers[j.run_id]}: {_label(j, len(models))}" for j in ordered)
            fig.text(0.745, 0.88, text, fontsize=7.5, va="top", family="monospace")

    paths = []
    fig, ax = plt.subplots(figsize=(10, 5))
    for quantization in sorted({j.quantization for j in done}):
        for pruning in sorted({j.pruning for j in done}):
            line = sorted(
                (j.metrics.get("sparsity", 0.0), j.metrics["f1"])
                for j in done
                if j.pruning == pruning and j.quantization == quantization
            )
            if line:
                xs, ys = zip(*line, strict=True)
                ax.plot(xs, ys, marker="o", label=f"{pruning} + {quantization}")
    references(ax)
    ax.set(xlabel="sparsity of prunable weights (fraction of zeros)", ylabel="F1 (%)",
           title=f"F1 against sparsity: {model} on {dataset}")  # fmt: skip
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    paths.append(out_dir / PLOTS[0])
    fig.tight_layout()
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    speed_metric, _ = speed_cost(done)
    speed_label = (
        "speed-up over the uncompressed model (x, paired rounds in each job; bars: interquartile range)"
        if speed_metric == "speedup"
        else "latency per batch (ms, median; each job timed on its own)"
    )
    for filename, metric, label in ((PLOTS[1], speed_metric, speed_label), (PLOTS[2], "size_mb", "size on disk (MB)")):
        points = [(j.metrics[metric], j.metrics["f1"], j) for j in done if metric in j.metrics]
        higher_is_better = metric == "speedup"
        fig, ax = plt.subplots(figsize=(10, 5))
        for quantization in sorted({p[2].quantization for p in points}):
            group = [p for p in points if p[2].quantization == quantization]
            ax.scatter([p[0] for p in group], [p[1] for p in group], label=f"quantization: {quantization}", zorder=3)
        if higher_is_better:
            spread = [(p[0] - p[2].metrics.get("speedup_q1", p[0]), p[2].metrics.get("speedup_q3", p[0]) - p[0])
                      for p in points]  # fmt: skip
            ax.errorbar([p[0] for p in points], [p[1] for p in points], xerr=list(zip(*spread, strict=True)) or None,
                        fmt="none", ecolor="0.6", elinewidth=1, zorder=1)  # fmt: skip
        sign = -1 if higher_is_better else 1
        front = sorted(points[i][:2] for i in pareto_front([(sign * p[0], p[1]) for p in points]))
        if front:
            ax.step([p[0] for p in front], [p[1] for p in front], where="pre" if higher_is_better else "post",
                    color="black", linewidth=1.2, label="Pareto front", zorder=2)  # fmt: skip
        references(ax)
        what = "speed-up" if higher_is_better else label.split(" (")[0]
        ax.set(xlabel=label, ylabel="F1 (%)", title=f"F1 against {what}: {model} on {dataset}")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        key(fig, ax, [p[2] for p in points])
        ax.legend(fontsize=8, loc="lower left", bbox_to_anchor=(1.01, 0.0))  # beside the axes: no point hidden
        _place_labels(ax, [(cost, f1, str(numbers[job.run_id])) for cost, f1, job in points], fontsize=8)
        paths.append(out_dir / filename)
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    return paths


@dataclass(frozen=True)
class Report:
    files: list[Path]
    text: str  # report.md
    advice: list[str]  # the recommendation in three lines


def _sweep_facts(client: MlflowClient, parent_run_id: str) -> dict[str, str]:
    run = client.get_run(parent_run_id)
    started = datetime.fromtimestamp(run.info.start_time / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return {**run.data.tags, "run_id": parent_run_id, "started": started}


def _tag_runs(client: MlflowClient, jobs: Sequence[Job], table: Sequence[dict[str, object]], max_f1_drop: float):
    """Pareto membership, recommendation and loss verdict as tags on each job's run (reset on every report)."""
    loses = f"loses_more_than_{max_f1_drop:g}_f1"
    for job, row in zip(jobs, table, strict=True):
        if not job.done:
            continue
        client.set_tag(job.run_id, "pareto", str(row["pareto"]) or "no")
        client.set_tag(job.run_id, "recommended", str(row["recommended"]) or "no")
        client.set_tag(job.run_id, "f1_drop_beyond_max", str(row[loses]).lower())


def build(
    client: MlflowClient,
    parent_run_id: str,
    out_dir: Path,
    max_f1_drop: float = DEFAULT_MAX_F1_DROP,
    reference_note: str = "",
) -> Report:
    """Write the report of a sweep to `out_dir`, tag its jobs' runs and log it to the parent run."""
    jobs = sweep_jobs(client, parent_run_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    facts = _sweep_facts(client, parent_run_id)
    facts["reference_note"] = reference_note
    intervals = change_intervals(client, jobs)
    table = rows(jobs, max_f1_drop, intervals)
    found = search_report.load(client, parent_run_id)
    searched = search_report.section(found, jobs, baseline_of(jobs), out_dir) if found else None
    if searched is not None:
        for row in table:
            if row["run_id"] in searched.front_runs:
                row["pareto"] = ",".join(filter(None, [str(row["pareto"]), "search"]))
    text = document(jobs, facts, max_f1_drop, table, searched.lines if searched else ())
    (out_dir / "report.md").write_text(text)
    write_csv(table, out_dir / "report.csv")
    files = [out_dir / "report.md", out_dir / "report.csv", *plot(jobs, out_dir), *(searched.files if searched else [])]
    for path in files:
        client.log_artifact(parent_run_id, str(path), "report")
    if table:
        client.log_table(parent_run_id, {k: [row[k] for row in table] for k in table[0]}, "report/table.json")
    _tag_runs(client, jobs, table, max_f1_drop)
    models = len({j.model for j in jobs})
    return Report(files, text, advice(recommend(jobs, max_f1_drop), models, intervals))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qa_compress.report", description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI, else ./mlruns)")
    parser.add_argument("--experiment", default="qa-compress", help="experiment name (default: qa-compress)")
    parser.add_argument("--parent-run-id", help="the sweep's parent run (default: the latest sweep)")
    parser.add_argument("--out-dir", type=Path, help="where to write (default: the sweep's output directory)")
    parser.add_argument("--max-f1-drop", type=float, default=DEFAULT_MAX_F1_DROP,
                        help=f"F1 a recommended job may lose (default: {DEFAULT_MAX_F1_DROP:g})")  # fmt: skip
    opts = parser.parse_args(argv)
    try:
        built, parent, out_dir = _report(opts)
    except ReportError as err:
        sys.stderr.write(f"{err}\n")
        return 1
    print(built.text)
    print(f"Report of sweep {parent} written to {out_dir} ({', '.join(p.name for p in built.files)})")
    print("\n".join(built.advice))
    return 0


class ReportError(Exception):
    """A report that cannot be made, in one line; nothing was written."""


def _store(configured: str | None) -> str:
    """The store's URI, refused when its scheme is unknown or a local store does not exist (none is created)."""
    uri = store.tracking_uri(configured, "mlruns")
    what = f"--tracking-uri {uri}" if configured else f"the MLflow store {uri}"
    scheme = store.scheme(uri)
    if scheme not in store.SCHEMES:
        raise ReportError(f"{what}: unknown scheme {scheme!r}; use sqlite:///<path>/mlflow.db or http(s)://<server>")
    if scheme == "sqlite" and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise ReportError(f"{what}: no such store (run a sweep first, or give --tracking-uri)")
    return uri


def _report(opts: argparse.Namespace) -> tuple[Report, str, Path]:
    if not (opts.max_f1_drop >= 0 and math.isfinite(opts.max_f1_drop)):
        raise ReportError(f"--max-f1-drop={opts.max_f1_drop}: give a number of F1 points, 0 or more")
    uri = _store(opts.tracking_uri)
    client = MlflowClient(uri)
    try:
        parent = opts.parent_run_id or latest_sweep(client, opts.experiment)
        if parent is None:
            raise ReportError(f"no sweep found in experiment {opts.experiment!r} of {uri}")
        try:
            run = client.get_run(parent)
        except MlflowException:
            raise ReportError(f"--parent-run-id={parent}: no such run in {uri}") from None
        if "sweep_dir" not in run.data.tags:
            raise ReportError(
                f"--parent-run-id={parent}: run {run.info.run_name!r} is not a sweep's parent run "
                "(a job of a sweep, or a single job); give the parent's id, or none for the latest sweep"
            )
        out_dir = opts.out_dir or Path(run.data.tags["sweep_dir"])
        built = build(client, parent, out_dir, opts.max_f1_drop)
    except MlflowException as err:
        raise ReportError(f"the MLflow store {uri} could not be read ({str(err).splitlines()[0][:200]})") from None
    return built, parent, out_dir


if __name__ == "__main__":
    sys.exit(main())
