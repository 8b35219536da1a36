"""hydra/sweeper=pareto: the search space, the fronts it measures, and searches through run.py on a tiny model."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter

import optuna
import pytest
import sqlalchemy

from qa_compress.errors import UserError
from qa_compress.sweep import front, search, search_plan, search_space, study_storage
from qa_compress.tracking import store
from tests.conftest import assert_refused, children, parents, run_cli, run_in_process, start_cli, tiny_job_args

GROUPS = ["model", "dataset", "training", "pruning", "quantization"]
SPACE = [
    "pruning=choice(none,l1_unstructured,structured)",
    "pruning.amount=interval(0.1,0.9)",
    "quantization=choice(none,dynamic_int8)",
]
PARETO = ["hydra/sweeper=pareto"]


# The space and the fronts -----------------------------------------------------------------------------


def test_the_space_reads_hydras_sweep_syntax_and_keeps_the_rest_fixed():
    more = ["seed=1", "predict.n_best_size=range(10,30,10)", "x=tag(log,interval(1e-5,1e-3))"]
    space = search_space.parse([*SPACE, *more], None, GROUPS)
    params = {p.key: p for p in space.params}
    assert params["pruning"].choices == ("none", "l1_unstructured", "structured")
    assert (params["pruning.amount"].kind, params["pruning.amount"].low, params["pruning.amount"].high) == (
        "float",
        0.1,
        0.9,
    )
    assert (params["predict.n_best_size"].kind, params["predict.n_best_size"].high) == ("int", 20)
    assert params["x"].log
    assert space.fixed == ("seed=1",)
    assert set(space.searched_groups()) == {"pruning", "quantization"}


@pytest.mark.parametrize(
    "arguments",
    [["seed=1"], ["pruning=choice(none)"], ["pruning=none", "pruning.amount=0.3"]],
    ids=["no sweep", "one choice", "fixed values"],
)
def test_a_space_with_nothing_to_search_is_refused(arguments):
    with pytest.raises(UserError, match="search space is empty"):
        search_space.parse(arguments, None, GROUPS)


def test_the_config_params_are_a_space_the_command_line_overrides():
    space = search_space.parse(
        ["pruning.amount=interval(0.2,0.4)"],
        {"pruning": "choice(none,l1_unstructured)", "pruning.amount": "interval(0.1,0.9)"},
        GROUPS,
    )
    assert {p.key: (p.low, p.high) for p in space.params if p.kind == "float"} == {"pruning.amount": (0.2, 0.4)}


def test_a_key_applies_only_to_the_options_that_have_it():
    keys = {
        ("pruning", "none"): frozenset({"name", "finetune_steps"}),
        ("pruning", "l1_unstructured"): frozenset({"name", "finetune_steps", "amount"}),
    }
    assert search_space.applies("pruning.amount", {"pruning": "l1_unstructured"}, keys)
    assert not search_space.applies("pruning.amount", {"pruning": "none"}, keys)
    assert search_space.applies("pruning.finetune_steps", {"pruning": "none"}, keys)
    assert search_space.applies("seed", {"pruning": "none"}, keys)
    space = search_space.parse(["pruning=choice(none,structured)", "pruning.amount=interval(0.1,0.9)"], None, GROUPS)
    only_structured = {**keys, ("pruning", "structured"): frozenset({"name", "heads_amount"})}
    with pytest.raises(UserError, match="pruning.amount: no option of pruning=choice"):
        search_space.check_applicable(space, only_structured)


def test_numbers_go_to_the_command_line_without_float_noise():
    amount = search_space.Param("pruning.amount", "float", low=0.1, high=0.9)
    assert search_space.format_value(amount, 0.123456789) == "0.1235"
    stepped = search_space.Param("pruning.amount", "float", low=0.1, high=0.5, step=0.1)
    assert search_space.format_value(stepped, 0.30000000000000004) == "0.3"
    assert search_space.format_value(search_space.Param("k", "int", low=1, high=9), 4.0) == "4"


def test_numeric_choices_are_searched_as_a_sorted_scale_and_options_as_categories():
    space = search_space.parse(
        [
            "pruning=choice(none,l1_unstructured)",
            "pruning.amount=choice(0.3,0.1,0.2)",
            "quantization=choice(none,dynamic_int8)",
            "model.dropout=choice(0.1,0.2)",
            "predict.mode=choice(fast,exact,slow)",
        ],
        None,
        GROUPS,
    )
    study = optuna.create_study()
    study.enqueue_trial({f"pruning.amount{search.ORDERED_SUFFIX}": 0})
    trial = study.ask()
    values = {p.key: search._suggest(trial, p, space) for p in space.params}
    assert values["pruning.amount"] == "0.1"  # position 0: the smallest amount, wherever the user wrote it
    kinds = {name: type(d).__name__ for name, d in trial.distributions.items()}
    assert kinds == {
        f"pruning.amount{search.ORDERED_SUFFIX}": "IntDistribution",  # neighbours on the scale are near
        "pruning": "CategoricalDistribution",  # a group's options have no order, even numeric-looking ones
        "quantization": "CategoricalDistribution",
        "model.dropout": "CategoricalDistribution",  # two values: nothing lies between them
        "predict.mode": "CategoricalDistribution",
    }
    assert trial.distributions[f"pruning.amount{search.ORDERED_SUFFIX}"].high == 2


def test_hypervolume_of_a_two_objective_front():
    directions = [front.MAXIMIZE, front.MINIMIZE]  # F1 up, latency down
    reference = [50.0, 100.0]
    points = [[60.0, 80.0], [55.0, 40.0], [52.0, 90.0]]  # the third is dominated by the second
    assert front.front(points, directions) == [0, 1]
    # (60-50)*(100-80) + (55-50)*(80-40) = 200 + 200
    assert front.hypervolume(points, reference, directions) == pytest.approx(400.0)
    assert front.hypervolume([[49.0, 10.0]], reference, directions) == 0.0  # worse than always-no-answer
    assert front.growth(points, reference, directions) == pytest.approx([200.0, 400.0, 400.0])


def test_hypervolume_in_three_objectives_matches_the_box_it_spans():
    directions = [front.MAXIMIZE, front.MINIMIZE, front.MINIMIZE]
    assert front.hypervolume([[3.0, 1.0, 1.0]], [0.0, 2.0, 2.0], directions) == pytest.approx(3.0)
    two = [[3.0, 1.0, 1.0], [1.0, 0.0, 0.0]]  # 3*1*1 + 1*2*2 - overlap 1*1*1
    assert front.hypervolume(two, [0.0, 2.0, 2.0], directions) == pytest.approx(6.0)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"objectives": ["f2"]}, "unknown objective 'f2'"),
        ({"objectives": ["f1", "f1"]}, "named twice"),
        ({"objectives": []}, "objectives is empty"),
        ({"n_trials": 0}, "n_trials=0"),
        ({"sampler": "grid"}, "sampler=grid"),
        ({"max_f1_drop": -1}, "max_f1_drop=-1"),
        ({"refine": "yes"}, "refine=yes: expected true or false"),
        ({"objectives": ["f1", "latency_ms"], "benchmark": {"enabled": False}}, "latency_ms is measured only"),
    ],
)
def test_bad_sweeper_options_are_refused_by_name(options, message):
    sweeper = {
        "objectives": ["f1"],
        "n_trials": 6,
        "batch_size": 1,
        "sampler": "tpe",
        "seed": 0,
        "n_startup_trials": 2,
        **{k: v for k, v in options.items() if k != "benchmark"},
    }
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        search_plan.settings(sweeper, options.get("benchmark", {"enabled": True}))


def test_objectives_take_their_natural_direction():
    chosen = search_plan.settings(
        {
            "objectives": ["f1", "size_mb", "speedup"],
            "n_trials": 3,
            "batch_size": 1,
            "sampler": "nsga2",
            "seed": 0,
            "n_startup_trials": 0,
        },
        {},
    )
    assert chosen.objectives == {"f1": "maximize", "size_mb": "minimize", "speedup": "maximize"}


def test_nsga2_evolves_after_its_random_start_within_a_short_search():
    """Optuna's NSGA-II default generation of 50 would leave a 20-trial search random from start to end."""
    chosen = search_plan.settings(
        {
            "objectives": ["f1", "size_mb"],
            "n_trials": 8,
            "batch_size": 1,
            "sampler": "nsga2",
            "seed": 0,
            "n_startup_trials": 4,
        },
        {},
    )
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=search._sampler(optuna, chosen, 0))
    for _ in range(6):
        trial = study.ask()
        x = trial.suggest_float("x", 0, 1)
        study.tell(trial, [x, x])
    assert [t.system_attrs["NSGAIISampler:generation"] for t in study.trials] == [0, 0, 0, 0, 1, 1]


# Searches through run.py ----------------------------------------------------------------------------


def _study(tmp_path, name: str | None = None):
    storage = study_storage.opened(f"sqlite:///{tmp_path / 'mlruns' / 'optuna.db'}")  # as the search opens it
    summaries = optuna.get_all_study_summaries(storage)
    assert len(summaries) == 1
    return optuna.load_study(study_name=summaries[0].study_name, storage=storage)


def _completed(tmp_path) -> bool:
    """Whether the study holds a completed trial yet (a job's summary line comes before its batch is told)."""
    if not (tmp_path / "mlruns" / "optuna.db").is_file():
        return False
    try:
        study = _study(tmp_path)
    except (AssertionError, KeyError, ValueError, sqlalchemy.exc.SQLAlchemyError):
        return False  # not created yet
    return any(t.state == optuna.trial.TrialState.COMPLETE for t in _ran(study))


def _ran(study) -> list:
    """Trials that ran a job (not proposals that repeated one)."""
    return [t for t in study.trials if "overrides" in t.user_attrs and "duplicate_of" not in t.user_attrs]


@pytest.mark.slow
def test_a_six_trial_constrained_search_runs_as_one_sweep_and_names_the_fastest_within_the_loss(
    tmp_path, tiny_distilbert_dir, squad_files
):
    recovery = "pruning.finetune_steps=choice(0,2)"  # pruning=none has the key, but recovery needs pruning
    args = tiny_job_args(tiny_distilbert_dir, squad_files, *PARETO, *SPACE, recovery, fine_tune=False)
    options = [
        "hydra.sweeper.n_trials=6",
        "hydra.sweeper.n_startup_trials=3",
        "hydra.sweeper.max_f1_drop=0.5",
        "hydra.sweeper.objectives=[f1,size_mb]",
        "benchmark.enabled=false",
    ]
    result = run_in_process(["-m", *args, *options], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]

    (parent,) = parents(tmp_path)
    jobs = children(tmp_path)
    assert len(jobs) == 6 and all(j.info.status == "FINISHED" for j in jobs) and parent.info.status == "FINISHED"
    assert {j.data.tags["mlflow.parentRunId"] for j in jobs} == {parent.info.run_id}
    assert len({j.data.tags["config_hash"] for j in jobs}) == 6  # six different configurations
    for job in jobs:  # an amount only where the method has one: no trial spent on a meaningless combination
        overrides = json.loads(job.data.tags["overrides"])
        has_amount = any(o.startswith("pruning.amount=") for o in overrides)
        assert has_amount == (job.data.tags["pruning"] == "l1_unstructured"), overrides
        has_steps = any(o.startswith("pruning.finetune_steps=") for o in overrides)
        assert has_steps == (job.data.tags["pruning"] != "none"), overrides

    study = _study(tmp_path)
    ran = _ran(study)
    assert len(ran) == 6 and all(t.state == optuna.trial.TrialState.COMPLETE for t in ran)
    assert ran[0].user_attrs.get("reference")  # trial 0: the uncompressed model, what the constraint is measured from
    reference = next(j for j in jobs if j.info.run_id == ran[0].user_attrs["run_id"])
    assert reference.data.tags["uncompressed"] == "true"
    assert study.directions == [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE]

    assert "Fastest within 0.5 F1 of uncompressed" in result.stdout  # the sweep's last words name it...
    report = (tmp_path / "sweep" / "report.md").read_text()
    assert "## Search" in report and "Front found" in report and "python run.py" in report  # ...and how to rerun it
    refined = sum(bool(t.user_attrs.get("refines_front")) for t in ran)
    assert f"with front refinement ({refined} trial(s) proposed by it)" in report
    assert "search" in report.split("## Jobs")[1]  # the front is marked in the jobs table
    assert (tmp_path / "sweep" / "search_front_growth.png").is_file()


@pytest.mark.slow
def test_a_search_for_speed_holds_its_trials_to_a_reference_whose_speedup_is_one(
    tmp_path, tiny_distilbert_dir, squad_files
):
    """The uncompressed job is not timed against itself; as in the report, its speed-up is 1 by definition."""
    args = tiny_job_args(
        tiny_distilbert_dir, squad_files, *PARETO, "quantization=choice(none,dynamic_int8)", fine_tune=False
    )
    options = [
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.max_f1_drop=1",
        "hydra.sweeper.objectives=[f1,speedup]",
        "benchmark.repeats=3",
        "benchmark.warmup=1",
    ]
    result = run_in_process(["-m", *args, *options], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    ran = _ran(_study(tmp_path))
    assert [t.state for t in ran] == [optuna.trial.TrialState.COMPLETE] * 2
    reference, quantized = ran
    assert reference.user_attrs.get("reference") and reference.values[1] == 1.0
    logged = {j.info.run_id: j.data.metrics for j in children(tmp_path)}
    assert "speedup" not in logged[reference.user_attrs["run_id"]]  # nothing typed into the record
    assert quantized.values[1] == logged[quantized.user_attrs["run_id"]]["speedup"]  # measured in its job


@pytest.mark.beside_slurm  # times nothing
@pytest.mark.slow
def test_processes_opening_one_fresh_study_storage_at_once_all_open_it(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    start = time.time() + 5  # every process imported and waiting, then all open at once
    code = (
        "import sys, time\n"
        "from qa_compress.sweep import study_storage\n"
        "time.sleep(max(0.0, float(sys.argv[2]) - time.time()))\n"
        "study_storage.probe_storage(sys.argv[1])\n"
    )
    workers = [
        subprocess.Popen([sys.executable, "-c", code, url, str(start)], stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    errors = [worker.communicate(timeout=120)[1] for worker in workers]
    assert all(worker.returncode == 0 for worker in workers), [err[-1000:] for err in errors]
    assert optuna.get_all_study_summaries(url) == []  # one schema, whole, and no study yet


def _trials_finished(path) -> int:
    return path.read_text().count("] - Trial ") if path.is_file() else 0


@pytest.mark.beside_slurm  # times nothing
@pytest.mark.slow
def test_a_search_stopped_by_sigterm_continues_to_n_trials_with_no_trial_twice(
    tmp_path, tiny_distilbert_dir, squad_files
):
    parallel = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.batch_size=2"]
    args = [
        "-m",
        *tiny_job_args(tiny_distilbert_dir, squad_files, *PARETO, *SPACE, fine_tune=False),
        "hydra.sweeper.n_trials=5",
        "hydra.sweeper.n_startup_trials=2",
        "hydra.sweeper.objectives=[f1,size_mb]",
        "benchmark.enabled=false",
    ]
    process = start_cli([*args, *parallel], tmp_path, start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and process.poll() is None and not _completed(tmp_path):
            time.sleep(0.3)  # until a batch has finished and is recorded
        assert process.poll() is None, (tmp_path / "cli.log").read_text()[-3000:]  # stopped of itself
        os.killpg(process.pid, signal.SIGTERM)  # what a cluster sends at a time limit
        process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise
    assert process.returncode != 0
    (first,) = parents(tmp_path)
    assert first.info.status == "KILLED"
    before = {
        t.number: t.user_attrs["config_key"]
        for t in _ran(_study(tmp_path))
        if t.state == optuna.trial.TrialState.COMPLETE
    }
    assert 1 <= len(before) < 5

    resumed = run_in_process(args, tmp_path)  # the same search, started again (here with the basic launcher)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    study = _study(tmp_path)
    ran = _ran(study)
    assert len(ran) == 5 and all(t.state == optuna.trial.TrialState.COMPLETE for t in ran)
    keys = [t.user_attrs["config_key"] for t in ran]
    assert len(set(keys)) == 5  # no configuration twice
    assert {t.number: t.user_attrs["config_key"] for t in ran if t.number in before} == before  # none lost
    jobs = children(tmp_path)
    finished = Counter(j.data.tags["config_hash"] for j in jobs if j.info.status == "FINISHED")
    assert len(finished) == 5 and set(finished.values()) == {1}  # each job ran to the end exactly once
    second = next(p for p in parents(tmp_path) if p.info.run_id != first.info.run_id)
    assert second.info.status == "FINISHED"
    report = (tmp_path / "sweep" / "report.md").read_text()
    assert "5 finished" in report.split("## Search")[1]  # the resumed sweep reports every trial of the study


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["hydra.sweeper.objectives=[f1,accuracy]"], "unknown objective 'accuracy'"),
        (["pruning=l1_unstructured", "pruning.amount=0.3"], "search space is empty"),
        (["pruning=choice(none,structured)", "pruning.amount=interval(0.1,0.9)"], "pruning.amount: no option"),
        (["pruning=choice(none,l1_unstructured)", "pruning.amount=interval(0.1,1.5)"], "pruning.amount=1.5"),
        (["quantization=choice(none,dynamic_int8)", "hydra.sweeper.storage=redis://localhost"], "not a database URL"),
        (
            ["quantization=choice(none,dynamic_int8)", "hydra.sweeper.storage=postgresql://nobody@127.0.0.1:1/x"],
            "Optuna could not open it",
        ),
    ],
    ids=[
        "unknown objective",
        "empty space",
        "key no option has",
        "bound out of range",
        "storage scheme",
        "storage down",
    ],
)
def test_a_bad_search_is_refused_before_any_trial(tmp_path, tiny_distilbert_dir, squad_files, extra, message):
    args = tiny_job_args(tiny_distilbert_dir, squad_files, *PARETO, *extra, fine_tune=False)
    result = run_in_process(["-m", *args], tmp_path)
    assert_refused(result, tmp_path, message)
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "mlruns" / "optuna.db").exists()


def test_a_study_another_live_process_searches_is_refused(tmp_path):
    space = search_space.parse(["quantization=choice(none,dynamic_int8)"], None, GROUPS)
    chosen = search_plan.settings(
        {"objectives": ["f1"], "n_trials": 2, "batch_size": 1, "sampler": "random", "seed": 0, "n_startup_trials": 0},
        {},
    )
    plan = search_plan.Plan(space, chosen, {}, f"sqlite:///{tmp_path / 'optuna.db'}", "study")
    first = search.Search(plan, None, None, str, [], None, "")
    first.study.set_user_attr("searcher", {"host": socket.gethostname(), "pid": os.getppid()})  # alive: our parent
    with pytest.raises(UserError, match=f"being searched by process {os.getppid()}"):
        first.claim()
    first.study.set_user_attr("searcher", {"host": socket.gethostname(), "pid": 2**22 + 1})  # no such process
    first.claim()  # a searcher that died leaves the study to the next
    assert first.study.user_attrs["searcher"]["pid"] == os.getpid()


@pytest.mark.beside_slurm  # times nothing
@pytest.mark.slow
def test_a_search_launches_its_batches_through_submitit(tmp_path, tiny_distilbert_dir, squad_files):
    """The basic launcher runs the searches above, joblib the stopped one; submitit here (SLURM's is the same call),
    with the NSGA-II sampler."""
    launcher = [
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=10",
        "hydra.sweeper.batch_size=2",
        "hydra.sweeper.sampler=nsga2",
    ]
    args = tiny_job_args(
        tiny_distilbert_dir,
        squad_files,
        *PARETO,
        "quantization=choice(none,dynamic_int8)",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.objectives=[f1,size_mb]",
        "benchmark.enabled=false",
        *launcher,
        fine_tune=False,
    )
    result = run_cli(["-m", *args], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (parent,) = parents(tmp_path)
    jobs = children(tmp_path)
    assert sorted(j.data.tags["quantization"] for j in jobs) == ["dynamic_int8", "none"]  # one batch, both options
    assert {j.data.tags["mlflow.parentRunId"] for j in jobs} == {parent.info.run_id}
    assert [t.state.name for t in _ran(_study(tmp_path))] == ["COMPLETE", "COMPLETE"]


# Where the study lives -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("configured", "tracking", "expected"),
    [
        (None, "sqlite:////data/mlflow.db", "sqlite:////data/optuna.db"),
        (
            None,
            "postgresql+psycopg://u:pw@db:5432/mlflow",
            "postgresql+psycopg://u:pw@db:5432/mlflow?options=-csearch_path%3Doptuna",
        ),
        (None, "mysql+pymysql://u:pw@db/mlflow", "mysql+pymysql://u:pw@db/mlflow_optuna"),
        (None, "http://server:5000", "sqlite:////runs/optuna.db"),
        ("postgresql://db/mlflow", "http://server:5000", "postgresql://db/mlflow?options=-csearch_path%3Doptuna"),
        (
            "postgresql://db/x?options=-csearch_path%3Dmine",
            "http://server:5000",
            "postgresql://db/x?options=-csearch_path%3Dmine",
        ),
        ("mysql://db/studies", "http://server:5000", "mysql://db/studies"),
    ],
)
def test_the_study_lives_beside_the_mlflow_store_in_a_schema_of_its_own(configured, tracking, expected):
    assert study_storage.storage_url(configured, tracking, "/runs") == expected
    assert "pw" not in store.masked(expected)  # logs and reports mask a password


@pytest.mark.slow
@pytest.mark.parametrize("server", ["postgres_server", "mariadb_server"])
def test_a_search_keeps_its_study_in_the_tracking_database(request, server, tmp_path, tiny_distilbert_dir, squad_files):
    """With MLflow in PostgreSQL or MySQL, the study goes into the same database (PostgreSQL: schema `optuna`) or
    server (MySQL: `<name>_optuna`), created on first use, and the same command started again continues it."""
    from mlflow.tracking import MlflowClient
    from sqlalchemy import create_engine, text

    base, database = request.getfixturevalue(server), f"mlflow_{server.split('_')[0]}"
    uri = f"{base}/{database}"
    missing = run_cli([*tiny_job_args(tiny_distilbert_dir, squad_files, f"tracking.uri={uri}")], tmp_path)
    assert_refused(missing, tmp_path, "the database does not answer")  # at once: MLflow would retry for minutes
    engine = create_engine(f"{base}/postgres" if server == "postgres_server" else base, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {database}"))
    engine.dispose()
    args = tiny_job_args(
        tiny_distilbert_dir,
        squad_files,
        *PARETO,
        "quantization=choice(none,dynamic_int8)",
        f"tracking.uri={uri}",
        fine_tune=False,
    )
    options = [
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_startup_trials=1",
        "hydra.sweeper.objectives=[f1,size_mb]",
        "benchmark.enabled=false",
    ]
    for _ in range(2):  # the second time, the study is found where the first left it: nothing runs again
        result = run_in_process(["-m", *args, *options], tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
    assert "has 2 of 2 trials already" in result.stdout + result.stderr

    storage = study_storage.storage_url(None, uri, str(tmp_path / "mlruns"))
    (summary,) = optuna.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    assert len(_ran(study)) == 2 and all(t.state == optuna.trial.TrialState.COMPLETE for t in _ran(study))
    assert not list(tmp_path.rglob("optuna.db"))  # no study in a file beside the runs' outputs
    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert {r.info.run_id for r in children} == {t.user_attrs["run_id"] for t in _ran(study)}
    assert len(runs) - len(children) == 2  # a parent run for each time the search ran


def test_trials_closed_without_a_job_are_named_as_a_person_reads_them():
    assert search._trial_list([7]) == "Trial 7"
    assert search._trial_list([9, 4, 6, 8, 7]) == "Trials 4, 6-9"
