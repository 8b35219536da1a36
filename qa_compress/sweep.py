"""Hydra callback that turns a multirun into one MLflow parent run with a child run per job.

Before any job starts, every job of the sweep is composed and checked, so a bad value in the
fifth job stops the sweep before the first one trains. When the sweep ends, its report (table
and trade-off plots) goes to the sweep directory and the parent run. The parent run ends with
a status that reflects its children, also when the sweep stops early.
"""

from __future__ import annotations

import atexit
import logging
import sys
from pathlib import Path
from typing import Any

from hydra import compose

# Hydra's default sweeper has no public way to list the jobs it will launch; its own
# `split_arguments` is the one that knows (tests/test_sweep.py fails if Hydra moves it).
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

from qa_compress.config import from_hydra
from qa_compress.errors import UserError

# MLflow, the checks and the report (torch, transformers) are imported where a sweep needs them:
# Hydra builds this callback for single runs too, which must refuse a bad value without them.

log = logging.getLogger(__name__)

_unfinished: list[tuple[MlflowSweep, Path]] = []  # sweeps whose end Hydra may skip (a job raised)


def finish_unfinished() -> None:
    """End every sweep of this process that has not ended yet; runs at exit (Hydra skips `on_multirun_end`
    when a job raised), and may be called earlier by a caller that runs sweeps in-process."""
    while _unfinished:
        callback, sweep_dir = _unfinished.pop()
        callback._finish(sweep_dir)


atexit.register(finish_unfinished)


def sweep_jobs(config: DictConfig) -> list[list[str]] | None:
    """Override lists of every job the basic sweeper will launch; None for other sweepers."""
    if not config.hydra.sweeper._target_.endswith("BasicSweeper"):
        return None
    params = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
    arguments = params + list(config.hydra.overrides.task)
    parsed = OverridesParser.create().parse_overrides(arguments)
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def check_jobs(config: DictConfig, config_name: str, jobs: list[list[str]]) -> None:
    """Compose and check each job's config; raises UserError naming the first bad value.

    Values are checked for every job first (cheap), then each job's inputs (files, models).
    """
    checked = []
    for overrides in jobs:
        job_cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
        with open_dict(job_cfg):
            job_cfg.hydra.runtime.output_dir = config.hydra.sweep.dir  # not known before launch
        HydraConfig.instance().set_config(job_cfg)
        try:
            checked.append(from_hydra(job_cfg))
        finally:
            HydraConfig.instance().set_config(config)
    from qa_compress import checks

    for job in checked:
        checks.inputs(job)


class MlflowSweep(Callback):
    """Check all jobs, then open the sweep's parent run; close it when the sweep ends."""

    def __init__(self) -> None:
        self.uri: str | None = None
        self.parent_run_id: str | None = None
        self.planned: int | None = None
        self._finished = False

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Hydra turns a callback's exceptions into warnings; a bad config must stop the sweep instead.
        try:
            self._start(config, kwargs["config_name"])
        except (UserError, HydraException) as err:
            sys.stderr.write(f"{str(err).strip()}\n")
            sys.exit(1)

    def _start(self, config: DictConfig, config_name: str) -> None:
        from qa_compress import tracking

        HydraConfig.instance().set_config(config)  # lets ${hydra:...} resolve before the first job
        jobs = sweep_jobs(config)
        if jobs is not None:
            check_jobs(config, config_name, jobs)
            log.info("Checked the configs of %d jobs", len(jobs))
        self.uri = tracking.tracking_uri(OmegaConf.select(config, "tracking.uri"), config.paths.mlruns_dir)
        tracking.check_reachable(self.uri)
        experiment = tracking.experiment_id(self.uri, config.tracking.experiment_name, config.paths.mlruns_dir)
        tracking.reap_dead_runs(self.uri, experiment)
        overrides = " ".join(OmegaConf.to_container(config.hydra.overrides.task)) or "(defaults)"
        self.parent_run_id = tracking.start_sweep(
            self.uri,
            experiment,
            Path(config.hydra.sweep.dir),
            f"sweep | {config.model.name} | {overrides}",
            {
                "git_commit": tracking.git_commit(config.paths.root_dir),
                "sweep_overrides": overrides,
                "jobs": str(len(jobs)) if jobs is not None else "unknown",
            },
        )
        self.planned = len(jobs) if jobs is not None else None
        _unfinished.append((self, Path(config.hydra.sweep.dir)))
        # SIGTERM between jobs would otherwise end the process at once, the parent run left RUNNING.
        tracking.stop_sweep_on_signals()
        log.info("MLflow sweep run %s in %s", self.parent_run_id, self.uri)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._finish(Path(config.hydra.sweep.dir))

    def _finish(self, sweep_dir: Path) -> None:
        """Report, list failed and skipped jobs, end the parent run; once, also when the sweep stops early."""
        if self.parent_run_id is None or self._finished:
            return
        from mlflow.tracking import MlflowClient

        from qa_compress import report, tracking
        from qa_compress.bookkeeping import SKIPPED_FILE

        self._finished = True
        if (self, sweep_dir) in _unfinished:
            _unfinished.remove((self, sweep_dir))
        tracking.take_interrupt()  # a few seconds of bookkeeping must not be cut short
        client = MlflowClient(self.uri)
        for job in report.sweep_jobs(client, self.parent_run_id):  # the sweep is over: nothing of it still runs
            if job.status == "RUNNING":
                client.set_tag(job.run_id, "error", "killed with its worker before it could record an end state")
                client.set_terminated(job.run_id, "KILLED")
        try:
            files, table = report.build(client, self.parent_run_id, sweep_dir)
        except Exception as err:  # a report that fails must not cost the sweep its results
            log.warning(
                "Sweep report failed: %s (retry: python -m qa_compress.report --parent-run-id %s)",
                err,
                self.parent_run_id,
            )
        else:
            print(
                f"\n{table}\nSweep report: {', '.join(str(f) for f in files)}\n"
                f"(also in MLflow run {self.parent_run_id}, under report/)"
            )
        skipped = len(list(sweep_dir.glob(f"*/{SKIPPED_FILE}")))
        if skipped:
            print(f"{skipped} job(s) skipped: already finished with the same configuration (force=true reruns them)")
        jobs = report.sweep_jobs(client, self.parent_run_id)
        failed = [job for job in jobs if job.status in {"FAILED", "KILLED"}]
        if failed:
            print(f"{len(failed)} of {len(jobs)} job(s) did not finish:", file=sys.stderr)
            for job in failed:
                print(f"  {job.name}: {job.status} {job.error}".rstrip(), file=sys.stderr)
        statuses = [job.status for job in jobs]
        tracking.end_sweep(self.uri, self.parent_run_id, statuses, self.planned, tracking.interrupted())
        tracking.end_sweep_signals()
