"""Global magnitude pruning: one threshold over all selected layers, so layers end with different sparsities."""

from __future__ import annotations

from qa_compress.prune.base import UnstructuredMethod, register


class GlobalMagnitude(UnstructuredMethod):
    name = "global_magnitude"
    description = (
        "One magnitude threshold over all selected layers: layers end with different sparsities (logged per layer)."
    )
    global_threshold = True

    def importance(self, weights, seed):
        return {name: weight.abs() for name, weight in weights.items()}


METHOD = register(GlobalMagnitude())
