"""Quantization and reduced-precision methods, one module each, looked up by name in `registry`.

Built in: none, dynamic_int8 (PyTorch), onnx_int8 (ONNX Runtime), fp16 (CUDA) and bf16
(GPU, or a CPU with AVX512-BF16 or AMX). A method defined elsewhere registers itself with
`register`.
"""

from qa_compress.quantize import bf16, dynamic_int8, fp16, none, onnx_int8  # noqa: F401  (register)
from qa_compress.quantize.base import (
    SAVED_RECORD,
    TRAINING_WINDOWS,
    QuantizationMethod,
    QuantizationSettings,
    QuantizeContext,
    get,
    load,
    register,
    registry,
    save,
    unique_tensors,
)

__all__ = [
    "SAVED_RECORD",
    "TRAINING_WINDOWS",
    "QuantizationMethod",
    "QuantizationSettings",
    "QuantizeContext",
    "get",
    "load",
    "register",
    "registry",
    "save",
    "unique_tensors",
]
