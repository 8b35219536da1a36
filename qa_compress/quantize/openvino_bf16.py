"""OpenVINO with bfloat16 inference, on a CPU with AVX512-BF16 or AMX; refused elsewhere."""

from __future__ import annotations

from qa_compress.quantize.base import cpu_has_bf16, register
from qa_compress.quantize.openvino_base import OpenVinoMethod


class OpenVinoBf16(OpenVinoMethod):
    name = "openvino_bf16"
    description = "Convert to OpenVINO and run in bfloat16; on a CPU with AVX512-BF16 or AMX."
    precision = "bf16"

    def check(self, settings, model_config):
        if not cpu_has_bf16():
            return (
                "OpenVINO bf16 inference needs a CPU with AVX512-BF16 or AMX and this one has neither; "
                "use openvino_fp32 or openvino_int8"
            )
        return super().check(settings, model_config)


METHOD = register(OpenVinoBf16())
