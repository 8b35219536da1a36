"""The quick start exactly as the README runs it: offline, one fine-tune, a sweep that shows a trade-off."""

import pytest

from qa_compress.sweep.plots import PLOTS

from .conftest import expected_metrics, logged_runs, run_in_process


@pytest.mark.slow
def test_quickstart_learns_the_task_and_shows_what_compression_costs(tmp_path):
    result = run_in_process(["-m", "experiment=quickstart"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]

    client, logged = logged_runs(tmp_path)
    (parent,) = [r for r in logged if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in logged if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.status == "FINISHED" and len(children) == 6
    assert all(c.info.status == "FINISHED" for c in children)
    assert sorted(c.data.tags["baseline_cache"] for c in children) == ["hit"] * 5 + ["miss"]
    for child in children:
        assert expected_metrics(child) <= set(child.data.metrics)
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"config.yaml", "predictions.json", "na_probs.json", "metrics.json"} <= artifacts

    by_choice = {
        (c.data.params["pruning.amount"], c.data.params["quantization.name"]): c.data.metrics for c in children
    }
    baseline = by_choice[("0.0", "none")]
    assert baseline["HasAns_f1"] > 50  # it really learned to find answers...
    assert baseline["f1"] > baseline["always_no_answer_f1"] + 20  # ...and is far above the trivial floor
    assert by_choice[("0.0", "onnx_int8")]["size_mb"] < 0.7 * baseline["size_mb"]
    # Its recommendation is a compressed model: INT8 through ONNX Runtime is faster on every CPU measured.
    (fastest,) = [c for c in children if "fastest" in c.data.tags["recommended"].split(",")]
    assert fastest.data.tags["uncompressed"] == "false" and fastest.data.metrics["speedup"] > 1
    assert by_choice[("0.6", "none")]["sparsity"] == pytest.approx(0.6, abs=0.01)

    # The sweep's report is in its directory and in the parent run.
    files = {"report.md", "report.csv", *PLOTS}
    assert files <= {p.name for p in (tmp_path / "sweep").iterdir()}
    assert {f"report/{name}" for name in files} <= {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
