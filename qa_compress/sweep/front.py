"""Pareto fronts and hypervolumes over any number of objectives, each maximized or minimized.

Pure functions on plain numbers: the search (`search`), the sweep report and the search-vs-grid
benchmark measure a front the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

MAXIMIZE, MINIMIZE = "maximize", "minimize"


def _as_costs(point: Sequence[float], directions: Sequence[str]) -> tuple[float, ...]:
    """The point with every objective turned into a cost (lower is better)."""
    return tuple(-value if direction == MAXIMIZE else value for value, direction in zip(point, directions, strict=True))


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """Whether `a` is at least as good as `b` in every objective and better in one."""
    ca, cb = _as_costs(a, directions), _as_costs(b, directions)
    return all(x <= y for x, y in zip(ca, cb, strict=True)) and ca != cb


def front(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[int]:
    """Indices of the points no other point dominates (equal points all stay)."""
    return [
        i
        for i, point in enumerate(points)
        if not any(dominates(other, point, directions) for j, other in enumerate(points) if j != i)
    ]


def _volume(costs: list[tuple[float, ...]], reference: tuple[float, ...]) -> float:
    """Volume dominated by `costs` (all strictly below `reference`), by slicing along the first objective."""
    if not costs:
        return 0.0
    if len(reference) == 1:
        return reference[0] - min(c[0] for c in costs)
    ordered = sorted(costs)
    volume = 0.0
    for k, cost in enumerate(ordered):
        upper = ordered[k + 1][0] if k + 1 < len(ordered) else reference[0]
        if upper > cost[0]:
            volume += (upper - cost[0]) * _volume([c[1:] for c in ordered[: k + 1]], reference[1:])
    return volume


def hypervolume(points: Sequence[Sequence[float]], reference: Sequence[float], directions: Sequence[str]) -> float:
    """The volume between the points' front and `reference` (a point worse than every one worth counting).

    Points not strictly better than the reference in every objective add nothing.
    """
    ref = _as_costs(reference, directions)
    costs = [_as_costs(p, directions) for p in points]
    inside = [c for c in costs if all(x < r for x, r in zip(c, ref, strict=True))]
    kept = [inside[i] for i in front(inside, [MINIMIZE] * len(ref))]
    return _volume(sorted(set(kept)), ref)


def growth(points: Sequence[Sequence[float]], reference: Sequence[float], directions: Sequence[str]) -> list[float]:
    """Hypervolume of the first 1, 2, ... points: how the front grew as trials finished."""
    return [hypervolume(points[: n + 1], reference, directions) for n in range(len(points))]
