"""OpenVINO: convert a PyTorch QA model, quantize it with NNCF, and run it compiled for the CPU.

OpenVINO's CPU plugin runs a statically quantized transformer in INT8 end to end (matrix
products, attention and their neighbours between quantize/dequantize pairs), which is what
CPU deployments of BERT-like models use. NNCF's post-training quantization measures
activation ranges on calibration windows (`model_type=TRANSFORMER` keeps layer norms,
softmax and GELU in floating point); its accuracy-controlled variant gives back precision
to the most sensitive layers until the F1 drop on held-out training questions is small
enough. Models are saved as OpenVINO IR (`.xml` graph + `.bin` weights), never pickles.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel
from transformers.modeling_outputs import QuestionAnsweringModelOutput

from qa_compress.tracking import signal_stack

log = logging.getLogger(__name__)

MODEL_FILE = "openvino_model.xml"  # with openvino_model.bin beside it
OUTPUTS = ("start_logits", "end_logits")
PRECISIONS = {"f32": "f32", "bf16": "bf16"}  # INFERENCE_PRECISION_HINT values


@functools.cache
def core() -> Any:
    """The process's one `openvino.Core` (creating one loads the CPU plugin; keep it loaded)."""
    import openvino as ov

    return ov.Core()


@contextlib.contextmanager
def native_section() -> Iterator[None]:
    """Run OpenVINO or NNCF code, then give the main thread its own alternate signal stack back."""
    try:
        yield
    finally:
        signal_stack.reclaim()


def quiet_nncf() -> None:
    """NNCF logs every step at INFO with progress bars; keep its warnings only."""
    import nncf

    nncf.set_log_level(logging.WARNING)


@contextlib.contextmanager
def progress_bars_off_a_terminal() -> Iterator[None]:
    """NNCF draws its progress bars with rich on stdout, not through its logger; in a log file they are noise.

    Its warnings still show: its logger's handler holds the stream it was given at import.
    """
    if sys.stdout.isatty():
        yield
        return
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        yield


def convert(model: PreTrainedModel, input_names: list[str]) -> Any:
    """The PyTorch model as an `openvino.Model` with dynamic batch and sequence axes (FP32)."""
    import openvino as ov

    model = model.to("cpu").eval()
    sample = {name: torch.ones(2, 16, dtype=torch.long) for name in input_names}
    with native_section(), warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's notes on Python booleans in the masking code
        converted = ov.convert_model(model, example_input=sample)
    converted.reshape({name: ov.PartialShape([-1, -1]) for name in input_names})
    for output, name in zip(converted.outputs, OUTPUTS, strict=False):
        output.get_tensor().set_names({name})
    return converted


class OvModel:
    """A compiled OpenVINO model behind the calls predict and benchmark make on a PyTorch QA model."""

    def __init__(self, model: Any, num_threads: int, precision: str = "f32", profile: bool = False):
        self.model = model  # the uncompiled graph: what is saved and measured
        config = {
            "INFERENCE_NUM_THREADS": num_threads,
            "INFERENCE_PRECISION_HINT": PRECISIONS[precision],
            "PERFORMANCE_HINT": "LATENCY",
        }
        if profile:
            config["PERF_COUNT"] = True
        with native_section():
            self.compiled = core().compile_model(model, "CPU", config)
            self.request = self.compiled.create_infer_request()
        self.input_names = [port.get_any_name() for port in self.compiled.inputs]

    def __call__(self, **batch: torch.Tensor) -> QuestionAnsweringModelOutput:
        return infer(self.request, self.input_names, batch)

    def profile(self) -> list[dict[str, Any]]:
        """Per-operator time of the last inference (compiled with `profile=True`): name, type, precision, ms."""
        return [
            {
                "name": p.node_name,
                "type": p.node_type,
                "exec_type": p.exec_type,
                "ms": p.real_time.total_seconds() * 1e3,
            }
            for p in self.request.profiling_info
        ]

    def eval(self) -> OvModel:
        return self

    def to(self, device: torch.device | str) -> OvModel:
        if torch.device(device).type != "cpu":
            raise ValueError("the OpenVINO model here runs on the CPU")
        return self


def infer(request: Any, input_names: list[str], batch: dict[str, torch.Tensor]) -> QuestionAnsweringModelOutput:
    """One inference on an OpenVINO request with a batch of PyTorch tensors."""
    feeds = {name: np.ascontiguousarray(batch[name].cpu().numpy(), dtype=np.int64) for name in input_names}
    results = request.infer(feeds)
    start, end = (torch.from_numpy(np.array(results[name])) for name in OUTPUTS)
    return QuestionAnsweringModelOutput(start_logits=start, end_logits=end)


class _CompiledQa:
    """An `openvino.CompiledModel` (as NNCF hands it to a validation function) called like a QA model."""

    def __init__(self, compiled: Any):
        self.request = compiled.create_infer_request()
        self.input_names = [port.get_any_name() for port in compiled.inputs]

    def __call__(self, **batch: torch.Tensor) -> QuestionAnsweringModelOutput:
        return infer(self.request, self.input_names, batch)

    def eval(self) -> _CompiledQa:
        return self


def quantize(model: Any, calibration_items: list[dict[str, np.ndarray]], fast_bias_correction: bool = False) -> Any:
    """NNCF static post-training INT8 quantization of an `openvino.Model`, calibrated on the given windows.

    Full bias correction by default: closer to FP32 than the fast one on the fine-tuned MiniLM-L6 (BENCHMARKS.md),
    for a few more minutes of quantizing.
    """
    import nncf

    quiet_nncf()
    with native_section(), progress_bars_off_a_terminal():
        return nncf.quantize(
            model,
            nncf.Dataset(calibration_items),
            model_type=nncf.ModelType.TRANSFORMER,
            subset_size=len(calibration_items),
            fast_bias_correction=fast_bias_correction,
        )


def quantize_with_accuracy_control(
    model: Any,
    calibration_items: list[dict[str, np.ndarray]],
    held_out: Any,
    max_f1_drop: float,
    fast_bias_correction: bool = False,
) -> tuple[Any, dict[str, float]]:
    """INT8 quantization that keeps the most sensitive operations in floating point until the F1 drop on
    `held_out` (a `calibration.HeldOut`) is at most `max_f1_drop` points.

    Returns the model and the F1 of the FP32 and the quantized model on the held-out questions.
    """
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters

    quiet_nncf()

    def validation_fn(compiled: Any, questions: Any) -> tuple[float, list[float]]:
        return held_out.f1(_CompiledQa(compiled), list(questions))

    with native_section(), progress_bars_off_a_terminal():
        quantized = nncf.quantize_with_accuracy_control(
            model,
            nncf.Dataset(calibration_items),
            nncf.Dataset(list(range(len(held_out)))),
            validation_fn,
            max_drop=max_f1_drop,
            drop_type=nncf.DropType.ABSOLUTE,
            model_type=nncf.ModelType.TRANSFORMER,
            subset_size=len(calibration_items),
            fast_bias_correction=fast_bias_correction,
            # Reverting a layer restores its quantizers and bias, not SmoothQuant's rescaling of its weights, which
            # left reverted layers wrong (outputs a third of FP32's on a small BERT): accuracy control goes without it.
            advanced_quantization_parameters=AdvancedQuantizationParameters(
                smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=-1)
            ),
        )
    return quantized, {
        "reference": held_out.f1(_CompiledQa(_compile(model)))[0],
        "quantized": held_out.f1(_CompiledQa(_compile(quantized)))[0],
    }


def _compile(model: Any) -> Any:
    with native_section():
        return core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})


_PASS_THROUGH = {"Convert", "Reshape", "Transpose", "Squeeze", "Unsqueeze"}


def _fed_by_fake_quantize(node: Any) -> bool:
    while node.get_type_name() in _PASS_THROUGH:
        node = node.input_value(0).get_node()
    return node.get_type_name() == "FakeQuantize"


def float_matmuls(model: Any) -> list[str]:
    """Matrix products of a quantized (not yet saved) model that run in floating point: no input is quantized."""
    return sorted(
        op.get_friendly_name()
        for op in model.get_ordered_ops()
        if op.get_type_name() == "MatMul" and not any(_fed_by_fake_quantize(i.get_node()) for i in op.input_values())
    )


def matmul_count(model: Any) -> int:
    return sum(op.get_type_name() == "MatMul" for op in model.get_ordered_ops())


def save(model: Any, directory: Path) -> Path:
    """Write the model as OpenVINO IR (weights kept in their precision: INT8 stays INT8, FP32 stays FP32)."""
    import openvino as ov

    path = directory / MODEL_FILE
    ov.save_model(model, str(path), compress_to_fp16=False)
    return path


def load(directory: Path) -> Any:
    """Read OpenVINO IR written by `save` (a graph and raw weights; no code runs)."""
    with native_section():
        return core().read_model(str(directory / MODEL_FILE))


def serialized(model: Any, workdir: Path) -> bytes:
    """The IR as stored (`.xml` then `.bin`), written to a scratch directory: what `size_mb` measures."""
    path = save(model, workdir)
    return path.read_bytes() + path.with_suffix(".bin").read_bytes()


def stored_tensors(model: Any, workdir: Path) -> dict[str, np.ndarray]:
    """The constants of the model as stored (INT8 weights after quantization), by name."""
    with native_section():
        stored = core().read_model(str(save(model, workdir)))
    return {
        op.get_friendly_name(): op.get_data()
        for op in stored.get_ordered_ops()
        if op.get_type_name() == "Constant" and math.prod(op.get_output_shape(0)) > 1
    }
