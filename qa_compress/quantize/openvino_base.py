"""What every OpenVINO method shares: a compiled OpenVINO model, saved as IR, measured as stored."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import ClassVar

from qa_compress.quantize.base import QuantizationMethod


class OpenVinoMethod(QuantizationMethod):
    """Convert to OpenVINO and run compiled for the CPU at `precision`; subclasses may transform the graph."""

    runs_on = "cpu"
    precision: ClassVar[str] = "f32"
    serving_requirements = ("openvino",)

    def check(self, settings, model_config):
        try:
            import openvino  # noqa: F401
        except ImportError as err:
            return f"needs the openvino package ({err}); pip install openvino nncf"
        return None

    def build(self, model, settings, context):
        """The `openvino.Model` to compile, and what the method measured while building it."""
        from qa_compress.quantize.backends import openvino_runtime

        return openvino_runtime.convert(model, context.input_names), {}

    def apply(self, model, settings, context):
        from qa_compress.quantize.backends import openvino_runtime

        graph, record = self.build(model, settings, context)
        compiled = openvino_runtime.OvModel(graph, context.num_threads, self.precision)
        compiled.record = record
        return compiled

    def stored_tensors(self, model):
        from qa_compress.quantize.backends import openvino_runtime

        with tempfile.TemporaryDirectory() as scratch:
            return openvino_runtime.stored_tensors(model.model, Path(scratch))

    def serialized(self, model) -> bytes:
        from qa_compress.quantize.backends import openvino_runtime

        with tempfile.TemporaryDirectory() as scratch:
            return openvino_runtime.serialized(model.model, Path(scratch))

    def save(self, model, directory) -> None:
        from qa_compress.quantize.backends import openvino_runtime

        openvino_runtime.save(model.model, directory)

    def load(self, directory, num_threads=1):
        from qa_compress.quantize.backends import openvino_runtime

        return openvino_runtime.OvModel(openvino_runtime.load(directory), num_threads, self.precision)
