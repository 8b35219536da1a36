"""What a Pareto search is, checked before any trial: its settings, its space as a plan of trial overrides, the
corners of that space, and the reference point its fronts are measured from. `search` runs it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from qa_compress.errors import UserError
from qa_compress.sweep import front, search_space, study_storage
from qa_compress.sweep.search_space import Param, Space

# What a job returns (and logs) that a search may optimise, and which way is better.
OBJECTIVES = {
    "f1": front.MAXIMIZE,
    "exact": front.MAXIMIZE,
    "HasAns_f1": front.MAXIMIZE,
    "NoAns_f1": front.MAXIMIZE,
    "latency_ms": front.MINIMIZE,
    "latency_bs1_ms": front.MINIMIZE,
    "speedup": front.MAXIMIZE,
    "size_mb": front.MINIMIZE,
}
TIMED = ("latency_ms", "latency_bs1_ms", "speedup")  # objectives only a benchmarked job has
SAMPLERS = ("tpe", "nsga2", "random")


@dataclass(frozen=True)
class Settings:
    """`hydra.sweeper.*`, checked."""

    objectives: dict[str, str]
    n_trials: int
    batch_size: int
    sampler: str
    seed: int
    n_startup_trials: int
    max_f1_drop: float | None
    storage: str | None
    study_name: str | None
    refine: bool = True


def settings(sweeper: Mapping[str, Any], benchmark: Mapping[str, Any]) -> Settings:
    """The sweeper's options with their ranges checked; UserError names the first bad one."""
    raw = sweeper.get("objectives")
    names = [raw] if isinstance(raw, str) else list(raw or [])
    if not names:
        raise UserError(f"hydra.sweeper.objectives is empty: name one or more of {', '.join(OBJECTIVES)}")
    for name in names:
        if name not in OBJECTIVES:
            known = ", ".join(OBJECTIVES)
            raise UserError(f"hydra.sweeper.objectives: unknown objective {name!r} (choose from {known})")
        if name in TIMED and not benchmark.get("enabled", True):
            raise UserError(f"hydra.sweeper.objectives: {name} is measured only with benchmark.enabled=true")
        if name == "speedup" and not benchmark.get("reference", True):
            raise UserError("hydra.sweeper.objectives: speedup is measured only with benchmark.reference=true")
    if len(set(names)) < len(names):
        raise UserError(f"hydra.sweeper.objectives={names}: an objective is named twice")
    objectives = {str(name): OBJECTIVES[name] for name in names}
    ints = {}
    for key, low in (("n_trials", 1), ("batch_size", 1), ("n_startup_trials", 0), ("seed", 0)):
        value = sweeper.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < low or value >= 2**32:
            raise UserError(f"hydra.sweeper.{key}={value}: expected a whole number from {low} up")
        ints[key] = value
    sampler = str(sweeper.get("sampler"))
    if sampler not in SAMPLERS:
        raise UserError(f"hydra.sweeper.sampler={sampler}: choose from {', '.join(SAMPLERS)}")
    drop = sweeper.get("max_f1_drop")
    if drop is not None:
        if isinstance(drop, bool) or not isinstance(drop, int | float) or not 0 <= float(drop) < 100:
            raise UserError(f"hydra.sweeper.max_f1_drop={drop}: expected F1 points in [0, 100), or null")
        drop = float(drop)
    refine = sweeper.get("refine", True)
    if not isinstance(refine, bool):
        raise UserError(f"hydra.sweeper.refine={refine}: expected true or false")
    return Settings(
        objectives=objectives,
        sampler=sampler,
        max_f1_drop=drop,
        storage=sweeper.get("storage"),
        study_name=sweeper.get("study_name"),
        refine=refine,
        **ints,
    )


def study_name(space: Space, chosen: Settings, experiment: str) -> str:
    """The study a search is: its space, fixed overrides, objectives and sampler; not n_trials or batch size,
    so the same command with more trials continues it."""
    identity = {
        "experiment": experiment,
        "space": [p.describe() for p in space.params],
        "fixed": sorted(space.fixed),
        "objectives": chosen.objectives,
        "sampler": chosen.sampler,
        "seed": chosen.seed,
        "n_startup_trials": chosen.n_startup_trials,
        "max_f1_drop": chosen.max_f1_drop,
        "refine": chosen.refine,
    }
    return chosen.study_name or f"pareto-{search_space.config_key(identity)}"


@dataclass
class Plan:
    """Everything a search needs that can be checked before a trial runs."""

    space: Space
    settings: Settings
    option_keys: dict[tuple[str, str], frozenset[str]]
    storage: str
    study: str


def is_pareto(config: DictConfig) -> bool:
    return str(OmegaConf.select(config, "hydra.sweeper._target_", default="")).endswith(".ParetoSweeper")


def _inert(group: str, option: str) -> frozenset[str]:
    """Keys a method has that mean nothing to it (recovery steps without pruning): never searched with it."""
    if group != "pruning":
        return frozenset()
    from qa_compress import prune

    return prune.get(option).inert_keys if option in prune.registry else frozenset()


def plan(config: DictConfig, compose: Callable[[list[str]], Mapping], tracking_uri: str) -> Plan:
    """Read and check the search: settings, space, which keys apply to which options. Raises UserError."""
    sweeper = OmegaConf.to_container(config.hydra.sweeper, resolve=True)
    chosen = settings(sweeper, OmegaConf.to_container(config.benchmark, resolve=True))
    groups = list(config.hydra.runtime.choices.keys())
    task = [str(o) for o in config.hydra.overrides.task]
    space = search_space.parse(task, sweeper.get("params"), groups)
    keys = {
        (group, option): found - _inert(group, option)
        for (group, option), found in search_space.option_keys(space, compose).items()
    }
    search_space.check_applicable(space, keys)
    storage = study_storage.storage_url(chosen.storage, tracking_uri, config.paths.mlruns_dir)
    study_storage.check_storage(storage, "hydra.sweeper.storage" if chosen.storage else "paths.mlruns_dir")
    name = study_name(space, chosen, config.tracking.experiment_name)
    return Plan(space, chosen, keys, storage, name)


def trial_overrides(plan: Plan, suggest: Callable[[Param], object]) -> list[str]:
    """One trial's overrides: group choices first, then the keys that apply to what was chosen."""
    space = plan.space
    chosen = {}
    values = []
    for param in space.params:
        if param.key in space.searched_groups():
            chosen[param.key] = str(suggest(param))
            values.append(f"{param.key}={chosen[param.key]}")
    for param in space.params:
        if param.key in chosen or not search_space.applies(param.key, chosen, plan.option_keys):
            continue
        values.append(f"{param.key}={search_space.format_value(param, suggest(param))}")
    kept = [o for o in space.fixed if search_space.applies(o.split("=", 1)[0], chosen, plan.option_keys)]
    return kept + values


def corners(plan: Plan) -> list[list[str]]:
    """Trials at the edges of the space (every option, every bound, every choice) to check before any runs."""
    groups = plan.space.searched_groups()
    others = [p for p in plan.space.params if p.key not in groups]
    wanted = []
    for group, param in groups.items() or [("", None)]:
        for option in param.choices if param else [""]:
            for end in (0, 1):

                def pick(p: Param, option=option, group=group, end=end) -> object:
                    if p.key == group:
                        return option
                    if p.kind == "choice":
                        return p.choices[0] if p.key in groups else p.choices[-end]
                    return p.high if end else p.low

                wanted.append(trial_overrides(plan, pick))
    for param in others:
        for value in param.choices:
            wanted.append(
                trial_overrides(
                    plan,
                    lambda p, param=param, value=value: (
                        value if p is param else p.choices[0] if p.kind == "choice" else p.low
                    ),
                )
            )
    return [list(o) for o in dict.fromkeys(tuple(o) for o in wanted)]


def reference_point(objectives: Mapping[str, str], reference: Mapping[str, float]) -> list[float]:
    """What a front is measured from: always-no-answer accuracy, and the uncompressed model's speed and size.

    `reference` is the uncompressed job's metrics (which include `always_no_answer_f1`).
    """
    floor = reference.get("always_no_answer_f1", 0.0)
    point = []
    for name in objectives:
        if name in ("f1", "exact"):
            point.append(floor)
        elif name == "HasAns_f1":
            point.append(0.0)
        elif name == "NoAns_f1":
            point.append(100.0 if floor < 100 else 0.0)
        elif name == "speedup":
            point.append(1.0)  # the uncompressed model's speed, by definition (its own paired timing is noise)
        else:
            point.append(reference.get(name, float("nan")))
    return point
