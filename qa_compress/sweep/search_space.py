"""The search space of `hydra/sweeper=pareto`, read from Hydra's sweep syntax, and the trials in it.

`pruning=choice(none,global_magnitude,structured) pruning.amount=interval(0.1,0.9)` searches three
methods and an amount; the amount is asked for only in trials whose method has one, so no trial
is spent on a combination that means nothing (an amount with no pruning).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep

from qa_compress.errors import UserError

CONTINUOUS_DECIMALS = 4  # interval values are rounded to this many decimals (significant digits when log-scaled)


@dataclass(frozen=True)
class Param:
    """One searched key: a choice among values, or a number in a range."""

    key: str  # "pruning" (a config group) or "pruning.amount"
    kind: str  # "choice", "int" or "float"
    choices: tuple[str, ...] = ()  # choice: the values as Hydra writes them in an override
    low: float = 0.0
    high: float = 0.0
    step: float | None = None  # a range's step; None: continuous
    log: bool = False

    @property
    def group(self) -> str:
        """The config group the key belongs to ("pruning" for both "pruning" and "pruning.amount")."""
        return self.key.split(".", 1)[0]

    def describe(self) -> str:
        if self.kind == "choice":
            return f"{self.key}=choice({','.join(self.choices)})"
        bounds = f"{self.low:g},{self.high:g}"
        if self.step is not None:
            return f"{self.key}=range({bounds},step={self.step:g})"
        return f"{self.key}=interval({bounds}){' log' if self.log else ''}"


@dataclass(frozen=True)
class Space:
    """What a search varies (`params`) and what every trial keeps (`fixed` overrides)."""

    params: tuple[Param, ...]
    fixed: tuple[str, ...]
    groups: frozenset[str]  # the config's groups (model, pruning, ...), to tell `pruning=x` from `seed=x`

    def searched_groups(self) -> dict[str, Param]:
        return {p.key: p for p in self.params if p.key in self.groups and p.kind == "choice"}

    def describe(self) -> str:
        return " ".join(p.describe() for p in self.params)


def _key(override: Override) -> str:
    return override.get_key_element().lstrip("+~")


def _param(override: Override) -> Param | None:
    """A searched key from a sweep override; None when it offers one value only (then it is fixed)."""
    key, value = _key(override), override.value()
    if isinstance(value, ChoiceSweep):
        choices = tuple(dict.fromkeys(override.sweep_string_iterator()))
        return Param(key, "choice", choices) if len(choices) > 1 else None
    if isinstance(value, RangeSweep):
        values = [float(v) for v in override.sweep_string_iterator()]
        if len(values) < 2:
            return None
        integral = all(isinstance(x, int) for x in (value.start, value.stop, value.step))
        return Param(key, "int" if integral else "float", low=values[0], high=values[-1], step=float(value.step))
    if isinstance(value, IntervalSweep):
        low, high = float(value.start), float(value.end)
        if not low < high:
            raise UserError(f"{key}=interval({value.start},{value.end}): the lower end must be below the upper end")
        log = "log" in value.tags
        if log and low <= 0:
            raise UserError(f"{key}=tag(log,interval({value.start},{value.end})): a log scale needs a positive range")
        integral = "int" in value.tags
        return Param(key, "int" if integral else "float", low=low, high=high, log=log)
    raise UserError(f"{override.input_line}: the pareto sweeper searches choice(), range() and interval() only")


def parse(arguments: Sequence[str], config_params: Mapping[str, str] | None, groups: Sequence[str]) -> Space:
    """The space from `hydra.sweeper.params` (config) and the command line (which wins for a key given twice).

    Raises UserError when nothing is searched: a search over one point is a single run.
    """
    merged = {}
    for text in [f"{k}={v}" for k, v in (config_params or {}).items()] + list(arguments):
        merged[text.split("=", 1)[0].lstrip("+~")] = text
    parsed = OverridesParser.create().parse_overrides(list(merged.values()))
    params, fixed = [], []
    for override in parsed:
        param = _param(override) if override.is_sweep_override() else None
        if param is not None:
            params.append(param)
        elif override.is_sweep_override():
            fixed.append(f"{override.get_key_element()}={next(iter(override.sweep_string_iterator()))}")
        else:
            fixed.append(override.input_line)
    if not params:
        raise UserError(
            "the search space is empty: give at least one key with two or more values to search, e.g. "
            "'pruning=choice(none,global_magnitude)' 'pruning.amount=interval(0.1,0.9)'"
        )
    return Space(tuple(params), tuple(fixed), frozenset(groups))


def option_keys(space: Space, compose: Callable[[list[str]], Mapping]) -> dict[tuple[str, str], frozenset[str]]:
    """For each searched group and option, the keys its config has (what `pruning.amount` needs to apply).

    `compose(overrides)` returns the composed config; the fixed overrides of other groups are kept so an
    experiment's choices hold.
    """
    searched = space.searched_groups()
    base = [o for o in space.fixed if o.split("=", 1)[0].lstrip("+~").split(".", 1)[0] not in searched]
    keys = {}
    for group, param in searched.items():
        for option in param.choices:
            node = compose([*base, f"{group}={option}"]).get(group) or {}
            keys[(group, option)] = frozenset(node.keys())
    return keys


def check_applicable(space: Space, keys: Mapping[tuple[str, str], frozenset[str]]) -> None:
    """Refuse a searched key that no option of its searched group has (it could never be set)."""
    searched = space.searched_groups()
    for param in space.params:
        group, _, rest = param.key.partition(".")
        if group in searched and rest:
            options = searched[group].choices
            if not any(rest.split(".", 1)[0] in keys[(group, option)] for option in options):
                raise UserError(
                    f"{param.key}: no option of {group}=choice({','.join(options)}) has this key, so no trial could "
                    "set it; search a method that has it, or drop the key"
                )


def applies(key: str, chosen: Mapping[str, str], keys: Mapping[tuple[str, str], frozenset[str]]) -> bool:
    """Whether `group.key` exists under the option this trial chose for its group (always true elsewhere)."""
    group, _, rest = key.lstrip("+~").partition(".")
    if not rest or group not in chosen:
        return True
    return rest.split(".", 1)[0] in keys[(group, chosen[group])]


def numeric_scale(param: Param, space: Space) -> tuple[str, ...]:
    """A choice of three or more numbers (not a config group's options), sorted by value; () otherwise."""
    if param.kind != "choice" or len(param.choices) < 3 or param.key in space.groups:
        return ()
    try:
        values = [float(choice) for choice in param.choices]
    except ValueError:
        return ()
    if not all(math.isfinite(v) for v in values):
        return ()
    return tuple(choice for _, choice in sorted(zip(values, param.choices, strict=True)))


def format_value(param: Param, value: object) -> str:
    """A suggested value as an override writes it: choices as given, numbers without float noise."""
    if param.kind == "choice":
        return str(value)
    if param.kind == "int":
        return str(int(round(float(value))))
    number = float(value)
    if param.step is not None:
        decimals = max(0, -int(f"{param.step:e}".split("e")[1])) + 2
        return repr(round(number, decimals))
    if param.log:
        return f"{number:.{CONTINUOUS_DECIMALS}g}"
    return repr(round(number, CONTINUOUS_DECIMALS))


def config_key(job_config: Mapping) -> str:
    """Identity of a composed job config (Hydra's own section left out): two trials with one key are one job."""
    return hashlib.sha256(json.dumps(job_config, sort_keys=True, default=str).encode()).hexdigest()[:16]
