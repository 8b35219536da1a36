"""float16 weights and activations, on a CUDA GPU; refused elsewhere rather than emulated slowly."""

from __future__ import annotations

from qa_compress.quantize.base import register
from qa_compress.quantize.half import HalfPrecision


class Fp16(HalfPrecision):
    name = "fp16"
    description = "Half-precision (float16) weights and activations; needs a CUDA GPU."
    runs_on = "gpu"
    dtype_name = "float16"

    def check(self, settings, model_config):
        import torch

        if not torch.cuda.is_available():
            return "fp16 inference needs a CUDA GPU and none is visible; on a CPU use bf16 (where supported) or int8"
        return None


METHOD = register(Fp16())
