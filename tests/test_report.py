"""The sweep report: Pareto fronts, and the table and plots of a real sweep, from MLflow alone."""

import csv

import pytest
from matplotlib.image import imread
from mlflow.tracking import MlflowClient

from qa_compress import report
from qa_compress.report import PLOTS, pareto_front

from .conftest import children, parents, runs, store_uri


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


def test_sweep_ends_with_a_report_in_its_directory_and_parent_run(tiny_sweep):
    sweep_dir = tiny_sweep / "sweep"
    for name in PLOTS:
        image = imread(sweep_dir / name)  # decodes as a PNG
        assert image.shape[0] > 200 and image.shape[1] > 300
    table = _read_csv(sweep_dir / "report.csv")
    client, _ = runs(tiny_sweep)
    jobs = {(r.data.tags["pruning_label"], r.data.params["quantization.name"]): r for r in children(tiny_sweep)}
    assert len(table) == len(jobs) == 4
    assert {row["pruning"] for row in table} == {"l1_unstructured 0", "l1_unstructured 0.5"}
    baseline = jobs[("l1_unstructured 0", "none")].data.metrics
    for row in table:
        run = jobs[(row["pruning"], row["quantization"])]
        for metric in ("f1", "HasAns_f1", "NoAns_f1", "exact", "size_mb", "size_gzip_mb", "latency_ms", "sparsity"):
            assert float(row[metric]) == pytest.approx(run.data.metrics[metric])
            assert float(row[f"Δ{metric}"]) == pytest.approx(run.data.metrics[metric] - baseline[metric])
    markdown = (sweep_dir / "report.md").read_text()
    assert markdown.count("\n") == 2 + 4  # header, rule, one line per job
    stdout = (tiny_sweep / "stdout.txt").read_text()
    assert markdown.splitlines()[0] in stdout and "Sweep report:" in stdout

    (parent,) = parents(tiny_sweep)
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    expected = {f"report/{name}" for name in (*PLOTS, "report.md", "report.csv", "table.json")}
    assert expected <= logged


def test_report_command_regenerates_the_report_from_mlflow_alone(tiny_sweep, tmp_path, capsys):
    out_dir = tmp_path / "again"
    code, out, err = _report_command(capsys, "--tracking-uri", store_uri(tiny_sweep), "--out-dir", str(out_dir))
    assert code == 0, err
    assert f"written to {out_dir}" in out
    assert _read_csv(out_dir / "report.csv") == _read_csv(tiny_sweep / "sweep" / "report.csv")
    assert {p.name for p in out_dir.iterdir()} == {*PLOTS, "report.md", "report.csv"}


def test_report_command_refuses_what_is_not_a_sweep_in_one_line_and_writes_nothing(
    tiny_sweep, tmp_path, capsys, monkeypatch
):
    child = children(tiny_sweep)[0]
    artifacts_before = {a.path for a in MlflowClient(store_uri(tiny_sweep)).list_artifacts(child.info.run_id)}
    out_dir = tmp_path / "never"
    monkeypatch.chdir(tmp_path)  # the default store, ./mlruns, must not be created
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    store = ["--tracking-uri", store_uri(tiny_sweep)]
    for argv, message in [
        ([*store, "--parent-run-id", "nope"], "--parent-run-id=nope: no such run"),
        ([*store, "--parent-run-id", "deadbeef", "--out-dir", str(out_dir)], "--parent-run-id=deadbeef: no such run"),
        ([*store, "--parent-run-id", child.info.run_id, "--out-dir", str(out_dir)], "is not a sweep's parent run"),
        (["--tracking-uri", "foo://bar"], "--tracking-uri foo://bar: unknown scheme 'foo'"),
        (["--parent-run-id", "deadbeef"], "mlruns/mlflow.db: no such store"),
    ]:
        code, _, err = _report_command(capsys, *argv)
        assert code == 1 and message in err and len(err.strip().splitlines()) == 1, (argv, err)
    assert not out_dir.exists() and not (tmp_path / "mlruns").exists()
    after = {a.path for a in MlflowClient(store_uri(tiny_sweep)).list_artifacts(child.info.run_id)}
    assert after == artifacts_before  # nothing written into the finished job's artifacts
