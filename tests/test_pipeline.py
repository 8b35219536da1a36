"""Whole jobs and sweeps through Hydra's real entry point, in this process, read back from MLflow."""

import json
import pickle
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch
from transformers import AutoModelForQuestionAnswering, BertForQuestionAnswering

from qa_compress import quantize
from qa_compress.data import features, squad
from qa_compress.errors import UserError
from qa_compress.evaluate import eval_squad_v2, predict
from qa_compress.job import checks, stages
from qa_compress.quantize.backends import onnxrt
from qa_compress.serve import export
from qa_compress.tracking import cache

from .conftest import (
    children,
    compose_config,
    compressed,
    expected_metrics,
    logged_runs,
    parents,
    run_cli,
    run_in_process,
    save_tiny,
    store_uri,
    tiny_bert_config,
    tiny_job_args,
)


@pytest.mark.slow
def test_sweep_trains_once_and_logs_every_job_under_one_parent(tiny_sweep):
    tmp_path = tiny_sweep
    client, _ = logged_runs(tmp_path)
    (parent,) = parents(tmp_path)
    jobs = children(tmp_path)
    assert len(jobs) == 4 and parent.info.status == "FINISHED"
    assert {c.data.tags["mlflow.parentRunId"] for c in jobs} == {parent.info.run_id}
    assert all(c.info.status == "FINISHED" for c in jobs)

    caches = sorted(c.data.tags["baseline_cache"] for c in jobs)
    assert caches == ["hit", "hit", "hit", "miss"]  # one fine-tune for the whole sweep
    assert len({c.data.tags["baseline_key"] for c in jobs}) == 1
    assert len([p for p in (tmp_path / "cache" / "baselines").iterdir() if p.is_dir()]) == 1

    names = {c.info.run_name for c in jobs}
    assert "0.5 | dynamic_int8 | l1_unstructured | tiny" in names
    for job in jobs:
        assert expected_metrics(job) <= set(job.data.metrics), expected_metrics(job) - set(job.data.metrics)
        assert job.data.params["pruning.amount"] in {"0.0", "0.5"}
        assert job.data.params["dataset.max_seq_length"] == "64"
        for tag in (
            "git_commit",
            "model",
            "pruning",
            "pruning_label",
            "quantization",
            "versions",
            "num_threads",
            "config_hash",
            "device",
            "uncompressed",
        ):
            assert tag in job.data.tags
        artifacts = {a.path for a in client.list_artifacts(job.info.run_id)}
        assert {"config.yaml", "predictions.json", "na_probs.json", "metrics.json", "layer_sparsity.csv"} <= artifacts
        inputs = {i.dataset.name: i.dataset.digest for i in client.get_run(job.info.run_id).inputs.dataset_inputs}
        assert set(inputs) == {"squad_json/train", "squad_json/validation"}
        assert all(len(digest) == 16 for digest in inputs.values())
    by_choice = {(c.data.params["pruning.amount"], c.data.params["quantization.name"]): c for c in jobs}
    assert by_choice[("0.5", "none")].data.metrics["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert by_choice[("0.0", "none")].data.metrics["sparsity"] == 0.0
    assert by_choice[("0.0", "none")].data.tags["uncompressed"] == "true"
    assert by_choice[("0.0", "dynamic_int8")].data.tags["uncompressed"] == "false"
    int8, fp32 = by_choice[("0.0", "dynamic_int8")].data.metrics, by_choice[("0.0", "none")].data.metrics
    assert int8["size_mb"] < fp32["size_mb"]
    trainer = next(c for c in jobs if c.data.tags["baseline_cache"] == "miss")
    assert len(client.get_metric_history(trainer.info.run_id, "train/loss")) == 2  # a training curve


@pytest.mark.slow
def test_saved_models_are_safetensors_and_load_back_to_the_same_answers(tiny_sweep, tokenizer, squad_files):
    client, _ = logged_runs(tiny_sweep)
    for job in children(tiny_sweep):
        saved = {a.path for a in client.list_artifacts(job.info.run_id, "model")}
        quantization = job.data.params["quantization.name"]
        weights = "model/model.int8.safetensors" if quantization == "dynamic_int8" else "model/model.safetensors"
        assert {weights, f"model/{quantize.SAVED_RECORD}"} <= saved
        assert not any(p.endswith((".bin", ".pt", ".pkl")) for p in saved)
    examples = squad.load_squad_json(squad_files[1], "k").dataset
    windows = examples.map(
        features.prepare_eval_features,
        batched=True,
        remove_columns=examples.column_names,
        fn_kwargs={"tokenizer": tokenizer, "max_seq_length": 64, "doc_stride": 16},
    )
    directories = sorted((tiny_sweep / "sweep").glob("*/model"))
    assert len(directories) == 4
    for directory in directories:
        model = quantize.load(directory)
        inputs = predict.forward_inputs(windows, ["input_ids", "attention_mask"])
        start, end = predict.logits(model, inputs, 64, torch.device("cpu"))
        answers = predict.decode(examples, windows, start, end).answers
        assert answers == json.loads((directory.parent / "predictions.json").read_text())


@pytest.mark.slow
def test_logged_predictions_rescore_to_the_logged_metrics_with_the_official_interface(tiny_sweep, squad_files, capsys):
    job = next(c for c in children(tiny_sweep) if c.info.run_name == "0 | none | l1_unstructured | tiny")
    local = mlflow.artifacts.download_artifacts(
        run_id=job.info.run_id, tracking_uri=store_uri(tiny_sweep), dst_path=str(tiny_sweep / "dl")
    )
    capsys.readouterr()
    eval_squad_v2.main([str(squad_files[1]), f"{local}/predictions.json", "--na-prob-file", f"{local}/na_probs.json"])
    official = json.loads(capsys.readouterr().out)
    assert official["f1"] == pytest.approx(job.data.metrics["f1"])
    assert official["best_f1"] == pytest.approx(job.data.metrics["best_f1"])
    per_question = json.loads((Path(local) / "question_f1.json").read_text())  # what the ΔF1 interval resamples
    assert len(per_question) == len(json.loads((Path(local) / "predictions.json").read_text()))
    assert sum(per_question.values()) / len(per_question) == pytest.approx(job.data.metrics["f1"])


@pytest.mark.slow
def test_a_failing_job_does_not_lose_the_others(tmp_path, tiny_distilbert_dir, tokenizer, squad_files):
    # One segment embedding where the tokenizer marks the context as segment 1: every check passes, the
    # first window fails inside the model.
    config = tiny_bert_config(tokenizer, type_vocab_size=1)
    broken = save_tiny(BertForQuestionAnswering, config, tokenizer, tmp_path / "damaged_model")
    args = [
        a for a in tiny_job_args(tiny_distilbert_dir, squad_files, "benchmark.enabled=false") if "name_or_path" not in a
    ]
    result = run_cli(["-m", *args, f"model.name_or_path={tiny_distilbert_dir},{broken}"], tmp_path)
    assert result.returncode != 0
    statuses = {c.data.params["model.name_or_path"]: c.info.status for c in children(tmp_path)}
    assert statuses == {str(tiny_distilbert_dir): "FINISHED", str(broken): "FAILED"}
    assert "1 of 2 job(s) did not finish" in result.stderr
    failed = next(c for c in children(tmp_path) if c.info.status == "FAILED")
    assert failed.data.tags["error"] and f"{failed.info.run_name}: FAILED" in result.stderr
    (parent,) = parents(tmp_path)
    assert parent.info.status == "FAILED"
    assert (tmp_path / "sweep" / "report.csv").is_file()  # the report is written all the same, as the process ends
    assert "Sweep report failed" not in result.stderr


class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


@pytest.mark.slow
def test_rerun_skips_finished_jobs_a_planted_pickle_never_runs_and_runs_are_reproducible(
    tmp_path, tiny_distilbert_dir, squad_files
):
    args = [
        "-m",
        *tiny_job_args(
            tiny_distilbert_dir, squad_files, "pruning=l1_unstructured", "pruning.amount=0.3", "benchmark.enabled=false"
        ),
    ]
    assert run_in_process(args, tmp_path).returncode == 0
    first = (tmp_path / "sweep" / "0" / "predictions.json").read_bytes()
    first_na = (tmp_path / "sweep" / "0" / "na_probs.json").read_bytes()

    again = run_in_process(args, tmp_path)  # the same sweep again: nothing to do
    assert again.returncode == 0, again.stderr[-2000:]
    assert "1 job(s) skipped" in again.stdout
    assert len([c for c in compressed(tmp_path) if c.info.status == "FINISHED"]) == 1  # no duplicate
    (reference,) = [c for c in children(tmp_path) if c.data.tags["uncompressed"] == "true"]  # evaluated once
    assert len(parents(tmp_path)) == 1 and "reported under that parent run" in again.stdout  # no empty parent
    assert len((tmp_path / "sweep" / "report.csv").read_text().splitlines()) == 1 + 2  # the job and its reference

    # An attacker swaps the cached baseline's weights for a pickle and fixes up the manifest.
    (entry,) = [p for p in (tmp_path / "cache" / "baselines").iterdir() if p.is_dir()]
    marker = tmp_path / "pwned.txt"
    (entry / "model.safetensors").unlink()
    (entry / "pytorch_model.bin").write_bytes(pickle.dumps(_Exploit(marker)))
    manifest = json.loads((entry / cache.MANIFEST).read_text())
    manifest.pop("model.safetensors")
    manifest["pytorch_model.bin"] = cache.file_sha256(entry / "pytorch_model.bin")
    (entry / cache.MANIFEST).write_text(json.dumps(manifest))

    result = run_in_process([*args, "force=true"], tmp_path)  # force=true reruns a finished job
    assert result.returncode == 0, result.stderr[-2000:]
    assert len([c for c in compressed(tmp_path) if c.info.status == "FINISHED"]) == 2
    assert not marker.exists()  # the pickle never ran
    assert "is damaged (missing file model.safetensors)" in result.stdout + result.stderr
    newest = max(compressed(tmp_path), key=lambda r: r.info.start_time)
    assert newest.data.tags["baseline_cache"] == "miss"  # rebuilt from scratch
    # Same config, same seed, same CPU: the retrained model predicts the same, byte for byte.
    assert (tmp_path / "sweep" / "0" / "predictions.json").read_bytes() == first
    assert (tmp_path / "sweep" / "0" / "na_probs.json").read_bytes() == first_na
    assert newest.data.params["seed"] == "42"
    for tag in ("versions", "device", "num_threads", "git_commit"):
        assert newest.data.tags[tag]


@pytest.mark.slow
def test_structured_pruning_with_gradient_importance_recovery_and_onnx_logs_what_it_did(
    tmp_path, tiny_bert_dir, squad_files
):
    args = tiny_job_args(
        tiny_bert_dir,
        squad_files,
        "pruning=structured",
        "pruning.finetune_steps=2",
        "pruning.finetune_batch_size=4",
        "pruning.importance=gradient",
        "pruning.importance_batches=2",
        "quantization=onnx_int8",
        "save_model=true",
        fine_tune=False,
    )
    result = run_in_process(["-m", *args], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    client, _ = logged_runs(tmp_path)
    (run,) = compressed(tmp_path)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "heads 0.25 ffn 0.5 +2 steps | onnx_int8 | structured | tiny"
    m = run.data.metrics
    for key in (
        "size_mb",
        "size_gzip_mb",
        "params_nonzero",
        "params_total",
        "latency_ms",
        "f1_before_recovery",
        "HasAns_f1_before_recovery",
        "recovery_train_loss",
    ):
        assert key in m, key
    assert m["sparsity_before_recovery"] == m["sparsity"] > 0.2  # recovery kept the pruning
    assert m["ffn_neurons_removed"] == 2 * 32  # half of each layer's 64 (2 heads: a quarter rounds to 0)
    dense = sum(p.numel() for p in AutoModelForQuestionAnswering.from_pretrained(str(tiny_bert_dir)).parameters())
    assert dense - m["params_total"] >= 2 * (2 * 32 * 32 + 32)  # 32 neurons' in and out weights, biases
    local = client.download_artifacts(run.info.run_id, "pruning/layer_sparsity.json", str(tmp_path / "dl"))
    assert len(json.loads(Path(local).read_text())["data"]) == m["prunable_layers"]
    assert f"model/{onnxrt.QUANTIZED_FILE}" in {a.path for a in client.list_artifacts(run.info.run_id, "model")}


def _answers_of_saved_model(directory: Path, validation: Path, tokenizer, cache_dir: Path) -> dict[str, str]:
    examples = squad.load_squad_json(validation, "k").dataset
    windows = examples.map(
        features.prepare_eval_features,
        batched=True,
        remove_columns=examples.column_names,
        fn_kwargs={"tokenizer": tokenizer, "max_seq_length": 64, "doc_stride": 16},
    )
    model = quantize.load(directory, num_threads=1)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    start, end = predict.logits(model, predict.forward_inputs(windows, names), 64, torch.device("cpu"))
    return predict.decode(examples, windows, start, end).answers


@pytest.mark.slow
def test_calibrated_runtimes_run_through_run_py_calibrate_on_training_data_and_reload(
    tmp_path, tiny_bert_dir, squad_files, tokenizer
):
    quantizations = ("openvino_fp32", "openvino_int8", "onnx_static_int8")
    args = tiny_job_args(
        tiny_bert_dir, squad_files, f"quantization={','.join(quantizations)}", "save_model=true", fine_tune=False
    )
    result = run_in_process(["-m", *args], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    client, _ = logged_runs(tmp_path)
    jobs = {job.data.params["quantization.name"]: job for job in compressed(tmp_path)}
    assert set(jobs) == set(quantizations) and all(j.info.status == "FINISHED" for j in jobs.values())
    train, validation = squad_files
    for name, job in jobs.items():
        inputs = {i.dataset.name: i for i in client.get_run(job.info.run_id).inputs.dataset_inputs}
        if name == "openvino_fp32":
            assert "squad_json/calibration" not in inputs  # nothing to calibrate
            continue
        calibration = inputs["squad_json/calibration"]
        assert {t.key: t.value for t in calibration.tags}["mlflow.data.context"] == "calibration"
        assert str(train) in calibration.dataset.source and str(validation) not in calibration.dataset.source
        assert job.data.metrics["calibration_windows"] > 0
        assert job.data.params["quantization.calibration_samples"] == "300"
    assert jobs["openvino_int8"].data.metrics["size_mb"] < 0.6 * jobs["openvino_fp32"].data.metrics["size_mb"]
    assert jobs["onnx_static_int8"].data.metrics["static_int8_matmuls"] > 0  # activations really quantized
    assert jobs["onnx_static_int8"].data.metrics["float_matmuls"] == 0
    for directory in sorted((tmp_path / "sweep").glob("*/model")):
        assert not any(p.suffix in {".pt", ".pkl", ".pth"} for p in directory.iterdir())
        logged = json.loads((directory.parent / "predictions.json").read_text())
        assert _answers_of_saved_model(directory, validation, tokenizer, tmp_path / "cache") == logged
    # Exported, the OpenVINO INT8 model answers through MLflow's pyfunc as the job did.
    run_id = jobs["openvino_int8"].info.run_id
    model_uri, version = export.export(client, run_id, "tiny-openvino", tmp_path / "export")
    examples = squad.load_squad_json(validation, "k").dataset
    table = pd.DataFrame({k: examples[k] for k in ("id", "question", "context")})
    served = mlflow.pyfunc.load_model(f"models:/tiny-openvino/{version}").predict(table)
    logged = json.loads(Path(client.download_artifacts(run_id, "predictions.json", str(tmp_path / "p"))).read_text())
    assert dict(zip(served["id"], served["answer"], strict=True)) == logged


@pytest.mark.slow
def test_accuracy_control_and_quantization_aware_training_log_what_they_did(tmp_path, tiny_bert_dir, squad_files):
    train, _ = squad_files
    controlled = tiny_job_args(
        tiny_bert_dir,
        squad_files,
        "quantization=openvino_int8",
        "quantization.max_f1_drop=1.0",
        "quantization.held_out_questions=6",
        "quantization.calibration_samples=16",
        fine_tune=False,
    )
    assert run_in_process(controlled, tmp_path).returncode == 0
    aware = tiny_job_args(
        tiny_bert_dir,
        squad_files,
        "quantization=openvino_int8",
        "quantization.qat_steps=2",
        "quantization.qat_batch_size=4",
        "quantization.calibration_samples=16",
        "quantization.qat_distill_weight=0.5",
        fine_tune=False,
    )
    assert run_in_process(aware, tmp_path).returncode == 0
    client, jobs = logged_runs(tmp_path)
    by_kind = {("qat" if j.data.params["quantization.qat_steps"] != "0" else "ac"): j for j in jobs}
    ac = by_kind["ac"].data.metrics
    assert ac["held_out_f1_fp32"] - ac["held_out_f1_int8"] <= 1.0
    assert "float_matmuls" in ac and ac["calibration_windows"] == 16
    held_out = {i.dataset.name: i.dataset for i in client.get_run(by_kind["ac"].info.run_id).inputs.dataset_inputs}
    assert str(train) in held_out["squad_json/held_out"].source
    record = json.loads(Path(client.download_artifacts(by_kind["ac"].info.run_id, "quantization.json")).read_text())
    assert len(record["float_matmul_names"]) == ac["float_matmuls"]
    qat = by_kind["qat"].data.metrics
    assert qat["qat_train_steps"] == 2 and {"f1_before_qat", "HasAns_f1_before_qat", "f1"} <= set(qat)
    # Asked to distil, QAT learns the FP32 model's logits: its teacher's logits were computed (and cached) for the job.
    assert qat["qat_distill_weight"] == 0.5 and by_kind["qat"].data.tags["qat_teacher_cache"] == "miss"
    assert {kind: run.data.tags["quantization_label"] for kind, run in by_kind.items()} == {
        "ac": "accuracy control",
        "qat": "QAT",
    }
    assert by_kind["qat"].data.tags["config_hash"] != by_kind["ac"].data.tags["config_hash"]


@pytest.mark.slow
def test_compressed_builds_the_model_the_job_saved_and_refuses_a_job_that_reads_data(
    tmp_path, tiny_distilbert_dir, tokenizer, squad_files
):
    chosen = ["pruning=global_magnitude", "pruning.amount=0.5", "quantization=dynamic_int8"]
    args = tiny_job_args(
        tiny_distilbert_dir, squad_files, *chosen, "save_model=true", "benchmark.enabled=false", fine_tune=False
    )
    result = run_in_process(args, tmp_path)
    assert result.returncode == 0, result.stderr
    saved = quantize.load(tmp_path / "run" / "model")
    rebuilt = stages.compressed(checks.job(compose_config(args)), tmp_path / "work")
    inputs = tokenizer(
        ["Who wrote it?", "When?"], ["Ada wrote it in 1843.", "It was 1843."], padding=True, return_tensors="pt"
    )
    with torch.inference_mode():
        assert torch.equal(rebuilt(**inputs).start_logits, saved(**inputs).start_logits)
    recovering = compose_config(
        tiny_job_args(tiny_distilbert_dir, squad_files, *chosen, "pruning.finetune_steps=5", fine_tune=False)
    )
    with pytest.raises(UserError, match=r"pruning\.finetune_steps=5.*reads data to compress"):
        stages.compressed(checks.job(recovering), tmp_path / "work")
