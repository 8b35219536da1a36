"""`hydra/sweeper=checked` (the default): Hydra's grid sweeper without composing each job a second time.

Hydra's basic sweeper composes every job of a batch before it launches any, one full composition each
(BENCHMARKS.md, refusal times: the first of 300 jobs). The sweep callback has composed and checked every
job already, with the project's faster composer; those jobs are not composed again, any other job is.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper, BasicSweeperConf
from hydra.core.config_store import ConfigStore


@dataclass
class CheckedSweeperConf(BasicSweeperConf):
    """`hydra.sweeper.*`: the basic sweeper's `max_batch_size` and `params`."""

    _target_: str = "hydra_plugins.qa_compress_sweeper.checked_sweeper.CheckedSweeper"
    max_batch_size: int | None = None  # jobs launched together; null = all of them
    params: dict | None = None  # sweep in the config, as key: sweep expression (the command line adds to it)


ConfigStore.instance().store(group="hydra/sweeper", name="checked", node=CheckedSweeperConf, provider="qa_compress")


class CheckedSweeper(BasicSweeper):
    """Launch the grid as Hydra's basic sweeper does; validate only the jobs the sweep callback did not check."""

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        from qa_compress.sweep.callback import callback_for

        callback = callback_for(Path(self.config.hydra.sweep.dir))
        checked = callback.checked_overrides if callback is not None else set()
        super().validate_batch_is_legal([job for job in batch if tuple(job) not in checked])
