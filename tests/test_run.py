"""The real entry point, run as a user runs it: config composition, refusals, sweeps read back from MLflow."""

import json
import os
import signal
import subprocess
import sys
import time

import mlflow
import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from qa_compress import data, models, pipeline, quantize, tracking
from qa_compress.config import from_hydra
from qa_compress.errors import UserError
from qa_compress.sweep import sweep_jobs

from .conftest import MINILM_DIR, ROOT, run_cli, store_uri, tiny_sweep_args, write_json

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


def _compose(overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(
            config_name="config",
            overrides=["paths.root_dir=/tmp", "paths.output_dir=/tmp/out", *overrides],
            return_hydra_config=False,
        )


def test_default_config_is_distilbert_on_squad_v2_without_compression():
    job = from_hydra(_compose([]))
    assert job.model.name_or_path == "distilbert-base-uncased"
    assert (job.dataset.hub_name, job.dataset.max_seq_length, job.dataset.doc_stride) == (
        "rajpurkar/squad_v2",
        384,
        128,
    )
    assert (job.training.learning_rate, job.training.num_train_epochs, job.training.batch_size) == (3e-5, 2, 16)
    assert (job.pruning.name, job.quantization.name) == ("none", "none")


def test_minilm_l6_resolves_to_the_installed_package():
    job = from_hydra(_compose(["model=minilm_l6"]))
    assert job.model.name_or_path == str(MINILM_DIR)
    assert (MINILM_DIR / "config.json").is_file()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["pruning=l1_unstructured", "pruning.amount=1.5"],
            "pruning.amount=1.5: Input should be less than or equal to 1",
        ),
        (["pruning=l1_unstructured", "pruning.amount=-0.1"], "pruning.amount=-0.1"),
        (["dataset.doc_stride=400"], "dataset.doc_stride=400 must be smaller than dataset.max_seq_length=384"),
        (["training.learning_rate=0"], "training.learning_rate=0: Input should be greater than 0"),
        (["benchmark.repeats=0"], "benchmark.repeats=0"),
        (["dataset=squad_json"], "dataset.validation_file=null"),
        (["pruning=structured", "pruning.amount=0.3"], "pruning.amount=0.3 does not apply to pruning=structured"),
        (["pruning=random", "pruning.ffn_amount=0.5"], "apply to pruning=structured only (pruning=random)"),
        (["pruning=structured", "pruning.heads_amount=1.0"], "pruning.heads_amount=1.0: Input should be less than 1"),
        (["pruning.finetune_steps=10"], "pruning.finetune_steps=10 needs a pruning method"),
        (["pruning=structured", "pruning.importance=taylor"], "pruning.importance='taylor'"),
        (["quantization.name=int3"], "quantization.name='int3'"),
        (
            [
                "training=none",
                "dataset=squad_json",
                "dataset.validation_file=v.json",
                "pruning=l1_unstructured",
                "pruning.finetune_steps=5",
            ],
            "pruning.finetune_steps > 0 and pruning.importance=gradient need dataset.train_file",
        ),  # fmt: skip
    ],
)
def test_out_of_range_values_are_refused_by_name(overrides, message):
    with pytest.raises(UserError) as err:
        from_hydra(_compose(overrides))
    assert message in str(err.value)


def test_quickstart_sweeps_at_least_three_jobs():
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["experiment=quickstart"], return_hydra_config=True)
    jobs = sweep_jobs(cfg)
    assert len(jobs) == 6
    assert ["pruning.amount=0.0", "quantization=none", "experiment=quickstart"] in jobs


def _runs(tmp_path):
    client = MlflowClient(store_uri(tmp_path))
    experiment = client.get_experiment_by_name("qa-compress")
    return client, ([] if experiment is None else client.search_runs([experiment.experiment_id]))


def _assert_refused(result, tmp_path, *expected):
    assert result.returncode != 0
    for text in expected:
        assert text in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    if (tmp_path / "mlruns" / "mlflow.db").exists():
        assert all(run.info.status != "RUNNING" for run in _runs(tmp_path)[1])
        assert _runs(tmp_path)[1] == []


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["pruning=magnitude_of_doom"], ["Could not find 'pruning/magnitude_of_doom'", "l1_unstructured"]),
        (["-m", "pruning=l1_unstructured", "pruning.amount=0.2,1.5"], ["pruning.amount=1.5"]),
    ],
)
def test_bad_input_is_refused_before_any_work(args, expected, tmp_path):
    result = run_cli(args, tmp_path, timeout=120)
    _assert_refused(result, tmp_path, *expected)


def test_not_squad_json_and_missing_model_are_refused(tmp_path, tiny_distilbert_dir):
    records = write_json(tmp_path / "records.json", [{"question": "q", "answer": "a"}])
    base = ["training=none", "dataset=squad_json"]
    cases = [
        ([f"model.name_or_path={tiny_distilbert_dir}", f"dataset.validation_file={records}"],
         f"dataset.validation_file={records}: not SQuAD 2.0 JSON"),
        ([f"model.name_or_path={tiny_distilbert_dir}", f"dataset.validation_file={ROOT / 'pyproject.toml'}"],
         "not a JSON file"),
        ([f"model.name_or_path={tiny_distilbert_dir}", f"dataset.validation_file={records}",
          "dataset.max_seq_length=600"],
         f"dataset.max_seq_length=600: longer than the 512 positions of model.name_or_path={tiny_distilbert_dir}"),
        (["model.name_or_path=./no/such/model", f"dataset.validation_file={records}"],
         "model.name_or_path=./no/such/model: no such directory"),
        (["model=minilm_l6", "dataset.validation_file=/no/such/file.json"],
         "dataset.validation_file=/no/such/file.json: no such file"),
    ]  # fmt: skip
    for overrides, message in cases:
        with pytest.raises(UserError) as err:
            pipeline.validate(_compose([*base, *overrides]))
        assert message in str(err.value)


def test_hub_model_or_dataset_without_hub_names_it_and_the_offline_options(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(UserError) as err:
        models.check_available("some-org/model-not-cached")
    message = str(err.value)
    assert "model.name_or_path=some-org/model-not-cached" in message
    assert "Hugging Face Hub cannot be reached" in message and "model=minilm_l6" in message
    with pytest.raises(UserError) as err:
        data.check_hub_dataset("some-org/data-not-cached")
    message = str(err.value)
    assert "dataset.hub_name=some-org/data-not-cached" in message
    assert "Hugging Face Hub cannot be reached" in message and "dataset=squad_json" in message


def test_sweep_trains_once_and_logs_every_job_under_one_parent(tiny_sweep, squad_files):
    tmp_path = tiny_sweep

    client, runs = _runs(tmp_path)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 4
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert all(c.info.status == "FINISHED" for c in children)

    caches = sorted(c.data.tags["baseline_cache"] for c in children)
    assert caches == ["hit", "hit", "hit", "miss"]  # one fine-tune for the whole sweep
    assert len({c.data.tags["baseline_key"] for c in children}) == 1
    assert len([p for p in (tmp_path / "cache" / "baselines").iterdir() if p.is_dir()]) == 1

    names = {c.info.run_name for c in children}
    assert "tiny_distilbert | l1_unstructured 0.5 | dynamic_int8" in names
    for child in children:
        assert set(METRICS) <= set(child.data.metrics), set(METRICS) - set(child.data.metrics)
        assert child.data.params["pruning.amount"] in {"0.0", "0.5"}
        assert child.data.params["dataset.max_seq_length"] == "64"
        for tag in ("git_commit", "model", "pruning", "quantization", "versions", "num_threads"):
            assert tag in child.data.tags
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"config.yaml", "predictions.json", "na_probs.json", "metrics.json"} <= artifacts
        inputs = {i.dataset.name: i.dataset.digest for i in client.get_run(child.info.run_id).inputs.dataset_inputs}
        assert set(inputs) == {"squad_json/train", "squad_json/validation"}
        assert all(len(digest) == 16 for digest in inputs.values())
    by_choice = {
        (c.data.params["pruning.amount"], c.data.params["quantization.name"]): c.data.metrics for c in children
    }
    assert by_choice[("0.5", "none")]["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert by_choice[("0.0", "none")]["sparsity"] == 0.0
    assert by_choice[("0.0", "dynamic_int8")]["size_mb"] < by_choice[("0.0", "none")]["size_mb"]
    # save_model=true kept each compressed model, as safetensors only; the int8 one loads back.
    for child in children:
        saved = {a.path for a in client.list_artifacts(child.info.run_id, "model")}
        weights = (
            "model/model.int8.safetensors"
            if child.data.params["quantization.name"] == "dynamic_int8"
            else ("model/model.safetensors")
        )
        assert weights in saved and not any(p.endswith((".bin", ".pt", ".pkl")) for p in saved)
    int8_dir = next((tmp_path / "sweep").glob("*/model/model.int8.safetensors")).parent
    assert quantize.load(int8_dir).qa_outputs is not None
    trainer = next(c for c in children if c.data.tags["baseline_cache"] == "miss")
    assert len(client.get_metric_history(trainer.info.run_id, "train/loss")) == 2  # a training curve

    # The logged predictions re-score to the logged metrics with the official-format tool.
    child = next(c for c in children if c.info.run_name == "tiny_distilbert | l1_unstructured 0 | none")
    local = mlflow.artifacts.download_artifacts(
        run_id=child.info.run_id, tracking_uri=store_uri(tmp_path), dst_path=str(tmp_path / "dl")
    )
    rescored = subprocess.run(
        [
            sys.executable,
            "-m",
            "qa_compress.eval_squad_v2",
            str(squad_files[1]),
            f"{local}/predictions.json",
            "--na-prob-file",
            f"{local}/na_probs.json",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    official = json.loads(rescored.stdout)
    assert official["f1"] == pytest.approx(child.data.metrics["f1"])
    assert official["best_f1"] == pytest.approx(child.data.metrics["best_f1"])


def test_a_job_that_raises_is_marked_failed(tmp_path):
    uri = store_uri(tmp_path)
    (tmp_path / "mlruns").mkdir()
    experiment = tracking.experiment_id(uri, "qa-compress", str(tmp_path / "mlruns"))
    with pytest.raises(RuntimeError), tracking.job_run(experiment, "boom", None, {}):
        raise RuntimeError("stage failed")
    with pytest.raises(KeyboardInterrupt), tracking.job_run(experiment, "stop", None, {}):
        raise KeyboardInterrupt
    statuses = {r.info.run_name: r.info.status for r in _runs(tmp_path)[1]}
    assert statuses == {"boom": "FAILED", "stop": "KILLED"}


def _start_in_background(args: list[str], tmp_path) -> subprocess.Popen:
    """`python run.py ARGS` as a background process writing under `tmp_path`; its MLflow store exists at once."""
    command = [
        sys.executable,
        str(ROOT / "run.py"),
        *args,
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"paths.mlruns_dir={tmp_path / 'mlruns'}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    tracking.experiment_id(store_uri(tmp_path), "qa-compress", str(tmp_path / "mlruns"))  # schema before polling
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_sigterm_marks_the_job_killed(tmp_path, tiny_distilbert_dir, squad_files):
    """What a cluster sends at a time limit; Ctrl-C is covered by the resume test."""
    sig = signal.SIGTERM
    args = tiny_sweep_args(tiny_distilbert_dir, squad_files, "pruning.amount=0.3", "training.max_steps=100000")
    process = _start_in_background(args, tmp_path)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:  # wait until the job's run exists and training is under way
            runs = [r for r in _runs(tmp_path)[1] if "mlflow.parentRunId" in r.data.tags]
            if runs and "baseline_cache" in runs[0].data.tags:
                break
            time.sleep(1)
        else:
            pytest.fail("the job never started")
        time.sleep(2)
        process.send_signal(sig)
        process.wait(timeout=60)
    finally:
        process.kill()
    assert process.returncode != 0
    runs = _runs(tmp_path)[1]
    assert {r.info.status for r in runs} == {"KILLED"}  # the job and its sweep's parent


def test_sigterm_after_the_jobs_still_ends_the_sweep(tmp_path, tiny_distilbert_dir, squad_files):
    """A time limit that strikes while the sweep writes its report must not leave the parent run RUNNING."""
    args = tiny_sweep_args(tiny_distilbert_dir, squad_files, "pruning.amount=0.3", "benchmark.enabled=false")
    process = _start_in_background(args, tmp_path)
    try:
        deadline = time.time() + 180
        while time.time() < deadline:  # until the only job has finished: the sweep is ending
            if any(r.info.status == "FINISHED" for r in _runs(tmp_path)[1]):
                break
            time.sleep(0.1)
        else:
            pytest.fail("the job never finished")
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    finally:
        process.kill()
    assert {r.info.status for r in _runs(tmp_path)[1]} == {"FINISHED"}  # every planned job ran: so did the sweep


def test_sweep_status_counts_jobs_that_never_ran():
    assert tracking.sweep_status(["FINISHED", "FINISHED"], planned=2) == "FINISHED"
    assert tracking.sweep_status(["FINISHED"], planned=2, interrupted=True) == "KILLED"  # a signal between jobs
    assert tracking.sweep_status(["FINISHED"], planned=2) == "FAILED"  # stopped by an error outside any job
    assert tracking.sweep_status(["FINISHED", "KILLED"], planned=3) == "KILLED"
    assert tracking.sweep_status(["FINISHED", "FAILED"]) == "FAILED"


def test_help_lists_every_group_option_with_its_description():
    result = subprocess.run([sys.executable, "run.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    for option in sorted((ROOT / "conf").glob("*/*.yaml")):
        if option.parent.name == "hydra":
            continue
        comments = [line[2:] for line in option.read_text().splitlines() if line.startswith("# ")]
        description = next(c for c in comments if not c.startswith("@package"))
        assert f"{option.stem:<18}{description}" in result.stdout, f"{option} is missing from --help"
