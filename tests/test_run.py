"""The command line as a user meets it: a new process, --help, and refusals in one line before any work."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import BertModel

from qa_compress import prune, quantize
from qa_compress.job.resolvers import HELP_GROUPS

from .conftest import ROOT, assert_refused, help_line, noisy_lines, run_cli, tiny_bert_config, tiny_job_args, write_json


@pytest.mark.slow
def test_help_lists_every_group_option_with_its_description():
    result = subprocess.run([sys.executable, "run.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    for group in HELP_GROUPS:
        for option in sorted((ROOT / "conf" / group).glob("*.yaml")):
            comments = [line[2:] for line in option.read_text().splitlines() if line.startswith("# ")]
            first = next(c for c in comments if not c.startswith("@package"))
            registry = {"pruning": prune.registry, "quantization": quantize.registry}.get(group)
            if registry is not None:  # a method's description comes from its registry entry
                line = help_line(option.stem, registry.get(option.stem).description)
                assert line.search(result.stdout), f"{option} is missing from --help, or runs into its description"
                continue
            listed = re.search(rf"^  {re.escape(option.stem)} {{2,}}(.+)$", result.stdout, re.MULTILINE)
            assert listed, f"{option} is missing from --help"
            description = listed.group(1)  # the YAML comment's first sentence, whole, however many lines it spans
            assert description.startswith(first) and description.endswith("."), (option, description)


@pytest.mark.slow
def test_an_unknown_option_is_refused_by_the_command_line_in_one_line(tmp_path):
    result = run_cli(["pruning=magnitude_of_doom"], tmp_path, timeout=120)
    assert_refused(result, tmp_path, "Could not find 'pruning/magnitude_of_doom'", "l1_unstructured")


def _imported(args: list[str], cwd: Path) -> set[str]:
    """The modules `python run.py ARGS` imports."""
    command = [sys.executable, "-X", "importtime", str(ROOT / "run.py"), *args]
    imported = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120).stderr
    return {line.rsplit("|", 1)[-1].strip() for line in imported.splitlines() if line.startswith("import time:")}


HEAVY = {"torch", "mlflow", "transformers", "datasets"}


@pytest.mark.slow
def test_a_bad_value_is_refused_in_one_line_before_torch_or_mlflow_load(tmp_path):
    result = run_cli(["pruning=l1_unstructured", "pruning.amount=1.5"], tmp_path, timeout=120)
    assert_refused(result, tmp_path, "pruning.amount=1.5: Input should be less than or equal to 1")
    assert result.stderr.strip().splitlines() == ["pruning.amount=1.5: Input should be less than or equal to 1"]
    modules = _imported(["pruning=l1_unstructured", "pruning.amount=2"], tmp_path)
    assert "hydra" in modules and not modules & HEAVY


@pytest.mark.slow
def test_bad_files_and_weights_are_refused_before_torch_loads(tmp_path, tiny_bert_dir, squad_files):
    train, validation = squad_files
    content = json.loads(validation.read_text())
    qas = [qa for article in content["data"] for p in article["paragraphs"] for qa in p["qas"]]
    qas[2]["id"] = qas[0]["id"]
    duplicated = write_json(tmp_path / "duplicated.json", content)
    torn = shutil.copytree(tiny_bert_dir, tmp_path / "torn")
    (torn / "model.safetensors").write_bytes((torn / "model.safetensors").read_bytes()[:1000])
    base = ["dataset=squad_json", f"dataset.train_file={train}", f"hydra.run.dir={tmp_path / 'run'}"]
    for args, message in [
        (
            [f"model.name_or_path={tiny_bert_dir}", f"dataset.validation_file={duplicated}"],
            f"dataset.validation_file={duplicated}: question ids must be unique",
        ),
        (
            [f"model.name_or_path={torn}", f"dataset.validation_file={validation}"],
            f"model.name_or_path={torn}: model.safetensors is not a readable safetensors file",
        ),
    ]:
        result = run_cli([*base, *args], tmp_path, timeout=120)
        assert_refused(result, tmp_path, message)
        assert not _imported([*base, *args], tmp_path) & HEAVY


@pytest.mark.beside_slurm  # times nothing
@pytest.mark.slow
def test_library_noise_stays_out_of_the_output_unless_hydra_verbose_asks(tmp_path, tokenizer, squad_files):
    """transformers' load report (a checkpoint without a QA head) and ONNX Runtime's fusion log, quiet by default."""
    base = tmp_path / "encoder"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        BertModel(tiny_bert_config(tokenizer)).save_pretrained(base)
    tokenizer.save_pretrained(base)
    args = tiny_job_args(base, squad_files, "quantization=onnx_int8", "benchmark.enabled=false")
    quiet = run_cli(args, tmp_path / "quiet")
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    loud = run_cli([*args, "hydra.verbose=[transformers,onnxruntime]"], tmp_path / "loud")
    assert loud.returncode == 0, loud.stderr[-2000:]
    assert noisy_lines(quiet.stdout + quiet.stderr) == []  # fine-tuning, off a terminal: no bars, no warnings
    for marker in ("LOAD REPORT", "qa_outputs.weight", "Optimized operators"):
        assert marker not in quiet.stdout + quiet.stderr
        assert marker in loud.stdout + loud.stderr, marker
