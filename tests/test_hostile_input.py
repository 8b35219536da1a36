"""Hostile input, gathered: each case goes through run.py as a user types it and must end in one line.

Each case runs as a single run and as a two-job sweep, and must end with exit code 1, one line on
stderr that names the bad value, no traceback, no MLflow store or run, and nothing written beyond
Hydra's own run log. Elsewhere: the scorer and report commands' refusals (test_score,
test_report), valid but odd files (test_data), and faults such as kill -9, SIGTERM and damaged
cache entries (test_tracking, test_sweep, test_cache).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import MINILM_DIR, free_port, run_cli, run_in_process, tiny_job_args, write_json


@dataclass
class Inputs:
    """What a case may start from: a tiny BERT QA checkpoint, valid SQuAD files, and a directory of its own."""

    model: Path
    train: Path
    validation: Path
    tmp: Path

    def squad(self, edit: Callable[[dict], object]) -> Path:
        """The validation file after `edit` changed its content in place."""
        content = json.loads(self.validation.read_text())
        edit(content)
        return write_json(self.tmp / "edited.json", content)

    def file(self, data: bytes) -> Path:
        (self.tmp / "file.json").write_bytes(data)
        return self.tmp / "file.json"

    def checkpoint(self, damage: Callable[[Path], object]) -> Path:
        """A copy of the tiny checkpoint after `damage` changed its directory."""
        directory = shutil.copytree(self.model, self.tmp / "checkpoint")
        damage(directory)
        return directory


def _first_qa(content: dict) -> dict:
    return next(qa for p in content["data"][0]["paragraphs"] for qa in p["qas"] if qa["answers"])


def _duplicate_ids(content: dict) -> None:
    qas = [qa for article in content["data"] for p in article["paragraphs"] for qa in p["qas"]]
    qas[1]["id"] = qas[0]["id"]


def _set_answer_start(value: int) -> Callable[[dict], None]:
    def edit(content: dict) -> None:
        _first_qa(content)["answers"][0]["answer_start"] = value

    return edit


def _long_question(content: dict) -> None:
    content["data"][0]["paragraphs"][0]["qas"][0]["question"] = "what is the name of the river " * 3 + "?"


def _config_edit(**changes: object) -> Callable[[Path], None]:
    def damage(directory: Path) -> None:
        config = json.loads((directory / "config.json").read_text())
        (directory / "config.json").write_text(json.dumps({**config, **changes}))

    return damage


def _truncate_weights(directory: Path) -> None:
    weights = directory / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


def _sparse(path: Path, size: int) -> Path:
    with path.open("wb") as handle:
        handle.truncate(size)  # a hole: the size is there, the bytes are not
    return path


Case = Callable[[Inputs], tuple[list[str], str]]  # the overrides, and what the one line must say
CASES: dict[str, Case] = {}


def case(name: str) -> Callable[[Case], Case]:
    def register(build: Case) -> Case:
        CASES[name] = build
        return build

    return register


def data_file(path: Path, message: str) -> tuple[list[str], str]:
    return [f"dataset.validation_file={path}"], f"dataset.validation_file={path}: {message}"


def checkpoint(path: Path, message: str, *extra: str) -> tuple[list[str], str]:
    return [f"model.name_or_path={path}", *extra], f"model.name_or_path={path}: {message}"


# SQuAD files ----------------------------------------------------------------------------------


@case("duplicate question ids")
def _(i: Inputs):
    return data_file(i.squad(_duplicate_ids), "question ids must be unique, and 1 occur more than once")


@case("negative answer_start")
def _(i: Inputs):
    return data_file(
        i.squad(_set_answer_start(-3)), "not SQuAD 2.0 JSON (data[0].paragraphs[0].qas[0].answers[0].answer_start=-3"
    )


@case("answer_start off its text")
def _(i: Inputs):
    return data_file(
        i.squad(_set_answer_start(1)),
        "not SQuAD 2.0 JSON (data[0].paragraphs[0].qas[0].answers[0].answer_start=1 does not point",
    )


@case("empty file")
def _(i: Inputs):
    return data_file(i.file(b""), "not a JSON file")


@case("truncated JSON")
def _(i: Inputs):
    return data_file(i.file(i.validation.read_bytes()[:500]), "not a JSON file")


@case("not UTF-8")
def _(i: Inputs):
    return data_file(i.file(b'{"data": "\xff\xfe"}'), "not a JSON file")


@case("records, not SQuAD")
def _(i: Inputs):
    records = write_json(i.tmp / "records.json", [{"question": "q", "answer": "a"}])
    return data_file(records, "not SQuAD 2.0 JSON (expected a non-empty top-level 'data' list)")


@case("nested 200,000 levels")
def _(i: Inputs):
    return data_file(i.file(b"[" * 200_000 + b"]" * 200_000), "not SQuAD 2.0 JSON (nested deeper than")


@case("paragraph without context")
def _(i: Inputs):
    edited = i.squad(lambda c: c["data"][0]["paragraphs"][0].pop("context"))
    return data_file(edited, "not SQuAD 2.0 JSON (data[0].paragraphs[0] needs a str field 'context')")


@case("no question at all")
def _(i: Inputs):
    edited = i.squad(lambda c: [p.update(qas=[]) for a in c["data"] for p in a["paragraphs"]])
    return data_file(edited, "not SQuAD 2.0 JSON (no paragraph holds a question)")


@case("a 600 MiB file")
def _(i: Inputs):
    return data_file(_sparse(i.tmp / "huge.json", 600 * 2**20), "600 MiB, more than the 512 MiB")


@case("no such data file")
def _(i: Inputs):
    return data_file(Path("/no/such/file.json"), "no such file")


@case("a named pipe as data file")
def _(i: Inputs):
    os.mkfifo(i.tmp / "pipe.json")  # reading it would block: refused before any read
    return data_file(i.tmp / "pipe.json", "not a regular file")


@case("a device as data file")
def _(i: Inputs):
    return data_file(Path("/dev/zero"), "not a regular file")


@case("a bad training file when fine-tuning")
def _(i: Inputs):
    edited = i.squad(_duplicate_ids)
    return (
        ["training=finetune", "training.max_steps=2", f"dataset.train_file={edited}"],
        f"dataset.train_file={edited}: question ids must be unique",
    )


# Checkpoints ----------------------------------------------------------------------------------


@case("no such model directory")
def _(i: Inputs):
    return checkpoint(Path("./no/such/model"), "no such directory")


@case("a directory without config.json")
def _(i: Inputs):
    damaged = i.checkpoint(lambda d: (d / "config.json").unlink())
    return checkpoint(damaged, "not a Hugging Face model directory (no config.json)")


@case("pickle weights only")
def _(i: Inputs):
    damaged = i.checkpoint(lambda d: (d / "model.safetensors").rename(d / "pytorch_model.bin"))
    return checkpoint(damaged, "no safetensors weights (found pytorch_model.bin: pickle files")


@case("truncated safetensors")
def _(i: Inputs):
    return checkpoint(i.checkpoint(_truncate_weights), "model.safetensors is not a readable safetensors file")


@case("random bytes as safetensors")
def _(i: Inputs):
    damaged = i.checkpoint(lambda d: (d / "model.safetensors").write_bytes(os.urandom(5000)))
    return checkpoint(damaged, "model.safetensors is not a readable safetensors file")


@case("weights that do not fit the config")
def _(i: Inputs):
    damaged = i.checkpoint(_config_edit(hidden_size=64))
    return checkpoint(damaged, "its weights do not fit its config.json")


def _rename_tensors(old: str, new: str) -> Callable[[Path], None]:
    def damage(directory: Path) -> None:
        from safetensors.torch import load_file, save_file

        tensors = load_file(str(directory / "model.safetensors"))
        save_file(
            {key.replace(old, new): value for key, value in tensors.items()}, str(directory / "model.safetensors")
        )

    return damage


def _other_architecture(directory: Path) -> None:
    """A DistilBERT config.json beside BERT weights."""
    config = json.loads((directory / "config.json").read_text())
    distilbert = {"model_type": "distilbert", "architectures": ["DistilBertForQuestionAnswering"], "dim": 32,
                  "n_layers": 2, "n_heads": 2, "hidden_dim": 64, "vocab_size": config["vocab_size"],
                  "max_position_embeddings": 512}  # fmt: skip
    (directory / "config.json").write_text(json.dumps(distilbert))


@case("weights named for another layout")
def _(i: Inputs):
    damaged = i.checkpoint(_rename_tensors("encoder.layer.", "encoder.layers."))
    return checkpoint(damaged, "its safetensors weights lack")


@case("a config.json of another architecture")
def _(i: Inputs):
    damaged = i.checkpoint(_other_architecture)
    return checkpoint(damaged, "its safetensors weights lack 36 of the 38 tensors its config.json's DistilBertFor")


@case("no tokenizer.json")
def _(i: Inputs):
    damaged = i.checkpoint(lambda d: [(d / f).unlink(missing_ok=True) for f in ("tokenizer.json", "vocab.txt")])
    return checkpoint(damaged, "its tokenizer")


@case("a garbage tokenizer.json")
def _(i: Inputs):
    damaged = i.checkpoint(lambda d: (d / "tokenizer.json").write_bytes(os.urandom(3000)))
    return checkpoint(damaged, "its tokenizer could not be loaded")


@case("config.json that is not JSON")
def _(i: Inputs):
    damaged = i.checkpoint(lambda d: (d / "config.json").write_text("{oops"))
    return checkpoint(damaged, "its config could not be read")


@case("no QA head with training=none")
def _(i: Inputs):
    return checkpoint(
        MINILM_DIR, "no question-answering head (no qa_outputs weights), and training=none", "dataset.max_seq_length=64"
    )


# Values ---------------------------------------------------------------------------------------


def value(override: str, message: str = "", *extra: str) -> Case:
    return lambda i: ([*extra, override], f"{override}: {message}")


CASES.update(
    {
        "a NaN threshold": value("predict.null_score_diff_threshold=nan"),
        "an infinite threshold": value("predict.null_score_diff_threshold=inf"),
        "a seed beyond 32 bits": value("seed=99999999999999999999999"),
        "more threads than cores": value("benchmark.num_threads=10000", "this machine gives the job"),
        "an amount above 1": value("pruning.amount=1.5", "", "pruning=l1_unstructured"),
        "layer patterns that match no layer": value(
            "pruning.layer_patterns=['decoder']", "no layer of model.name_or_path=", "pruning=l1_unstructured"
        ),
        "windows longer than the model's positions": value(
            "dataset.max_seq_length=600", "longer than the 512 positions"
        ),
    }
)


@case("a layer pattern that is no regular expression")
def _(i: Inputs):
    return [
        "pruning=l1_unstructured",
        "pruning.layer_patterns=['(unclosed']",
    ], "'(unclosed' is not a regular expression"


@case("a question longer than the window")
def _(i: Inputs):
    edited = i.squad(_long_question)
    return (
        [f"dataset.validation_file={edited}", "dataset.max_seq_length=16", "dataset.doc_stride=4"],
        "dataset.max_seq_length=16, dataset.doc_stride=4: question",
    )


@case("a stride as long as the window")
def _(i: Inputs):
    return [
        "dataset.max_seq_length=64",
        "dataset.doc_stride=60",
    ], "dataset.max_seq_length=64, dataset.doc_stride=60: question"


@case("calibrating on the evaluation file")
def _(i: Inputs):
    override = f"quantization.calibration_file={i.validation}"
    return ["quantization=onnx_static_int8", override], f"{override}: the same data as dataset.validation_file"


# Places ---------------------------------------------------------------------------------------

CASES.update(
    {
        "a cache under a file": lambda i: value(f"paths.cache_dir={i.validation}/cache", "cannot be written")(i),
        "a store under a file": lambda i: value(f"paths.mlruns_dir={i.validation}", "cannot be written")(i),
        "no tracking server": lambda i: value(
            f"tracking.uri=http://127.0.0.1:{free_port()}", "no MLflow tracking server answers"
        )(i),
        "an unknown store scheme": value("tracking.uri=foo://bar", "unknown scheme 'foo'"),
        "a run directory under a file": lambda i: value(f"hydra.run.dir={i.validation}/run", "cannot be written")(i),
        "a sweep directory under a file": lambda i: value(
            f"hydra.sweep.dir={i.validation}/s", "cannot be written", "-m"
        )(i),
    }
)


def _store(i: Inputs, content: Callable[[Path], object]) -> Path:
    """A directory whose mlflow.db `content` wrote."""
    (i.tmp / "store").mkdir()
    content(i.tmp / "store" / "mlflow.db")
    return i.tmp / "store"


def _damaged_database(path: Path) -> None:
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE runs (name TEXT)")
    connection.executemany("INSERT INTO runs VALUES (?)", [("x" * 100,)] * 2000)
    connection.commit()
    connection.close()
    with path.open("r+b") as handle:
        handle.truncate(path.stat().st_size // 2)  # what a full disk or a copy cut short leaves


CASES.update(
    {
        "a store that is no database": lambda i: value(
            f"paths.mlruns_dir={_store(i, lambda p: p.write_text('not a database'))}",
            "mlflow.db is not an SQLite database",
        )(i),
        "a damaged store": lambda i: value(f"paths.mlruns_dir={_store(i, _damaged_database)}", "mlflow.db is damaged")(
            i
        ),
    }
)


RUN_ONLY = {"a run directory under a file"}  # a sweep has no run directory
MODES = [(case, mode) for case in CASES for mode in ("run", "sweep") if not (mode == "sweep" and case in RUN_ONLY)]


@pytest.mark.parametrize(("case", "mode"), MODES, ids=[f"{case}-{mode}" for case, mode in MODES])
def test_hostile_input_is_refused_in_one_line_before_any_run(case, mode, tmp_path, tiny_bert_dir, squad_files):
    own = tmp_path / "inputs"
    own.mkdir()
    overrides, expected = CASES[case](Inputs(tiny_bert_dir, *squad_files, own))
    if mode == "sweep":  # two jobs with that value: refused before the first starts
        overrides = ["-m", "seed=1,2", *overrides]
    result = run_in_process([*tiny_job_args(tiny_bert_dir, squad_files, fine_tune=False), *overrides], tmp_path)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr[-2000:]
    assert "weights_only" not in result.stderr
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()  # no store opened, so no run in it
    hydras_own = {tmp_path / "run" / "run.log", *(tmp_path / "run" / ".hydra").glob("*.yaml")}
    written = [p for p in tmp_path.rglob("*") if p.is_file() and own not in p.parents and p not in hydras_own]
    assert written == []


@pytest.mark.slow
@pytest.mark.parametrize("experiment", [[], ["experiment=quickstart"]], ids=["plain", "experiment"])
def test_a_single_run_in_a_new_process_says_one_line_and_no_callback_warning(experiment, tmp_path):
    """In a fresh process Hydra's own config is not set when the callbacks start; no warning may leak from that."""
    result = run_cli([*experiment, "pruning=l1_unstructured", "pruning.amount=1.5"], tmp_path, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == ["pruning.amount=1.5: Input should be less than or equal to 1"]
