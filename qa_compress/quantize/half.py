"""What fp16 and bf16 share: the whole model cast to a half-precision type, saved and loaded as such."""

from __future__ import annotations

from typing import ClassVar

from qa_compress.quantize.base import QuantizationMethod


class HalfPrecision(QuantizationMethod):
    dtype_name: ClassVar[str]  # "float16" or "bfloat16"

    def apply(self, model, settings, context):
        import torch

        return model.to(getattr(torch, self.dtype_name)).eval()

    def load(self, directory, num_threads):
        import torch

        return super().load(directory, num_threads).to(getattr(torch, self.dtype_name))
