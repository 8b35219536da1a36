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
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from qa_compress.errors import UserError
from qa_compress.job import checks
from qa_compress.job.config import default
from qa_compress.serve import export
from qa_compress.sweep import search_report
from qa_compress.sweep.plots import plot
from qa_compress.sweep.recommend import DEFAULT_MAX_F1_DROP, Recommendation, change_intervals, picks, recommend
from qa_compress.sweep.tables import advice, document, rows, write_csv
from qa_compress.tracking import store
from qa_compress.tracking.results import MAX_F1_DROP_TAG, Job, baseline_of, latest_sweep, sweep_jobs

EXPERIMENT = str(default("tracking.experiment_name"))


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
    files = [
        out_dir / "report.md",
        out_dir / "report.csv",
        *plot(jobs, out_dir, max_f1_drop),
        *(searched.files if searched else []),
    ]
    for path in files:
        client.log_artifact(parent_run_id, str(path), "report")
    if table:
        client.log_table(parent_run_id, {k: [row[k] for row in table] for k in table[0]}, "report/table.json")
    _tag_runs(client, jobs, table, max_f1_drop)
    models = len({j.model for j in jobs})
    rec = recommend(jobs, max_f1_drop)
    return Report(files, text, advice(rec, models, intervals) + _aliased(client, jobs, rec))


def _aliased(client: MlflowClient, jobs: Sequence[Job], rec: Recommendation) -> list[str]:
    """When the sweep registered its models (export=true): its picks' versions take the aliases `recommended`,
    `fastest` and `smallest`; the lines that say so, or which pick has no registered model."""
    if not any(job.registered for job in jobs):
        return []
    chosen = picks(rec)
    uris = export.point_aliases(client, {alias: job.registered for alias, job in chosen.items() if job.registered})
    serve = f"MLFLOW_TRACKING_URI={client.tracking_uri} mlflow models serve -m"
    lines = [f"Serve the pick: {serve} {uri}" for uri in uris if uri.endswith("@recommended")]
    if uris:
        lines.append(f"Aliases: {', '.join(uris)}")
    lines += [
        f"The {alias} job (run {job.run_id}) registered no model: its command above registers it"
        for alias, job in chosen.items()
        if not job.registered
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qa_compress.report", description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI, else ./mlruns)")
    parser.add_argument("--experiment", default=EXPERIMENT, help=f"experiment name (default: {EXPERIMENT})")
    parser.add_argument("--parent-run-id", help="the sweep's parent run (default: the latest sweep)")
    parser.add_argument("--out-dir", type=Path, help="where to write (default: the sweep's output directory)")
    parser.add_argument(
        "--max-f1-drop",
        type=float,
        help=f"F1 a recommended job may lose (default: the sweep's report.max_f1_drop, else {DEFAULT_MAX_F1_DROP:g})",
    )
    opts = parser.parse_args(argv)
    try:
        built, parent, out_dir = _report(opts)
    except UserError as err:
        sys.stderr.write(f"{err}\n")
        return 1
    print(built.text)
    print(f"Report of sweep {parent} written to {out_dir} ({', '.join(p.name for p in built.files)})")
    print("\n".join(built.advice))
    return 0


def _report(opts: argparse.Namespace) -> tuple[Report, str, Path]:
    if opts.max_f1_drop is not None and not (opts.max_f1_drop >= 0 and math.isfinite(opts.max_f1_drop)):
        raise UserError(f"--max-f1-drop={opts.max_f1_drop}: give a number of F1 points, 0 or more")
    uri = store.existing(opts.tracking_uri)
    client = MlflowClient(uri)
    try:
        run = sweep_parent(client, opts.parent_run_id, opts.experiment)
        out_dir = opts.out_dir or Path(run.data.tags["sweep_dir"])
        checks.writable(str(out_dir), "--out-dir" if opts.out_dir else "the sweep's directory")
        allowed = opts.max_f1_drop if opts.max_f1_drop is not None else allowed_drop(run)
        built = build(client, run.info.run_id, out_dir, allowed)
    except MlflowException as err:
        raise UserError(f"the MLflow store {uri} could not be read ({str(err).splitlines()[0][:200]})") from None
    return built, run.info.run_id, out_dir


def sweep_parent(client: MlflowClient, parent_run_id: str | None, experiment: str) -> Run:
    """The parent run of the given sweep, or of the experiment's latest; UserError for anything else."""
    parent = parent_run_id or latest_sweep(client, experiment)
    if parent is None:
        raise UserError(f"no sweep found in experiment {experiment!r} of {client.tracking_uri}")
    try:
        run = client.get_run(parent)
    except MlflowException:
        raise UserError(f"--parent-run-id={parent}: no such run in {client.tracking_uri}") from None
    if "sweep_dir" not in run.data.tags:
        raise UserError(
            f"--parent-run-id={parent}: run {run.info.run_name!r} is not a sweep's parent run "
            "(a job of a sweep, or a single job); give the parent's id, or none for the latest sweep"
        )
    return run


def allowed_drop(parent: Run) -> float:
    """The F1 loss the sweep's recommendation allowed (its report.max_f1_drop)."""
    return float(parent.data.tags.get(MAX_F1_DROP_TAG, DEFAULT_MAX_F1_DROP))


if __name__ == "__main__":
    sys.exit(main())
