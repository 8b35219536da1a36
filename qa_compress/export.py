"""Register a job's model in the MLflow Model Registry, or a sweep's picks under the aliases that name them.

    python -m qa_compress.export --run-id ID --name squad-minilm-int8
    python -m qa_compress.export --recommended            # the latest sweep's picks: @recommended, @fastest, @smallest
    MLFLOW_TRACKING_URI=sqlite:///mlruns/mlflow.db mlflow models serve -m models:/qa-compress@recommended \\
        --env-manager local -h 127.0.0.1 -p 5001

The registered model answers questions as the job did (qa_compress/serve/export.py). A job keeps its
model with save_model=true; a job that kept none is refused with the command that reruns it keeping it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from qa_compress.errors import UserError
from qa_compress.serve.export import (
    DEFAULT_REGISTERED_NAME,
    ExportError,
    check_name,
    export,
    kept_model,
    no_model,
    point_aliases,
)
from qa_compress.sweep.recommend import picks, recommend
from qa_compress.sweep.report import EXPERIMENT, allowed_drop, sweep_parent
from qa_compress.tracking import store
from qa_compress.tracking.results import sweep_jobs

SERVE = "mlflow models serve -m {uri} --env-manager local -h 127.0.0.1 -p 5001"


def register_picks(
    client: MlflowClient, parent_run_id: str | None, experiment: str, name: str, workdir: Path
) -> list[str]:
    """Register the sweep's picks (a pick already registered under `name` is not registered twice) and point the
    aliases at them; returns the aliased URIs. Nothing is registered unless every pick kept its model."""
    check_name(name)
    parent = sweep_parent(client, parent_run_id, experiment)
    chosen = picks(recommend(sweep_jobs(client, parent.info.run_id), allowed_drop(parent)))
    if not chosen:
        raise ExportError(f"sweep {parent.info.run_id} recommends nothing: no uncompressed job finished in it")
    for job in chosen.values():
        if not job.registered.startswith(f"{name}/") and not kept_model(client, job.run_id):
            raise no_model(client.get_run(job.run_id))
    versions: dict[str, str] = {}
    for job in {job.run_id: job for job in chosen.values()}.values():
        if job.registered.startswith(f"{name}/"):
            versions[job.run_id] = job.registered
        else:
            versions[job.run_id] = f"{name}/{export(client, job.run_id, name, workdir)[1]}"
    return point_aliases(client, {alias: versions[job.run_id] for alias, job in chosen.items()})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qa_compress.export", description=__doc__.splitlines()[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--run-id", help="the job's run (its model kept with save_model=true)")
    which.add_argument(
        "--recommended",
        action="store_true",
        help="a sweep's picks: @recommended (the fastest within its allowed F1 loss), @fastest and @smallest",
    )
    parser.add_argument("--parent-run-id", help="with --recommended: the sweep (default: the latest sweep)")
    parser.add_argument("--experiment", default=EXPERIMENT, help="with --recommended: where the latest sweep is")
    name_help = f"Model Registry name (default: {DEFAULT_REGISTERED_NAME}); each export adds a version"
    parser.add_argument("--name", default=DEFAULT_REGISTERED_NAME, help=name_help)
    parser.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI, else ./mlruns)")
    opts = parser.parse_args(argv)
    if opts.parent_run_id and not opts.recommended:
        parser.error("--parent-run-id goes with --recommended")

    if not sys.stderr.isatty():  # progress bars only on a terminal, as in a job
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri = opts.tracking_uri or "the default store"
    try:
        uri = store.existing(opts.tracking_uri)
        client = MlflowClient(uri)
        with tempfile.TemporaryDirectory() as workdir:
            if opts.recommended:
                uris = register_picks(client, opts.parent_run_id, opts.experiment, opts.name, Path(workdir))
            else:
                model_uri, version = export(client, opts.run_id, opts.name, Path(workdir))
    except (ExportError, UserError) as err:
        sys.stderr.write(f"{err}\n")
        return 1
    except MlflowException as err:
        sys.stderr.write(f"the MLflow store {uri} could not be written ({str(err).splitlines()[0][:200]})\n")
        return 1
    if opts.recommended:
        print(f"Aliases: {', '.join(uris)}. Serve the sweep's pick with:")
        print(f"  MLFLOW_TRACKING_URI={uri} {SERVE.format(uri=uris[0])}")
        return 0
    print(f"Logged {model_uri} and registered it as models:/{opts.name}/{version}. Serve it with:")
    print(f"  MLFLOW_TRACKING_URI={uri} {SERVE.format(uri=f'models:/{opts.name}/{version}')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
