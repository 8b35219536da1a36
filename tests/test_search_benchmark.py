"""The search benchmark's own logic: timing noise among configurations that do the same work, pooled."""

import pytest

from qa_compress import front, report

from .conftest import load_benchmark


@pytest.fixture(scope="module")
def search_benchmark():
    return load_benchmark("search")


def _job(pruning: str, amount: float, quantization: str, f1: float, speedup: float) -> report.Job:
    return report.Job(
        run_id=f"{pruning}-{amount}-{quantization}", name="", model="m", dataset="d", pruning=pruning,
        pruning_label=f"{pruning} {amount}", quantization=quantization, status="FINISHED", uncompressed=False,
        metrics={"f1": f1, "speedup": speedup},
        params={"pruning.name": pruning, "pruning.amount": str(amount), "quantization.name": quantization},
    )  # fmt: skip


def test_same_work_jobs_share_their_median_speed_and_only_the_most_accurate_stays_on_the_front(search_benchmark):
    jobs = [
        _job("none", 0.0, "dynamic_int8", 60.0, 1.40),
        _job("l1_unstructured", 0.1, "dynamic_int8", 59.0, 1.72),  # the luckiest timing of the same work
        _job("global_magnitude", 0.3, "dynamic_int8", 58.0, 1.55),
        _job("structured", 0.5, "dynamic_int8", 55.0, 2.10),  # other shapes: its own speed
        _job("none", 0.0, "none", 61.0, 1.00),
    ]
    assert search_benchmark.same_work_spread(jobs) == ["none 1.00–1.00× (1 jobs)", "dynamic_int8 1.40–1.72× (3 jobs)"]
    reference = [54.0, 1.0]  # always-no-answer F1, the uncompressed speed
    pooled = search_benchmark.pool(jobs, reference, reference_f1=61.0, drop=2.0)
    assert pooled.medians == {"none": 1.00, "dynamic_int8": 1.55}
    points = [[job.metrics["f1"], job.metrics["speedup"]] for job in jobs]
    assert pooled.points(points) == [[60.0, 1.55], [59.0, 1.55], [58.0, 1.55], [55.0, 2.10], [61.0, 1.00]]
    raw_front = {tuple(points[i]) for i in front.front(points, search_benchmark.DIRECTIONS)}
    assert (59.0, 1.72) in raw_front  # measured, the luckiest timing sits on the front
    pooled_points = pooled.points(points)
    pooled_front = {tuple(pooled_points[i]) for i in front.front(pooled_points, search_benchmark.DIRECTIONS)}
    assert pooled_front == {(61.0, 1.00), (60.0, 1.55), (55.0, 2.10)}
    assert pooled.front_size == 3
    assert pooled.hypervolume == pytest.approx(front.hypervolume(pooled_points, reference, search_benchmark.DIRECTIONS))
    metrics = pooled.metrics([job.metrics for job in jobs])
    fastest = search_benchmark.fastest_within(metrics, reference_f1=61.0, drop=2.0)
    assert fastest == pooled.best == {"f1": 60.0, "speedup": 1.55}  # the most accurate of the same work, pooled
    assert search_benchmark.as_fast(fastest, pooled.best) and not search_benchmark.as_fast(None, pooled.best)
