"""ONNX Runtime static INT8: the fused graph of `onnx_int8`, its matrix products quantized in QDQ format with
activation ranges calibrated on sample windows (MinMax, Entropy or Percentile); runs in ONNX Runtime.

The fused attention and embedding have no static form in ONNX Runtime's quantizer and are quantized as in
`onnx_int8`; the record says how many operators went each way."""

from __future__ import annotations

from typing import ClassVar, Literal

from qa_compress.quantize.base import CalibrationSettings, QuantizationSettings, register
from qa_compress.quantize.onnx_int8 import OnnxInt8


class OnnxStaticInt8Settings(CalibrationSettings):
    calibration_method: Literal["minmax", "entropy", "percentile"] = "minmax"  # how activation ranges are set
    per_channel: bool = True  # one int8 weight scale per output channel


class OnnxStaticInt8(OnnxInt8):
    name = "onnx_static_int8"
    description = (
        "Export to ONNX, fuse the graph, quantize weights and activations to int8 (QDQ, calibrated on sample "
        "windows); runs in ONNX Runtime."
    )
    settings: ClassVar[type[QuantizationSettings]] = OnnxStaticInt8Settings
    # 4: inputs bound by name (before, BERT-style graphs took the token types as the attention mask); 3: products'
    # outputs stay FP32; 2: activations quantized (revision 1 graphs held int8 weights only)
    revision = 4

    def reads(self, settings):
        return settings.calibration_reads()

    def apply(self, model, settings, context):
        from qa_compress.quantize.backends import onnxrt

        items = context.calibration.items(context.input_names)
        path, operators = onnxrt.build_int8(
            model, context.input_names, context.workdir, settings.per_channel, items, settings.calibration_method
        )
        session = onnxrt.OrtModel(path, context.num_threads)
        counted = ("static_int8_matmuls", "float_matmuls", "dynamic_int8_operators")
        session.record = {"calibration_windows": len(items), **{key: operators[key] for key in counted}}
        return session


METHOD = register(OnnxStaticInt8())
