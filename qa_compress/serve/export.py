"""Serve a job's compressed model: an MLflow pyfunc model that answers questions, registered by name.

The command is `python -m qa_compress.export` (qa_compress/export.py).

The model takes rows of `question` and `context` (and optionally `id`) and returns, per row, `id`,
`answer` ("" for no answer) and `no_answer_probability`. It cuts the same windows, decodes with the
same code and applies the same null threshold as the job's evaluation, through whichever runtime
the job quantized for (PyTorch, ONNX Runtime or OpenVINO), so it gives the job's `predictions.json`
answers. Nothing is pickled: the model is logged from code (`serving_model.py`) and its weights are
the job's saved files (safetensors, ONNX or OpenVINO IR).
"""

from __future__ import annotations

import json
import math
import re
import uuid
import warnings
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from qa_compress.tracking import results, runs

SERVING_FILE = "serving.json"  # beside the weights: what decides the answers besides them
MODEL_ARTIFACT = "model"  # where a job with save_model=true keeps its model in its run
LOGGED_MODEL_NAME = "qa_model"
DEFAULT_REGISTERED_NAME = "qa-compress"
REQUIRED_COLUMNS = ("question", "context")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,255}$")


class ExportError(Exception):
    """A model that cannot be exported, in one line; nothing was logged or registered."""


@dataclass(frozen=True)
class Serving:
    """The settings of the job's evaluation that decide its answers, besides the weights."""

    max_seq_length: int
    doc_stride: int
    n_best_size: int
    max_answer_length: int
    null_threshold: float  # the calibrated one when the job calibrated it
    batch_size: int

    @classmethod
    def of_run(cls, run: Run) -> Serving:
        """From a finished job's run: its logged parameters and, when it calibrated, its threshold."""
        params, metrics = run.data.params, run.data.metrics
        threshold = metrics.get("null_threshold", float(params["predict.null_score_diff_threshold"]))
        return cls(
            max_seq_length=int(params["dataset.max_seq_length"]),
            doc_stride=int(params["dataset.doc_stride"]),
            n_best_size=int(params["predict.n_best_size"]),
            max_answer_length=int(params["predict.max_answer_length"]),
            null_threshold=float(threshold),
            batch_size=int(params["predict.batch_size"]),
        )

    @classmethod
    def of_job(cls, job, metrics: dict[str, float]) -> Serving:
        """From a job's config (`config.JobConfig`) and the metrics it logged (its calibrated threshold)."""
        return cls(
            max_seq_length=job.dataset.max_seq_length,
            doc_stride=job.dataset.doc_stride,
            n_best_size=job.predict.n_best_size,
            max_answer_length=job.predict.max_answer_length,
            null_threshold=float(metrics.get("null_threshold", job.predict.null_score_diff_threshold)),
            batch_size=job.predict.batch_size,
        )


def _missing(value: Any) -> bool:
    """An absent id: no column, or an empty cell of an optional column (None, NaN, "")."""
    return value is None or value == "" or (isinstance(value, float) and math.isnan(value))


MAX_CHARS = {"question": 1_000, "context": 100_000}  # a served request's limits, far above SQuAD's longest


def request_problem(columns: list[str], rows: list[dict[str, Any]]) -> str | None:
    """What is wrong with a request to the served model, in one line naming the row and field; None if nothing."""
    missing = [column for column in REQUIRED_COLUMNS if column not in columns]
    if missing:
        return f"missing column(s) {', '.join(missing)}: send rows of question and context (and optionally id)"
    for number, row in enumerate(rows):
        for field, limit in MAX_CHARS.items():
            value = row.get(field)
            if not isinstance(value, str) or not value.strip():
                return (
                    f"row {number}: {field} must be a non-empty string, not {type(value).__name__} {str(value)[:40]!r}"
                )
            if len(value) > limit:
                return f"row {number}: {field} is {len(value):,} characters, more than the {limit:,} a request may hold"
    return None


class QuestionAnswerer:
    """A saved compressed model and its tokenizer, answering questions as the job's evaluation did."""

    def __init__(self, directory: Path, num_threads: int | None = None) -> None:
        import torch
        from transformers import AutoTokenizer

        from qa_compress import quantize
        from qa_compress.model import models

        self.serving = Serving(**json.loads((directory / SERVING_FILE).read_text()))
        self.tokenizer = AutoTokenizer.from_pretrained(str(directory))
        self.model = quantize.load(directory, num_threads or torch.get_num_threads())
        self.input_names = models.input_names(self.tokenizer, self.model)

    def answer(self, rows: list[dict[str, str]]) -> list[dict[str, Any]]:
        """One answer per row of question and context ("" when the model finds none)."""
        import torch
        from datasets import Dataset

        from qa_compress.data import features
        from qa_compress.evaluate import predict

        if not rows:
            return []
        ids = [str(i) if _missing(row.get("id")) else str(row["id"]) for i, row in enumerate(rows)]
        if len(set(ids)) != len(ids):
            raise ValueError("the rows' ids must be unique (or leave them out)")
        examples = Dataset.from_dict(
            {
                "id": ids,
                "question": [str(r["question"]) for r in rows],
                "context": [str(r["context"]) for r in rows],
            }
        )
        s = self.serving
        windows = examples.map(
            features.prepare_eval_features,
            batched=True,
            remove_columns=examples.column_names,
            fn_kwargs={"tokenizer": self.tokenizer, "max_seq_length": s.max_seq_length, "doc_stride": s.doc_stride},
            keep_in_memory=True,
            new_fingerprint=uuid.uuid4().hex,  # nothing is cached: no hash of the tokenizer per request
        )
        inputs = predict.forward_inputs(windows, self.input_names)
        start, end = predict.logits(self.model, inputs, s.batch_size, torch.device("cpu"))
        found = predict.decode(examples, windows, start, end, s.n_best_size, s.max_answer_length, s.null_threshold)
        return [{"id": qid, "answer": found.answers[qid], "no_answer_probability": found.na_probs[qid]} for qid in ids]


class QAModel(mlflow.pyfunc.PythonModel):
    """The pyfunc face of `QuestionAnswerer`: a table of questions and contexts in, a table of answers out."""

    def load_context(self, context) -> None:
        self.answerer = QuestionAnswerer(Path(context.artifacts[MODEL_ARTIFACT]))

    # A DataFrame hint: MLflow infers no schema from it (the signature comes from `signature()`).
    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        rows = frame.to_dict("records")
        problem = request_problem(list(frame.columns), rows)
        if problem:  # a 400 with this one line, not a stack trace
            raise MlflowException(problem, error_code=INVALID_PARAMETER_VALUE)
        return pd.DataFrame(self.answerer.answer(rows))


def _requirements(quantization: str) -> list[str]:
    """Pinned packages the served model imports (PyPI versions: a local `+cpu` suffix dropped)."""
    from qa_compress import quantize

    names = ["torch", "transformers", "tokenizers", "datasets", "safetensors", "numpy", "pandas", "pydantic", "mlflow"]
    if quantization in quantize.registry:
        names += [name for name in quantize.get(quantization).serving_requirements if name not in names]
    return [f"{name}=={metadata.version(name).split('+', 1)[0]}" for name in names]


def signature():
    """What the served model takes and gives: rows of question and context, with an `id` when the caller has one."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema

    inputs = Schema(
        [
            ColSpec(DataType.string, "question"),
            ColSpec(DataType.string, "context"),
            ColSpec(DataType.string, "id", required=False),  # a generated one (the row's number) when absent
        ]
    )
    outputs = Schema(
        [
            ColSpec(DataType.string, "id"),
            ColSpec(DataType.string, "answer"),
            ColSpec(DataType.double, "no_answer_probability"),
        ]
    )
    return ModelSignature(inputs=inputs, outputs=outputs)


def log_model(directory: Path, serving: Serving, quantization: str, registered_name: str | None):
    """Log the saved model in `directory` as a pyfunc model of the active run, registered under `registered_name`
    (the run is tagged with the version, `registered_model`: NAME/VERSION)."""
    (directory / SERVING_FILE).write_text(json.dumps(asdict(serving), indent=2))
    package = Path(__file__).resolve().parents[1]  # the whole qa_compress package travels with the model
    with warnings.catch_warnings():  # the signature is given: no type hints or example needed to infer one
        warnings.filterwarnings("ignore", message=".*(type hints|input example was not provided).*")
        info = mlflow.pyfunc.log_model(
            name=LOGGED_MODEL_NAME,
            python_model=str(package / "serve" / "serving_model.py"),  # logged from code: nothing pickled
            artifacts={MODEL_ARTIFACT: str(directory)},
            code_paths=[str(package)],
            signature=signature(),
            pip_requirements=_requirements(quantization),
            registered_model_name=registered_name,
        )
    if registered_name is not None:
        runs.set_tags({results.REGISTERED_TAG: f"{registered_name}/{info.registered_model_version}"})
    return info


def check_name(name: str) -> None:
    if not NAME_PATTERN.fullmatch(name):
        raise ExportError(f"--name={name!r}: use letters, digits, '.', '_' and '-' (a Model Registry name)")


def kept_model(client: MlflowClient, run_id: str) -> bool:
    """Whether the job's run holds its model (save_model=true)."""
    return bool(client.list_artifacts(run_id, MODEL_ARTIFACT))


def no_model(run: Run) -> ExportError:
    """The refusal of a job that kept no model, with the command that reruns it keeping and registering it."""
    again = results.reproduce_command(results.job_of(run)) or "python run.py <its overrides> export=true"
    return ExportError(
        f"--run-id={run.info.run_id}: the job kept no model; this runs it again, keeping and registering it: {again}"
    )


def export(client: MlflowClient, run_id: str, name: str, workdir: Path) -> tuple[str, str]:
    """Log the run's saved model as a pyfunc model of that run and register it; returns (model URI, version)."""
    check_name(name)
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise ExportError(f"--run-id={run_id}: no such run in {client.tracking_uri}") from None
    if run.info.status != "FINISHED":
        raise ExportError(f"--run-id={run_id}: run {run.info.run_name!r} ended {run.info.status}, not FINISHED")
    if "sweep_dir" in run.data.tags:
        raise ExportError(f"--run-id={run_id}: a sweep's parent run; give one of its jobs (the report names them)")
    if not kept_model(client, run_id):
        raise no_model(run)
    directory = Path(client.download_artifacts(run_id, MODEL_ARTIFACT, str(workdir)))
    serving = Serving.of_run(run)
    mlflow.set_tracking_uri(client.tracking_uri)
    with mlflow.start_run(run_id=run_id):
        info = log_model(directory, serving, run.data.tags.get("quantization", ""), name)
    return info.model_uri, str(info.registered_model_version)


def point_aliases(client: MlflowClient, versions: dict[str, str]) -> list[str]:
    """Move each alias to its registered version ("NAME/VERSION"), so `models:/NAME@alias` serves it; returns
    those URIs. An alias names one version of a name at a time: the latest decision wins."""
    uris = []
    for alias, registered in versions.items():
        name, version = registered.rsplit("/", 1)
        client.set_registered_model_alias(name, alias, version)
        uris.append(f"models:/{name}@{alias}")
    return uris
