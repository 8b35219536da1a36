"""No quantization: FP32 weights and activations."""

from __future__ import annotations

from qa_compress.quantize.base import QuantizationMethod, register


class NoQuantization(QuantizationMethod):
    name = "none"
    description = "No quantization: FP32 weights."
    identity = True

    def apply(self, model, settings, context):
        return model


METHOD = register(NoQuantization())
