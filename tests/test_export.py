"""Exporting a job's compressed model to the MLflow Model Registry, and serving it over HTTP."""

import json
import os
import re
import shlex
import sys
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from qa_compress import export as export_command
from qa_compress.data import squad
from qa_compress.serve import export

from .conftest import (
    ROOT,
    children,
    free_port,
    local_server,
    noisy_lines,
    parents,
    run_in_process,
    start_cli,
    store_uri,
    tiny_job_args,
)

pytestmark = pytest.mark.slow  # every test here runs jobs or serves a model


def _export_command(capsys, *args) -> tuple[int, str, str]:
    capsys.readouterr()
    code = export_command.main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _questions(validation: Path) -> pd.DataFrame:
    examples = squad.load_squad_json(validation, "k").dataset
    return pd.DataFrame({"id": examples["id"], "question": examples["question"], "context": examples["context"]})


def _logged_predictions(client: MlflowClient, run_id: str, tmp_path: Path) -> dict[str, str]:
    path = client.download_artifacts(run_id, "predictions.json", str(tmp_path / run_id))
    return json.loads(Path(path).read_text())


def test_export_registers_a_jobs_model_that_answers_as_its_predictions(tiny_sweep, squad_files, tmp_path, capsys):
    store = store_uri(tiny_sweep)
    client = MlflowClient(store)
    (job,) = [r for r in children(tiny_sweep) if r.info.run_name == "0.5 | dynamic_int8 | l1_unstructured | tiny"]
    code, out, err = _export_command(capsys, "--run-id", job.info.run_id, "--name", "tiny-qa", "--tracking-uri", store)
    assert code == 0, err
    assert "registered it as models:/tiny-qa/1" in out and "mlflow models serve -m models:/tiny-qa/1" in out
    (version,) = client.search_model_versions("name='tiny-qa'")
    assert version.run_id == job.info.run_id
    assert client.get_run(job.info.run_id).info.status == "FINISHED"  # the job's run is as it was

    mlflow.set_tracking_uri(store)
    served = mlflow.pyfunc.load_model("models:/tiny-qa/1")
    questions = _questions(squad_files[1])
    answers = served.predict(questions)
    assert list(answers.columns) == ["id", "answer", "no_answer_probability"]
    assert dict(zip(answers["id"], answers["answer"], strict=True)) == _logged_predictions(
        client, job.info.run_id, tmp_path
    )
    assert answers["no_answer_probability"].between(0, 1).all()


def test_export_refuses_in_one_line_and_registers_nothing(tiny_sweep, capsys):
    store = store_uri(tiny_sweep)
    client = MlflowClient(store)
    (parent,) = parents(tiny_sweep)
    job = children(tiny_sweep)[0]
    cases = [
        (["--run-id", "deadbeef"], "--run-id=deadbeef: no such run"),
        (["--run-id", parent.info.run_id], "a sweep's parent run"),
        (["--run-id", job.info.run_id, "--name", "no spaces"], "--name='no spaces'"),
    ]
    # a finished run that kept no model: the refusal says how to get one
    elsewhere = client.create_experiment("export-refusals")  # not among the shared sweep's runs
    bare = client.create_run(elsewhere, run_name="bare", tags={"overrides": '["quantization=none"]'})
    client.set_terminated(bare.info.run_id, "FINISHED")
    cases.append(
        (["--run-id", bare.info.run_id], "keeping and registering it: python run.py quantization=none export=true")
    )
    for argv, message in cases:
        code, _, err = _export_command(capsys, *argv, "--tracking-uri", store)
        assert code == 1 and message in err and len(err.strip().splitlines()) == 1, (argv, err)
    assert client.search_registered_models(filter_string="name='refused'") == []


def _post(url: str, payload: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(payload).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def _refused(url: str, payload: dict) -> tuple[int, dict]:
    """The status and body of a request the server answers with an error."""
    request = urllib.request.Request(url, json.dumps(payload).encode(), {"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refusal:
        urllib.request.urlopen(request, timeout=60)
    return refusal.value.code, json.loads(refusal.value.read())


ASK = {"question": "Who wrote it?", "context": "It was written by Ada Lovelace."}
BAD_REQUESTS = {  # rows, what the one line of the refusal says
    "no question": ([{"context": "c"}], "missing inputs ['question']"),
    "a null question": ([{**ASK, "question": None}], "row 0: question must be a non-empty string"),
    "a numeric question": ([{**ASK, "question": 3}], "row 0: question must be a non-empty string"),
    "an empty context": ([{**ASK, "context": " "}], "row 0: context must be a non-empty string"),
    "a 1 MB question": ([{**ASK, "question": "a" * 1_000_000}], "row 0: question is 1,000,000 characters"),
}


def test_a_request_is_checked_row_by_row_in_one_line():
    assert export.request_problem(["question", "context"], [ASK]) is None
    for rows, message in BAD_REQUESTS.values():
        problem = export.request_problem(sorted({key for row in rows for key in row}), rows)
        assert problem is None or "\n" not in problem
        if "missing inputs" not in message:
            assert message in problem, problem


def _readme_request() -> dict:
    """The request the README's serving section sends with curl."""
    readme = (ROOT / "README.md").read_text()
    body = re.search(r"/invocations -H 'Content-Type: application/json' -d \\\n\s*'(.*?)'", readme, re.S)
    assert body, "the README's serving section no longer sends a request with curl"
    return json.loads(body.group(1))


@pytest.mark.beside_slurm  # times nothing
def test_the_readmes_three_commands_take_a_sweeps_pick_to_an_answer_over_http(tmp_path, tiny_bert_dir, squad_files):
    """Sweep, then the command its recommendation prints (it keeps and registers the model, its last line names
    it), then `mlflow models serve`: the README's request is answered, and every question as the job answered.

    The sweep writes to a file, as on a cluster: every stage that draws a bar or warns (PyTorch, ONNX Runtime
    and OpenVINO INT8, saving, exporting; training: test_run) leaves neither; what a user must know is said in
    a line of the project's own.
    """
    grid = ("quantization=dynamic_int8,onnx_int8,openvino_int8", "report.max_f1_drop=100")
    process = start_cli(["-m", *tiny_job_args(tiny_bert_dir, squad_files, *grid, fine_tune=False)], tmp_path)
    assert process.wait(timeout=600) == 0, (tmp_path / "cli.log").read_text()[-3000:]
    log = (tmp_path / "cli.log").read_text()
    assert noisy_lines(log) == [], "\n".join(noisy_lines(log)[:20])
    assert log.count("torch.ao") == 1  # dynamic_int8's deprecated base, said once in the project's words
    smallest = next(line for line in log.splitlines() if line.startswith("Smallest within"))
    command = shlex.split(smallest.split(": python ", 1)[1])
    assert command[:1] == ["run.py"] and command[-1] == "export=true"

    picked = run_in_process(command[1:], tmp_path / "pick")
    assert picked.returncode == 0, picked.stderr[-3000:]
    assert noisy_lines(picked.stdout + picked.stderr) == []  # saving and registering the model: no bars either
    last = picked.stdout.strip().splitlines()[-1]
    registered = re.search(r"\| run (\w+) \| registered as (models:/[\w.-]+/\d+)$", last)
    assert registered, last
    run_id, model_uri = registered.groups()
    job = MlflowClient(store_uri(tmp_path)).get_run(run_id)
    assert job.data.tags["registered_model"] == model_uri.removeprefix("models:/")

    port = free_port()
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local"]
    command += ["-h", "127.0.0.1", "-p", str(port)]
    environment = {**os.environ, "MLFLOW_TRACKING_URI": store_uri(tmp_path)}
    with local_server(command, f"http://127.0.0.1:{port}/ping", tmp_path / "serve.log", environment):
        questions = _questions(squad_files[1])
        reply = _post(f"http://127.0.0.1:{port}/invocations", {"dataframe_records": questions.to_dict("records")})
        plain = _post(f"http://127.0.0.1:{port}/invocations", _readme_request())  # no id, as the README sends it
        refused = {
            name: _refused(f"http://127.0.0.1:{port}/invocations", {"dataframe_records": rows})
            for name, (rows, _) in BAD_REQUESTS.items()
        }
    served = {row["id"]: row["answer"] for row in reply["predictions"]}
    assert served == json.loads((tmp_path / "pick" / "run" / "predictions.json").read_text())
    for name, (status, body) in refused.items():
        assert status == 400 and BAD_REQUESTS[name][1] in body["message"], (name, body)
        assert "stack_trace" not in body and "Traceback" not in json.dumps(body), name
    (answered,) = plain["predictions"]
    assert answered["id"] == "0" and isinstance(answered["answer"], str) and 0 <= answered["no_answer_probability"] <= 1


def _serve_answers(model_uri: str, store: str, questions: pd.DataFrame, log: Path) -> dict[str, str]:
    """`mlflow models serve -m MODEL_URI`'s answer to each question, over HTTP."""
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local"]
    command += ["-h", "127.0.0.1", "-p", str(port)]
    with local_server(command, f"http://127.0.0.1:{port}/ping", log, {**os.environ, "MLFLOW_TRACKING_URI": store}):
        reply = _post(f"http://127.0.0.1:{port}/invocations", {"dataframe_records": questions.to_dict("records")})
    return {row["id"]: row["answer"] for row in reply["predictions"]}


def test_a_sweep_that_exports_aliases_its_picks_and_serves_the_recommended_one(tmp_path, tiny_bert_dir, squad_files):
    grid = ("quantization=none,dynamic_int8,onnx_int8", "report.max_f1_drop=100", "export=true")
    result = run_in_process(["-m", *tiny_job_args(tiny_bert_dir, squad_files, *grid, fine_tune=False)], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    serve = f"MLFLOW_TRACKING_URI={store_uri(tmp_path)} mlflow models serve -m models:/qa-compress@recommended"
    assert f"Serve the pick: {serve}" in result.stdout
    client = MlflowClient(store_uri(tmp_path))
    jobs = {job.info.run_id: job for job in children(tmp_path)}
    for alias, pick in [("recommended", "fastest"), ("fastest", "fastest"), ("smallest", "smallest")]:
        version = client.get_model_version_by_alias("qa-compress", alias)
        assert pick in jobs[version.run_id].data.tags["recommended"].split(","), alias  # the report's pick

    picked = client.get_model_version_by_alias("qa-compress", "recommended").run_id
    served = _serve_answers(
        "models:/qa-compress@recommended", store_uri(tmp_path), _questions(squad_files[1]), tmp_path / "serve.log"
    )
    assert served == _logged_predictions(client, picked, tmp_path)


def test_export_recommended_registers_a_sweeps_picks_under_their_aliases(tiny_sweep, squad_files, tmp_path, capsys):
    store = store_uri(tiny_sweep)
    client = MlflowClient(store)
    code, out, err = _export_command(capsys, "--recommended", "--name", "tiny-pick", "--tracking-uri", store)
    assert code == 0, err
    assert "Aliases: models:/tiny-pick@recommended, models:/tiny-pick@fastest, models:/tiny-pick@smallest" in out
    jobs = {job.info.run_id: job for job in children(tiny_sweep)}
    recommended = client.get_model_version_by_alias("tiny-pick", "recommended")
    assert "fastest" in jobs[recommended.run_id].data.tags["recommended"].split(",")
    mlflow.set_tracking_uri(store)
    answers = mlflow.pyfunc.load_model("models:/tiny-pick@recommended").predict(_questions(squad_files[1]))
    assert dict(zip(answers["id"], answers["answer"], strict=True)) == _logged_predictions(
        client, recommended.run_id, tmp_path
    )
    versions = len(client.search_model_versions("name='tiny-pick'"))
    assert _export_command(capsys, "--recommended", "--name", "tiny-pick", "--tracking-uri", store)[0] == 0
    assert len(client.search_model_versions("name='tiny-pick'")) == versions  # registered picks are not doubled
