"""The Pareto search behind `hydra/sweeper=pareto`: Optuna proposes, the launcher runs, MLflow records.

Trials go out in batches through whatever launcher the sweep uses, each one an ordinary job (its own
child run, its config checked before launch). The study lives in an Optuna storage beside the MLflow
store, keyed by the search itself, so the same command started again continues it: trials that
finished are kept (their runs join the new parent run), trials a stop cut short run again, and a
configuration is never run twice in one study.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import socket
import statistics
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qa_compress.errors import UserError
from qa_compress.sweep import front, refine, search_space, study_storage
from qa_compress.sweep.search_plan import Plan, Settings, reference_point, trial_overrides
from qa_compress.sweep.search_space import Param, Space
from qa_compress.tracking import interrupts, store

log = logging.getLogger(__name__)

MAX_DUPLICATES = 50  # proposals in a row that repeat a tried configuration before the sampler is replaced by random
MAX_RANDOM_DUPLICATES = 200  # then random proposals in a row before the space counts as exhausted
ORDERED_SUFFIX = "#position"  # study parameter of a numeric choice: its position on the sorted scale
TRIALS_FILE = "trials.json"  # the search's trials, in the sweep directory and the parent run (search/)


# The study loop -------------------------------------------------------------------------------------


def _sampler(optuna, chosen: Settings, seed: int):
    """The configured sampler; each reads a trial's constraint (constraint mode) from the trial itself."""
    if chosen.sampler == "nsga2":  # generations of n_startup_trials: Optuna's default of 50 outlasts most searches
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(2, chosen.n_startup_trials))
    if chosen.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(
        seed=seed,
        n_startup_trials=chosen.n_startup_trials,
        multivariate=True,
        group=True,  # conditional keys: an amount exists only for the methods that have one
    )


def _study_param(param: Param, space: Space) -> tuple[str, tuple[str, ...]]:
    """The study parameter a searched key is asked as, and its sorted values when it is a numeric scale."""
    scale = search_space.numeric_scale(param, space)
    return (param.key + ORDERED_SUFFIX if scale else param.key), scale


def _suggest(trial, param: Param, space: Space) -> object:
    if param.kind == "choice":
        name, scale = _study_param(param, space)
        if scale:  # amounts as a scale: a sampler that found 0.2 good tries 0.1 and 0.3 next, not any value alike
            return scale[trial.suggest_int(name, 0, len(scale) - 1)]
        return trial.suggest_categorical(param.key, list(param.choices))
    if param.kind == "int":
        step = int(param.step) if param.step is not None else 1
        return trial.suggest_int(param.key, int(param.low), int(param.high), step=step, log=param.log)
    return trial.suggest_float(param.key, param.low, param.high, step=param.step, log=param.log)


def steps(params: Mapping[str, object], space: Space) -> list[dict[str, object]]:
    """Study parameters one step from `params`: one searched choice changed, a numeric choice by one position."""
    found = []
    for param in space.params:
        if param.kind != "choice":
            continue
        name, scale = _study_param(param, space)
        if name not in params:
            continue
        if scale:
            found += [{**params, name: params[name] + d} for d in (-1, 1) if 0 <= params[name] + d < len(scale)]
        else:
            found += [{**params, name: choice} for choice in param.choices if choice != params[name]]
    return found


def configuration(plan: Plan, params: Mapping[str, object]) -> tuple[list[str], dict[str, object]] | None:
    """The overrides of a trial with these study parameters, and the parameters it uses; None when it needs one
    `params` lacks (a change to an option with keys the trial never had: left to the sampler)."""
    used: dict[str, object] = {}

    def suggest(param: Param) -> object:
        name, scale = _study_param(param, plan.space)
        if name not in params:
            raise KeyError(name)
        used[name] = params[name]
        return scale[params[name]] if scale else params[name]

    try:
        return trial_overrides(plan, suggest), used
    except KeyError:
        return None


def _alive(host: str, pid: int) -> bool:
    if host != socket.gethostname():
        return False  # another machine's searcher cannot be asked; the study is taken over
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _trial_list(numbers: list[int]) -> str:
    """ "Trial 4" or "Trials 4, 6-9": numbers as a person reads them."""
    spans: list[list[int]] = []
    for number in sorted(numbers):
        if spans and number == spans[-1][1] + 1:
            spans[-1][1] = number
        else:
            spans.append([number, number])
    text = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in spans)
    return f"Trial {text}" if len(numbers) == 1 else f"Trials {text}"


def _held():
    """Signals wait while the study is written: a stop lands between writes, never inside one."""
    return interrupts.held()


@dataclass
class Outcome:
    """What a trial's job returned, as the study records it."""

    values: list[float] | None
    metrics: dict[str, float]
    run_id: str | None
    error: str = ""


class Search:
    """One run of the search loop over a study.

    `launch(overrides_list, first_index)` runs jobs (numbered from first_index: their sweep subdirectories)
    and returns their outcomes; `check(overrides_list)` refuses a bad one with UserError.
    """

    def __init__(
        self,
        plan: Plan,
        launch: Callable[[list[list[str]], int], list[Outcome]],
        check: Callable[[list[list[str]]], None],
        identify: Callable[[list[str]], str],
        reference_overrides: list[str],
        parent_run_id: str | None,
        tracking_uri: str,
    ) -> None:
        import optuna

        self.optuna = optuna
        self.plan = plan
        self.launch = launch
        self.check = check
        self.identify = identify  # overrides -> config key: the same job, however spelled
        self.reference_overrides = reference_overrides
        self.parent_run_id = parent_run_id
        self.tracking_uri = tracking_uri
        self._client = None  # MLflow, opened when a trial's run first joins the parent run
        self.names = list(plan.settings.objectives)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        # Metric names and TPE's grouped (conditional) spaces are marked experimental; the search relies on both.
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        directions = [plan.settings.objectives[n] for n in self.names]
        try:
            self.study = optuna.create_study(
                storage=study_storage.opened(plan.storage),
                study_name=plan.study,
                directions=directions,
                load_if_exists=True,
            )
        except ValueError as err:  # a study of this name with other objectives
            raise UserError(f"hydra.sweeper.study_name={plan.study}: {err}") from None
        except Exception as err:  # the database does not answer
            raise study_storage.unreachable(plan.storage, err) from None
        self.study.set_metric_names(self.names)
        self.State = optuna.trial.TrialState
        self.next_index = len(self.study.trials)  # job numbers above every earlier process's
        self._keys: dict[tuple[str, ...], str] = {}

    # bookkeeping over the study's trials ---------------------------------------------------------

    def _trials(self, *states):
        return self.study.get_trials(deepcopy=False, states=states or None)

    def counted(self) -> list:
        """Trials that ran a job (finished or failed); proposals that repeated a configuration are not."""
        return [
            t
            for t in self._trials(self.State.COMPLETE, self.State.FAIL)
            if "duplicate_of" not in t.user_attrs and "overrides" in t.user_attrs
        ]

    def tried_keys(self) -> dict[str, int]:
        """Config key -> trial number, of every trial that ran or is running."""
        return {
            t.user_attrs["config_key"]: t.number
            for t in self._trials(self.State.COMPLETE, self.State.FAIL, self.State.RUNNING)
            if "config_key" in t.user_attrs and "duplicate_of" not in t.user_attrs
        }

    def claim(self) -> None:
        """Refuse when another live process searches this study; else record this one as its searcher."""
        owner = self.study.user_attrs.get("searcher")
        me = {"host": socket.gethostname(), "pid": os.getpid()}
        if owner and owner != me and _alive(owner["host"], int(owner["pid"])):
            raise UserError(
                f"study {self.plan.study} in {store.masked(self.plan.storage)} is being searched by process "
                f"{owner['pid']}; "
                "wait for it to end, or give this search another hydra.sweeper.study_name"
            )
        self.study.set_user_attr("searcher", me)

    def stale(self) -> list:
        """Trials a stopped search left running: relaunched (a job that finished meanwhile is then reused)."""
        stale = []
        for trial in self._trials(self.State.RUNNING):
            if "overrides" in trial.user_attrs:
                stale.append(trial)
            else:  # stopped between asking and launching: nothing ran
                self.study.tell(trial.number, state=self.State.FAIL)
        return stale

    # the loop ----------------------------------------------------------------------------------------

    def run(self) -> list:
        """Run trials until n_trials have run; returns the study's finished trials."""
        with _held():
            self.claim()
        try:
            return self._search()
        finally:
            with _held():
                self.study.set_user_attr("searcher", None)  # a later process whose pid matches is not refused

    def _search(self) -> list:
        with _held():
            pending = self.stale()
        goal = self.plan.settings.n_trials
        if pending:
            log.info("Continuing study %s: %d trial(s) a stop cut short run again", self.plan.study, len(pending))
        done = len(self.counted())
        if done:
            log.info("Study %s has %d of %d trials already", self.plan.study, done, goal)
        self._adopt_finished()
        constrained = self.plan.settings.max_f1_drop is not None
        seed = self.plan.settings.seed + len(self.study.trials)  # a resumed search does not replay its proposals
        self.study.sampler = _sampler(self.optuna, self.plan.settings, seed)
        if constrained and self.reference() is None:
            stale_reference = [t for t in pending if t.user_attrs.get("reference")]
            pending = [t for t in pending if not t.user_attrs.get("reference")]
            self._run(stale_reference or [self._reference_trial()])  # alone: every other trial is measured against it
            if self.reference() is None:
                raise UserError(
                    "the uncompressed reference (trial 0) failed, so no trial can be held to "
                    f"hydra.sweeper.max_f1_drop={self.plan.settings.max_f1_drop:g}; see its run for why"
                )
        while pending or len(self.counted()) < goal:
            size = self.plan.settings.batch_size
            room = goal - len(self.counted()) - len(pending)
            batch, pending = pending[:size], pending[size:]
            batch += self._propose(min(size - len(batch), room))
            if not batch:
                log.warning("The search space has no configuration left to try: stopping at %d trials", done)
                break
            self._run(batch)
            done = len(self.counted())
        return self._trials(self.State.COMPLETE)

    def reference(self) -> dict[str, float] | None:
        """The uncompressed model's metrics (constraint mode: trial 0), once it has finished."""
        for trial in self._trials(self.State.COMPLETE):
            if trial.user_attrs.get("reference"):
                return trial.user_attrs["metrics"]
        return None

    def _reference_trial(self):
        with _held():
            trial = self.study.ask()
            trial.set_user_attr("reference", True)
            self._record(trial, list(self.reference_overrides))
        return self.study.get_trials(deepcopy=False)[trial.number]

    def _record(self, trial, overrides: list[str]) -> None:
        trial.set_user_attr("overrides", overrides)
        trial.set_user_attr("config_key", self._key(overrides))

    def _propose(self, count: int) -> list:
        """`count` new trials whose configurations no earlier trial had."""
        proposed = []
        tried = self.tried_keys()
        repeats = 0
        repeated: list[int] = []  # trials that proposed a tried configuration: closed, never a job
        while len(proposed) < count:
            if repeats == MAX_DUPLICATES:
                log.info("The sampler keeps proposing tried configurations: proposing at random instead")
                self.study.sampler = self.optuna.samplers.RandomSampler(seed=self.plan.settings.seed + repeats)
            if repeats >= MAX_DUPLICATES + MAX_RANDOM_DUPLICATES:
                break
            wanted = self._refinement(tried) if repeats == 0 else None
            with _held():
                if wanted is not None:
                    self.study.enqueue_trial(wanted)
                trial = self.study.ask()
                overrides = trial_overrides(self.plan, lambda param, t=trial: _suggest(t, param, self.plan.space))
                key = self._key(overrides)
                if key in tried:
                    trial.set_user_attr("duplicate_of", tried[key])
                    self.study.tell(trial, state=self.State.FAIL)
                    repeated.append(trial.number)
                    repeats += 1
                    continue
                self._record(trial, overrides)
            tried[key] = trial.number
            if wanted is not None:
                trial.set_user_attr("refines_front", True)
                log.info("Trial %d refines the front: %s", trial.number, " ".join(overrides))
            proposed.append(self.study.get_trials(deepcopy=False)[trial.number])
            repeats = 0
        if repeated:
            log.info(
                "%s proposed configurations already tried: closed without a job, so trial and job numbers differ",
                _trial_list(repeated),
            )
        if repeats >= MAX_DUPLICATES:
            seed = self.plan.settings.seed + len(self.study.trials)
            self.study.sampler = _sampler(self.optuna, self.plan.settings, seed)
        return proposed

    def _key(self, overrides: list[str]) -> str:
        """The configuration key of these overrides, composed once per search process."""
        if tuple(overrides) not in self._keys:
            self._keys[tuple(overrides)] = self.identify(overrides)
        return self._keys[tuple(overrides)]

    def _refinement(self, tried: Mapping[str, int]) -> dict[str, object] | None:
        """Study parameters of the untried neighbour of the front that promises most (`refine`); None: the
        sampler proposes (refinement off, still in the startup trials, or no neighbour promises a gain)."""
        chosen = self.plan.settings
        finished = [t for t in self._trials(self.State.COMPLETE) if "metrics" in t.user_attrs]
        if not chosen.refine or len(finished) < max(1, chosen.n_startup_trials):
            return None
        directions = [chosen.objectives[name] for name in self.names]

        def neighbours(params: Mapping[str, object]) -> list[dict[str, object]]:
            found = []
            for step in steps(params, self.plan.space):
                made = configuration(self.plan, step)
                if made is not None and self._key(made[0]) not in tried:
                    found.append(made[1])
            return found

        return refine.next_candidate(
            [refine.Point(t.params, t.values) for t in finished],
            self.names,
            directions,
            self._refinement_reference([t.user_attrs["metrics"] for t in finished], directions),
            neighbours,
            random.Random(chosen.seed + len(self.study.trials)),
        )

    def _refinement_reference(self, metrics: list[Mapping[str, float]], directions: list[str]) -> list[float]:
        """The point refinement measures gains from: the front's reference point (constraint mode: F1 at the
        allowed loss, so only admissible trials count); objectives without one start at the worst value seen."""
        base = dict(self.reference() or {})
        for name in ("always_no_answer_f1", "reference_latency_ms"):
            seen = [m[name] for m in metrics if name in m]
            if seen and name not in base:
                base[name] = statistics.median(seen)
        base.setdefault("latency_ms", base.get("reference_latency_ms", math.nan))
        point = reference_point(self.plan.settings.objectives, base)
        drop = self.plan.settings.max_f1_drop
        for i, (name, direction) in enumerate(zip(self.names, directions, strict=True)):
            if name == "f1" and drop is not None and "f1" in base:
                point[i] = max(point[i], base["f1"] - drop)
            if not math.isfinite(point[i]):
                seen = [m[name] for m in metrics if name in m]
                point[i] = (min if direction == front.MAXIMIZE else max)(seen)
        return point

    def _run(self, batch: list) -> None:
        overrides = [list(t.user_attrs["overrides"]) for t in batch]
        self.check(overrides)
        first, self.next_index = self.next_index, self.next_index + len(batch)
        for offset, trial in enumerate(batch):
            log.info("Trial %d is job #%d", trial.number, first + offset)
        outcomes = self.launch(overrides, first)
        reference = self.reference()
        for trial, outcome in zip(batch, outcomes, strict=True):
            if trial.user_attrs.get("reference"):
                outcome = self._as_reference(outcome)
            with _held():
                self._tell(trial, outcome, reference)

    def _as_reference(self, outcome: Outcome) -> Outcome:
        """The uncompressed job's outcome with its speed-up, as the report reads it (1: not timed against itself)."""
        from qa_compress.tracking import results

        if not outcome.metrics:  # it failed before logging anything: its error stands
            return outcome
        return outcome_of(self.names, {**results.reference_metrics(outcome.metrics), "run_id": outcome.run_id}, None)

    def _tell(self, trial, outcome: Outcome, reference: Mapping[str, float] | None) -> None:
        live = self.optuna.trial.Trial(self.study, trial._trial_id)  # a trial asked by an earlier process, too
        if outcome.run_id:
            live.set_user_attr("run_id", outcome.run_id)
            self._join(outcome.run_id, trial.number)
        if outcome.values is None:
            live.set_user_attr("error", outcome.error[:2000])
            self.study.tell(live, state=self.State.FAIL)
            reason = outcome.error.splitlines()[0] if outcome.error else "no result"
            log.warning("Trial %d failed: %s", trial.number, reason)
            return
        live.set_user_attr("metrics", outcome.metrics)
        if self.plan.settings.max_f1_drop is not None:
            base = outcome.metrics if trial.user_attrs.get("reference") else reference
            floor = base["f1"] - self.plan.settings.max_f1_drop
            live.set_constraint("f1_drop", floor - outcome.metrics["f1"])  # feasible when <= 0
        self.study.tell(live, outcome.values)
        shown = ", ".join(f"{n} {v:.4g}" for n, v in zip(self.names, outcome.values, strict=True))
        log.info("Trial %d: %s", trial.number, shown)

    def _adopt_finished(self) -> None:
        """Runs of trials an earlier search process finished join this sweep's parent run (the report lists them)."""
        for trial in self._trials(self.State.COMPLETE):
            if "run_id" in trial.user_attrs:
                self._join(trial.user_attrs["run_id"], trial.number)

    def _join(self, run_id: str, number: int) -> None:
        if self.parent_run_id is None:
            return
        from mlflow.tracking import MlflowClient

        from qa_compress.tracking import runs

        self._client = self._client or MlflowClient(self.tracking_uri)
        client = self._client
        if client.get_run(run_id).data.tags.get("mlflow.parentRunId") != self.parent_run_id:
            runs.mark_reused(run_id, self.parent_run_id)
        client.set_tag(run_id, f"search_trial.{self.parent_run_id}", str(number))


def outcome_of(names: Sequence[str], result: Any, error: BaseException | None) -> Outcome:
    """A job's return (its metrics and run id) as a trial's outcome; a missing objective fails the trial."""
    if error is not None:
        return Outcome(None, {}, None, f"{type(error).__name__}: {error}")
    if not isinstance(result, Mapping):
        return Outcome(None, {}, None, f"the job returned {type(result).__name__}, not its metrics")
    metrics = {k: float(v) for k, v in result.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    run_id = result.get("run_id")
    missing = [n for n in names if n not in metrics or metrics[n] != metrics[n]]
    if missing:
        return Outcome(None, metrics, run_id, f"the job logged no {', '.join(missing)}")
    return Outcome([metrics[n] for n in names], metrics, run_id)


def trials_table(trials: Sequence, names: Sequence[str]) -> list[dict[str, Any]]:
    """The study's trials as rows (number, state, run, overrides, objective values), in trial order."""
    rows = []
    for t in sorted(trials, key=lambda t: t.number):
        if "duplicate_of" in t.user_attrs or "overrides" not in t.user_attrs:
            continue
        row = {
            "trial": t.number,
            "state": t.state.name,
            "reference": bool(t.user_attrs.get("reference")),
            "refines_front": bool(t.user_attrs.get("refines_front")),
            "run_id": t.user_attrs.get("run_id"),
            "overrides": list(t.user_attrs["overrides"]),
        }
        row.update({n: (t.values[i] if t.values else None) for i, n in enumerate(names)})
        rows.append(row)
    return rows


def write_trials(rows: list[dict[str, Any]], plan: Plan, path: Path) -> None:
    """The search's trials and what they searched, as the report reads them (search/trials.json)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "study": plan.study,
        "storage": store.masked(plan.storage),
        "space": plan.space.describe(),
        "fixed": list(plan.space.fixed),
        "objectives": plan.settings.objectives,
        "sampler": plan.settings.sampler,
        "refine": plan.settings.refine,
        "max_f1_drop": plan.settings.max_f1_drop,
        "trials": rows,
    }
    path.write_text(json.dumps(document, indent=1))
