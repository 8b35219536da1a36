"""Random pruning, the control: each layer loses the same fraction as with L1, drawn from a seeded generator."""

from __future__ import annotations

from qa_compress.prune.base import UnstructuredMethod, register


class RandomPruning(UnstructuredMethod):
    name = "random"
    description = (
        "Control: each selected layer loses the same fraction as with l1_unstructured, chosen at random "
        "(seeded by `seed`)."
    )

    def mask(self, layers, amount, seed) -> None:
        import torch
        from torch.nn.utils import prune as torch_prune

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for module in layers.values():
                torch_prune.random_unstructured(module, name="weight", amount=amount)


METHOD = register(RandomPruning())
