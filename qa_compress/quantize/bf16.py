"""bfloat16 weights and activations, on a GPU with bf16 or a CPU with AVX512-BF16 or AMX; refused elsewhere."""

from __future__ import annotations

from qa_compress.quantize.base import cpu_has_bf16, register
from qa_compress.quantize.half import HalfPrecision


class Bf16(HalfPrecision):
    name = "bf16"
    description = "bfloat16 weights and activations; on a GPU with bf16 or a CPU with AVX512-BF16 or AMX."
    dtype_name = "bfloat16"

    def check(self, settings, model_config):
        import torch

        if not (torch.cuda.is_available() and torch.cuda.is_bf16_supported()) and not cpu_has_bf16():
            return (
                "bf16 inference needs a GPU with bf16 or a CPU with AVX512-BF16 or AMX, and this machine has neither; "
                "use dynamic_int8 or onnx_int8"
            )
        return None


METHOD = register(Bf16())
