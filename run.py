"""Entry point: compose the Hydra config and run one qa-compress job (or a sweep with -m).

python run.py                                   # DistilBERT on SQuAD 2.0, no compression
python run.py -m experiment=quickstart          # offline demo sweep
python run.py -m pruning=l1_unstructured pruning.amount=0.1,0.3,0.5
"""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

import qa_compress.job.resolvers  # noqa: F401  (registers ${package_path:...} before composition)

CONFIG_DIR = str(Path(__file__).resolve().parent / "conf")  # absolute, so tests can call main() in-process


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> dict:
    from qa_compress.job import launch  # here, so that --help and --cfg answer without loading torch

    return launch.job(cfg)


def stopped(err: KeyboardInterrupt) -> int:
    """Ctrl-C or SIGTERM: the job's run ended KILLED already; end the sweep, say so in one line."""
    from qa_compress.sweep.callback import finish_unfinished
    from qa_compress.tracking import interrupts

    finish_unfinished()
    sys.stderr.write(f"Stopped ({err or 'interrupted'}): every run it had open ended KILLED\n")
    return interrupts.exit_code()


def end_open_sweeps() -> None:
    """End a sweep a failed job left open while the interpreter still runs (its report downloads on threads)."""
    if "qa_compress.sweep.callback" in sys.modules:  # a sweep ran: nothing to import for --help or --cfg
        sys.modules["qa_compress.sweep.callback"].finish_unfinished()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt as err:
        sys.exit(stopped(err))
    finally:
        end_open_sweeps()
