"""Decoding, pruning, quantization and benchmarking on tiny models."""

import numpy as np
import pytest
import torch
from datasets import Dataset
from torch import nn
from transformers import AutoModelForQuestionAnswering

from qa_compress import benchmark, predict, prune, quantize

PATTERNS = [r"\.(q_lin|k_lin|v_lin|out_lin)$", r"\.ffn\.lin[12]$", r"\.(query|key|value|dense)$"]


def _features(offsets_per_window, example_ids):
    return Dataset.from_dict({"example_id": example_ids, "offset_mapping": offsets_per_window})


def test_decode_picks_the_best_valid_span_and_a_real_no_answer_probability():
    context = "alpha beta gamma"
    examples = Dataset.from_dict({"id": ["e"], "context": [context]})
    offsets = [None, None, [0, 5], [6, 10], [11, 16]]  # [CLS], question token, 3 context tokens
    start = np.array([[0.0, 9.0, 1.0, 5.0, 0.0]])  # the question token scores highest but is not context
    end = np.array([[0.0, 9.0, 0.0, 1.0, 4.0]])
    result = predict.decode(examples, _features([offsets], ["e"]), start, end, n_best_size=5, max_answer_length=5)
    assert result.answers["e"] == "beta gamma"
    assert 0 < result.na_probs["e"] < 0.01


def test_decode_answers_nothing_when_null_wins_and_respects_max_length():
    examples = Dataset.from_dict({"id": ["e"], "context": ["alpha beta gamma"]})
    offsets = [None, [0, 5], [6, 10], [11, 16]]
    start = np.array([[3.0, 2.0, 0.0, 0.0]])
    end = np.array([[3.0, 0.0, 0.0, 2.0]])
    null = predict.decode(examples, _features([offsets], ["e"]), start, end)
    assert null.answers["e"] == "" and null.na_probs["e"] > 0.5
    # With the null score lowered, the best span "alpha beta gamma" is 3 tokens: too long at max 2.
    start[0, 0] = end[0, 0] = -10
    short = predict.decode(examples, _features([offsets], ["e"]), start, end, max_answer_length=2)
    assert short.answers["e"] in {"alpha", "alpha beta", "gamma", "beta gamma", "beta"}
    assert short.answers["e"] != "alpha beta gamma"


def test_decode_uses_the_minimum_null_score_over_windows():
    examples = Dataset.from_dict({"id": ["e"], "context": ["alpha beta"]})
    windows = [[None, [0, 5], [6, 10]], [None, [6, 10], None]]
    start = np.array([[5.0, 1.0, 0.0], [0.0, 2.0, 0.0]])
    end = np.array([[5.0, 1.0, 0.0], [0.0, 2.0, 0.0]])
    # Window 1 prefers null (10 > 2) but window 2's null score (0) is lower than its span (4).
    result = predict.decode(examples, _features(windows, ["e", "e"]), start, end)
    assert result.answers["e"] == "beta"


@pytest.mark.parametrize("fixture", ["tiny_distilbert_dir", "tiny_bert_dir"])
def test_prunable_layers_are_found_by_name_pattern(fixture, request):
    model = AutoModelForQuestionAnswering.from_pretrained(str(request.getfixturevalue(fixture)))
    layers = prune.prunable_layers(model, PATTERNS)
    assert len(layers) == 2 * 6  # 2 layers x (4 attention + 2 feed-forward) Linear modules
    assert all(isinstance(m, nn.Linear) for m in layers.values())
    assert not any("qa_outputs" in name or "embeddings" in name for name in layers)
    with_head = prune.prunable_layers(model, PATTERNS, include_qa_head=True, include_embeddings=True)
    assert "qa_outputs" in with_head and any("embeddings" in name for name in with_head)


def test_pruning_zero_changes_nothing_and_unknown_methods_fail(tiny_bert_dir):
    model = AutoModelForQuestionAnswering.from_pretrained(str(tiny_bert_dir))
    layers = prune.prunable_layers(model, PATTERNS)
    before = {name: m.weight.detach().clone() for name, m in layers.items()}
    prune.mask(layers, "l1_unstructured", 0.0)
    prune.make_permanent(layers)
    assert all(torch.equal(m.weight, before[name]) for name, m in layers.items())
    assert prune.sparsity(prune.layer_sparsity(layers, {n: m.weight.numel() for n, m in layers.items()})) == 0.0
    with pytest.raises(ValueError, match="not an unstructured pruning method"):
        prune.mask(layers, "structured", 0.3)


def test_dynamic_int8_shrinks_the_model_and_keeps_its_outputs_close(tiny_bert_dir, tokenizer):
    model = AutoModelForQuestionAnswering.from_pretrained(str(tiny_bert_dir)).eval()
    inputs = tokenizer(["Who is there?"], ["Nobody is there at all."], return_tensors="pt")
    with torch.no_grad():
        reference = model(**inputs).start_logits
    fp32_mb = benchmark.sizes(model)["size_mb"]
    quantized = quantize.apply(model, "dynamic_int8")
    assert not any(type(m) is nn.Linear for m in quantized.modules())
    with torch.no_grad():
        approx = quantized(**inputs).start_logits
    assert torch.allclose(reference, approx, atol=0.05)
    tensors = quantize.weight_tensors(quantized)
    assert any(name.endswith("weight.int8") and t.dtype == torch.int8 for name, t in tensors.items())
    # The tiny model is mostly embeddings (kept FP32), so the saving is small but real.
    assert benchmark.sizes(quantized)["size_mb"] < fp32_mb


def test_unknown_quantization_is_refused():
    assert "unknown quantization method" in quantize.supported("int3")
    assert quantize.supported("dynamic_int8") is None


def test_benchmark_reports_latencies_and_question_throughput(tiny_distilbert_dir, tokenizer):
    model = AutoModelForQuestionAnswering.from_pretrained(str(tiny_distilbert_dir))
    encoded = tokenizer(["q"] * 3, ["some context"] * 3, padding="max_length", max_length=32)
    inputs = Dataset.from_dict({k: encoded[k] for k in ("input_ids", "attention_mask")}).with_format("torch")
    result = benchmark.run(
        model, inputs, batch_size=4, warmup=1, repeats=3, device=torch.device("cpu"), questions_per_feature=0.5
    )
    assert result["latency_ms"] > 0 and result["latency_bs1_ms"] > 0
    assert result["latency_p90_ms"] >= result["latency_ms"]
    assert result["samples_per_s"] == pytest.approx(result["features_per_s"] * 0.5)
    assert result["features_per_s"] == pytest.approx(4 / (result["latency_ms"] / 1e3))
