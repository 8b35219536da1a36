"""OpenVINO FP32: the runtime alone, so a user sees what it buys apart from INT8."""

from __future__ import annotations

from qa_compress.quantize.base import register
from qa_compress.quantize.openvino_base import OpenVinoMethod


class OpenVinoFp32(OpenVinoMethod):
    name = "openvino_fp32"
    description = "Convert to OpenVINO and run FP32, compiled for this CPU (the runtime's gain without INT8)."


METHOD = register(OpenVinoFp32())
