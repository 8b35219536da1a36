"""What run.py calls for each composed job: config values refused before torch loads, then the job.

A bad value in a single run ends in one line on stderr and exit code 1, in well under the
seconds that importing torch, transformers and MLflow takes. Within a sweep every job's config
was checked before the first started (`sweep`); an error there is the launcher's to record.
"""

from __future__ import annotations

import sys

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from qa_compress import config
from qa_compress.errors import UserError


def _in_sweep() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def job(cfg: DictConfig) -> float:
    """Check the config's values, then run the job (importing the heavy stages only then); returns its F1."""
    try:
        config.from_hydra(cfg)
        from qa_compress import pipeline

        return pipeline.run(cfg)
    except UserError as err:
        if _in_sweep():
            raise
        sys.stderr.write(f"{str(err).strip()}\n")
        sys.exit(1)
