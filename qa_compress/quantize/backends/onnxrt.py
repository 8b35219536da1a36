"""ONNX Runtime INT8: export to ONNX, fuse the transformer graph, quantize dynamically, run in a session.

This is the path production CPU deployments take. The graph is exported with eager
attention (the pattern ONNX Runtime's BERT optimizer recognises), fused (embedding +
layer norm, attention, bias + GELU, skip + layer norm) before quantization, and the
session's thread count is fixed so that timings compare with PyTorch's.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedModel
from transformers.modeling_outputs import QuestionAnsweringModelOutput

log = logging.getLogger(__name__)

OUTPUTS = ("start_logits", "end_logits")
QUANTIZED_FILE = "model.int8.onnx"


def export(model: PreTrainedModel, input_names: list[str], path: Path) -> Path:
    """Write `model` as an ONNX graph with dynamic batch and sequence axes (FP32, CPU)."""
    model = model.to("cpu").eval()
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")
    # In forward()'s order: the exporter names the graph's inputs in that order, whatever order a tokenizer lists
    # them in (BERT's: input_ids, token_type_ids, attention_mask), which bound the attention mask to the token types.
    parameters = list(inspect.signature(model.forward).parameters)
    input_names = sorted(input_names, key=parameters.index)
    sample = {name: torch.ones(2, 16, dtype=torch.long) for name in input_names}
    axes = {name: {0: "batch", 1: "sequence"} for name in (*input_names, *OUTPUTS)}
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
            torch.onnx.export(
                model,
                (),
                str(path),
                kwargs=sample,
                input_names=input_names,
                output_names=list(OUTPUTS),
                dynamic_axes=axes,
                opset_version=17,
                dynamo=False,
            )
    finally:
        model.set_attn_implementation(previous)
    return path


GRAPH_TOLERANCE = 1e-3  # the largest logit difference an FP32 graph may show against the model it came from


def probe_inputs(input_names: list[str], vocab_size: int) -> dict[str, torch.Tensor]:
    """Two windows that tell the inputs apart: one half padding, segment ids 0 then 1."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(min(5, vocab_size - 1), vocab_size, (2, 24), generator=generator)
    mask = torch.ones(2, 24, dtype=torch.long)
    mask[0, 12:] = 0
    segments = torch.zeros(2, 24, dtype=torch.long)
    segments[:, 8:] = 1
    known = {"input_ids": ids, "attention_mask": mask, "token_type_ids": segments}
    return {name: known.get(name, torch.zeros(2, 24, dtype=torch.long)) for name in input_names}


def check_graph(model: PreTrainedModel, graph: Path, input_names: list[str]) -> None:
    """The FP32 graph computes what the model does (padding and segments included), or nothing is quantized from it.

    A graph that takes one input for another still runs and answers, only worse: this is where it is caught.
    """
    inputs = probe_inputs(input_names, model.config.vocab_size)
    with torch.no_grad():
        expected = model.to("cpu").eval()(**inputs).start_logits
    got = OrtModel(graph, num_threads=1)(**inputs).start_logits
    valid = inputs["attention_mask"].bool() if "attention_mask" in inputs else torch.ones_like(expected, dtype=bool)
    difference = (got - expected).abs()[valid].max().item()
    if difference > GRAPH_TOLERANCE:
        raise ValueError(
            f"the ONNX graph does not compute what the model does (start logits differ by up to {difference:.3g}); "
            "not quantizing it"
        )


def attention_shape(model: PreTrainedModel) -> tuple[int, int]:
    """Heads per layer and their total width, which attention fusion needs (after head pruning too)."""
    from qa_compress.model import families

    family = families.of_model(model)
    layers = family.blocks(model) if family is not None else []
    if not layers or len({b.heads for b in layers}) != 1:
        return 0, 0  # let the optimizer infer them
    return layers[0].heads, layers[0].heads * layers[0].head_size


def _follow_package_log_level() -> None:
    """Give the optimizer's modules the level of the `onnxruntime.transformers` logger.

    They log under their bare module names (`onnx_model_bert`, `fusion_attention`), not under the
    package's, so a level set on the package (the pipeline quiets it by default) would not reach them.
    """
    import onnxruntime.transformers as package

    level = logging.getLogger(package.__name__).getEffectiveLevel()
    directory = Path(package.__file__).parent
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if file and Path(file).parent == directory:
            logging.getLogger(module.__name__.rsplit(".", 1)[-1]).setLevel(level)


def optimize(
    source: Path, target: Path, num_heads: int = 0, hidden_size: int = 0, model_type: str = "bert"
) -> dict[str, int]:
    """Fuse the transformer graph with ONNX Runtime's optimizer; returns the fused operator counts."""
    from onnxruntime.transformers import optimizer

    _follow_package_log_level()
    optimized = optimizer.optimize_model(
        str(source), model_type=model_type, num_heads=num_heads, hidden_size=hidden_size
    )
    optimized.save_model_to_file(str(target))
    return {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}


def quantize(source: Path, target: Path, per_channel: bool = True, operators: list[str] | None = None) -> Path:
    """Dynamic INT8 quantization of the graph's weights (activations quantized at run time), of every operator
    ONNX Runtime can quantize or only of `operators` (types).

    Per-channel weight scales cost no speed here and keep more of the answerable questions.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_dynamic advises pre-processing on the root logger, every time
    try:
        quantize_dynamic(
            str(source),
            str(target),
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            op_types_to_quantize=operators,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},  # fused ops carry no inferred types
        )
    finally:
        root.setLevel(level)
    return target


def quantize_static(
    source: Path,
    target: Path,
    calibration_items: list[dict[str, np.ndarray]],
    calibration_method: str = "minmax",
    per_channel: bool = True,
) -> tuple[Path, dict[str, int]]:
    """Static INT8: the matrix products in QDQ format, their activation ranges measured on the calibration
    windows; returns the graph and its count of each kind of quantized operator (`quantized_operators`).

    Activations are unsigned and weights signed (U8S8, the x86 fast path). A product's input is quantized, its
    output is not: ONNX Runtime then runs it as MatMulIntegerToFloat, straight into the FP32 layer norm and GELU
    that follow. Quantizing the output too (QLinearMatMul, then dequantized for those operators) was 1.16× slower
    on MiniLM-L6 and lost more accuracy (start/end agreement with FP32 on 64 validation windows: 0.50, not 0.80).

    ONNX Runtime's quantizer leaves a tensor alone when it does not know its type, and the fused graph's
    operators carry none, so symbolic shape inference types them first: without it the graph came out
    weight-only. The static quantizer has no form of the fused attention and embedding operators; those two are
    quantized as `onnx_int8` does (QAttention, QEmbedLayerNormalization). Layer norms and GELU stay FP32.
    """
    if calibration_method != "minmax":  # histograms stack each tensor across windows: one length for all
        calibration_items = padded(calibration_items)
    typed = target.with_name("model.typed.onnx")
    static = target.with_name("model.qdq.onnx")
    try:
        with _root_logger_quiet():  # the quantizer's pre-processing advice, on the root logger
            _with_types(source, typed)
            _calibrated_products(typed, static, calibration_items, calibration_method, per_channel)
            quantize(static, target, per_channel, operators=["Attention", "EmbedLayerNormalization"])
    finally:
        for scratch in (typed, static):
            scratch.unlink(missing_ok=True)
    counts = quantized_operators(target)
    if counts["static_int8_matmuls"] == 0:
        raise RuntimeError(f"static quantization of {source} quantized no activation: {counts}")
    return target, counts


@contextlib.contextmanager
def _root_logger_quiet() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _with_types(source: Path, target: Path) -> None:
    """The graph with every tensor typed by symbolic shape inference (the quantizer skips untyped tensors)."""
    import onnx
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    onnx.save(SymbolicShapeInference.infer_shapes(onnx.load(str(source)), auto_merge=True), str(target))


def _calibrated_products(
    source: Path, target: Path, items: list[dict[str, np.ndarray]], calibration_method: str, per_channel: bool
) -> None:
    """The matrix products of `source` quantized in QDQ format (U8S8, outputs left FP32), ranges calibrated on
    `items`; the calibrators' printed bin counts kept out of the output."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static as ort_quantize_static

    # The exporter drops an input the model ignores (DeBERTa-v3 with no token types): feed the graph's own.
    taken = {i.name for i in onnx.load(str(source), load_external_data=False).graph.input}

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(items)

        def get_next(self) -> dict[str, np.ndarray] | None:
            item = next(self.items, None)
            return None if item is None else {name: array for name, array in item.items() if name in taken}

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    printed = io.StringIO()  # the histogram calibrators print their bin counts
    with contextlib.redirect_stdout(printed):
        ort_quantize_static(
            str(source),
            str(target),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=methods[calibration_method],
            op_types_to_quantize=["MatMul"],
            extra_options={
                "DefaultTensorType": 1,  # for any tensor inference could not type (1 = FLOAT)
                "OpTypesToExcludeOutputQuantization": ["MatMul"],
            },
        )
    log.debug("ONNX Runtime calibration: %s", printed.getvalue().strip())


def padded(items: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """The windows padded with token 0 (attention masked) to the longest one's length.

    ONNX Runtime's histogram calibrators (entropy, percentile) stack a tensor's values from every window into one
    array, which windows of different lengths cannot form; the padded positions' activations join the
    histograms, as they do in a padded evaluation batch.
    """
    length = max(item["input_ids"].shape[1] for item in items)
    return [
        {name: np.pad(array, ((0, 0), (0, length - array.shape[1]))) for name, array in item.items()} for item in items
    ]


def quantized_operators(path: Path) -> dict[str, int]:
    """How many matrix products take an int8 activation calibrated ahead of time (a weight and an input both
    dequantized from int8), how many stay floating point, and how many operators quantize at run time."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    producers = {out: node.op_type for node in graph.node for out in node.output}
    initial = {t.name for t in graph.initializer}
    static = floating = 0
    for node in graph.node:
        if node.op_type != "MatMul":
            continue
        if all(producers.get(name) == "DequantizeLinear" for name in node.input):
            static += 1
        elif any(name in initial for name in node.input):  # a weight product (attention's own are fused)
            floating += 1
    dynamic = sum(
        node.op_type in ("QAttention", "QEmbedLayerNormalization", "MatMulInteger", "DynamicQuantizeMatMul")
        for node in graph.node
    )
    return {"static_int8_matmuls": static, "float_matmuls": floating, "dynamic_int8_operators": dynamic}


def build_int8(
    model: PreTrainedModel,
    input_names: list[str],
    directory: Path,
    per_channel: bool = True,
    calibration_items: list[dict[str, np.ndarray]] | None = None,
    calibration_method: str = "minmax",
) -> tuple[Path, dict[str, int]]:
    """Export, fuse and quantize `model` into `directory`; returns the INT8 graph and the fused operators.

    Dynamic quantization without `calibration_items`, static (QDQ) with them; the fused operators' counts
    gain the quantized operators' (`quantized_operators`) in the static case.
    """
    from qa_compress.model import families

    family = families.of_model(model)
    exported = export(model, input_names, directory / "model.onnx")
    model_type = family.onnx_model_type if family is not None else "bert"
    fused = optimize(exported, directory / "model.fused.onnx", *attention_shape(model), model_type=model_type)
    log.info("ONNX Runtime fused operators: %s", fused)
    check_graph(model, directory / "model.fused.onnx", input_names)
    if calibration_items is None:
        target = quantize(directory / "model.fused.onnx", directory / QUANTIZED_FILE, per_channel)
    else:
        target, quantized = quantize_static(
            directory / "model.fused.onnx",
            directory / QUANTIZED_FILE,
            calibration_items,
            calibration_method,
            per_channel,
        )
        fused = {**fused, **quantized}
    for scratch in ("model.onnx", "model.fused.onnx"):
        (directory / scratch).unlink(missing_ok=True)
    return target, fused


class OrtModel:
    """An ONNX Runtime session behind the calls predict and benchmark make on a PyTorch QA model."""

    def __init__(self, path: Path, num_threads: int, profile_prefix: str | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if profile_prefix is not None:  # per-node timings, written by `end_profiling`
            options.enable_profiling = True
            options.profile_file_prefix = profile_prefix
        self.path = path
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]

    def __call__(self, **batch: torch.Tensor) -> QuestionAnsweringModelOutput:
        feeds = {name: np.ascontiguousarray(batch[name].cpu().numpy(), dtype=np.int64) for name in self.input_names}
        start, end = self.session.run(list(OUTPUTS), feeds)
        return QuestionAnsweringModelOutput(start_logits=torch.from_numpy(start), end_logits=torch.from_numpy(end))

    def end_profiling(self) -> Path:
        return Path(self.session.end_profiling())

    def eval(self) -> OrtModel:
        return self

    def to(self, device: torch.device | str) -> OrtModel:
        if torch.device(device).type != "cpu":
            raise ValueError("the ONNX Runtime session here runs on the CPU")
        return self


def initializers(path: Path) -> dict[str, np.ndarray]:
    """The graph's stored tensors (weights, quantization scales and zero points), by name."""
    import onnx
    from onnx import numpy_helper

    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
