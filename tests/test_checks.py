"""Input checks that refuse a job before any model is loaded or any run is created."""

import json
import os
from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, GPT2ForQuestionAnswering

from qa_compress.data import sources, squad
from qa_compress.errors import UserError
from qa_compress.job import checks
from qa_compress.job.config import from_hydra
from qa_compress.quantize import dynamic_int8

from .conftest import ROOT, compose_config, write_json


def _check(overrides: list[str]) -> None:
    checks.inputs(from_hydra(compose_config(overrides)))


def test_bad_files_models_and_windows_are_refused_naming_the_value(tmp_path, tiny_distilbert_dir, squad_files):
    records = write_json(tmp_path / "records.json", [{"question": "q", "answer": "a"}])
    base = ["training=none", "dataset=squad_json"]
    cases = [
        (
            [f"model.name_or_path={tiny_distilbert_dir}", f"dataset.validation_file={records}"],
            f"dataset.validation_file={records}: not SQuAD 2.0 JSON",
        ),
        (
            [f"model.name_or_path={tiny_distilbert_dir}", f"dataset.validation_file={ROOT / 'pyproject.toml'}"],
            "not a JSON file",
        ),
        (
            [
                f"model.name_or_path={tiny_distilbert_dir}",
                f"dataset.validation_file={squad_files[1]}",
                "dataset.max_seq_length=600",
            ],
            f"dataset.max_seq_length=600: longer than the 512 positions of model.name_or_path={tiny_distilbert_dir}",
        ),
        (
            ["model.name_or_path=./no/such/model", f"dataset.validation_file={records}"],
            "model.name_or_path=./no/such/model: no such directory",
        ),
        (
            ["model=minilm_l6", "dataset.validation_file=/no/such/file.json"],
            "dataset.validation_file=/no/such/file.json: no such file",
        ),
        (
            [
                f"model.name_or_path={tiny_distilbert_dir}",
                f"dataset.validation_file={squad_files[1]}",
                "pruning=l1_unstructured",
                "pruning.layer_patterns=['(unclosed']",
            ],
            "pruning.layer_patterns: '(unclosed' is not a regular expression",
        ),
    ]
    for overrides, message in cases:
        with pytest.raises(UserError) as err:
            _check([*base, *overrides])
        assert message in str(err.value)


def test_an_unknown_layout_is_refused_for_structured_pruning_and_default_layers(tmp_path, squad_files):
    GPT2ForQuestionAnswering(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50)).save_pretrained(str(tmp_path))
    base = [
        "training=none",
        "dataset=squad_json",
        f"dataset.validation_file={squad_files[1]}",
        f"model.name_or_path={tmp_path}",
    ]
    with pytest.raises(UserError, match="pruning=structured: structured pruning knows the layer layout of bert"):
        _check([*base, "pruning=structured"])
    with pytest.raises(UserError, match="pruning.layer_patterns=null: model_type='gpt2' belongs to no known"):
        _check([*base, "pruning=l1_unstructured"])
    _check([*base, "pruning=l1_unstructured", "pruning.layer_patterns=[c_attn]"])  # named layers: accepted


def test_a_preset_given_a_checkpoint_of_another_family_refuses_it(tiny_bert_dir, squad_files):
    with pytest.raises(UserError) as refusal:
        _check(
            [
                "model=roberta_base_squad2",
                f"model.name_or_path={tiny_bert_dir}",
                "dataset=squad_json",
                f"dataset.validation_file={squad_files[1]}",
            ]
        )
    assert str(refusal.value) == (
        f"model.model_type=roberta: model.name_or_path={tiny_bert_dir} is a model_type='bert' checkpoint; "
        "set model.model_type=null or pick the matching model preset"
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 is refused only without a GPU: run on a CPU-only machine")
def test_fp16_without_a_gpu_is_refused(tiny_distilbert_dir, squad_files):
    with pytest.raises(UserError, match="quantization=fp16: fp16 inference needs a CUDA GPU and none is visible"):
        _check(
            [
                "training=none",
                f"model.name_or_path={tiny_distilbert_dir}",
                "dataset=squad_json",
                f"dataset.validation_file={squad_files[1]}",
                "quantization=fp16",
            ]
        )


def test_dynamic_int8_on_a_torch_without_it_is_refused_naming_the_alternative(
    monkeypatch, tiny_distilbert_dir, squad_files
):
    monkeypatch.setattr(dynamic_int8, "_quantize_dynamic", lambda: None)  # as on a torch that removed it
    with pytest.raises(UserError) as err:
        _check(
            [
                "training=none",
                f"model.name_or_path={tiny_distilbert_dir}",
                "dataset=squad_json",
                f"dataset.validation_file={squad_files[1]}",
                "quantization=dynamic_int8",
            ]
        )
    assert "quantization=dynamic_int8: this PyTorch has no torch.ao.quantization.quantize_dynamic" in str(err.value)
    assert "use quantization=onnx_int8" in str(err.value)


def test_hub_model_or_dataset_without_hub_names_it_and_the_offline_options(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(UserError) as err:
        sources.check_available("some-org/model-not-cached")
    message = str(err.value)
    assert "model.name_or_path=some-org/model-not-cached" in message
    assert "Hugging Face Hub cannot be reached" in message and "model=minilm_l6" in message
    with pytest.raises(UserError) as err:
        squad.check_hub_dataset("some-org/data-not-cached")
    message = str(err.value)
    assert "dataset.hub_name=some-org/data-not-cached" in message
    assert "Hugging Face Hub cannot be reached" in message and "dataset=squad_json" in message


def test_checkpoint_weights_are_checked_from_their_headers_before_any_run(tmp_path, tiny_bert_dir, squad_files):
    import shutil

    from safetensors.torch import load_file, save_file

    def checkpoint(name: str) -> Path:
        directory = tmp_path / name
        shutil.copytree(tiny_bert_dir, directory)
        return directory

    pickled = checkpoint("pickled")
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    torn = checkpoint("torn")
    (torn / "model.safetensors").write_bytes((torn / "model.safetensors").read_bytes()[:100])
    noise = checkpoint("noise")
    (noise / "model.safetensors").write_bytes(os.urandom(4096))
    misfit = checkpoint("misfit")
    config = json.loads((misfit / "config.json").read_text())
    (misfit / "config.json").write_text(json.dumps({**config, "intermediate_size": 2 * config["intermediate_size"]}))
    headless = checkpoint("headless")
    weights = load_file(str(headless / "model.safetensors"))
    save_file({k: v for k, v in weights.items() if "qa_outputs" not in k}, str(headless / "model.safetensors"))
    train, validation = squad_files
    base = ["dataset=squad_json", f"dataset.validation_file={validation}", f"dataset.train_file={train}"]
    cases = [
        (pickled, ["training=none"], "no safetensors weights (found pytorch_model.bin: pickle files"),
        (torn, ["training=none"], "model.safetensors is not a readable safetensors file"),
        (noise, ["training=none"], "model.safetensors is not a readable safetensors file"),
        (
            misfit,
            ["training=none"],
            "its weights do not fit its config.json (6 tensors differ, first "
            "bert.encoder.layer.0.intermediate.dense.bias: [64] in the safetensors file, [128] by the config)",
        ),
        (headless, ["training=none"], "no question-answering head (no qa_outputs weights), and training=none"),
        (
            tiny_bert_dir,
            ["training=none", f"benchmark.num_threads={os.cpu_count() * 64}"],
            f"benchmark.num_threads={os.cpu_count() * 64}: this machine gives the job",
        ),
        (
            tiny_bert_dir,
            ["pruning=l1_unstructured", "pruning.layer_patterns=[decoder]"],
            "pruning.layer_patterns=['decoder']: no layer of model.name_or_path=",
        ),
        (
            tiny_bert_dir,
            [f"paths.cache_dir={squad_files[0]}/cache"],  # under a file: nothing can be written
            f"paths.cache_dir={squad_files[0]}/cache: cannot be written (Not a directory)",
        ),
        (
            tiny_bert_dir,
            [f"paths.mlruns_dir={squad_files[0]}"],
            f"paths.mlruns_dir={squad_files[0]}: cannot be written",
        ),
    ]
    for directory, overrides, message in cases:
        with pytest.raises(UserError) as err:
            _check([*base, f"model.name_or_path={directory}", *overrides])
        assert message in str(err.value) and "weights_only" not in str(err.value)
    _check([*base, f"model.name_or_path={headless}"])  # fine-tuning adds the head: accepted


def test_windows_too_small_for_a_question_or_its_stride_are_refused_with_the_numbers(tmp_path, tiny_bert_dir):
    question = "what is the name of the river that flows through the city?"  # 13 tokens
    qas = [{"id": "long-q", "question": question, "answers": []}, {"id": "short", "question": "why?", "answers": []}]
    content = {"data": [{"title": "t", "paragraphs": [{"context": "The Rhine flows through it. " * 30, "qas": qas}]}]}
    validation = write_json(tmp_path / "v.json", content)
    base = [
        "training=none",
        "dataset=squad_json",
        f"dataset.validation_file={validation}",
        f"model.name_or_path={tiny_bert_dir}",
    ]
    for overrides, message in [
        (["dataset.max_seq_length=16", "dataset.doc_stride=4"], "leaves 0 for context"),
        (
            ["dataset.max_seq_length=64", "dataset.doc_stride=60"],
            "'long-q' of dataset.validation_file is 13 tokens, which leaves 48 for context",
        ),
    ]:
        with pytest.raises(UserError) as err:
            _check([*base, *overrides])
        assert message in str(err.value) and "doc_stride=" in str(err.value)
    _check([*base, "dataset.max_seq_length=64", "dataset.doc_stride=47"])  # 47 < 48: the tokenizer copes
