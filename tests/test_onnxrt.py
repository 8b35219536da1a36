"""ONNX export, graph fusion and INT8 in ONNX Runtime, against PyTorch's outputs."""

import pytest
import torch
from transformers import AutoModelForQuestionAnswering

from qa_compress import prune, quantize
from qa_compress.evaluate import timing
from qa_compress.quantize.backends import onnxrt

from .conftest import small_bert, small_inputs


def test_onnx_export_matches_pytorch_and_int8_stays_close(tmp_path, tiny_distilbert_dir):
    distilbert = AutoModelForQuestionAnswering.from_pretrained(str(tiny_distilbert_dir)).eval()
    method = quantize.get("onnx_int8")
    for name, model in [("bert", small_bert()), ("distilbert", distilbert)]:
        inputs = small_inputs()
        with torch.no_grad():
            reference = model(**inputs)
        exported = onnxrt.export(model, list(inputs), tmp_path / name / "model.onnx")
        fused = onnxrt.optimize(exported, tmp_path / name / "fused.onnx", *onnxrt.attention_shape(model))
        assert fused.get("Attention") == 2 and fused.get("SkipLayerNormalization")  # the fusions really happen
        for graph in (exported, tmp_path / name / "fused.onnx"):
            out = onnxrt.OrtModel(graph, num_threads=1)(**inputs)
            assert torch.allclose(out.start_logits, reference.start_logits, atol=1e-4)
            assert torch.allclose(out.end_logits, reference.end_logits, atol=1e-4)
        context = quantize.QuantizeContext(list(inputs), tmp_path / name / "int8", num_threads=1)
        int8 = method.apply(model, method.settings(name="onnx_int8"), context)
        assert sorted(p.name for p in int8.path.parent.iterdir()) == [onnxrt.QUANTIZED_FILE]  # no scratch left
        assert torch.allclose(int8(**inputs).start_logits, reference.start_logits, atol=0.1)
        assert any(v.dtype.name == "int8" for v in onnxrt.initializers(int8.path).values())
        assert timing.sizes(int8, method)["size_mb"] < timing.sizes(model, quantize.get("none"))["size_mb"]

        saved = tmp_path / name / "saved"
        quantize.save(int8, method.settings(name="onnx_int8"), saved)
        assert torch.equal(quantize.load(saved)(**inputs).start_logits, int8(**inputs).start_logits)


def test_structured_then_onnx_keeps_pruned_attention_fused(tmp_path):
    model = small_bert(heads=4)
    method = prune.get("structured")
    context = prune.PruneContext(0, None, torch.device("cpu"))
    method.apply(model, {}, method.settings(name="structured", heads_amount=0.5, ffn_amount=0.5), context)
    inputs = small_inputs()
    with torch.no_grad():
        reference = model(**inputs).start_logits
    exported = onnxrt.export(model, list(inputs), tmp_path / "model.onnx")
    assert onnxrt.optimize(exported, tmp_path / "fused.onnx", *onnxrt.attention_shape(model)).get("Attention") == 2
    assert torch.allclose(onnxrt.OrtModel(tmp_path / "fused.onnx", 1)(**inputs).start_logits, reference, atol=1e-4)


def test_static_int8_runs_every_weight_product_on_calibrated_int8_activations(tmp_path, tiny_distilbert_dir):
    """The static graph must quantize activations, not weights alone: ONNX Runtime then runs each product as
    MatMulIntegerToFloat (int8 in, FP32 out), and what calibration measured decides the outputs."""
    import onnx
    import onnxruntime as ort

    model = small_bert().eval()
    inputs = small_inputs()
    generator = torch.Generator().manual_seed(2)
    lengths = (12, 9, 12, 7, 12, 10, 12, 12)  # windows as drawn: unpadded, of different lengths
    calibration = [
        {
            "input_ids": torch.randint(5, 120, (1, n), generator=generator).numpy(),
            "attention_mask": torch.ones(1, n, dtype=torch.long).numpy(),
        }
        for n in lengths
    ]
    outputs = {}
    for method in ("minmax", "percentile"):
        path, counts = onnxrt.build_int8(model, list(inputs), tmp_path / method, True, calibration, method)
        assert counts["static_int8_matmuls"] == 2 * 3 + 1 and counts["float_matmuls"] == 0  # per layer: O, FFN×2; QA
        assert counts["dynamic_int8_operators"] == 2 + 1  # attention (no static form) and the embedding
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(tmp_path / method / "as_run.onnx")
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        run = [node.op_type for node in onnx.load(options.optimized_model_filepath).graph.node]
        assert run.count("MatMulIntegerToFloat") == counts["static_int8_matmuls"] and "QLinearMatMul" not in run
        outputs[method] = onnxrt.OrtModel(path, num_threads=1)(**inputs).start_logits
        with torch.no_grad():
            assert torch.allclose(outputs[method], model(**inputs).start_logits, atol=0.1)
    assert not torch.equal(outputs["minmax"], outputs["percentile"])  # the calibration method matters
    distilbert = AutoModelForQuestionAnswering.from_pretrained(str(tiny_distilbert_dir)).eval()
    _, counts = onnxrt.build_int8(distilbert, list(inputs), tmp_path / "distilbert", True, calibration, "entropy")
    assert (counts["static_int8_matmuls"], counts["float_matmuls"], counts["dynamic_int8_operators"]) == (7, 0, 3)
    assert sorted(p.name for p in (tmp_path / "distilbert").iterdir()) == [onnxrt.QUANTIZED_FILE]  # no scratch left


def test_inputs_listed_in_the_tokenizers_order_reach_the_graph_by_name(tmp_path, tokenizer):
    """BERT's tokenizer lists token_type_ids before attention_mask, forward() takes them the other way round: bound
    by position, the segment ids became the attention mask (7 F1 lost on the quick start, before any INT8)."""
    model = small_bert().eval()
    inputs = small_inputs()
    segments = torch.zeros_like(inputs["input_ids"])
    segments[:, 4:] = 1  # question, then context
    ordered = {"input_ids": inputs["input_ids"], "token_type_ids": segments, "attention_mask": inputs["attention_mask"]}
    assert [name for name in tokenizer.model_input_names if name in ordered] == list(ordered)
    with torch.no_grad():
        reference = model(**ordered).start_logits
    exported = onnxrt.export(model, list(ordered), tmp_path / "model.onnx")
    assert torch.allclose(onnxrt.OrtModel(exported, num_threads=1)(**ordered).start_logits, reference, atol=1e-4)


def test_a_graph_that_computes_something_else_is_refused_before_it_is_quantized(tmp_path):
    model = small_bert().eval()
    names = ["input_ids", "attention_mask", "token_type_ids"]
    exported = onnxrt.export(model, names, tmp_path / "model.onnx")
    onnxrt.check_graph(model, exported, names)  # the graph as exported: the same logits
    other = small_bert().eval()
    with torch.no_grad():
        other.qa_outputs.weight.mul_(1.5)  # weights that are not the graph's
    with pytest.raises(ValueError, match="does not compute what the model does"):
        onnxrt.check_graph(other, exported, names)
