"""Front refinement: which untried neighbour of the front a search should run next.

A compression space is a grid of a few options, and its best configurations sit next to each other
(the amount beside a good amount, the other INT8 runtime for a good pruning). A sampler models the
space as a whole and keeps missing single cells of it; refinement steps from each configuration on
the front to its neighbours (one searched choice changed, a numeric choice by one step) and runs
first the one whose predicted outcome adds most hypervolume. A change's effect is predicted from
the finished trials that differ by exactly that change (accuracy: the mean difference; speed and
size: the mean ratio); a change never seen yet is assumed to improve every objective slightly, so
unexplored directions are tried before ones known to lose. Pure functions over trials' parameters
and objective values: the search (`search.Search`) feeds them and enqueues what they choose.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from qa_compress.sweep import front

RATIO_OBJECTIVES = frozenset({"latency_ms", "latency_bs1_ms", "speedup", "size_mb"})  # change by a factor
UNSEEN_GAIN = 0.02  # an unseen change is assumed to improve each objective by this share of its spread


@dataclass(frozen=True)
class Point:
    """A finished trial as refinement sees it: its study parameters and objective values."""

    params: Mapping[str, object]
    values: Sequence[float]


Change = tuple[str, object, object]  # (study parameter, from, to)


def change(a: Mapping[str, object], b: Mapping[str, object]) -> Change | None:
    """The single parameter in which `b` differs from `a`; None when they differ in none or in several."""
    if a.keys() != b.keys():
        return None
    differing = [name for name in a if a[name] != b[name]]
    if len(differing) != 1:
        return None
    name = differing[0]
    return name, a[name], b[name]


def effects(points: Sequence[Point], names: Sequence[str]) -> dict[Change, list[float]]:
    """Each observed single change: its mean effect on every objective (a difference, or a ratio for speed and size)."""
    seen: dict[Change, list[list[float]]] = {}
    ratios = [name in RATIO_OBJECTIVES for name in names]
    for a in points:
        for b in points:
            moved = change(a.params, b.params)
            if moved is None or any(r and va <= 0 for r, va in zip(ratios, a.values, strict=True)):
                continue  # no single change, or no ratio to take from a value that is not positive
            seen.setdefault(moved, []).append(
                [vb / va if r else vb - va for r, va, vb in zip(ratios, a.values, b.values, strict=True)]
            )
    return {moved: [statistics.fmean(column) for column in zip(*rows, strict=True)] for moved, rows in seen.items()}


def predict(
    origin: Point,
    moved: Change | None,
    known: Mapping[Change, list[float]],
    names: Sequence[str],
    directions: Sequence[str],
    spread: Sequence[float],
) -> list[float]:
    """Where `origin` changed by `moved` is expected to land."""
    if moved in known:
        return [
            v * e if name in RATIO_OBJECTIVES else v + e
            for name, v, e in zip(names, origin.values, known[moved], strict=True)
        ]
    return [
        v + UNSEEN_GAIN * s if d == front.MAXIMIZE else v - UNSEEN_GAIN * s
        for v, d, s in zip(origin.values, directions, spread, strict=True)
    ]


def next_candidate(
    points: Sequence[Point],
    names: Sequence[str],
    directions: Sequence[str],
    reference: Sequence[float],
    neighbours: Callable[[Mapping[str, object]], list[Mapping[str, object]]],
    rng: random.Random,
) -> Mapping[str, object] | None:
    """The untried neighbour of a front point with the largest predicted hypervolume gain; None if none gains.

    `neighbours(params)` returns the untried configurations one step from `params` (their study parameters).
    """
    inside = [p for p in points if front.hypervolume([p.values], reference, directions) > 0]
    if not inside:
        return None
    members = [inside[i] for i in front.front([p.values for p in inside], directions)]
    known = effects(points, names)
    spread = [max(column) - min(column) for column in zip(*(p.values for p in points), strict=True)]
    current = [list(p.values) for p in members]
    base = front.hypervolume(current, reference, directions)
    scored = []
    for member in members:
        for candidate in neighbours(member.params):
            guess = predict(member, change(member.params, candidate), known, names, directions, spread)
            scored.append((front.hypervolume([*current, guess], reference, directions) - base, candidate))
    top = max((gain for gain, _ in scored), default=0.0)
    if top <= 0:
        return None
    return rng.choice([candidate for gain, candidate in scored if gain >= top - 1e-12 * max(1.0, base)])
