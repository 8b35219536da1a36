"""Calibration windows and held-out questions: seeded, from the training side only, part of a job's identity."""

import shutil

import pytest
from datasets import Dataset

from qa_compress import quantize
from qa_compress.data import features, squad
from qa_compress.errors import UserError
from qa_compress.evaluate import calibration
from qa_compress.job import bookkeeping, checks
from qa_compress.job.config import from_hydra

from .conftest import compose_config, tiny_job_args


def _windows(tokenizer, path, tmp_path, split="train") -> tuple[squad.Examples, Dataset]:
    examples = squad.load_squad_json(path, "k")
    return examples, features.prepare(examples.dataset, examples.digest, tokenizer, 64, 16, split, tmp_path)


def test_calibration_windows_are_a_seeded_draw_of_training_windows_only(tokenizer, squad_files, tmp_path):
    train, validation = squad_files
    _, train_windows = _windows(tokenizer, train, tmp_path)
    _, eval_windows = _windows(tokenizer, validation, tmp_path, "eval")
    first = calibration.draw(train_windows, 10, seed=0, source=str(train))
    assert len(first) == 10 and set(first.windows.column_names) == {"input_ids", "token_type_ids", "attention_mask"}
    assert calibration.draw(train_windows, 10, seed=0, source=str(train)).digest == first.digest
    assert calibration.draw(train_windows, 10, seed=1, source=str(train)).digest != first.digest
    assert len(calibration.draw(train_windows, 10_000, seed=0, source=str(train))) == len(train_windows)
    training_rows = {tuple(ids) for ids in train_windows["input_ids"]}
    evaluation_rows = {tuple(ids) for ids in eval_windows["input_ids"]}
    drawn = {tuple(ids) for ids in first.windows["input_ids"]}
    assert drawn <= training_rows and not drawn & evaluation_rows
    items = first.items(["input_ids", "attention_mask", "token_type_ids"])
    assert len(items) == 10 and all(item["input_ids"].shape == (1, int(item["attention_mask"].sum())) for item in items)


def test_held_out_questions_are_a_seeded_draw_of_training_questions(tokenizer, squad_files, tmp_path):
    train, validation = squad_files
    examples = squad.load_squad_json(train, "k")
    held = calibration.held_out_examples(examples, 5, seed=0)
    assert len(held.dataset) == 5 and set(held.dataset["id"]) <= set(examples.dataset["id"])
    evaluation = squad.load_squad_json(validation, "k").dataset
    assert not set(zip(held.dataset["question"], held.dataset["context"], strict=True)) & set(
        zip(evaluation["question"], evaluation["context"], strict=True)
    )
    assert held.digest != examples.digest and calibration.held_out_examples(examples, 5, seed=0).digest == held.digest


def test_calibrating_on_the_evaluation_file_is_refused(tiny_bert_dir, squad_files):
    _, validation = squad_files
    args = tiny_job_args(
        tiny_bert_dir,
        squad_files,
        "quantization=openvino_int8",
        f"quantization.calibration_file={validation}",
        fine_tune=False,
    )
    with pytest.raises(UserError, match=f"quantization.calibration_file={validation}: the same data as dataset"):
        checks.inputs(from_hydra(compose_config(args)))


def test_a_changed_calibration_file_changes_the_configuration_hash(tiny_bert_dir, squad_files, tmp_path):
    train, _ = squad_files
    calibration_file = shutil.copy(train, tmp_path / "calibration.json")
    args = tiny_job_args(
        tiny_bert_dir,
        squad_files,
        "quantization=onnx_static_int8",
        f"quantization.calibration_file={calibration_file}",
        fine_tune=False,
    )
    job = from_hydra(compose_config(args))
    checks.inputs(job)
    before = bookkeeping.job_hash(job)
    text = calibration_file.read_text().replace('"question": "', '"question": "Tell me: ', 1)
    calibration_file.write_text(text)
    assert bookkeeping.job_hash(job) != before


def test_a_method_whose_results_changed_does_not_reuse_the_runs_of_its_earlier_revision(
    tiny_bert_dir, squad_files, monkeypatch
):
    static = from_hydra(
        compose_config(tiny_job_args(tiny_bert_dir, squad_files, "quantization=onnx_static_int8", fine_tune=False))
    )
    dynamic = from_hydra(
        compose_config(tiny_job_args(tiny_bert_dir, squad_files, "quantization=onnx_int8", fine_tune=False))
    )
    before = bookkeeping.job_hash(static), bookkeeping.job_hash(dynamic)
    method = type(quantize.get("onnx_static_int8"))
    monkeypatch.setattr(method, "revision", method.revision + 1)
    assert bookkeeping.job_hash(static) != before[0]
    assert bookkeeping.job_hash(dynamic) == before[1]  # other methods' runs are still reused
