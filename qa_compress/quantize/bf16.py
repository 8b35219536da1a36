"""bfloat16 weights and activations, on a GPU with bf16 or a CPU with AVX512-BF16 or AMX; refused elsewhere."""

from __future__ import annotations

from qa_compress.quantize.base import register
from qa_compress.quantize.half import HalfPrecision


def cpu_has_bf16() -> bool:
    """Whether this CPU runs bf16 natively (AVX512-BF16 or AMX tiles)."""
    import torch

    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


class Bf16(HalfPrecision):
    name = "bf16"
    description = "bfloat16 weights and activations; on a GPU with bf16 or a CPU with AVX512-BF16 or AMX."
    dtype_name = "bfloat16"

    def check(self, job, model_config):
        import torch

        if not (torch.cuda.is_available() and torch.cuda.is_bf16_supported()) and not cpu_has_bf16():
            return (
                "bf16 inference needs a GPU with bf16 or a CPU with AVX512-BF16 or AMX, and this machine has neither; "
                "use dynamic_int8 or onnx_int8"
            )
        return None


METHOD = register(Bf16())
