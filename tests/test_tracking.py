"""Job and sweep runs end FINISHED, FAILED or KILLED, whatever signal comes and whenever it comes."""

import contextlib
import errno
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from transformers import BertForQuestionAnswering

from qa_compress.sweep import report
from qa_compress.tracking import disk, interrupts, runs

from .conftest import (
    children,
    logged_runs,
    parents,
    run_cli,
    run_in_process,
    save_tiny,
    start_cli,
    store_uri,
    tiny_bert_config,
    tiny_job_args,
    unavailable,
)


def test_a_job_that_raises_is_marked_failed(tmp_path):
    uri = store_uri(tmp_path)
    (tmp_path / "mlruns").mkdir()
    experiment = runs.experiment_id(uri, "qa-compress")
    with pytest.raises(RuntimeError), runs.job_run(experiment, "boom", None, {}):
        raise RuntimeError("stage failed")
    with pytest.raises(KeyboardInterrupt), runs.job_run(experiment, "stop", None, {}):
        raise KeyboardInterrupt
    statuses = {r.info.run_name: r.info.status for r in logged_runs(tmp_path)[1]}
    assert statuses == {"boom": "FAILED", "stop": "KILLED"}


def test_a_sqlite_store_keeps_artifacts_beside_it_and_opens_as_a_model_training_experiment(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    database = tmp_path / "elsewhere" / "mlflow.db"
    experiment = runs.experiment_id(f"sqlite:///{database}", "qa-compress")
    with runs.job_run(experiment, "job", None, {}):
        (tmp_path / "note.txt").write_text("kept")
        runs.log_artifacts([tmp_path / "note.txt"])
    assert list((tmp_path / "elsewhere" / "artifacts").rglob("note.txt"))
    assert not (tmp_path / "mlruns").exists()  # nothing under the working directory
    client = MlflowClient(f"sqlite:///{database}")
    assert client.get_experiment(experiment).tags["mlflow.experimentKind"] == "custom_model_development"
    other = client.create_experiment("made-elsewhere")  # a GenAI experiment by MLflow's default
    assert "mlflow.experimentKind" not in client.get_experiment(other).tags
    runs.experiment_id(f"sqlite:///{database}", "made-elsewhere")
    assert client.get_experiment(other).tags["mlflow.experimentKind"] == "custom_model_development"


def test_sweep_status_counts_jobs_that_never_ran():
    assert runs.sweep_status(["FINISHED", "FINISHED"], planned=2) == "FINISHED"
    assert runs.sweep_status(["FINISHED"], planned=2, interrupted=True) == "KILLED"  # a signal between jobs
    assert runs.sweep_status(["FINISHED"], planned=2) == "FAILED"  # stopped by an error outside any job
    assert runs.sweep_status(["FINISHED", "KILLED"], planned=3) == "KILLED"
    assert runs.sweep_status(["FINISHED", "FAILED"]) == "FAILED"


def _open_job_run(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment = runs.experiment_id(uri, "signals")
    return uri, runs.job_run(experiment, "job", None, {})


@pytest.mark.slow
def test_a_signal_during_an_mlflow_write_is_raised_after_it_and_the_run_ends_killed(tmp_path):
    """Raising inside a write would leave the SQLite store locked and the run RUNNING for good."""
    uri, job_run = _open_job_run(tmp_path)
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"), job_run as run_id:
        with interrupts.held():
            signal.raise_signal(signal.SIGTERM)
            runs.log_metrics({"written_after_the_signal": 1.0})
        pytest.fail("the held signal was not raised when the write ended")
    run = MlflowClient(uri).get_run(run_id)
    assert run.info.status == "KILLED"
    assert run.data.metrics["written_after_the_signal"] == 1.0
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the job's handlers are gone with it


@pytest.mark.slow
def test_a_signal_during_a_finalizer_waits_for_the_next_knock_without_a_traceback(tmp_path, monkeypatch):
    """Python drops an exception raised in __del__ (garbage collection) and prints its traceback: the interrupt
    is not raised there, and the job still stops."""

    class SignalledDuringCollection:
        def __del__(self):
            signal.raise_signal(signal.SIGTERM)

    dropped = []
    monkeypatch.setattr(sys, "unraisablehook", dropped.append)
    uri, job_run = _open_job_run(tmp_path)
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"), job_run as run_id:
        SignalledDuringCollection()  # collected at once
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            time.sleep(0.01)
        pytest.fail("the signal was never delivered again")
    assert MlflowClient(uri).get_run(run_id).info.status == "KILLED"
    assert dropped == []  # nothing raised inside the finalizer, so nothing printed


@pytest.mark.slow
def test_a_signal_while_the_run_starts_still_ends_it_killed(tmp_path, monkeypatch):
    uri, job_run = _open_job_run(tmp_path)
    start = mlflow.start_run

    def start_then_signal(*args, **kwargs):
        run = start(*args, **kwargs)
        signal.raise_signal(signal.SIGTERM)  # arrives before the run's start has returned
        return run

    monkeypatch.setattr(mlflow, "start_run", start_then_signal)
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"), job_run:
        pytest.fail("the job went on after the signal")
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("signals").experiment_id])
    assert run.info.status == "KILLED"


@pytest.mark.slow
def test_sigterm_marks_the_job_killed(tmp_path, tiny_distilbert_dir, squad_files):
    """What a cluster sends at a time limit; Ctrl-C is covered by the resume test."""
    args = ["-m", *tiny_job_args(tiny_distilbert_dir, squad_files, "training.max_steps=100000")]
    process = start_cli(args, tmp_path)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:  # wait until the job's run exists and training is under way
            jobs = children(tmp_path)
            if jobs and "baseline_cache" in jobs[0].data.tags:
                break
            time.sleep(1)
        else:
            pytest.fail("the job never started")
        time.sleep(2)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 128 + signal.SIGTERM  # as a shell reports a process a signal stopped
    assert {r.info.status for r in logged_runs(tmp_path)[1]} == {"KILLED"}  # the job and its sweep's parent
    output = (tmp_path / "cli.log").read_text()
    assert "Traceback" not in output
    assert output.rstrip().splitlines()[-1] == "Stopped (signal SIGTERM): every run it had open ended KILLED"


@pytest.mark.slow
def test_sigterm_while_the_sweep_writes_its_report_still_ends_it(
    tmp_path, tiny_distilbert_dir, squad_files, monkeypatch
):
    """A time limit that strikes while the sweep writes its report must not leave the parent run RUNNING."""
    build = report.build
    signalled = []

    def build_then_signal(*args, **kwargs):
        signal.raise_signal(signal.SIGTERM)  # delivered to this process, mid-bookkeeping
        signalled.append(True)
        return build(*args, **kwargs)

    monkeypatch.setattr(report, "build", build_then_signal)
    result = run_in_process(
        ["-m", *tiny_job_args(tiny_distilbert_dir, squad_files, "benchmark.enabled=false")], tmp_path
    )
    assert signalled and result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "sweep" / "report.md").is_file()  # the report was finished
    assert {r.info.status for r in logged_runs(tmp_path)[1]} == {"FINISHED"}  # every planned job ran: so did the sweep
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the sweep gave its handlers back


@pytest.mark.parametrize("multirun", [False, True])
def test_an_unreachable_tracking_server_is_refused_in_one_line_before_any_job(
    multirun, tmp_path, tiny_distilbert_dir, squad_files
):
    args = tiny_job_args(tiny_distilbert_dir, squad_files, "tracking.uri=http://127.0.0.1:9", fine_tune=False)
    result = run_in_process(["-m", *args] if multirun else args, tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "tracking.uri=http://127.0.0.1:9: no MLflow tracking server answers" in result.stderr
    assert not list(tmp_path.rglob("predictions.json")) and not list(tmp_path.rglob("mlflow.db"))


@pytest.mark.slow
def test_runs_whose_process_died_are_marked_killed_by_the_next_job_and_live_ones_are_not(
    tmp_path, tiny_distilbert_dir, squad_files
):
    import socket
    import subprocess
    import sys

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = gone.stdout.strip()  # a process that has exited: what kill -9 leaves
    uri = store_uri(tmp_path)
    experiment = runs.experiment_id(uri, "qa-compress")
    client = MlflowClient(uri)
    host = socket.gethostname()
    dead = client.create_run(experiment, run_name="dead", tags={"host": host, "pid": dead_pid}).info.run_id
    alive = client.create_run(experiment, run_name="alive", tags={"host": host, "pid": str(os.getpid())}).info.run_id
    other_host = {"host": "not-" + host, "pid": dead_pid}
    elsewhere = client.create_run(experiment, run_name="other", tags=other_host).info.run_id
    result = run_in_process(tiny_job_args(tiny_distilbert_dir, squad_files, fine_tune=False), tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert client.get_run(dead).info.status == "KILLED"
    assert f"pid {dead_pid} on {host}) died" in client.get_run(dead).data.tags["error"]
    assert client.get_run(alive).info.status == client.get_run(elsewhere).info.status == "RUNNING"
    (job,) = [r for r in logged_runs(tmp_path)[1] if r.info.run_name not in {"dead", "alive", "other"}]
    assert job.data.tags["host"] == host and job.data.tags["pid"] == str(os.getpid())


@pytest.mark.beside_slurm  # times nothing
@pytest.mark.slow
def test_processes_opening_one_fresh_store_at_once_all_get_the_same_experiment(tmp_path):
    uri = store_uri(tmp_path)
    code = f"from qa_compress.tracking import runs; print(runs.experiment_id({uri!r}, 'qa-compress'))"
    workers = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    results = [worker.communicate(timeout=120) for worker in workers]
    assert all(worker.returncode == 0 for worker in workers), [err[-2000:] for _, err in results]
    assert len({out.strip() for out, _ in results}) == 1
    assert len(MlflowClient(uri).search_experiments()) == 2  # Default and qa-compress, each once


def test_a_sweep_whose_parent_run_cannot_be_created_starts_no_job(
    tmp_path, tiny_distilbert_dir, squad_files, monkeypatch
):
    def broken(*args, **kwargs):
        raise sqlite3.OperationalError("no such column: jobs.function_fullname")

    monkeypatch.setattr(runs, "start_sweep", broken)
    sweep = tiny_job_args(tiny_distilbert_dir, squad_files, "pruning=l1_unstructured", "pruning.amount=0.1,0.2")
    result = run_in_process(["-m", *sweep], tmp_path)
    assert result.returncode == 1
    assert "the sweep stopped while creating its MLflow parent run in sqlite:///" in result.stderr
    assert "OperationalError: no such column: jobs.function_fullname); no job was started" in result.stderr
    assert "Traceback" not in result.stderr
    assert logged_runs(tmp_path)[1] == [] and not (tmp_path / "sweep" / "0").exists()


# Another process that keeps taking SQLite's write lock on the store, holding it for a while each time.
_LOCK_HOLDER = """
import sqlite3, sys, time
database, until = sys.argv[1], float(sys.argv[2])
connection = sqlite3.connect(database, timeout=60, isolation_level=None)
connection.execute("CREATE TABLE IF NOT EXISTS busy_neighbour (at REAL)")
while time.time() < until:
    connection.execute("BEGIN IMMEDIATE")
    connection.execute("INSERT INTO busy_neighbour VALUES (?)", (time.time(),))
    time.sleep(0.6)
    connection.execute("COMMIT")
    time.sleep(0.2)
"""


@pytest.mark.beside_slurm  # times nothing
@pytest.mark.slow
def test_a_parallel_sweep_on_a_busy_sqlite_store_records_every_job_once_and_complete(
    tmp_path, tiny_distilbert_dir, squad_files
):
    uri = store_uri(tmp_path)
    runs.experiment_id(uri, "qa-compress")  # the store's schema, before the neighbour takes its lock
    database = uri.removeprefix("sqlite:///")
    neighbour = subprocess.Popen([sys.executable, "-c", _LOCK_HOLDER, database, str(time.time() + 600)])
    try:
        amounts = "pruning.amount=0.0,0.1,0.2,0.3,0.4,0.5"
        args = tiny_job_args(
            tiny_distilbert_dir,
            squad_files,
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=3",
            "pruning=l1_unstructured",
            amounts,
            "quantization=none,dynamic_int8",
            "benchmark.enabled=false",  # the store's writes are what is tested, not the timing
            fine_tune=False,
        )
        result = run_cli(["-m", *args], tmp_path)
    finally:
        neighbour.kill()
        neighbour.wait()
    assert result.returncode == 0, result.stderr[-3000:]
    client, logged = logged_runs(tmp_path)
    assert not [r for r in logged if r.info.status == "RUNNING"]
    jobs = children(tmp_path)
    assert len(jobs) == 12 and {j.info.status for j in jobs} == {"FINISHED"}
    assert len({j.data.tags["config_hash"] for j in jobs}) == 12  # each job once
    assert all(j.data.tags.get("complete") == "true" and "f1" in j.data.metrics for j in jobs)  # none hollow
    (parent,) = [r for r in logged if r.info.run_id not in {j.info.run_id for j in jobs}]
    assert parent.info.status == "FINISHED"


@pytest.mark.slow
def test_sigterm_while_the_sweep_evaluates_its_reference_ends_every_run_without_a_traceback(
    tmp_path, tiny_distilbert_dir, squad_files
):
    """A sweep without an uncompressed job evaluates one at its end; a stop then must still end the sweep."""
    extra = ("pruning=l1_unstructured", "pruning.amount=0.3", "benchmark.repeats=800")
    process = start_cli(["-m", *tiny_job_args(tiny_distilbert_dir, squad_files, *extra, fine_tune=False)], tmp_path)
    try:
        deadline = time.time() + 240
        while time.time() < deadline:  # the job finished, and the reference's run is under way
            jobs = children(tmp_path)
            if len(jobs) == 2 and any(j.info.status == "RUNNING" and "device" in j.data.tags for j in jobs):
                break
            time.sleep(0.5)
        else:
            pytest.fail("the reference never started")
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
    finally:
        process.kill()
    output = (tmp_path / "cli.log").read_text()
    assert "Traceback" not in output, output[-3000:]
    assert "Stopped while evaluating the uncompressed reference" in output, output[-3000:]
    statuses = sorted((j.data.params["pruning.name"], j.info.status) for j in children(tmp_path))
    assert statuses == [("l1_unstructured", "FINISHED"), ("none", "KILLED")]
    (parent,) = parents(tmp_path)
    assert parent.info.status == "KILLED"  # the sweep was stopped before it had its reference


@pytest.mark.slow
@pytest.mark.beside_slurm  # mostly waits on the lock
@pytest.mark.parametrize(
    ("lock", "expected", "within_s"),
    [  # the stated 2 s and the start-up before the wait (longer on a busy machine); MLflow's own 20 s per statement
        # would come on top: before torch loads (the store check), or after it and the checks (the run's start)
        ("EXCLUSIVE", "locked by another process for 2 s (tracking.lock_wait_s); try again when it is done", 15),
        ("IMMEDIATE", "the MLflow store stayed locked by another process for", 25),
    ],
    ids=["no-reader-either", "writers-only"],
)
def test_a_store_locked_when_a_job_starts_is_waited_on_then_refused_in_one_line(
    lock, expected, within_s, tmp_path, tiny_distilbert_dir, squad_files
):
    """A neighbour holds the store: readers too (the job's check waits), or writers only (its run's start waits)."""
    uri = store_uri(tmp_path)
    runs.experiment_id(uri, "qa-compress")
    neighbour = sqlite3.connect(tmp_path / "mlruns" / "mlflow.db", isolation_level=None)
    neighbour.execute(f"BEGIN {lock}")
    try:
        started = time.monotonic()
        args = tiny_job_args(tiny_distilbert_dir, squad_files, "tracking.lock_wait_s=2", fine_tune=False)
        result = run_cli(args, tmp_path, timeout=120)
        waited = time.monotonic() - started
    finally:
        neighbour.execute("ROLLBACK")
        neighbour.close()
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if " INFO " not in line]
    assert len(lines) == 1 and expected in lines[0], result.stderr[-3000:]
    assert "(tracking.lock_wait_s" in lines[0]
    assert waited < within_s
    assert logged_runs(tmp_path)[1] == []  # no run was created, so none is left RUNNING


@contextlib.contextmanager
def small_disk(path: Path, size_mb: int) -> Iterator[Path]:
    """A file system of its own at `path`, `size_mb` large: a disk that can fill up without harming the machine."""
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)], capture_output=True
    )
    if mounted.returncode != 0:  # skipped here and there, failed in CI (CI=true), which runs as root
        unavailable("tmpfs", OSError(f"a tmpfs cannot be mounted here ({mounted.stderr.decode().strip()})"))
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def fill_leaving(disk: Path, free_bytes: int) -> None:
    """Fill `disk` until `free_bytes` are left, as another program would."""
    filler = shutil.disk_usage(disk).free - free_bytes
    with (disk / "filler").open("wb") as handle:
        handle.truncate(0)
        handle.write(b"\0" * filler)


@pytest.fixture(scope="module")
def small_bert_checkpoint(tmp_path_factory, tokenizer) -> Path:
    """A BERT QA checkpoint of about 20 MB: more than the space the disk-full tests leave."""
    config = tiny_bert_config(tokenizer, hidden_size=128, intermediate_size=2048)
    return save_tiny(BertForQuestionAnswering, config, tokenizer, tmp_path_factory.mktemp("small_bert_checkpoint"))


@pytest.mark.slow
@pytest.mark.beside_slurm  # small jobs on a tiny model, nothing timed
@pytest.mark.parametrize("full", ["run directory and store", "cache"])
def test_a_full_disk_fails_the_job_in_one_line_naming_the_place_and_leaves_nothing_half_written(
    full, tmp_path, small_bert_checkpoint, squad_files
):
    """The model saved into a full run directory (the store on the same disk), or the fine-tuned baseline into a
    full cache: the job ends FAILED, says where and how much, and gives back the space its partial files took."""
    with small_disk(tmp_path / "disk", 24) as disk:
        places = {"paths.mlruns_dir": disk / "mlruns", "hydra.run.dir": disk / "run"}
        if full == "cache":
            places = {"paths.cache_dir": disk / "cache"}
        runs.experiment_id(f"sqlite:///{places.get('paths.mlruns_dir', tmp_path / 'mlruns')}/mlflow.db", "qa-compress")
        fill_leaving(disk, 2_000_000)
        before = shutil.disk_usage(disk).free
        job = "save_model=true" if full != "cache" else "training.max_steps=1"
        overrides = [job, *(f"{key}={value}" for key, value in places.items())]
        args = tiny_job_args(small_bert_checkpoint, squad_files, *overrides, fine_tune=full == "cache")
        result = run_cli(args, tmp_path)
        after = shutil.disk_usage(disk).free
        store = places.get("paths.mlruns_dir", tmp_path / "mlruns")
        client = MlflowClient(f"sqlite:///{store}/mlflow.db")
        (run,) = client.search_runs([client.get_experiment_by_name("qa-compress").experiment_id])
        written = [p for p in disk.rglob("*") if p.is_file() and p.stat().st_size > 100_000 and p.name != "filler"]
        leftovers = [p for p in disk.rglob(".*") if p.is_dir() and p.name != ".hydra"]
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if " INFO " not in line]
    place = places["paths.cache_dir"] if full == "cache" else places["hydra.run.dir"]
    assert len(lines) == 1 and lines[0].startswith(f"{place}: no space left on device ("), result.stderr[-3000:]
    model_mb = (small_bert_checkpoint / "model.safetensors").stat().st_size / 1e6
    assert f"this job writes about {model_mb:,.0f} MB there" in lines[0]
    assert run.info.status == "FAILED" and "no space left on device" in run.data.tags["error"]
    assert "complete" not in run.data.tags  # so the next run of this job runs it again
    assert [p for p in written if p.name != "mlflow.db"] == [] and leftovers == []  # no partial model, no half entry
    assert after > before - 300_000  # what it wrote is given back (the store grew by a run, Hydra wrote its log)


@pytest.mark.parametrize(
    ("error", "full"),
    [
        (OSError(errno.ENOSPC, "No space left on device", "/data/model.safetensors"), True),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), True),
        (RuntimeError("Error while serializing: IoError(Os { code: 28, kind: StorageFull })"), True),  # safetensors
        (sqlite3.OperationalError("database or disk is full"), True),
        (OSError(errno.EACCES, "Permission denied", "/data"), False),
        (RuntimeError("CUDA out of memory"), False),
    ],
)
def test_a_full_disk_is_recognised_whichever_library_ran_into_it(error, full):
    try:
        try:
            raise error
        except Exception as cause:
            raise RuntimeError("saving the model failed") from cause  # how a library wraps it
    except RuntimeError as wrapped:
        assert disk.is_full(wrapped) is full


def test_what_a_job_wrote_since_it_started_is_removed_and_its_config_and_logs_kept(tmp_path):
    old = tmp_path / "predictions-of-an-earlier-run.json"
    old.write_text("{}")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    started = time.time() - 1
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.safetensors").write_bytes(b"\0" * 5000)  # the partial model
    (tmp_path / "predictions.json").write_bytes(b"\0" * 700)
    for kept in ("config.yaml", "run.log"):
        (tmp_path / kept).write_text("kept")
    (tmp_path / ".hydra").mkdir()
    freed = disk.remove_written_since(tmp_path, started, ("config.yaml", "*.log", ".hydra"))
    assert freed == 5700
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".hydra",
        "config.yaml",
        "predictions-of-an-earlier-run.json",
        "run.log",
    ]
    message = disk.full_message(tmp_path, needed=10**15, freed=freed)
    assert message.startswith(f"{tmp_path}: no space left on device (") and "its partial files (6 kB)" in message
