"""Scaling out and surviving faults: launchers, the shared cache under concurrency, resume, no pickles."""

import json
import multiprocessing
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient
from transformers import AutoModelForQuestionAnswering, AutoTokenizer

from qa_compress import cache, quantize, tracking

from . import lock_workers
from .conftest import ROOT, run_cli, tiny_sweep_args
from .test_run import _runs


def _children(tmp_path):
    return [r for r in _runs(tmp_path)[1] if "mlflow.parentRunId" in r.data.tags]


def test_submitit_launcher_fine_tunes_once_and_groups_runs_under_the_sweep(tmp_path, tiny_distilbert_dir, squad_files):
    """joblib, the other launcher, runs in the interrupted-sweep test below."""
    launcher = ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10"]
    args = tiny_sweep_args(
        tiny_distilbert_dir, squad_files, "pruning.amount=0.0,0.5", *launcher, "benchmark.enabled=false"
    )
    result = run_cli(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = _runs(tmp_path)[1]
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = _children(tmp_path)
    assert len(children) == 2
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert all(c.info.status == "FINISHED" for c in children) and parent.info.status == "FINISHED"
    # Both jobs started on an empty cache at once: exactly one fine-tuned, the other waited and loaded it.
    assert Counter(c.data.tags["baseline_cache"] for c in children)["miss"] == 1


def test_a_failing_job_does_not_lose_the_others(tmp_path, tiny_distilbert_dir, squad_files):
    # Damaged weights pass the up-front checks (they read configs only) and fail when the job loads them.
    broken = shutil.copytree(tiny_distilbert_dir, tmp_path / "damaged_model")
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    args = [
        a for a in tiny_sweep_args(tiny_distilbert_dir, squad_files, "pruning.amount=0.0") if "name_or_path" not in a
    ]
    result = run_cli([*args, f"model.name_or_path={tiny_distilbert_dir},{broken}"], tmp_path)
    assert result.returncode != 0
    statuses = {c.data.params["model.name_or_path"]: c.info.status for c in _children(tmp_path)}
    assert statuses == {str(tiny_distilbert_dir): "FINISHED", str(broken): "FAILED"}
    assert "1 of 2 job(s) did not finish" in result.stderr
    failed = next(c for c in _children(tmp_path) if c.info.status == "FAILED")
    assert failed.data.tags["error"] and f"{failed.info.run_name}: FAILED" in result.stderr
    (parent,) = [r for r in _runs(tmp_path)[1] if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status == "FAILED"
    assert (tmp_path / "sweep" / "report.csv").is_file()  # the report is written all the same


def test_interrupted_parallel_sweep_resumes_without_retraining_or_duplicates(
    tmp_path, tiny_distilbert_dir, squad_files
):
    parallel = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    # Long enough benchmarks that the signal finds a job under way.
    args = tiny_sweep_args(
        tiny_distilbert_dir, squad_files, "pruning.amount=0.0,0.3,0.6", *parallel, "benchmark.repeats=500"
    )
    command = [sys.executable, str(ROOT / "run.py"), *args,
               f"paths.cache_dir={tmp_path / 'cache'}", f"paths.mlruns_dir={tmp_path / 'mlruns'}",
               f"hydra.sweep.dir={tmp_path / 'sweep'}"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.time() + 180
        while time.time() < deadline:  # until a job has finished and another is under way
            statuses = {c.info.status for c in _children(tmp_path)}
            if {"FINISHED", "RUNNING"} <= statuses:
                break
            time.sleep(0.5)
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C in a terminal reaches the launcher and its workers
        process.wait(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode != 0
    statuses = Counter(c.info.status for c in _children(tmp_path))
    errors = [c.data.tags.get("error") for c in _children(tmp_path)]
    assert statuses["FINISHED"] >= 1 and statuses["KILLED"] >= 1 and statuses["RUNNING"] == 0, (statuses, errors)
    (parent,) = [r for r in _runs(tmp_path)[1] if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status == "KILLED"
    assert {c.data.tags["mlflow.parentRunId"] for c in _children(tmp_path)} == {parent.info.run_id}

    result = run_cli(args, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    children = _children(tmp_path)
    finished = Counter(c.data.params["pruning.amount"] for c in children if c.info.status == "FINISHED")
    assert finished == {"0.0": 1, "0.3": 1, "0.6": 1}  # every job once, none twice
    # Two jobs started in parallel on an empty cache: one fine-tuned, the other waited and loaded it.
    assert Counter(c.data.tags.get("baseline_cache") for c in children)["miss"] == 1  # and nothing retrained


def test_four_processes_build_a_cache_entry_exactly_once(tmp_path):
    entry, log = tmp_path / "entry", tmp_path / "builds.log"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=lock_workers.build_once, args=(str(entry), str(log))) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]
    assert len(log.read_text().splitlines()) == 1
    assert (entry / "data.txt").read_text() == "built" and cache.damage(entry) is None


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    entry = tmp_path / "entry"
    holder = multiprocessing.get_context("spawn").Process(target=lock_workers.hold_lock, args=(str(entry),))
    holder.start()
    deadline = time.time() + 60
    while not entry.with_name("entry.lock").exists() and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(1)
    with pytest.raises(Exception, match="another job is still building"), cache.locked(entry, timeout_s=0.5):
        pass
    os.kill(holder.pid, signal.SIGKILL)
    holder.join()
    with cache.locked(entry, timeout_s=5):  # taken at once: the OS released the dead holder's lock
        pass


def test_a_damaged_entry_is_reported_and_rebuilt(tmp_path, caplog):
    entry = tmp_path / "entry"
    with cache.building(entry) as tmp:
        (tmp / "weights.bin").write_bytes(b"1234")
    assert cache.usable(entry)
    (entry / "weights.bin").write_bytes(b"1235")
    assert not cache.usable(entry)
    assert "checksum mismatch in weights.bin" in caplog.text and not entry.exists()


class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def test_rerun_skips_finished_jobs_a_planted_pickle_never_runs_and_runs_are_reproducible(
    tmp_path, tiny_distilbert_dir, squad_files
):
    args = tiny_sweep_args(tiny_distilbert_dir, squad_files, "pruning.amount=0.3", "benchmark.enabled=false")
    assert run_cli(args, tmp_path).returncode == 0
    first = (tmp_path / "sweep" / "0" / "predictions.json").read_bytes()
    first_na = (tmp_path / "sweep" / "0" / "na_probs.json").read_bytes()

    again = run_cli(args, tmp_path)  # the same sweep again: nothing to do
    assert again.returncode == 0, again.stderr[-2000:]
    assert "1 job(s) skipped" in again.stdout
    assert len([c for c in _children(tmp_path) if c.info.status == "FINISHED"]) == 1  # no duplicate
    assert len((tmp_path / "sweep" / "report.csv").read_text().splitlines()) == 1 + 1  # the rerun's report has it

    # An attacker swaps the cached baseline's weights for a pickle and fixes up the manifest.
    (entry,) = [p for p in (tmp_path / "cache" / "baselines").iterdir() if p.is_dir()]
    marker = tmp_path / "pwned.txt"
    (entry / "model.safetensors").unlink()
    (entry / "pytorch_model.bin").write_bytes(pickle.dumps(_Exploit(marker)))
    manifest = json.loads((entry / cache.MANIFEST).read_text())
    manifest.pop("model.safetensors")
    manifest["pytorch_model.bin"] = cache.file_sha256(entry / "pytorch_model.bin")
    (entry / cache.MANIFEST).write_text(json.dumps(manifest))

    result = run_cli([*args, "force=true"], tmp_path)  # force=true reruns a finished job
    assert result.returncode == 0, result.stderr[-2000:]
    assert len([c for c in _children(tmp_path) if c.info.status == "FINISHED"]) == 2
    assert not marker.exists()  # the pickle never ran
    assert "is damaged (missing file model.safetensors)" in result.stdout + result.stderr
    newest = max(_children(tmp_path), key=lambda r: r.info.start_time)
    assert newest.data.tags["baseline_cache"] == "miss"  # rebuilt from scratch
    # Same config, same seed, same CPU: the retrained model predicts the same, byte for byte.
    assert (tmp_path / "sweep" / "0" / "predictions.json").read_bytes() == first
    assert (tmp_path / "sweep" / "0" / "na_probs.json").read_bytes() == first_na
    for key in ("seed",):
        assert newest.data.params[key] == "42"
    for tag in ("versions", "device", "num_threads", "git_commit"):
        assert newest.data.tags[tag]


def test_quantized_model_round_trips_through_safetensors(tmp_path, tiny_bert_dir):
    model = AutoModelForQuestionAnswering.from_pretrained(str(tiny_bert_dir)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_bert_dir))
    inputs = tokenizer(["Who?"], ["Nobody is there."], return_tensors="pt")
    quantized = quantize.apply(model, "dynamic_int8")
    quantize.save(quantized, tmp_path / "int8")
    assert {p.name for p in (tmp_path / "int8").iterdir()} == {"config.json", quantize.QUANTIZED_WEIGHTS}
    restored = quantize.load(tmp_path / "int8")
    with torch.no_grad():
        assert torch.equal(quantized(**inputs).start_logits, restored(**inputs).start_logits)


def _open_job_run(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment = tracking.experiment_id(uri, "signals", str(tmp_path))
    return uri, tracking.job_run(experiment, "job", None, {})


def test_a_signal_during_an_mlflow_write_is_raised_after_it_and_the_run_ends_killed(tmp_path):
    """Raising inside a write would leave the SQLite store locked and the run RUNNING for good."""
    uri, job_run = _open_job_run(tmp_path)
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"), job_run as run_id:
        with tracking.held():
            signal.raise_signal(signal.SIGTERM)
            tracking.log_metrics({"written_after_the_signal": 1.0})
        pytest.fail("the held signal was not raised when the write ended")
    run = MlflowClient(uri).get_run(run_id)
    assert run.info.status == "KILLED"
    assert run.data.metrics["written_after_the_signal"] == 1.0
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the job's handlers are gone with it


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_signal_swallowed_by_a_finalizer_is_delivered_again(tmp_path):
    """Python drops exceptions raised in __del__ (garbage collection): the job must still stop."""

    class SignalledDuringCollection:
        def __del__(self):
            signal.raise_signal(signal.SIGTERM)

    uri, job_run = _open_job_run(tmp_path)
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"), job_run as run_id:
        SignalledDuringCollection()  # collected at once: its exception is reported and ignored
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            time.sleep(0.01)
        pytest.fail("the swallowed signal was never delivered again")
    assert MlflowClient(uri).get_run(run_id).info.status == "KILLED"


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
