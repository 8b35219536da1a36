"""Sweeps: every job checked before the first starts, launchers, and an interrupted sweep resumed."""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from mlflow.tracking import MlflowClient
from omegaconf import open_dict

from qa_compress.job.config import from_hydra
from qa_compress.sweep import report, search_space
from qa_compress.sweep.callback import BasicSweeper, reference_job, sweep_jobs
from qa_compress.tracking import runs

from .conftest import (
    ROOT,
    assert_refused,
    children,
    compose_config,
    free_port,
    local_server,
    parents,
    run_cli,
    run_in_process,
    start_cli,
    store_uri,
    tiny_job_args,
)


def _sweep_config(overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


def test_quickstart_sweeps_six_jobs():
    jobs = sweep_jobs(_sweep_config(["experiment=quickstart"]))
    assert len(jobs) == 6
    assert ["pruning.amount=0.0", "quantization=none", "experiment=quickstart"] in jobs


def test_the_compound_recipe_stacks_every_step_and_its_search_asks_for_the_fastest_within_one_f1():
    config = _sweep_config(["experiment=compound"])
    jobs = sweep_jobs(config)
    assert sorted(job[0] for job in jobs) == ["quantization=onnx_static_int8", "quantization=openvino_int8"]
    job = from_hydra(compose_config(["experiment=compound", "quantization=openvino_int8"]))
    p = job.pruning
    assert (p.name, p.layers_amount, p.heads_amount, p.ffn_amount, p.schedule) == (
        "structured",
        0.17,
        0.25,
        0.5,
        "gradual",
    )
    assert p.distill and p.distill_hidden_weight > 0 and p.finetune_steps > 0
    assert job.predict.null_threshold == "calibrate" and job.benchmark.enabled and job.benchmark.reference

    search = _sweep_config(["experiment=compound_search"]).hydra.sweeper
    assert search._target_.endswith("ParetoSweeper") and search.max_f1_drop == 1.0 and search.n_trials == 12
    space = search_space.parse([], search.params, ["pruning", "quantization"])
    assert {param.key for param in space.params} == {
        "pruning.layers_amount",
        "pruning.heads_amount",
        "pruning.ffn_amount",
        "quantization",
    }


def test_the_benchmark_sweeps_are_experiments_with_their_grids():
    counts = {
        e: len(sweep_jobs(_sweep_config([f"experiment={e}"])))
        for e in (
            "tradeoffs_quantization",
            "tradeoffs_unstructured",
            "tradeoffs_structured",
            "tradeoffs_qat",
            "tradeoffs_accuracy_control",
            "tradeoffs_bf16",
        )
    }
    assert counts == {
        "tradeoffs_quantization": 6,
        "tradeoffs_unstructured": 27,
        "tradeoffs_structured": 4,
        "tradeoffs_qat": 1,
        "tradeoffs_accuracy_control": 1,
        "tradeoffs_bf16": 2,
    }
    narrowed = sweep_jobs(_sweep_config(["experiment=tradeoffs_unstructured", "pruning.amount=0.5"]))
    assert len(narrowed) == 3  # a command-line value replaces the experiment's grid for that key


def test_the_job_list_comes_from_hydras_own_basic_sweeper():
    """The sweep check relies on Hydra's private BasicSweeper.split_arguments: this fails if Hydra moves it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    assert BasicSweeper.__module__ == "hydra._internal.core_plugins.basic_sweeper"
    parsed = OverridesParser.create().parse_overrides(["pruning.amount=0.1,0.2", "quantization=none,bf16"])
    jobs = [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
    assert len(jobs) == 4 and ["pruning.amount=0.2", "quantization=bf16"] in jobs


def test_the_reference_of_an_experiment_that_sets_its_method_keys_composes_without_them(tmp_path):
    """tradeoffs_qat sets quantization.qat_steps, which quantization=none does not have."""
    job = ["experiment=tradeoffs_qat", "quantization.qat_learning_rate=1e-5", "pruning.amount=0.3"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        job_cfg, overrides = reference_job("config", job)
    assert overrides == ["experiment=tradeoffs_qat", "pruning=none", "quantization=none", "~quantization.qat_steps"]
    with open_dict(job_cfg):
        job_cfg.hydra.runtime.output_dir = str(tmp_path)
    HydraConfig.instance().set_config(job_cfg)
    reference = from_hydra(job_cfg)
    assert (reference.pruning.name, reference.quantization.name) == ("none", "none")


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml")))
def test_every_experiments_reference_is_a_job_run_py_accepts(experiment, tmp_path):
    """The compound recipe recovers (400 steps, distillation, a gradual schedule), which pruning=none refuses:
    its uncompressed reference takes none's defaults for them."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        job_cfg, overrides = reference_job("config", [f"experiment={experiment}"])
    with open_dict(job_cfg):
        job_cfg.hydra.runtime.output_dir = str(tmp_path)
    HydraConfig.instance().set_config(job_cfg)
    reference = from_hydra(job_cfg)
    p = reference.pruning
    assert (p.name, reference.quantization.name) == ("none", "none"), overrides
    assert (p.finetune_steps, p.distill, p.distill_hidden_weight, p.schedule) == (0, False, 0.0, "oneshot")


def test_a_bad_value_in_any_job_stops_the_sweep_before_the_first(tmp_path, tiny_distilbert_dir, squad_files):
    args = tiny_job_args(tiny_distilbert_dir, squad_files, "pruning=l1_unstructured", "pruning.amount=0.2,1.5")
    assert_refused(run_in_process(["-m", *args], tmp_path), tmp_path, "pruning.amount=1.5")
    mixed = tiny_job_args(tiny_distilbert_dir, squad_files, "pruning=l1_unstructured,structured", "pruning.amount=0.2")
    assert_refused(run_in_process(["-m", *mixed], tmp_path), tmp_path, "Could not override 'pruning.amount'")
    assert not (tmp_path / "cache" / "baselines").exists()  # nothing was trained


@pytest.mark.beside_slurm  # times nothing
@pytest.mark.slow
def test_submitit_launcher_fine_tunes_once_and_groups_runs_under_the_sweep(tmp_path, tiny_distilbert_dir, squad_files):
    """joblib, the other launcher, runs in the interrupted-sweep test below."""
    launcher = ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10"]
    args = tiny_job_args(
        tiny_distilbert_dir,
        squad_files,
        "pruning=l1_unstructured",
        "pruning.amount=0.0,0.5",
        *launcher,
        "benchmark.enabled=false",
    )
    result = run_cli(["-m", *args], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (parent,) = parents(tmp_path)
    jobs = children(tmp_path)
    assert len(jobs) == 2
    assert {c.data.tags["mlflow.parentRunId"] for c in jobs} == {parent.info.run_id}
    assert all(c.info.status == "FINISHED" for c in jobs) and parent.info.status == "FINISHED"
    # Both jobs started on an empty cache at once: exactly one fine-tuned, the other waited and loaded it.
    assert Counter(c.data.tags["baseline_cache"] for c in jobs)["miss"] == 1


@pytest.mark.slow
def test_a_sweep_on_a_slurm_cluster_is_accounted_and_a_cancelled_job_completes_on_rerun(
    slurm, tmp_path, tiny_distilbert_dir, squad_files
):
    launcher = [
        "hydra/launcher=submitit_slurm",
        "hydra.launcher.partition=debug",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.timeout_min=10",
    ]
    args = [
        "-m",
        *tiny_job_args(
            tiny_distilbert_dir,
            squad_files,
            "pruning=l1_unstructured",
            "pruning.amount=0.0,0.3,0.6",
            *launcher,
            "benchmark.repeats=100",
        ),
    ]
    process = start_cli(args, tmp_path, env=slurm.env)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not _started_after_a_finish(children(tmp_path)):
            time.sleep(0.5)
        running = [c for c in children(tmp_path) if c.info.status == "RUNNING"]
        victim = max(running, key=lambda run: run.info.start_time)  # started after a job finished
        slurm.run("scancel", victim.data.tags["slurm_job_id"])  # SLURM sends SIGTERM, then SIGKILL
        process.wait(timeout=180)
    finally:
        if process.poll() is None:
            process.kill()
    log = (tmp_path / "cli.log").read_text()[-3000:]
    assert process.returncode != 0, log
    jobs = {c.data.tags["slurm_job_id"]: c for c in children(tmp_path)}
    assert jobs[victim.data.tags["slurm_job_id"]].info.status == "KILLED", log
    (parent,) = parents(tmp_path)
    assert {c.data.tags["mlflow.parentRunId"] for c in jobs.values()} == {parent.info.run_id}
    accounted = {row["JobIDRaw"]: row["State"] for row in slurm.accounting()}
    assert set(jobs) <= set(accounted)  # every job's run names a job sacct knows
    assert accounted[victim.data.tags["slurm_job_id"]].startswith("CANCELLED")
    assert any(accounted[job] == "COMPLETED" for job in jobs)

    result = run_in_process([a for a in args if a not in launcher], tmp_path)  # the rerun, here on this machine
    assert result.returncode == 0, result.stderr[-2000:]
    finished = Counter(c.data.params["pruning.amount"] for c in children(tmp_path) if c.info.status == "FINISHED")
    assert finished == {"0.0": 1, "0.3": 1, "0.6": 1}  # every job once, none twice
    assert Counter(c.data.tags.get("baseline_cache") for c in children(tmp_path))["miss"] == 1  # nothing retrained


def _started_after_a_finish(runs) -> bool:
    """A job is under way that started after another finished, so its whole benchmark lies ahead.

    Waiting only for one FINISHED and one RUNNING job races: the two first jobs start together, and the
    second may be about to finish when the first does.
    """
    ends = [r.info.end_time for r in runs if r.info.status == "FINISHED"]
    return bool(ends) and any(r.info.status == "RUNNING" and r.info.start_time > min(ends) for r in runs)


@pytest.mark.slow
def test_interrupted_parallel_sweep_resumes_without_retraining_or_duplicates(
    tmp_path, tiny_distilbert_dir, squad_files
):
    parallel = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    # Long enough benchmarks that the signal finds a job under way.
    args = [
        "-m",
        *tiny_job_args(
            tiny_distilbert_dir,
            squad_files,
            "pruning=l1_unstructured",
            "pruning.amount=0.0,0.3,0.6",
            *parallel,
            "benchmark.repeats=500",
        ),
    ]
    process = start_cli(args, tmp_path, start_new_session=True)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and not _started_after_a_finish(children(tmp_path)):
            time.sleep(0.5)
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C in a terminal reaches the launcher and its workers
        process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise
    assert process.returncode != 0
    statuses = Counter(c.info.status for c in children(tmp_path))
    errors = [c.data.tags.get("error") for c in children(tmp_path)]
    assert statuses["FINISHED"] >= 1 and statuses["KILLED"] >= 1 and statuses["RUNNING"] == 0, (statuses, errors)
    (parent,) = parents(tmp_path)
    assert parent.info.status == "KILLED"
    assert {c.data.tags["mlflow.parentRunId"] for c in children(tmp_path)} == {parent.info.run_id}

    # Resumed in this process with the default launcher: which launcher runs a job is not part of its identity.
    resumed = [a for a in args if a not in parallel]
    result = run_in_process(resumed, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    jobs = children(tmp_path)
    finished = Counter(c.data.params["pruning.amount"] for c in jobs if c.info.status == "FINISHED")
    assert finished == {"0.0": 1, "0.3": 1, "0.6": 1}  # every job once, none twice
    # Two jobs started in parallel on an empty cache: one fine-tuned, the other waited and loaded it.
    assert Counter(c.data.tags.get("baseline_cache") for c in jobs)["miss"] == 1  # and nothing retrained


@pytest.mark.slow
def test_two_sweeps_started_together_run_a_shared_job_once(tmp_path, tiny_distilbert_dir, squad_files):
    shared = tiny_job_args(tiny_distilbert_dir, squad_files, "benchmark.repeats=200", fine_tune=False)
    runs.experiment_id(store_uri(tmp_path), "qa-compress")  # one schema, made once
    common = [f"paths.cache_dir={tmp_path / 'cache'}", f"paths.mlruns_dir={tmp_path / 'mlruns'}"]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    first, second = (
        subprocess.Popen(
            [sys.executable, str(ROOT / "run.py"), "-m", *shared, *common, f"hydra.sweep.dir={tmp_path / name}"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name in ("a", "b")
    )
    assert first.wait(timeout=300) == 0 and second.wait(timeout=300) == 0
    jobs = children(tmp_path)
    assert [j.info.status for j in jobs] == ["FINISHED"]  # one ran it; the other waited on its claim and reused it
    assert len(parents(tmp_path)) == 2
    reused = [p for p in parents(tmp_path) if p.info.run_id != jobs[0].data.tags["mlflow.parentRunId"]]
    assert jobs[0].data.tags[runs.reuse_tag(reused[0].info.run_id)] == "true"  # a job of both sweeps


@pytest.fixture
def tracking_server(tmp_path):
    """`mlflow server` on a free local port (SQLite behind it, artifacts served through it); its URI."""
    store = tmp_path / "server"
    store.mkdir()
    uri = f"http://127.0.0.1:{free_port()}"
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        f"sqlite:///{store / 'mlflow.db'}",
        "--artifacts-destination",
        str(store / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        uri.rsplit(":", 1)[1],
    ]
    with local_server(command, f"{uri}/health", store / "server.log"):
        yield uri


@pytest.mark.beside_slurm  # times nothing
@pytest.mark.slow
def test_a_parallel_sweep_logs_to_a_tracking_server_and_the_report_is_rebuilt_from_it(
    tmp_path, tiny_distilbert_dir, squad_files, tracking_server, capsys
):
    args = [
        "-m",
        *tiny_job_args(
            tiny_distilbert_dir,
            squad_files,
            "pruning=l1_unstructured",
            "pruning.amount=0.0,0.5",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            f"tracking.uri={tracking_server}",
            "benchmark.enabled=false",
        ),
    ]
    result = run_cli(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(tracking_server)
    experiment = client.get_experiment_by_name("qa-compress").experiment_id
    logged = client.search_runs([experiment])
    (parent,) = [r for r in logged if "sweep_dir" in r.data.tags]
    jobs = [r for r in logged if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(jobs) == 2 and {r.info.status for r in [parent, *jobs]} == {"FINISHED"}
    served = client.download_artifacts(jobs[0].info.run_id, "predictions.json", str(tmp_path / "dl"))
    assert json.loads(Path(served).read_text())  # artifacts went through the server, not to a local directory
    assert not (tmp_path / "mlruns").exists() and not (ROOT / "mlruns" / "artifacts" / experiment).exists()

    capsys.readouterr()
    assert report.main(["--tracking-uri", tracking_server, "--out-dir", str(tmp_path / "again")]) == 0
    assert f"Report of sweep {parent.info.run_id}" in capsys.readouterr().out
    assert len((tmp_path / "again" / "report.csv").read_text().splitlines()) == 1 + 2


@pytest.mark.slow
def test_an_uncompressed_job_however_spelled_is_the_reference_and_is_not_evaluated_again(
    tmp_path, tiny_distilbert_dir, squad_files, monkeypatch
):
    """`l1_unstructured` at amount 0 is the uncompressed model: a later sweep without one reuses it as its reference,
    and the report calls it uncompressed. Each job is composed once to run it: Hydra's basic sweeper composes
    every job a second time before launching any, which the sweep's own checks make needless."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    first = ["-m", *tiny_job_args(tiny_distilbert_dir, squad_files, "pruning=l1_unstructured", "pruning.amount=0.0")]
    assert run_in_process(first, tmp_path).returncode == 0
    (amount_zero,) = children(tmp_path)
    assert amount_zero.data.tags["uncompressed"] == "true" and "speedup" not in amount_zero.data.metrics  # not timed
    composed = []
    compose = ConfigLoaderImpl.load_sweep_config

    def counted(self, master_config, sweep_overrides):
        composed.append(list(sweep_overrides))
        return compose(self, master_config, sweep_overrides)

    monkeypatch.setattr(ConfigLoaderImpl, "load_sweep_config", counted)
    later = [*first[:-1], "pruning.amount=0.5"]  # no uncompressed job of its own
    result = run_in_process(later, tmp_path)
    assert len(composed) == 1  # the one job, composed to run it
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"as the reference, reused finished run {amount_zero.info.run_id}" in result.stdout
    assert len(children(tmp_path)) == 2  # the amount-0.5 job; the reference was not evaluated again
    report = (tmp_path / "sweep" / "report.md").read_text()
    assert "| uncompressed |" in report and "l1_unstructured 0 |" not in report
