"""What run.py calls for each composed job: its config and inputs checked, then the job.

A bad value or file in a single run ends in one line on stderr and exit code 1: values, data
files, the weights' headers, places and the store before torch is imported (about a second),
what needs the checkpoint's config or tokenizer before MLflow and the stages are. Within a
sweep every job was checked before the first started (`sweep`); an error there is the
launcher's to record.
"""

from __future__ import annotations

import sys

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from qa_compress.errors import UserError
from qa_compress.job import checks


def _in_sweep() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def job(cfg: DictConfig) -> dict[str, float | str]:
    """Check the config's values and the job's inputs, then run the job (importing the stages only then).

    Returns its metrics and run id: every objective a sweeper may ask for.
    """
    try:
        checked = checks.job(cfg)
        from qa_compress.job.run import run

        return run(cfg, checked)
    except UserError as err:
        if _in_sweep():
            raise
        sys.stderr.write(f"{str(err).strip()}\n")
        sys.exit(1)
