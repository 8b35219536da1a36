"""Global magnitude pruning: one threshold over all selected layers, so layers end with different sparsities."""

from __future__ import annotations

from qa_compress.prune.base import UnstructuredMethod, register


class GlobalMagnitude(UnstructuredMethod):
    name = "global_magnitude"
    description = (
        "One magnitude threshold over all selected layers: layers end with different sparsities (logged per layer)."
    )

    def mask(self, layers, amount, seed) -> None:
        from torch.nn.utils import prune as torch_prune

        params = [(module, "weight") for module in layers.values()]
        torch_prune.global_unstructured(params, pruning_method=torch_prune.L1Unstructured, amount=amount)


METHOD = register(GlobalMagnitude())
