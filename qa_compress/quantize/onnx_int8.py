"""ONNX Runtime INT8: export, fuse the transformer graph, quantize weights dynamically, run in a session.

The work is in `onnxrt`; this module declares the method. Saved as the `.onnx` graph alone.
"""

from __future__ import annotations

import shutil
from typing import ClassVar

from qa_compress.quantize.base import QuantizationMethod, QuantizationSettings, register


class OnnxInt8Settings(QuantizationSettings):
    per_channel: bool = True  # one int8 scale per output channel (same speed here, keeps more answers right)


class OnnxInt8(QuantizationMethod):
    name = "onnx_int8"
    description = (
        "Export to ONNX, fuse the graph (ONNX Runtime transformer optimizer), quantize weights to int8; "
        "runs in ONNX Runtime."
    )
    settings: ClassVar[type[QuantizationSettings]] = OnnxInt8Settings
    serving_requirements = ("onnx", "onnxruntime")
    revision = 2  # 2: inputs bound by name (before, BERT-style graphs took the token types as the attention mask)
    runs_on = "cpu"

    def check(self, settings, model_config):
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError as err:
            return f"needs the onnx and onnxruntime packages ({err})"
        return None

    def apply(self, model, settings, context):
        from qa_compress.quantize.backends import onnxrt

        path, _ = onnxrt.build_int8(model, context.input_names, context.workdir, settings.per_channel)
        return onnxrt.OrtModel(path, context.num_threads)

    def stored_tensors(self, model):
        from qa_compress.quantize.backends import onnxrt

        return onnxrt.initializers(model.path)

    def serialized(self, model) -> bytes:
        return model.path.read_bytes()

    def save(self, model, directory) -> None:
        from qa_compress.quantize.backends import onnxrt

        shutil.copyfile(model.path, directory / onnxrt.QUANTIZED_FILE)

    def load(self, directory, num_threads=1):
        from qa_compress.quantize.backends import onnxrt

        return onnxrt.OrtModel(directory / onnxrt.QUANTIZED_FILE, num_threads)


METHOD = register(OnnxInt8())
