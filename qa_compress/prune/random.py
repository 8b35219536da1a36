"""Random pruning, the control: each layer loses the same fraction as with L1, drawn from a seeded generator.

The random scores depend only on the seed and the layer shapes, so a gradual schedule's
masks are nested: a weight pruned at one stage stays pruned at the next.
"""

from __future__ import annotations

from qa_compress.prune.base import UnstructuredMethod, register


class RandomPruning(UnstructuredMethod):
    name = "random"
    description = (
        "Control: each selected layer loses the same fraction as with l1_unstructured, chosen at random "
        "(seeded by `seed`)."
    )

    def importance(self, weights, seed):
        import torch

        generator = torch.Generator().manual_seed(seed)
        return {
            name: torch.rand(weight.shape, generator=generator).to(weight.device) for name, weight in weights.items()
        }


METHOD = register(RandomPruning())
