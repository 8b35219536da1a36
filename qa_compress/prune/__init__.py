"""Pruning methods, one module each, looked up by name in `registry`.

Built in: none, l1_unstructured, global_magnitude, random (unstructured: zeros in place,
masks held through recovery fine-tuning) and structured (heads and feed-forward neurons
removed, matrices shrunk). A method defined elsewhere registers itself with `register`.
"""

from qa_compress.prune import global_magnitude, l1_unstructured, none, random, structured  # noqa: F401  (register)
from qa_compress.prune.base import (
    PruneContext,
    PruningMethod,
    PruningSettings,
    UnstructuredMethod,
    UnstructuredSettings,
    describe,
    details,
    get,
    layer_patterns,
    register,
    registry,
)

__all__ = [
    "PruneContext",
    "PruningMethod",
    "PruningSettings",
    "UnstructuredMethod",
    "UnstructuredSettings",
    "describe",
    "details",
    "get",
    "layer_patterns",
    "register",
    "registry",
]
