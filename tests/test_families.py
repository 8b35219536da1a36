"""Every model family the README lists, end to end through run.py: prune, quantize, save, register, reload, answer.

Each family is a tiny model built from its own config class, with a tokenizer of the kind its checkpoints ship
trained here on SQuAD text (tests/tiny_families.py). Structured pruning goes through every quantization method
that runs on a CPU (the shrunk shapes are what each backend must carry), each unstructured method and depth
pruning through ONNX Runtime; every job registers its model, which must load back through MLflow and give the
answers the job logged, each a stripped piece of its context.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from qa_compress import quantize
from qa_compress.data import squad

from . import tiny_families
from .conftest import ROOT, SQUAD_DIR, children, run_in_process, store_uri, tiny_job_args

pytestmark = pytest.mark.slow  # 13 jobs a family

# What this machine runs: fp16 needs a GPU, bf16 a CPU with AVX512-BF16 or AMX (each refused otherwise).
NEEDS_BF16 = {"bf16", "openvino_bf16"}
CPU_QUANTIZATION = [
    name for name in quantize.registry.names() if name != "fp16" and (quantize.cpu_has_bf16() or name not in NEEDS_BF16)
]
ONNX_PRUNING = ["l1_unstructured", "global_magnitude", "random", "layers"]  # each through ONNX Runtime


@pytest.fixture(scope="module")
def texts(squad_files) -> list[str]:
    source = SQUAD_DIR / "train.json" if (SQUAD_DIR / "train.json").is_file() else squad_files[0]
    return tiny_families.corpus(source)


def _questions(validation: Path) -> pd.DataFrame:
    examples = squad.load_squad_json(validation, "k").dataset
    return pd.DataFrame({"id": examples["id"], "question": examples["question"], "context": examples["context"]})


@pytest.mark.beside_slurm  # times nothing: it runs beside the SLURM test, which mostly waits on its cluster
@pytest.mark.parametrize("family", tiny_families.FAMILIES, ids=lambda f: f.model_type)
def test_every_method_runs_saves_and_answers_as_logged_for_each_family(family, texts, squad_files, tmp_path):
    model_dir = tiny_families.build(family, texts, tmp_path / family.model_type)
    # One thread: a tiny model gains nothing from two, and the other worker keeps its core.
    quiet = ["benchmark.enabled=false", "benchmark.num_threads=1"]
    common = [*tiny_job_args(model_dir, squad_files, *quiet, fine_tune=False), "export=true"]
    sweeps = [
        ["pruning=structured", f"quantization={','.join(CPU_QUANTIZATION)}"],
        [f"pruning={','.join(ONNX_PRUNING)}", "quantization=onnx_int8"],
    ]
    for sweep in sweeps:
        result = run_in_process(["-m", *common, *sweep], tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
    jobs = children(tmp_path)
    ran = {(job.data.params["pruning.name"], job.data.params["quantization.name"]) for job in jobs}
    expected = {("structured", q) for q in CPU_QUANTIZATION} | {(p, "onnx_int8") for p in ONNX_PRUNING}
    assert ran == {*expected, ("none", "none")}  # and the uncompressed reference each sweep adds
    assert all(job.info.status == "FINISHED" for job in jobs)

    client = MlflowClient(store_uri(tmp_path))
    mlflow.set_tracking_uri(store_uri(tmp_path))
    questions = _questions(squad_files[1])
    contexts = dict(zip(questions["id"], questions["context"], strict=True))
    for job in jobs:
        logged = json.loads(
            Path(client.download_artifacts(job.info.run_id, "predictions.json", str(tmp_path))).read_text()
        )
        assert all(answer == answer.strip() and answer in contexts[qid] for qid, answer in logged.items()), logged
        served = mlflow.pyfunc.load_model(f"models:/{job.data.tags['registered_model']}").predict(questions)
        assert dict(zip(served["id"], served["answer"], strict=True)) == logged, job.info.run_name


def test_the_readmes_family_list_is_the_tested_list():
    readme = (ROOT / "README.md").read_text()
    listed = re.search(r"Model families, each tested end to end: ([^.]+)\.", " ".join(readme.split()))
    assert listed, "README.md names no tested family list"
    assert [name.strip() for name in listed.group(1).split(",")] == [f.name for f in tiny_families.FAMILIES]
