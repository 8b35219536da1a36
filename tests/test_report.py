"""The sweep report: Pareto fronts, and the table and plots of a real sweep, from MLflow alone."""

import csv
import math
from dataclasses import replace

import pytest
from matplotlib.image import imread
from mlflow.tracking import MlflowClient

from qa_compress.sweep import front, plots, recommend, report, tables
from qa_compress.sweep.plots import PLOTS
from qa_compress.tracking import results

from .conftest import children, logged_runs, parents, store_uri


def pareto_front(points):
    """The report's front of (cost, F1) points."""
    return front.front(points, (front.MINIMIZE, front.MAXIMIZE))


def test_pareto_front_drops_dominated_points_and_keeps_ties():
    points = [
        (10.0, 80.0),  # 0: fastest of the accurate ones
        (12.0, 80.0),  # 1: same F1, slower -> dominated by 0
        (5.0, 60.0),  # 2: fastest overall
        (8.0, 55.0),  # 3: slower and worse than 2 -> dominated
        (20.0, 90.0),  # 4: most accurate
        (10.0, 80.0),  # 5: identical to 0 -> a tie, both stay
        (20.0, 85.0),  # 6: as slow as 4, less accurate -> dominated
    ]
    assert pareto_front(points) == [0, 2, 4, 5]
    assert pareto_front([]) == []
    assert pareto_front([(1.0, 1.0)]) == [0]


def _report_command(capsys, *args) -> tuple[int, str, str]:
    """`python -m qa_compress.report ARGS`, run through its main() in this process."""
    capsys.readouterr()
    code = report.main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _read_csv(path):
    with path.open() as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_sweep_ends_with_a_report_in_its_directory_and_parent_run(tiny_sweep):
    sweep_dir = tiny_sweep / "sweep"
    for name in PLOTS:
        image = imread(sweep_dir / name)  # decodes as a PNG
        assert image.shape[0] > 200 and image.shape[1] > 300
    table = _read_csv(sweep_dir / "report.csv")
    client, _ = logged_runs(tiny_sweep)
    jobs = {r.info.run_id: r for r in children(tiny_sweep)}
    assert len(table) == len(jobs) == 4 and {row["run_id"] for row in table} == set(jobs)
    assert {row["pruning"] for row in table} == {"l1_unstructured 0", "l1_unstructured 0.5"}
    (baseline,) = [r.data.metrics for r in jobs.values() if r.data.tags["uncompressed"] == "true"]
    for row in table:
        run = jobs[row["run_id"]]
        for metric in ("f1", "HasAns_f1", "NoAns_f1", "exact", "size_mb", "size_gzip_mb", "latency_ms", "sparsity"):
            places = tables.DECIMALS.get(metric, tables.DEFAULT_DECIMALS)
            assert float(row[metric]) == pytest.approx(run.data.metrics[metric], abs=0.51 * 10**-places)
            change = run.data.metrics[metric] - baseline[metric]
            assert float(row[f"Δ{metric}"]) == pytest.approx(change, abs=0.51 * 10**-places)
            assert len(row[metric].partition(".")[2]) <= places  # one precision per column, not 0.3125 beside 0.62
        if run.data.tags["uncompressed"] == "false":  # ΔF1's interval over the questions holds ΔF1
            assert float(row["Δf1_low"]) <= float(row["Δf1"]) <= float(row["Δf1_high"])
            assert (
                f"{float(row['Δf1']):+.2f} [{float(row['Δf1_low']):+.2f}, {float(row['Δf1_high']):+.2f}]"
                in (sweep_dir / "report.md").read_text()
            )
        else:
            assert row["Δf1_low"] == row["Δf1_high"] == "nan"  # the reference itself
        assert run.data.tags["pareto"] == (row["pareto"] or "no")  # the verdicts are tags on the runs too
        assert run.data.tags["recommended"] == (row["recommended"] or "no")
    recommended = {kind for row in table for kind in row["recommended"].split(",") if kind}
    assert recommended == {"fastest", "smallest"}
    markdown = (sweep_dir / "report.md").read_text()
    assert markdown.startswith("# Sweep report: tiny on squad_json")
    assert "pruning.amount=0.0,0.5 quantization=none,dynamic_int8" in markdown  # what was swept
    assert markdown.count("\n| ") == 1 + 4  # the jobs table: header, one line per job
    for row in table:
        assert f"`{row['run_id'][:8]}`" in markdown
    stdout = (tiny_sweep / "stdout.txt").read_text()
    assert "| # | job | F1 | ΔF1 |" in stdout and "Sweep report:" in stdout
    last = stdout.rstrip().splitlines()[-3:]  # the terminal ends with the recommendation, in three lines
    assert last[0].startswith("Fastest within 1 F1 of uncompressed") and "python run.py " in last[0]
    assert last[1].startswith("Smallest within 1 F1 of uncompressed") and "export=true" in last[1]
    assert last[2] == "No finished job loses more than 1 F1."
    fastest = next(row for row in table if "fastest" in row["recommended"])
    assert f"run {fastest['run_id']}: python run.py " in last[0]
    smallest = next(row for row in table if "smallest" in row["recommended"])  # an INT8 job: its ΔF1 has an interval
    assert f"[{float(smallest['Δf1_low']):+.2f}, {float(smallest['Δf1_high']):+.2f}]" in last[1]

    (parent,) = parents(tiny_sweep)
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    expected = {f"report/{name}" for name in (*PLOTS, "report.md", "report.csv", "table.json")}
    assert expected <= logged


def _job(number: int, f1: float, latency: float, size: float, quantization: str = "dynamic_int8", **kw) -> results.Job:
    return results.Job(
        run_id=f"run{number}",
        name=f"m | p{number} | {quantization}",
        model="m",
        dataset="squad_v2",
        pruning="l1_unstructured",
        pruning_label=f"l1_unstructured 0.{number}",
        quantization=quantization,
        status="FINISHED",
        uncompressed=kw.pop("uncompressed", False),
        metrics={"f1": f1, "latency_ms": latency, "size_mb": size},
        overrides=(f"pruning.amount=0.{number}",),
        **kw,
    )


def test_recommendation_is_the_fastest_and_smallest_within_the_allowed_loss_and_flags_the_rest():
    jobs = [
        _job(0, 80.0, 100.0, 250.0, "none", uncompressed=True),
        _job(1, 79.5, 70.0, 90.0),  # within 1 F1, fastest and smallest
        _job(2, 70.0, 40.0, 60.0),  # faster and smaller still, but loses 10 F1
        _job(3, 80.2, 90.0, 95.0),  # the most accurate, slower and larger (the reference is on no front)
        replace(_job(4, 0.0, 1.0, 1.0), status="FAILED", metrics={}),
    ]
    rec = recommend.recommend(jobs, max_f1_drop=1.0)
    assert (rec.reference.run_id, rec.fastest.run_id, rec.smallest.run_id) == ("run0", "run1", "run1")
    assert [j.run_id for j in rec.losers] == ["run2"]
    lines = tables.advice(rec)
    assert len(lines) == 3
    assert lines[0] == (
        "Fastest within 1 F1 of uncompressed (80.00): l1_unstructured 0.1 | dynamic_int8, F1 79.50 (-0.50), "
        "1.43x faster, run run1: python run.py pruning.amount=0.1 export=true"
    )
    assert "90.00 MB (2.78x smaller)" in lines[1]
    assert lines[2] == "Losing more than 1 F1 (not recommended): l1_unstructured 0.2 | dynamic_int8 (-10.00)"
    # a stricter allowance leaves only the more accurate job, and then only the reference
    assert recommend.recommend(jobs, max_f1_drop=0.1).fastest.run_id == "run3"
    strict = recommend.recommend(jobs[:3], max_f1_drop=0.1)
    assert strict.fastest.run_id == "run0" and "the uncompressed model itself" in tables.advice(strict)[0]
    # as large as the reference is no size win, however accurate (unstructured pruning keeps every weight stored)
    same_size = [jobs[0], _job(5, 80.6, 99.0, 250.0)]
    assert recommend.recommend(same_size, max_f1_drop=1.0).smallest.run_id == "run0"
    table = tables.rows(jobs, 1.0)
    assert [row["loses_more_than_1_f1"] for row in table] == [False, False, True, False, False]
    assert [row["pareto"] for row in table] == ["", "speed,size", "speed,size", "speed,size", ""]
    assert table[4]["status"] == "FAILED" and math.isnan(table[4]["f1"])
    text = tables.document(jobs, {"sweep_overrides": "pruning.amount=0.1,0.2,0.3"}, 1.0)
    assert "| 3 | l1_unstructured 0.2 \\| dynamic_int8 | 70.00 | -10.00 ⚠ |" in text


def test_with_paired_timing_the_fastest_is_the_highest_speedup_and_a_wide_spread_is_flagged():
    def timed(job, speedup, q1, q3):
        return replace(
            job, metrics={**job.metrics, "speedup": speedup, "speedup_q1": q1, "speedup_q3": q3, "speedup_iqr": q3 - q1}
        )

    jobs = [
        timed(_job(0, 80.0, 100.0, 250.0, "none", uncompressed=True), 1.0, 0.98, 1.02),
        timed(_job(1, 79.5, 70.0, 90.0), 1.4, 1.35, 1.45),  # measured alone, slower than job 2...
        timed(_job(2, 79.6, 60.0, 90.0), 1.2, 0.7, 1.9),  # ...but paired, job 1 is the faster; job 2 is noisy
    ]
    rec = recommend.recommend(jobs, 1.0)
    assert rec.fastest.run_id == "run1" and "1.40x faster" in tables.advice(rec)[0]
    table = tables.rows(jobs, 1.0)
    assert [row["x_faster"] for row in table] == [1.0, 1.4, 1.2]
    assert [row["noisy_timing"] for row in table] == [False, False, True]
    assert "noisy timing (× faster 0.70–1.90)" in tables.document(jobs, {}, 1.0)


def test_without_a_reference_the_report_says_why_nothing_is_recommended():
    jobs = [_job(1, 79.5, 70.0, 90.0), _job(2, 70.0, 40.0, 60.0)]
    assert tables.advice(recommend.recommend(jobs)) == [
        "No uncompressed job finished, so nothing can be recommended against it."
    ]
    assert all(math.isnan(row["Δf1"]) for row in tables.rows(jobs))


def test_reproduce_command_keeps_the_jobs_overrides_quoted_and_saves_the_model():
    overrides = ("experiment=quickstart", "model.name_or_path=/a dir/m", "force=true", "save_model=false")
    job = replace(_job(1, 1.0, 1.0, 1.0), overrides=overrides)
    assert results.reproduce_command(job) == (
        "python run.py experiment=quickstart 'model.name_or_path=/a dir/m' export=true"
    )
    assert results.reproduce_command(replace(job, overrides=None)) is None


def _drawn(jobs, tmp_path) -> list[dict]:
    """What each plot of `jobs` draws: its label boxes, its markers in pixels, its F1 axis and its texts."""
    import matplotlib.pyplot as plt
    from matplotlib.text import Text

    real_savefig = plt.Figure.savefig
    drawn = []

    def savefig(fig, *args, **kwargs):
        renderer = fig.canvas.get_renderer()
        (ax,) = fig.axes
        texts = [child for child in ax.get_children() if type(child).__name__ == "Annotation"]
        for text in texts:
            text.update_positions(renderer)
        markers = [c for c in ax.collections if type(c).__name__ == "PathCollection" and len(c.get_offsets())]
        drawn.append(
            {
                "boxes": [Text.get_window_extent(text, renderer) for text in texts],  # the text, not its line
                "texts": [text.get_text() for text in texts],
                "points": [ax.transData.transform(xy) for c in markers for xy in c.get_offsets()],
                "ylim": ax.get_ylim(),
                "legend": [t.get_text() for t in ax.get_legend().get_texts()] if ax.get_legend() else [],
            }
        )
        return real_savefig(fig, *args, **kwargs)

    plt.Figure.savefig = savefig
    try:
        plots.plot(jobs, tmp_path, max_f1_drop=1.0)
    finally:
        plt.Figure.savefig = real_savefig
    return drawn


def test_plot_labels_and_points_of_crowded_jobs_do_not_overlap(tmp_path):
    """Equal sizes and near-equal F1 (unstructured pruning stores every job at one size): no point hides another."""
    crowded = [_job(i, 99.0 + i * 0.01, 100.0 + i, 90.0 + (i % 3) * 0.01) for i in range(12)]
    jobs = [replace(crowded[0], uncompressed=True, quantization="none"), *crowded[1:]]
    labelled = [plot for plot in _drawn(jobs, tmp_path) if plot["boxes"]]
    assert len(labelled) == 2 and all(len(plot["boxes"]) == 12 for plot in labelled)  # latency and size, every job
    for plot in labelled:
        boxes, points = plot["boxes"], plot["points"]
        assert len(points) == 12
        for i, a in enumerate(boxes):
            assert all(not a.overlaps(b) for b in boxes[i + 1 :]), a
        for i, (ax_, ay) in enumerate(points):
            for bx, by in points[i + 1 :]:
                assert (ax_ - bx) ** 2 + (ay - by) ** 2 >= plots.MARKER_PX**2 - 1e-6, (i, ax_, ay, bx, by)


def test_the_f1_axis_shows_the_band_the_recommendation_turns_on_and_far_off_jobs_at_its_edge(tmp_path):
    jobs = [
        _job(0, 80.0, 100.0, 250.0, "none", uncompressed=True),
        _job(1, 79.6, 70.0, 90.0),
        _job(2, 78.7, 60.0, 80.0),  # loses 1.3: outside the allowed 1, inside the band
        _job(3, 52.4, 40.0, 60.0),  # far off
    ]
    jobs = [replace(j, metrics={**j.metrics, "always_no_answer_f1": 50.0}) for j in jobs]
    for plot in _drawn(jobs, tmp_path):
        low, high = plot["ylim"]
        assert 76.0 <= low < 78.7 and 80.0 < high <= 81.0  # a few points of F1, not 50 to 100
        assert "always no answer (50.00, below)" in plot["legend"]
        assert any(text in plot["texts"] for text in ("4 (52.4)", "52.4"))  # the far-off job carries its F1
        assert all(y >= 0 for _, y in plot["points"])  # drawn on the axes, not outside the figure


@pytest.mark.slow
def test_report_command_regenerates_the_report_from_mlflow_alone(tiny_sweep, tmp_path, capsys):
    out_dir = tmp_path / "again"
    code, out, err = _report_command(capsys, "--tracking-uri", store_uri(tiny_sweep), "--out-dir", str(out_dir))
    assert code == 0, err
    assert f"written to {out_dir}" in out
    assert _read_csv(out_dir / "report.csv") == _read_csv(tiny_sweep / "sweep" / "report.csv")
    assert {p.name for p in out_dir.iterdir()} == {*PLOTS, "report.md", "report.csv"}


@pytest.mark.slow
def test_report_command_refuses_what_is_not_a_sweep_in_one_line_and_writes_nothing(
    tiny_sweep, tmp_path, capsys, monkeypatch
):
    child = children(tiny_sweep)[0]
    artifacts_before = {a.path for a in MlflowClient(store_uri(tiny_sweep)).list_artifacts(child.info.run_id)}
    out_dir = tmp_path / "never"
    not_a_dir = tmp_path / "a-file.txt"
    not_a_dir.write_text("a file where a directory or a store should be")
    monkeypatch.chdir(tmp_path)  # the default store, ./mlruns, must not be created
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    store = ["--tracking-uri", store_uri(tiny_sweep)]
    for argv, message in [
        ([*store, "--parent-run-id", "nope"], "--parent-run-id=nope: no such run"),
        ([*store, "--parent-run-id", "deadbeef", "--out-dir", str(out_dir)], "--parent-run-id=deadbeef: no such run"),
        ([*store, "--parent-run-id", child.info.run_id, "--out-dir", str(out_dir)], "is not a sweep's parent run"),
        (["--tracking-uri", "foo://bar"], "--tracking-uri foo://bar: unknown scheme 'foo'"),
        (["--parent-run-id", "deadbeef"], "mlruns/mlflow.db: no such store"),
        ([*store, "--out-dir", str(not_a_dir)], f"--out-dir={not_a_dir}: cannot be written"),
        (["--tracking-uri", f"sqlite:///{not_a_dir}"], "is not an SQLite database"),
    ]:
        code, _, err = _report_command(capsys, *argv)
        assert code == 1 and message in err and len(err.strip().splitlines()) == 1, (argv, err)
    assert not out_dir.exists() and not (tmp_path / "mlruns").exists()
    after = {a.path for a in MlflowClient(store_uri(tiny_sweep)).list_artifacts(child.info.run_id)}
    assert after == artifacts_before  # nothing written into the finished job's artifacts


def test_a_change_prints_with_its_interval_only_when_it_has_one():
    assert tables.f1_change(-0.2, (-1.17, 0.76)) == "-0.20 [-1.17, +0.76]"
    assert tables.f1_change(0.0) == tables.f1_change(0.0, (math.nan, math.nan)) == "+0.00"
