"""Everything about a job's inputs that can be refused before a model is loaded or a run is created.

A bad value ends in one `UserError` line that names it. `early` needs neither torch nor
transformers (files, headers, places, the store); `inputs` runs it first, then what needs the
checkpoint's config and tokenizer, so a refusal of the first kind comes before torch loads.
run.py runs `job` (the config typed, then `inputs`) before it imports the stages, `run` again before it
opens a job's MLflow run when it was not given the checked job; a sweep runs `early` for every job, then `late`
for every job, before the first starts.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Any

from qa_compress import prune, quantize
from qa_compress.data import sources, squad_json
from qa_compress.errors import UserError
from qa_compress.job.config import JobConfig, from_hydra
from qa_compress.tracking import store


@functools.lru_cache(maxsize=64)
def _checked_squad_json(path: str, mtime_ns: int, key: str) -> tuple[tuple[str, str], ...]:
    content = squad_json.validate(Path(path), key)
    return tuple(
        (qa["id"], qa["question"])
        for article in content["data"]
        for paragraph in article["paragraphs"]
        for qa in paragraph["qas"]
    )


def squad_file(path: str | None, key: str) -> tuple[tuple[str, str], ...]:
    """A SQuAD 2.0 JSON file that exists and has the official layout (each file read once per process).

    Returns its (id, question) pairs (none when no file is given).
    """
    if path is None:
        return ()
    file = Path(path)
    squad_json.readable(file, key)
    return _checked_squad_json(str(file.resolve()), file.stat().st_mtime_ns, key)


@functools.lru_cache(maxsize=4)
def _tokenizer(name_or_path: str, trust_remote_code: bool) -> Any:
    """The checkpoint's tokenizer, refused in one line when it cannot be loaded (a missing or broken file)."""
    import transformers

    try:
        return transformers.AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except Exception as err:  # a broken tokenizer file fails in many ways (decode, JSON, Rust) before any job
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise UserError(f"model.name_or_path={name_or_path}: its tokenizer could not be loaded ({reason})") from None


@functools.lru_cache(maxsize=16)
def _question_lengths(
    name_or_path: str, trust_remote_code: bool, questions: tuple[tuple[str, str], ...]
) -> tuple[list[int], int]:
    """Each question's length in the model's tokens (stripped, as windows are built) and a pair's special tokens."""
    tokenizer = _tokenizer(name_or_path, trust_remote_code)
    encoded = tokenizer([q.lstrip() for _, q in questions], add_special_tokens=False).input_ids
    return [len(ids) for ids in encoded], tokenizer.num_special_tokens_to_add(pair=True)


def _windows(job: JobConfig, questions: tuple[tuple[str, str], ...], key: str) -> None:
    """Every question leaves room in a window for context, and more room than `doc_stride` overlaps.

    The tokenizer fails on either (a Rust panic for the stride), so the numbers are computed here.
    """
    if not questions:
        return
    lengths, special = _question_lengths(job.model.name_or_path, job.model.trust_remote_code, questions)
    longest = max(range(len(lengths)), key=lengths.__getitem__)
    d = job.dataset
    room = d.max_seq_length - lengths[longest] - special
    if room <= d.doc_stride:
        raise UserError(
            f"dataset.max_seq_length={d.max_seq_length}, dataset.doc_stride={d.doc_stride}: question "
            f"{questions[longest][0]!r} of {key} is {lengths[longest]} tokens, which leaves {max(room, 0)} for "
            f"context in a window; doc_stride must be smaller than that (raise max_seq_length or lower doc_stride)"
        )


def model_config(job: JobConfig) -> Any:
    """The checkpoint's config (read without its weights)."""
    import transformers

    name = job.model.name_or_path
    try:
        return transformers.AutoConfig.from_pretrained(
            name, trust_remote_code=job.model.trust_remote_code, local_files_only=sources.is_cached(name)
        )
    except (OSError, ValueError) as err:
        raise UserError(f"model.name_or_path={name}: its config could not be read ({err})") from None


def _model_type(job: JobConfig, config: Any) -> None:
    """A preset names its checkpoint's family: another checkpoint put in its place is refused, not compressed."""
    expected = job.model.model_type
    if expected is not None and config.model_type != expected:
        raise UserError(
            f"model.model_type={expected}: model.name_or_path={job.model.name_or_path} is a "
            f"model_type={config.model_type!r} checkpoint; set model.model_type=null or pick the matching model preset"
        )


def _positions(job: JobConfig, config: Any) -> None:
    positions = getattr(config, "max_position_embeddings", None)
    if positions is not None and job.dataset.max_seq_length > positions:
        raise UserError(
            f"dataset.max_seq_length={job.dataset.max_seq_length}: longer than the {positions} positions of "
            f"model.name_or_path={job.model.name_or_path}; use at most {positions}"
        )


def _layer_patterns(job: JobConfig, config: Any) -> None:
    """Without explicit `pruning.layer_patterns`, the model's family must say which layers to prune."""
    if job.pruning.name != "none" and prune.layer_patterns(job.pruning, config.model_type) is None:
        raise UserError(
            f"pruning.layer_patterns=null: model_type={config.model_type!r} belongs to no known model family, "
            "so name the Linear layers to prune (regular expressions over module names)"
        )


def _explicit_patterns(job: JobConfig) -> None:
    for pattern in job.pruning.layer_patterns or ():
        try:
            re.compile(pattern)
        except re.error as err:
            raise UserError(f"pruning.layer_patterns: {pattern!r} is not a regular expression ({err})") from None


def _methods(job: JobConfig, config: Any) -> None:
    for key, method, settings in (
        ("pruning", prune.get(job.pruning.name), job.pruning),
        ("quantization", quantize.get(job.quantization.name), job.quantization),
    ):
        reason = method.check(settings, config)
        if reason:
            raise UserError(f"{key}={method.name}: {reason}")


def _weights(job: JobConfig) -> dict[str, tuple[int, ...]]:
    """A local checkpoint's weights: safetensors only, intact, and a QA head where no training adds one.

    Read from the safetensors headers (names and shapes), without loading a tensor; returns the shapes
    (none for a Hub model).
    """
    name = job.model.name_or_path
    if not sources.looks_like_path(name):
        return {}
    directory = Path(name).expanduser()
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        pickled = sorted(p.name for pattern in ("*.bin", "*.pt", "*.pth", "*.ckpt") for p in directory.glob(pattern))
        found = f" (found {', '.join(pickled)}: pickle files, which can run code and are never loaded)"
        found = found if pickled else ""
        raise UserError(
            f"model.name_or_path={name}: no safetensors weights{found}; save the weights as model.safetensors "
            "(safetensors.torch.save_file or save_pretrained(..., safe_serialization=True)) where you trust them"
        )
    shapes: dict[str, tuple[int, ...]] = {}
    for file in files:
        try:
            shapes.update(_header(str(file), file.stat().st_mtime_ns))
        except (ValueError, OSError) as err:
            raise UserError(
                f"model.name_or_path={name}: {file.name} is not a readable safetensors file ({err})"
            ) from None
    if job.training.name == "none" and not any(key.split(".")[-2:-1] == ["qa_outputs"] for key in shapes):
        raise UserError(
            f"model.name_or_path={name}: no question-answering head (no qa_outputs weights), and training=none "
            "would score a randomly drawn one; fine-tune it (training=finetune) or give a SQuAD checkpoint"
        )
    matrices = {
        key.removesuffix(".weight") for key, shape in shapes.items() if key.endswith(".weight") and len(shape) == 2
    }
    _patterns_match(job, matrices, name)
    return shapes


@functools.lru_cache(maxsize=16)
def _header(file: str, mtime_ns: int) -> dict[str, tuple[int, ...]]:
    return sources.safetensors_shapes(Path(file))


def _tensors_present(job: JobConfig, model: Any, expected: dict[str, tuple], shapes: dict[str, tuple]) -> None:
    """Every tensor the config's model expects is stored under its name (with or without the base model's
    prefix): weights saved for another architecture or layout would leave most of the network random. The QA
    head alone may be missing, and only when the job fine-tunes (a new head is drawn then)."""
    prefix = f"{model.base_model_prefix}."
    ignored = [re.compile(p) for p in getattr(model, "_keys_to_ignore_on_load_missing", None) or ()]
    stored = set(shapes) | {prefix + key for key in shapes} | {key.removeprefix(prefix) for key in shapes}
    missing = [
        key
        for key in expected
        if key not in stored
        and not any(p.search(key) for p in ignored)
        and not (job.training.name != "none" and key.split(".")[0] == "qa_outputs")
    ]
    if missing:
        name = job.model.name_or_path
        raise UserError(
            f"model.name_or_path={name}: its safetensors weights lack {len(missing)} of the {len(expected)} tensors "
            f"its config.json's {type(model).__name__} expects (first {missing[0]}); the weights and config.json "
            "do not belong together"
        )


def _shapes_fit(job: JobConfig, config: Any, shapes: dict[str, tuple[int, ...]]) -> None:
    """Every stored tensor has the shape the checkpoint's config gives it (a model built on the meta device)."""
    if not shapes:
        return
    import torch

    from qa_compress.model import families

    name = job.model.name_or_path
    try:
        with torch.device("meta"):
            model = families.from_config(config, job.model.trust_remote_code)
    except Exception as err:  # any failure to build is the config's: the load would fail the same way
        raise UserError(f"model.name_or_path={name}: no model can be built from its config.json ({err})") from None
    expected = {key: tuple(tensor.shape) for key, tensor in model.state_dict().items()}
    prefix = f"{model.base_model_prefix}."
    _tensors_present(job, model, expected, shapes)
    misfits = [
        (key, shape, wanted)
        for key, shape in sorted(shapes.items())
        if (wanted := expected.get(key, expected.get(prefix + key))) is not None and wanted != shape
    ]
    if misfits:
        key, shape, wanted = misfits[0]
        raise UserError(
            f"model.name_or_path={name}: its weights do not fit its config.json ({len(misfits)} tensors differ, "
            f"first {key}: {list(shape)} in the safetensors file, {list(wanted)} by the config); use the config "
            "the weights were saved with"
        )


UNKNOWN_SHARE_REFUSED = (
    0.5  # a tokenizer that turns more of a question than this into unknown tokens is not the model's
)
VOCABULARY_PADDING = 1024  # embedding rows a config may reserve beyond its tokenizer's vocabulary (rounding, specials)


def _tokenizer_fits(job: JobConfig, config: Any) -> None:
    """The tokenizer loads, its vocabulary fits the model's embedding rows, and it reads the evaluation questions."""
    name = job.model.name_or_path
    tokenizer = _tokenizer(name, job.model.trust_remote_code)
    rows, size = getattr(config, "vocab_size", None), len(tokenizer)
    if rows is not None and not rows - VOCABULARY_PADDING <= size <= rows:
        raise UserError(
            f"model.name_or_path={name}: its tokenizer has {size} tokens and its model {rows} embedding rows; "
            "the tokenizer files do not belong to these weights (a missing tokenizer.json?)"
        )
    questions = (
        squad_file(job.dataset.validation_file, "dataset.validation_file") if job.dataset.source == "json" else ()
    )
    unknown = tokenizer.unk_token_id
    if not questions or unknown is None:
        return
    qid, question = questions[0]
    ids = tokenizer(question, add_special_tokens=False).input_ids
    if ids and sum(i == unknown for i in ids) > UNKNOWN_SHARE_REFUSED * len(ids):
        raise UserError(
            f"model.name_or_path={name}: its tokenizer reads question {qid!r} of dataset.validation_file as mostly "
            "unknown tokens; the tokenizer files do not belong to this model or this data"
        )


def _patterns_match(job: JobConfig, matrices: set[str], name: str) -> None:
    """With explicit `pruning.layer_patterns`, some layer of the checkpoint must match one of them."""
    patterns = job.pruning.layer_patterns
    if job.pruning.name == "none" or not patterns:
        return
    layers = [m for m in matrices if "embeddings" not in m and m.rsplit(".", 1)[-1] != "qa_outputs"]
    if not any(re.search(pattern, module) for pattern in patterns for module in layers):
        example = sorted(layers)[0] if layers else "none"
        raise UserError(
            f"pruning.layer_patterns={list(patterns)}: no layer of model.name_or_path={name} matches "
            f"(its layers are named like {example!r})"
        )


def _writable(job: JobConfig) -> None:
    """The cache, the MLflow store's directory and the output directory can be written."""
    places = {"paths.cache_dir": job.paths.cache_dir, "paths.output_dir": job.paths.output_dir}
    if store.scheme(store.tracking_uri(job.tracking.uri, job.paths.mlruns_dir)) == "sqlite":
        places["paths.mlruns_dir"] = job.paths.mlruns_dir
    for key, place in places.items():
        writable(place, key)


def writable(place: str, key: str) -> None:
    """`place` exists or can be made, and takes a file (probed with one, removed at once)."""
    import tempfile

    try:
        Path(place).mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=place, prefix=".write-probe-"):
            pass
    except OSError as err:
        raise UserError(f"{key}={place}: cannot be written ({err.strerror or err})") from None


def _threads(job: JobConfig) -> None:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = job.benchmark.num_threads
    if threads is not None and threads > cores:
        raise UserError(f"benchmark.num_threads={threads}: this machine gives the job {cores} cores; use at most that")


def _data_files(job: JobConfig) -> None:
    """SQuAD JSON files readable and in the official layout, with enough training questions for what carves them."""
    dataset = job.dataset
    if dataset.source == "json":
        squad_file(dataset.validation_file, "dataset.validation_file")
        if job.reads_training_data():
            training = squad_file(dataset.train_file, "dataset.train_file")[: dataset.max_train_samples]
            _threshold_questions(job, len(training))
    _calibration_file(job)


def _data_windows(job: JobConfig) -> None:
    """Each question fits a window of the model's tokens; a Hub dataset is reachable."""
    dataset = job.dataset
    if dataset.source == "json":
        evaluation = squad_file(dataset.validation_file, "dataset.validation_file")
        _windows(job, evaluation[: dataset.max_eval_samples], "dataset.validation_file")
        if job.reads_training_data():
            training = squad_file(dataset.train_file, "dataset.train_file")[: dataset.max_train_samples]
            _windows(job, training, "dataset.train_file")
    elif dataset.source == "hub":
        from qa_compress.data import squad

        squad.check_hub_dataset(dataset.hub_name)


def _threshold_questions(job: JobConfig, questions: int) -> None:
    """Threshold calibration takes its questions from the training data and must leave some to train on."""
    wanted = job.predict.threshold_questions
    if job.predict.carves_training_data() and wanted >= questions:
        raise UserError(
            f"predict.threshold_questions={wanted}: the training data has {questions} questions; threshold "
            "calibration needs fewer, so that some are left to train on"
        )


def _calibration_file(job: JobConfig) -> None:
    """A file quantization or the threshold calibrates on is SQuAD 2.0 JSON and not the evaluation file (calibrating
    on it would leak answers)."""
    for key, path in job.quantization.data_files().items():
        _held_out_file(job, path, f"quantization.{key}")
    if job.predict.calibrates() and job.predict.threshold_file is not None:
        _held_out_file(job, job.predict.threshold_file, "predict.threshold_file")
        own = {qid for qid, _ in squad_file(job.predict.threshold_file, "predict.threshold_file")}
        if not own - {qid for qid, _ in squad_file(job.dataset.validation_file, "dataset.validation_file")}:
            raise UserError(
                f"predict.threshold_file={job.predict.threshold_file}: every question id is also in "
                "dataset.validation_file; the threshold must be picked on other questions"
            )


def _held_out_file(job: JobConfig, path: str | None, key: str) -> None:
    if path is None:
        return
    squad_file(path, key)
    evaluation = job.dataset.validation_file
    if evaluation is not None and Path(evaluation).is_file():
        from qa_compress.tracking import cache

        if cache.input_digest(Path(path)) == cache.input_digest(Path(evaluation)):
            raise UserError(
                f"{key}={path}: the same data as dataset.validation_file; calibrate on "
                "training data (leave it null) or on another file, never on the questions that are scored"
            )


def early(job: JobConfig) -> dict[str, tuple[int, ...]]:
    """The checks that need neither torch nor transformers; returns the checkpoint's tensor shapes (if local)."""
    _threads(job)
    _writable(job)
    uri = store.tracking_uri(job.tracking.uri, job.paths.mlruns_dir)
    store.check(uri, job.paths.mlruns_dir, job.tracking.lock_wait_s)
    sources.check_available(job.model.name_or_path)
    _explicit_patterns(job)
    _data_files(job)
    return _weights(job)


def inputs(job: JobConfig) -> None:
    """Every check of a job's inputs that needs no model weights and no training."""
    late(job, early(job))


def late(job: JobConfig, shapes: dict[str, tuple[int, ...]]) -> None:
    """The checks that need the checkpoint's config or tokenizer, after `early` (which gave `shapes`)."""
    config = model_config(job)
    _model_type(job, config)
    _positions(job, config)
    _methods(job, config)
    _layer_patterns(job, config)
    _tokenizer_fits(job, config)
    _data_windows(job)
    _shapes_fit(job, config, shapes)


def job(cfg: Any) -> JobConfig:
    """The composed config as a typed job with every input checked; raises UserError on the first problem."""
    checked = from_hydra(cfg)
    inputs(checked)
    return checked
