"""Quantization and reduced-precision methods, one module each, looked up by name in `registry`.

Built in: none, dynamic_int8 (PyTorch), onnx_int8 and onnx_static_int8 (ONNX Runtime),
openvino_fp32, openvino_int8 and openvino_bf16 (OpenVINO, NNCF), fp16 (CUDA) and bf16 (GPU,
or a CPU with AVX512-BF16 or AMX). A method defined elsewhere registers itself with
`register`.
"""

from qa_compress.quantize import (  # noqa: F401  (register)
    bf16,
    dynamic_int8,
    fp16,
    none,
    onnx_int8,
    onnx_static_int8,
    openvino_bf16,
    openvino_fp32,
    openvino_int8,
)
from qa_compress.quantize.base import (
    CALIBRATION_WINDOWS,
    HELD_OUT_QUESTIONS,
    SAVED_RECORD,
    TRAINING_WINDOWS,
    CalibrationSettings,
    HeldOutSettings,
    QuantizationMethod,
    QuantizationSettings,
    QuantizeContext,
    cpu_has_bf16,
    get,
    load,
    register,
    registry,
    save,
    unique_tensors,
)

__all__ = [
    "CALIBRATION_WINDOWS",
    "HELD_OUT_QUESTIONS",
    "SAVED_RECORD",
    "TRAINING_WINDOWS",
    "CalibrationSettings",
    "HeldOutSettings",
    "QuantizationMethod",
    "QuantizationSettings",
    "QuantizeContext",
    "cpu_has_bf16",
    "get",
    "load",
    "register",
    "registry",
    "save",
    "unique_tensors",
]
