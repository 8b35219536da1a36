"""Around jobs: the sweep callback, its report, and the Pareto search."""


def __getattr__(name: str):
    """`qa_compress.sweep.MlflowSweep`, the callback's `_target_` in configs written before the sweep package."""
    if name == "MlflowSweep":
        from qa_compress.sweep.callback import MlflowSweep

        return MlflowSweep
    raise AttributeError(name)
