"""The search benchmark's own logic: searches judged on one side-by-side timing of the grid's configurations."""

import pytest

from .conftest import load_benchmark


@pytest.fixture(scope="module")
def search_benchmark():
    return load_benchmark("search")


def test_a_search_is_judged_on_the_side_by_side_timing_where_identical_work_no_longer_looks_faster(search_benchmark):
    grid = [
        ("base", {"f1": 61.0, "speedup": 1.00}),  # the uncompressed model
        ("int8", {"f1": 60.0, "speedup": 1.40}),
        ("int8-pruned", {"f1": 59.0, "speedup": 1.72}),  # the same work as int8, timed at a lucky moment
        ("structured", {"f1": 53.0, "speedup": 2.10}),  # below the always-no-answer F1: not timed again
    ]
    times = {"base": [100.0] * 5, "int8": [62.0, 63.0, 64.0, 62.0, 63.0], "int8-pruned": [61.0, 64.0, 63.0, 65.0, 64.0]}
    side = search_benchmark.SideBySide(times, reference="base")
    assert side.speedups == pytest.approx({"base": 1.0, "int8": 100 / 63, "int8-pruned": 100 / 64})
    judged = dict(side.judged(grid))
    assert judged["structured"]["speedup"] == 2.10  # keeps its job's own timing
    reference = [54.0, 1.0]  # always-no-answer F1, the uncompressed speed
    found_int8 = [grid[0], grid[1]]
    found_lucky = [grid[0], grid[2]]
    judge = search_benchmark.Judge(grid, reference, 61.0, 2.0, side)
    verdicts = judge(found_int8, found_lucky)
    on_side, as_timed = verdicts["side by side"], verdicts["as timed by the jobs"]
    assert on_side.share == pytest.approx(1.0)  # side by side the lucky job adds nothing: int8 is the front
    assert as_timed.share < 0.9  # as timed, the search is blamed for missing a timing draw
    assert as_timed.met and as_timed.found[0] == "int8-pruned"
    assert not on_side.met and on_side.indistinct  # 1.56x against 1.59x: the rounds cannot tell them apart
    assert judge.verdict(found_int8, "side by side") == search_benchmark.Verdict(on_side.share)
    assert search_benchmark.reached([verdicts], "side by side") == 1
    assert search_benchmark.reached([verdicts], "as timed by the jobs") == 0
    assert search_benchmark.not_slower([verdicts]) == 1
    assert search_benchmark.constraint_cell(on_side) == "1.56× at F1 59.00 (missed, the rounds cannot tell it slower)"
