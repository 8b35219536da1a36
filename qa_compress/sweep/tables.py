"""The report's text: the recommendation in three lines, one row per job, and the Markdown and CSV they are written as.

Every figure is rounded here (`DECIMALS`), so report.md, report.csv and the terminal agree.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from qa_compress.evaluate import bootstrap
from qa_compress.sweep.recommend import (
    DEFAULT_MAX_F1_DROP,
    NOISY_TIMING,
    Recommendation,
    f1_drop,
    noisy,
    pareto_marks,
    recommend,
    shrink,
    speedup,
)
from qa_compress.tracking.results import Job, reproduce_command

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
GENERATED_DATA_NOTE = (
    "> **Generated data.** These jobs ran on generated biographies (`dataset=synthetic_bios`): the figures show how "
    "the framework behaves, not what compression costs a real QA model. Sweep SQuAD 2.0 (`dataset=squad_v2`, or "
    "`dataset=squad_json` with its files) for results."
)


def _round(value: float, key: str) -> float:
    """The value at the report's precision for `key` (and never -0.0, which would print as a loss)."""
    if not isinstance(value, float) or math.isnan(value):
        return value
    return round(value, DECIMALS.get(key, DEFAULT_DECIMALS)) + 0.0


def _num(value: float, key: str, sign: bool = False) -> str:
    if not isinstance(value, float) or math.isnan(value):
        return ""
    return f"{_round(value, key):{'+' if sign else ''}.{DECIMALS.get(key, DEFAULT_DECIMALS)}f}"


def job_label(job: Job, models: int) -> str:
    """What a job pruned and quantized, and its model when the sweep has several."""
    label = "uncompressed" if job.uncompressed else f"{job.pruning_label} | {job.quantization}"
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
            what = job_label(job, models)
        return f"{kind} {allowed}: {what}, F1 {_num(job.metrics['f1'], 'f1')} ({change}), {figure}, {where}" + (
            f": {command}" if command else ""
        )

    faster = rec.fastest and f"{_num(speedup(rec.fastest, rec.reference), 'x_faster')}x faster"
    lines = [
        line("Fastest", rec.fastest, faster),
        line(
            "Smallest",
            rec.smallest,
            rec.smallest
            and (
                f"{_num(rec.smallest.metrics['size_mb'], 'size_mb')} MB "
                f"({_num(shrink(rec.smallest, rec.reference), 'x_smaller')}x smaller)"
            ),
        ),
    ]
    if rec.losers:
        worst = sorted(rec.losers, key=lambda job: -f1_drop(job, rec.reference))
        listed = ", ".join(f"{job_label(j, models)} ({_change(j, rec.reference, intervals)})" for j in worst)
        lines.append(f"Losing more than {rec.max_f1_drop:g} F1 (not recommended): {listed}")
    else:
        lines.append(f"No finished job loses more than {rec.max_f1_drop:g} F1.")
    return lines


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


JOB_COLUMNS = [
    "#",
    "job",
    "F1",
    "ΔF1",
    "HasAns F1",
    "NoAns F1",
    "size MB",
    "× smaller",
    "latency ms",
    "× faster",
    "sparsity",
    "Pareto",
    "run",
    "note",
]  # the steps' columns go before "run"


def _heading(jobs: Sequence[Job], sweep: dict[str, str], models: list[str]) -> list[str]:
    """The title, what was swept, the CPU it was timed on, and the notes a reader must see first."""
    datasets = sorted({j.dataset for j in jobs}) or ["?"]
    cpus = sorted({j.cpu for j in jobs if j.cpu})
    finished = sum(job.done for job in jobs)
    lines = [
        f"# Sweep report: {', '.join(models)} on {', '.join(datasets)}",
        "",
        f"Swept `{sweep.get('sweep_overrides', '?')}`: {len(jobs)} job(s), {finished} finished; "
        f"MLflow parent run `{sweep.get('run_id', '?')}`, started {sweep.get('started', '?')}.",
    ]
    if cpus:
        lines.append(f"Timed on {'; '.join(cpus)}.")
    if any(job.params.get("dataset.source") == "synthetic" for job in jobs):
        lines += ["", GENERATED_DATA_NOTE]
    if sweep.get("reference_note"):
        lines += ["", f"> {sweep['reference_note']}"]
    return lines


def _note(job: Job, row: dict[str, object], rec: Recommendation) -> str:
    """The table's note on a job: unfinished, recommended, the reference, noisy timing."""
    note = [] if job.status == "FINISHED" else [f"{job.status}" + (f": {job.error}" if job.error else "")]
    if row["recommended"]:
        note.append(f"recommended ({row['recommended'].replace(',', ', ')})")
    if rec.reference is not None and job.run_id == rec.reference.run_id:
        note.append("reference")
    if noisy(job):
        m = job.metrics
        note.append(f"noisy timing (× faster {m['speedup_q1']:.2f}–{m['speedup_q3']:.2f})")
    return "; ".join(note)


def _job_cells(job: Job, row: dict[str, object], models: int, steps: list[str], loses: str, note: str) -> list[str]:
    """One job's row of the Markdown table, in the order of JOB_COLUMNS (the steps before the run)."""
    step_keys = {name: key for key, name in STEPS.items()}
    delta = f1_change(row["Δf1"], (row["Δf1_low"], row["Δf1_high"])) + (" ⚠" if row[loses] else "")
    return [
        str(row["job"]),
        job_label(job, models),
        _num(row["f1"], "f1"),
        delta,
        _num(row["HasAns_f1"], "f1"),
        _num(row["NoAns_f1"], "f1"),
        _num(row["size_mb"], "size_mb"),
        _num(row["x_smaller"], "x_smaller"),
        _num(row["latency_ms"], "latency_ms"),
        _num(row["x_faster"], "x_faster"),
        _num(row["sparsity"], "sparsity"),
        ", ".join(marks for marks in str(row["pareto"]).split(",") if marks),
        *[_num(row[name], step_keys[name]) for name in steps],
        f"`{job.run_id[:8]}`",
        note,
    ]


def _legend(table: Sequence[dict[str, object]], max_f1_drop: float) -> str:
    """What the table's columns mean, its ΔF1 interval included when some job has one."""
    interval = (
        f"; in brackets, its {bootstrap.LEVEL:.0%} interval from a paired bootstrap over the evaluation questions "
        f"({bootstrap.RESAMPLES:,} resamples): the spread another draw of such questions would show, so an interval "
        "that holds 0 is no evidence of a change"
        if any(not math.isnan(row["Δf1_low"]) for row in table)
        else ""
    )
    return (
        f"ΔF1 against the uncompressed job (⚠: loses more than {max_f1_drop:g} F1){interval}. × smaller: the "
        "uncompressed job's size over this job's. × faster: the median ratio of the uncompressed model's time to "
        "this model's over rounds in which the job timed both, interleaved, in its own process (so a busy machine "
        "slows both alike); noisy timing: that ratio's interquartile range is wider than "
        f"{NOISY_TIMING:.0%} of it. latency ms: this model alone, median per batch. Pareto: no other job is at "
        "least as accurate and at least as fast (speed) or as small (size), and better in one; search: on the "
        "front of the search's own objectives. `report.csv` has "
        "full run ids; the plots number points as the # column does."
    )


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
    lines = _heading(jobs, sweep, models)
    lines += ["", f"## Recommendation (report.max_f1_drop={max_f1_drop:g})", ""]
    known = {row["run_id"]: (row["Δf1_low"], row["Δf1_high"]) for row in table}
    lines += [f"- {line}" for line in advice(rec, len(models), known)]
    if extra:
        lines += ["", *extra]
    steps = [name for name in STEPS.values() if table and name in table[0]]
    header = JOB_COLUMNS[:12] + steps + JOB_COLUMNS[12:]
    lines += ["", "## Jobs", "", "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    loses = f"loses_more_than_{max_f1_drop:g}_f1"
    for job, row in zip(jobs, table, strict=True):
        cells = _job_cells(job, row, len(models), steps, loses, _note(job, row, rec))
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    lines += ["", _legend(table, max_f1_drop)]
    return "\n".join(lines) + "\n"
