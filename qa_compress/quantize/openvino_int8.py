"""OpenVINO INT8: NNCF static quantization calibrated on sample windows, optionally accuracy-controlled
or followed by quantization-aware training; runs compiled for the CPU.

- Post-training (default): `nncf.quantize` on the OpenVINO graph with `calibration_samples` windows, then
  NNCF's full bias correction (`bias_correction=fast`: its quicker, coarser one).
- `max_f1_drop=X`: `nncf.quantize_with_accuracy_control`, scoring candidates by SQuAD 2.0 F1 on
  `held_out_questions` training questions; the matrix products it keeps in FP32 are recorded.
- `qat_steps=N`: quantize the PyTorch model with NNCF (fake quantizers calibrated the same way),
  fine-tune it for N steps with the Trainer, then convert; F1 before and after is recorded.
  `qat_distill_weight` > 0 also teaches it the FP32 model's start/end logits (off by default: on the
  fine-tuned MiniLM-L6 it moved the no-answer balance and cost F1). `qat_freeze_weights=true` trains the
  fake quantizers' ranges alone, the model's weights staying as fine-tuned (learned step sizes, as in LSQ).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from qa_compress.quantize.base import (
    HELD_OUT_QUESTIONS,
    TRAINING_WINDOWS,
    CalibrationSettings,
    HeldOutSettings,
    QuantizationSettings,
    register,
)
from qa_compress.quantize.openvino_base import OpenVinoMethod


class OpenVinoInt8Settings(CalibrationSettings, HeldOutSettings):
    # NNCF's bias correction after post-training quantization: "full" (its BiasCorrection, a few minutes longer to
    # quantize, closer to FP32) or "fast" (FastBiasCorrection). QAT always uses the fast one: NNCF's PyTorch
    # quantization has no other.
    bias_correction: Literal["full", "fast"] = "full"
    max_f1_drop: float | None = Field(default=None, gt=0, le=100)  # F1 points; None: plain post-training INT8
    qat_steps: int = Field(default=0, ge=0, le=1_000_000)  # quantization-aware training steps; 0: post-training
    qat_learning_rate: float = Field(default=1e-5, gt=0, lt=1)
    qat_batch_size: int = Field(default=16, ge=1, le=4096)
    # Share of the distillation loss (the FP32 model's logits as teacher) in the QAT loss; 0: labels only.
    qat_distill_weight: float = Field(default=0.0, ge=0, le=1)
    qat_distill_temperature: float = Field(default=2.0, gt=0, le=100)
    qat_freeze_weights: bool = False  # true: QAT trains the quantizers' ranges only, not the model's weights

    @model_validator(mode="after")
    def _one_recovery(self) -> OpenVinoInt8Settings:
        if self.max_f1_drop is not None and self.qat_steps:
            raise ValueError(
                f"quantization.max_f1_drop={self.max_f1_drop} with quantization.qat_steps={self.qat_steps}: "
                "choose accuracy control (post-training) or quantization-aware training, not both"
            )
        return self


class OpenVinoInt8(OpenVinoMethod):
    name = "openvino_int8"
    description = (
        "OpenVINO INT8 after NNCF static quantization on calibration windows "
        "(max_f1_drop: accuracy-controlled; qat_steps: quantization-aware training)."
    )
    settings: ClassVar[type[QuantizationSettings]] = OpenVinoInt8Settings

    def label(self, settings):
        if settings.qat_steps:
            return "QAT"
        return "post-training" if settings.max_f1_drop is None else "accuracy control"

    def reads(self, settings):
        wanted = set(settings.calibration_reads())
        if settings.qat_steps:
            wanted.add(TRAINING_WINDOWS)
        if settings.max_f1_drop is not None:
            wanted.add(HELD_OUT_QUESTIONS)
        return frozenset(wanted)

    def check(self, settings, model_config):
        try:
            import nncf  # noqa: F401
        except ImportError as err:
            return f"needs the nncf package ({err}); pip install openvino nncf"
        return super().check(settings, model_config)

    def build(self, model, settings, context):
        from qa_compress.quantize.backends import openvino_runtime

        if settings.qat_steps:
            return self._quantization_aware(model, settings, context)
        items = context.calibration.items(context.input_names)
        graph = openvino_runtime.convert(model, context.input_names)
        record = {
            "calibration_windows": len(items),
            "matmuls": openvino_runtime.matmul_count(graph),
            "bias_correction": settings.bias_correction,
        }
        if settings.max_f1_drop is None:
            quantized = openvino_runtime.quantize(graph, items, settings.bias_correction == "fast")
        else:
            quantized, f1 = openvino_runtime.quantize_with_accuracy_control(
                graph, items, context.held_out, settings.max_f1_drop, settings.bias_correction == "fast"
            )
            record.update(
                {
                    "held_out_questions": len(context.held_out),
                    "held_out_f1_fp32": f1["reference"],
                    "held_out_f1_int8": f1["quantized"],
                }
            )
        floating = openvino_runtime.float_matmuls(quantized)
        record.update({"float_matmuls": len(floating), "float_matmul_names": floating})
        return quantized, record

    def _quantization_aware(self, model, settings, context):
        """NNCF fake-quantizes the PyTorch model, the Trainer fine-tunes it, then it converts to INT8 IR."""
        import nncf
        import torch

        from qa_compress.model import train
        from qa_compress.quantize.backends import openvino_runtime

        openvino_runtime.quiet_nncf()
        batches = context.calibration.batches(context.input_names, 1)
        model = model.to("cpu").eval()
        teacher = None
        if settings.qat_distill_weight > 0:  # the FP32 model's logits, taken before NNCF touches it
            teacher = context.teacher(
                model,
                temperature=settings.qat_distill_temperature,
                weight=settings.qat_distill_weight,
                tag="qat_teacher_cache",
            )
        with openvino_runtime.native_section():
            fake_quantized = nncf.quantize(
                model,
                nncf.Dataset(batches),
                model_type=nncf.ModelType.TRANSFORMER,
                subset_size=len(batches),
            )
        if settings.qat_freeze_weights:
            train_only_quantizers(fake_quantized)
        before = openvino_runtime.convert(fake_quantized, context.input_names)
        trainable = sum(p.numel() for p in fake_quantized.parameters() if p.requires_grad)
        record = {
            "calibration_windows": len(batches),
            "qat_distill_weight": settings.qat_distill_weight,
            "qat_trainable_parameters": trainable,
        }
        if context.evaluate is not None:
            scores = context.evaluate(openvino_runtime.OvModel(before, context.num_threads))
            kept = ("f1", "exact", "HasAns_f1", "NoAns_f1")
            record.update({f"{k}_before_qat": scores[k] for k in kept if k in scores})
        training = {
            **(context.training or {}),
            "learning_rate": settings.qat_learning_rate,
            "max_steps": settings.qat_steps,
            "batch_size": settings.qat_batch_size,
            "gradient_accumulation_steps": 1,
            "warmup_ratio": 0.0,
            "mixed_precision": "no",
            "logging_steps": max(1, settings.qat_steps // 5),
        }
        result = train.fine_tune(fake_quantized, None, context.train_features, training, context.seed, [], teacher)
        record.update({f"qat_{k}": v for k, v in result.items()})
        with torch.no_grad():
            graph = openvino_runtime.convert(fake_quantized.eval(), context.input_names)
        floating = openvino_runtime.float_matmuls(graph)
        record.update({"float_matmuls": len(floating), "float_matmul_names": floating})
        return graph, record


def train_only_quantizers(model) -> None:
    """Freeze every parameter of an NNCF fake-quantized model except its quantizers' (their scales, or ranges
    and lows), so training moves where values are rounded, not the weights themselves."""
    from nncf.torch.quantization.layers import BaseQuantizer

    ranges = {id(p) for m in model.modules() if isinstance(m, BaseQuantizer) for p in m.parameters()}
    if not ranges:
        raise RuntimeError("NNCF's fake-quantized model holds no quantizer (BaseQuantizer) to train")
    for parameter in model.parameters():
        if id(parameter) not in ranges:
            parameter.requires_grad_(False)


METHOD = register(OpenVinoInt8())
