"""`hydra/sweeper=pareto`: a multi-objective Optuna search over compression settings, one trial per job.

Hydra imports this module at every start to find its plugins, so it imports nothing heavy: Optuna,
MLflow and the project's stages load only when a search runs.
"""

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

log = logging.getLogger(__name__)


@dataclass
class ParetoSweeperConf:
    """`hydra.sweeper.*` of the pareto sweeper; the search space comes from the command line (or `params`)."""

    _target_: str = "hydra_plugins.qa_compress_sweeper.pareto_sweeper.ParetoSweeper"
    objectives: Any = field(default_factory=lambda: ["f1", "latency_ms"])  # each in its natural direction
    n_trials: int = 20  # trials that run a job (the reference of constraint mode included)
    batch_size: int = 1  # trials launched together (the launcher may run them in parallel)
    sampler: str = "tpe"  # tpe (multi-objective TPE), nsga2 or random
    seed: int = 42
    n_startup_trials: int = 8  # tpe: random trials before it models the space; nsga2: its generation size
    refine: bool = True  # after the startup trials, run first the untried neighbour of the front that promises most
    max_f1_drop: Any = None  # constraint mode: the fastest configuration within this many F1 points of uncompressed
    storage: Any = None  # Optuna storage URL; null = optuna.db beside the MLflow SQLite store
    study_name: Any = None  # null = named after the search, so the same command continues the same study
    params: Any = None  # search space in the config, as key: sweep expression (the command line wins)


ConfigStore.instance().store(group="hydra/sweeper", name="pareto", node=ParetoSweeperConf, provider="qa_compress")


class ParetoSweeper(Sweeper):
    """Ask Optuna for a batch of trials, check and launch them as jobs, tell it what each job measured."""

    def __init__(self, **options: Any) -> None:  # the options are read from the config a search is planned from
        self.config: Any = None
        self.launcher = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        from qa_compress.errors import UserError

        try:
            return self._search()
        except UserError as err:
            sys.stderr.write(f"{str(err).strip()}\n")
            sys.exit(1)

    def _search(self) -> list:
        from hydra.core.utils import JobStatus
        from omegaconf import OmegaConf

        from qa_compress.sweep import search, search_plan, search_space
        from qa_compress.sweep.callback import callback_for, check_jobs, reference_job
        from qa_compress.sweep.callback import composed as compose_job
        from qa_compress.tracking import runs, store

        config = self.config
        config_name = config.hydra.job.config_name
        uri = store.tracking_uri(OmegaConf.select(config, "tracking.uri"), config.paths.mlruns_dir)
        sweep_dir = Path(config.hydra.sweep.dir)
        callback = callback_for(sweep_dir)

        def composed(overrides: list[str]) -> dict:
            return compose_job(config_name, overrides)

        plan = callback.search_plan if callback is not None else None  # checked before the parent run opened
        plan = plan or search_plan.plan(config, composed, uri)
        names = list(plan.settings.objectives)
        _, reference = reference_job(config_name, list(plan.space.fixed))

        def launch(batch: list[list[str]], first_index: int) -> list[search.Outcome]:
            returns = self.launcher.launch(batch, initial_job_idx=first_index)
            outcomes = []
            for ret in returns:
                if ret.status == JobStatus.COMPLETED:
                    outcomes.append(search.outcome_of(names, ret.return_value, None))
                else:
                    outcomes.append(search.outcome_of(names, None, ret._return_value))
            return outcomes

        def check(batch: list[list[str]]) -> None:
            check_jobs(config, config_name, batch)

        runner = search.Search(
            plan,
            launch,
            check,
            lambda overrides: search_space.config_key(composed(overrides)),
            reference,
            runs.sweep_parent(sweep_dir),
            uri,
        )
        log.info("Study %s in %s: %s", plan.study, store.masked(plan.storage), plan.space.describe())
        finished = runner.run()
        rows = search.trials_table(runner.study.get_trials(deepcopy=False), names)
        search.write_trials(rows, plan, sweep_dir / search.TRIALS_FILE)
        if runner.parent_run_id is not None:
            from mlflow.tracking import MlflowClient

            MlflowClient(uri).log_artifact(runner.parent_run_id, str(sweep_dir / search.TRIALS_FILE), "search")
        if callback is not None:
            callback.planned = len(runner.counted())  # fewer than n_trials when the space ran out
        return finished
