"""The trade-off picture of a sweep: a table and plots, built from the MLflow store alone.

    python -m qa_compress.report                        # the latest sweep
    python -m qa_compress.report --parent-run-id ID     # a given sweep
    python -m qa_compress.report --experiment NAME --out-dir DIR

Each job's accuracy, size and speed, and their change against the sweep's uncompressed
baseline; F1 against sparsity (a line per pruning method), and F1 against latency and against
size with the Pareto front marked. Written to a directory and logged to the sweep's parent run.
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from qa_compress import tracking

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
PLOTS = ("f1_vs_sparsity.png", "f1_vs_latency.png", "f1_vs_size.png")


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


def _job(run: Run) -> Job:
    params, tags = run.data.params, run.data.tags
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
    runs.sort(key=lambda run: run.info.start_time)
    return [_job(run) for run in runs]


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
    return next((j for j in jobs if j.uncompressed and j.status == "FINISHED" and "f1" in j.metrics), None)


def rows(jobs: Sequence[Job]) -> list[dict[str, object]]:
    """One row per job: its choices, its metrics, and each metric's change against the baseline."""
    baseline = baseline_of(jobs)
    steps = [key for key in STEPS if key != "best_f1" and any(key in job.metrics for job in jobs)]
    if steps:
        steps.append("best_f1")
    table = []
    for job in jobs:
        row: dict[str, object] = {
            "model": job.model,
            "pruning": job.pruning_label,
            "quantization": job.quantization,
            "status": job.status,
        }
        for column in COLUMNS:
            value = job.metrics.get(column, math.nan)
            row[column] = value
            reference = baseline.metrics.get(column, math.nan) if baseline else math.nan
            row[f"Δ{column}"] = value - reference
        for key in steps:
            row[STEPS[key]] = job.metrics.get(key, math.nan)
        table.append(row)
    return table


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4g}" if abs(value) < 1 else f"{value:.2f}"
    return str(value).replace("|", "\\|")


def markdown(table: Sequence[dict[str, object]]) -> str:
    """The table as GitHub-flavoured Markdown."""
    if not table:
        return "(no jobs)\n"
    header = list(table[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(row[c]) for c in header) + " |" for row in table]
    return "\n".join(lines) + "\n"


def write_csv(table: Sequence[dict[str, object]], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(table[0]) if table else ["model"])
        writer.writeheader()
        writer.writerows(table)


def plot(jobs: Sequence[Job], out_dir: Path) -> list[Path]:
    """The three trade-off plots, as PNG files in `out_dir`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [j for j in jobs if j.status == "FINISHED" and "f1" in j.metrics]
    baseline = baseline_of(done)
    model = ", ".join(sorted({j.model for j in done})) or "?"
    dataset = ", ".join(sorted({j.dataset for j in done})) or "?"
    floor = next((j.metrics["always_no_answer_f1"] for j in done if "always_no_answer_f1" in j.metrics), None)

    def references(ax) -> None:
        if baseline is not None:
            ax.axhline(
                baseline.metrics["f1"],
                color="tab:green",
                linestyle="--",
                linewidth=1,
                label=f"uncompressed ({baseline.metrics['f1']:.1f})",
            )
        if floor is not None:
            ax.axhline(floor, color="tab:red", linestyle=":", linewidth=1, label=f"always no answer ({floor:.1f})")

    paths = []
    fig, ax = plt.subplots(figsize=(7, 4.5))
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
    ax.set(
        xlabel="sparsity of prunable weights (fraction of zeros)",
        ylabel="F1 (%)",
        title=f"F1 against sparsity: {model} on {dataset}",
    )
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    paths.append(out_dir / PLOTS[0])
    fig.tight_layout()
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    for filename, metric, label in (
        (PLOTS[1], "latency_ms", "latency per batch (ms, median)"),
        (PLOTS[2], "size_mb", "size on disk (MB)"),
    ):
        points = [(j.metrics[metric], j.metrics["f1"], j) for j in done if metric in j.metrics]
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for quantization in sorted({p[2].quantization for p in points}):
            group = [p for p in points if p[2].quantization == quantization]
            ax.scatter([p[0] for p in group], [p[1] for p in group], label=f"quantization: {quantization}", zorder=3)
        front = sorted(points[i][:2] for i in pareto_front([p[:2] for p in points]))
        if front:
            ax.step(
                [p[0] for p in front],
                [p[1] for p in front],
                where="post",
                color="black",
                linewidth=1.2,
                label="Pareto front",
                zorder=2,
            )
        for cost, f1, job in points:
            ax.annotate(job.name.split(" | ", 1)[-1], (cost, f1), fontsize=6, xytext=(3, 3), textcoords="offset points")
        references(ax)
        ax.set(xlabel=label, ylabel="F1 (%)", title=f"F1 against {label.split(' (')[0]}: {model} on {dataset}")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        paths.append(out_dir / filename)
        fig.tight_layout()
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    return paths


def build(client: MlflowClient, parent_run_id: str, out_dir: Path) -> tuple[list[Path], str]:
    """Write the report of a sweep to `out_dir`, log it to the parent run; returns the files and the table."""
    jobs = sweep_jobs(client, parent_run_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = rows(jobs)
    text = markdown(table)
    (out_dir / "report.md").write_text(text)
    write_csv(table, out_dir / "report.csv")
    files = [out_dir / "report.md", out_dir / "report.csv", *plot(jobs, out_dir)]
    for path in files:
        client.log_artifact(parent_run_id, str(path), "report")
    if table:
        client.log_table(parent_run_id, {k: [row[k] for row in table] for k in table[0]}, "report/table.json")
    return files, text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qa_compress.report", description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI, else ./mlruns)")
    parser.add_argument("--experiment", default="qa-compress", help="experiment name (default: qa-compress)")
    parser.add_argument("--parent-run-id", help="the sweep's parent run (default: the latest sweep)")
    parser.add_argument("--out-dir", type=Path, help="where to write (default: the sweep's output directory)")
    opts = parser.parse_args(argv)
    try:
        files, text, parent, out_dir = _report(opts)
    except ReportError as err:
        sys.stderr.write(f"{err}\n")
        return 1
    print(text)
    print(f"Report of sweep {parent} written to {out_dir} ({', '.join(p.name for p in files)})")
    return 0


class ReportError(Exception):
    """A report that cannot be made, in one line; nothing was written."""


STORE_SCHEMES = ("sqlite", "http", "https", "file", "postgresql", "mysql", "mssql", "databricks")


def _store(configured: str | None) -> str:
    """The store's URI, refused when its scheme is unknown or a local store does not exist (none is created)."""
    uri = tracking.tracking_uri(configured, "mlruns")
    what = f"--tracking-uri {uri}" if configured else f"the MLflow store {uri}"
    scheme = uri.split("://", 1)[0].split("+", 1)[0] if "://" in uri else "file"
    if scheme not in STORE_SCHEMES:
        raise ReportError(f"{what}: unknown scheme {scheme!r}; use sqlite:///<path>/mlflow.db or http(s)://<server>")
    if scheme == "sqlite" and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise ReportError(f"{what}: no such store (run a sweep first, or give --tracking-uri)")
    return uri


def _report(opts: argparse.Namespace) -> tuple[list[Path], str, str, Path]:
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
        files, text = build(client, parent, out_dir)
    except MlflowException as err:
        raise ReportError(f"the MLflow store {uri} could not be read ({str(err).splitlines()[0][:200]})") from None
    return files, text, parent, out_dir


if __name__ == "__main__":
    sys.exit(main())
