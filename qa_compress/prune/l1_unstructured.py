"""L1 unstructured pruning: the smallest-magnitude fraction of each selected layer's weights set to zero."""

from __future__ import annotations

from qa_compress.prune.base import UnstructuredMethod, register


class L1Unstructured(UnstructuredMethod):
    name = "l1_unstructured"
    description = "L1 (magnitude) unstructured pruning of each selected Linear layer, made permanent before evaluation."

    def importance(self, weights, seed):
        return {name: weight.abs() for name, weight in weights.items()}


METHOD = register(L1Unstructured())
