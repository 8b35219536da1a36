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
from collections.abc import Sequence
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

from qa_compress.errors import UserError
from qa_compress.job.config import compose_jobs, default
from qa_compress.tracking import interrupts

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


def callback_for(sweep_dir: Path) -> MlflowSweep | None:
    """The callback that opened the parent run of the sweep writing to `sweep_dir` (the pareto sweeper asks)."""
    return next((callback for callback, directory in _unfinished if directory == sweep_dir), None)


GRID_SWEEPERS = ("BasicSweeper", "CheckedSweeper")  # Hydra's, and hydra/sweeper=checked (the default)


def sweep_jobs(config: DictConfig) -> list[list[str]] | None:
    """Override lists of every job the basic sweeper will launch; None for other sweepers."""
    if not config.hydra.sweeper._target_.endswith(GRID_SWEEPERS):
        return None
    params = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
    arguments = params + list(config.hydra.overrides.task)
    parsed = OverridesParser.create().parse_overrides(arguments)
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def composed(config_name: str, overrides: list[str]) -> dict:
    """A job's config without Hydra's section, interpolations left as written (what identifies it)."""
    return OmegaConf.to_container(compose(config_name=config_name, overrides=overrides), resolve=False)


def check_jobs(config: DictConfig, config_name: str, jobs: list[list[str]]) -> list:
    """Compose and check each job's config; returns them (JobConfig), or raises UserError naming the first bad value.

    Values are checked for every job first, then what each job reads (files, weights' headers), then what
    needs each checkpoint's config and tokenizer: the cheap refusals come first.
    """
    checked = compose_jobs(config_name, jobs, config.hydra.sweep.dir)
    from qa_compress.job import checks

    shapes = [checks.early(job) for job in checked]
    for job, weights in zip(checked, shapes, strict=True):
        checks.late(job, weights)
    return checked


COMPRESSION_GROUPS = ("pruning", "quantization")
# What the reference need not repeat. It keeps and registers its model as the sweep's jobs do (save_model,
# export): the sweep's pick may be the uncompressed model, and its `recommended` alias then names it.
JOB_ONLY_KEYS = ("force",)


def reference_overrides(overrides: Sequence[str]) -> list[str]:
    """A job's overrides with its compression choices replaced: the uncompressed model it started from.

    Rerunning (`force`) is left out; keeping and exporting the model stay, as the sweep's jobs asked.
    """

    def key(override: str) -> str:
        return override.split("=", 1)[0].lstrip("+~").split("@", 1)[0]

    kept = [o for o in overrides if key(o).split(".", 1)[0] not in COMPRESSION_GROUPS and key(o) not in JOB_ONLY_KEYS]
    return [*kept, "pruning=none", "quantization=none"]


def reference_job(config_name: str, overrides: Sequence[str]) -> tuple[DictConfig, list[str]]:
    """The reference job's composed config and the overrides that reproduce it.

    An experiment may set keys of its compression method (`quantization.qat_steps`); the `none`
    methods do not have them, so they are deleted (`~quantization.qat_steps`). Keys `none` has but
    that mean nothing to it (recovery and its schedule: `inert_keys`) go back to its defaults, since
    `pruning=none` refuses recovery it has nothing to recover from.
    """
    from qa_compress import prune, quantize

    wanted = reference_overrides(overrides)
    job_cfg = compose(config_name=config_name, overrides=wanted, return_hydra_config=True)
    unpruned = prune.get("none")
    known = {"pruning": unpruned.settings.model_fields, "quantization": quantize.get("none").settings.model_fields}
    extra = [f"~{group}.{key}" for group, fields in known.items() for key in job_cfg[group] if key not in fields]
    for key in sorted(unpruned.inert_keys & set(job_cfg.pruning)):
        default = known["pruning"][key].default
        if job_cfg.pruning[key] != default:
            extra.append(f"pruning.{key}={_override_value(default)}")
    if extra:
        wanted += extra
        job_cfg = compose(config_name=config_name, overrides=wanted, return_hydra_config=True)
    return job_cfg, wanted


def _override_value(value: object) -> str:
    """A default as Hydra's override grammar reads it back (true, null, 5e-05, oneshot)."""
    if value is None:
        return "null"
    return str(value).lower() if isinstance(value, bool) else str(value)


def _previous_sweep(uri: str, experiment: str, jobs: list) -> str | None:
    """The earlier sweep whose jobs include all of these (FINISHED, same hashes); None if any job is new."""
    if not jobs or any(job.force for job in jobs):
        return None
    from mlflow.tracking import MlflowClient

    from qa_compress.job import bookkeeping
    from qa_compress.tracking import results, runs

    found = []
    for job in jobs:
        run = runs.finished_run(experiment, "config_hash", bookkeeping.job_hash(job))
        if run is None:
            return None
        found.append(run)
    client = MlflowClient(uri)
    first = found[0].data.tags
    candidates = [first.get("mlflow.parentRunId")]
    prefix = runs.REUSE_TAG_PREFIX
    candidates += [key.removeprefix(prefix) for key in first if key.startswith(prefix)]
    wanted = {run.info.run_id for run in found}
    for parent in filter(None, candidates):
        if "sweep_dir" not in client.get_run(parent).data.tags:
            continue
        if wanted <= {job.run_id for job in results.sweep_jobs(client, parent)}:
            return parent
    return None


class MlflowSweep(Callback):
    """Check all jobs, then open the sweep's parent run; close it when the sweep ends."""

    def __init__(self) -> None:
        self.uri: str | None = None
        self.parent_run_id: str | None = None
        self.planned: int | None = None
        self.config_name = "config"
        self.config: DictConfig | None = None
        self.max_f1_drop = float(default("report.max_f1_drop"))
        self.notes: list[str] = []  # said at the end of the sweep, before the recommendation
        self.stage = "starting"  # what the sweep was doing, for a one-line refusal if it fails
        self._finished = False
        self.reference_run_id: str | None = None
        self.search_plan = None  # hydra/sweeper=pareto: the search, checked before the parent run opens
        self.checked_overrides: set[tuple[str, ...]] = set()  # jobs the checked sweeper need not compose again

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        """A single run: Hydra makes its directory before the job's checks, so it is probed here."""
        from qa_compress.job import checks

        HydraConfig.instance().set_config(config)  # hydra.run.dir may name ${hydra:runtime.cwd}
        try:
            checks.writable(config.hydra.run.dir, "hydra.run.dir")
        except UserError as err:
            sys.stderr.write(f"{err}\n")
            sys.exit(1)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Hydra turns a callback's exceptions into warnings; a bad config must stop the sweep instead.
        try:
            self._start(config, kwargs["config_name"])
        except (UserError, HydraException) as err:
            sys.stderr.write(f"{str(err).strip()}\n")
            sys.exit(1)
        except Exception as err:  # no job may run untracked: without a parent run, no sweep
            reason = (str(err).strip().splitlines() or [""])[0][:300]
            what = f"{type(err).__name__}: {reason}"
            sys.stderr.write(f"the sweep stopped while {self.stage} ({what}); no job was started\n")
            sys.exit(1)

    def _start(self, config: DictConfig, config_name: str) -> None:
        from qa_compress.job import checks
        from qa_compress.sweep import search_plan, study_storage
        from qa_compress.tracking import store

        HydraConfig.instance().set_config(config)  # lets ${hydra:...} resolve before the first job
        checks.writable(config.hydra.sweep.dir, "hydra.sweep.dir")
        self.config_name = config_name
        self.config = config
        self.stage = "checking its jobs"
        allowed = OmegaConf.select(config, "report.max_f1_drop", default=default("report.max_f1_drop"))
        self.max_f1_drop = float(allowed)
        jobs = sweep_jobs(config)
        checked = check_jobs(config, config_name, jobs) if jobs is not None else []
        if jobs is not None:
            self.checked_overrides = {tuple(job) for job in jobs}
            log.info("Checked the configs of %d jobs", len(jobs))
        self.uri = store.tracking_uri(OmegaConf.select(config, "tracking.uri"), config.paths.mlruns_dir)
        planned = len(jobs) if jobs is not None else None
        if search_plan.is_pareto(config):
            self.search_plan = search_plan.plan(config, lambda o: composed(config_name, o), self.uri)
            corners = search_plan.corners(self.search_plan)
            check_jobs(config, config_name, corners)
            log.info("Checked the search space at %d corners", len(corners))
            study_storage.probe_storage(self.search_plan.storage)
            planned = self.search_plan.settings.n_trials
            if self.search_plan.settings.max_f1_drop is not None:
                self.max_f1_drop = self.search_plan.settings.max_f1_drop
        self.stage = f"creating its MLflow parent run in {self.uri}"
        from qa_compress.tracking import locks, results, runs  # MLflow: once every job's values are known to be good

        lock_wait_s = float(OmegaConf.select(config, "tracking.lock_wait_s"))
        store.check(self.uri, None, lock_wait_s)
        locks.wait_for_locks(lock_wait_s)
        experiment = runs.experiment_id(self.uri, config.tracking.experiment_name)
        runs.reap_dead_runs(self.uri, experiment)
        sweep_dir = Path(config.hydra.sweep.dir)
        self.planned = planned
        previous = _previous_sweep(self.uri, experiment, checked)
        if previous is not None:
            self.parent_run_id = previous
            runs.adopt_sweep(sweep_dir, previous)
            self.notes.append(
                f"All {len(checked)} jobs finished already in sweep run {previous}: reported under that parent run, "
                "no new one (force=true reruns them)"
            )
        else:
            overrides = " ".join(OmegaConf.to_container(config.hydra.overrides.task)) or "(defaults)"
            self.parent_run_id = runs.start_sweep(
                self.uri,
                experiment,
                sweep_dir,
                f"sweep | {config.model.name} | {overrides}",
                {
                    "git_commit": runs.git_commit(config.paths.root_dir),
                    "sweep_overrides": overrides,
                    "jobs": str(len(jobs)) if jobs is not None else "unknown",
                    results.MAX_F1_DROP_TAG: f"{self.max_f1_drop:g}",  # the report command's default for it
                },
            )
        _unfinished.append((self, sweep_dir))
        # SIGTERM between jobs would otherwise end the process at once, the parent run left RUNNING.
        interrupts.stop_sweep_on_signals()
        log.info("MLflow sweep run %s in %s", self.parent_run_id, self.uri)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._finish(Path(config.hydra.sweep.dir))

    def _finish(self, sweep_dir: Path) -> None:
        """Report, list failed and skipped jobs, end the parent run; once, also when the sweep stops early."""
        if self.parent_run_id is None or self._finished:
            return
        from mlflow.tracking import MlflowClient

        from qa_compress.job.bookkeeping import SKIPPED_FILE
        from qa_compress.sweep import report
        from qa_compress.tracking import locks, results, runs

        self._finished = True
        if (self, sweep_dir) in _unfinished:
            _unfinished.remove((self, sweep_dir))
        interrupts.take_interrupt()  # a few seconds of bookkeeping must not be cut short
        client = MlflowClient(self.uri)
        for job in results.sweep_jobs(client, self.parent_run_id):  # the sweep is over: nothing of it still runs
            if job.status == "RUNNING":
                locks.write(client.set_terminated, job.run_id, "KILLED")
                locks.write(
                    client.set_tag, job.run_id, "error", "killed with its worker before it recorded an end state"
                )
        reference_note = ""
        if not interrupts.interrupted():
            reference_note = self._reference(client, sweep_dir)
        built = None
        try:
            built = report.build(client, self.parent_run_id, sweep_dir, self.max_f1_drop, reference_note)
        except Exception as err:  # a report that fails must not cost the sweep its results
            log.warning(
                "Sweep report failed: %s (retry: python -m qa_compress.report --parent-run-id %s)",
                err,
                self.parent_run_id,
            )
        else:
            table = built.text[built.text.index("## Jobs") :] if "## Jobs" in built.text else built.text
            print(
                f"\n{table}\nSweep report: {', '.join(str(f) for f in built.files)}\n"
                f"(also in MLflow run {self.parent_run_id}, under report/)"
            )
        skipped = len(list(sweep_dir.glob(f"*/{SKIPPED_FILE}")))
        if skipped:
            print(f"{skipped} job(s) skipped: already finished with the same configuration (force=true reruns them)")
        jobs = results.sweep_jobs(client, self.parent_run_id)
        failed = [job for job in jobs if job.status in {"FAILED", "KILLED"}]
        if failed:
            print(f"{len(failed)} of {len(jobs)} job(s) did not finish:", file=sys.stderr)
            for job in failed:
                print(f"  {job.name}: {job.status} {job.error}".rstrip(), file=sys.stderr)
        statuses = [job.status for job in jobs if job.run_id != self.reference_run_id]
        runs.end_sweep(self.uri, self.parent_run_id, statuses, self.planned, interrupts.interrupted())
        interrupts.end_sweep_signals()
        for note in [*self.notes, reference_note]:
            if note:
                print(note)
        if built is not None:  # the last words of a sweep: what to take, and how to get it
            print("\n".join(built.advice))

    def _reference(self, client, sweep_dir: Path) -> str:
        """Evaluate the uncompressed model when no job of the sweep did (reused when it exists); says what it did."""
        from qa_compress.job.bookkeeping import SKIPPED_FILE
        from qa_compress.job.run import run
        from qa_compress.tracking import results

        jobs = results.sweep_jobs(client, self.parent_run_id)
        done = [job for job in jobs if job.done and job.overrides is not None]
        if results.baseline_of(jobs) is not None or not done:
            return ""
        overrides = reference_overrides(done[0].overrides)
        command = " ".join(["python run.py", *overrides])
        output_dir = sweep_dir / "reference"
        try:
            job_cfg, overrides = reference_job(self.config_name, done[0].overrides)
            command = " ".join(["python run.py", *overrides])
            with open_dict(job_cfg):
                job_cfg.hydra.sweep.dir = str(sweep_dir)
                job_cfg.hydra.runtime.output_dir = str(output_dir)
                job_cfg.hydra.mode = "MULTIRUN"
            HydraConfig.instance().set_config(job_cfg)
            run(job_cfg)
        except KeyboardInterrupt:  # its run ended KILLED; the sweep still reports and ends
            interrupts.take_interrupt()
            return f"Stopped while evaluating the uncompressed reference ({command}): the report has no reference"
        except Exception as err:  # the sweep's own results stand; say why there is no reference
            log.warning("Evaluating the uncompressed reference failed: %s", err)
            return f"No job of this sweep was uncompressed, and evaluating the reference ({command}) failed: {err}"
        finally:
            if self.config is not None:
                HydraConfig.instance().set_config(self.config)
        reference = results.baseline_of(results.sweep_jobs(client, self.parent_run_id))
        if reference is None:
            return f"No job of this sweep was uncompressed, and the reference ({command}) did not finish"
        self.reference_run_id = reference.run_id
        how = "reused finished run" if (output_dir / SKIPPED_FILE).is_file() else "evaluated it as run"
        return f"No job of this sweep was uncompressed: as the reference, {how} {reference.run_id} ({command})"
