"""Quantization methods on tiny models: what they store, how close they stay, saving and loading without pickle."""

import pytest
import torch
from torch import nn
from transformers import AutoModelForQuestionAnswering

from qa_compress import prune, quantize
from qa_compress.evaluate import timing
from qa_compress.quantize import dynamic_int8

from .conftest import TRAINING, answer_windows, small_bert, small_inputs


def _apply(model, name: str, tmp_path=None, **settings):
    method = quantize.get(name)
    context = quantize.QuantizeContext(["input_ids", "attention_mask"], tmp_path or "unused", num_threads=1)
    return method.apply(model, method.settings(name=name, **settings), context)


def test_dynamic_int8_shrinks_the_model_and_keeps_its_outputs_close(tiny_bert_dir, tokenizer):
    model = AutoModelForQuestionAnswering.from_pretrained(str(tiny_bert_dir)).eval()
    inputs = tokenizer(["Who is there?"], ["Nobody is there at all."], return_tensors="pt")
    with torch.no_grad():
        reference = model(**inputs).start_logits
    fp32_mb = timing.sizes(model, quantize.get("none"))["size_mb"]
    quantized = _apply(model, "dynamic_int8")
    assert not any(type(m) is nn.Linear for m in quantized.modules())
    with torch.no_grad():
        assert torch.allclose(reference, quantized(**inputs).start_logits, atol=0.05)
    tensors = dynamic_int8.weight_tensors(quantized)
    assert any(name.endswith("weight.int8") and t.dtype == torch.int8 for name, t in tensors.items())
    # The tiny model is mostly embeddings (kept FP32), so the saving is small but real.
    assert timing.sizes(quantized, quantize.get("dynamic_int8"))["size_mb"] < fp32_mb


@pytest.mark.parametrize(("per_channel", "structured"), [(False, False), (True, False), (True, True)])
def test_int8_saves_and_loads_back_without_pickle(tmp_path, per_channel, structured):
    model = small_bert()
    if structured:  # the quantized modules must be rebuilt with the pruned shapes
        method = prune.get("structured")
        context = prune.PruneContext(0, None, torch.device("cpu"))
        method.apply(model, {}, method.settings(name="structured", heads_amount=0.5, ffn_amount=0.5), context)
    settings = quantize.get("dynamic_int8").settings(name="dynamic_int8", per_channel=per_channel)
    quantized = _apply(model, "dynamic_int8", per_channel=per_channel)
    scales = dynamic_int8.weight_tensors(quantized)["bert.encoder.layer.0.attention.self.query.weight.scale"]
    query = model.bert.encoder.layer[0].attention.self.query
    assert scales.numel() == (query.out_features if per_channel else 1)
    quantize.save(quantized, settings, tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {
        "config.json",
        dynamic_int8.QUANTIZED_WEIGHTS,
        quantize.SAVED_RECORD,
    }
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert len(set(modes.values())) == 1, modes  # the int8 weights as readable as the files beside them
    loaded = quantize.load(tmp_path)
    with torch.no_grad():
        assert torch.equal(loaded(**small_inputs()).start_logits, quantized(**small_inputs()).start_logits)


def test_fp32_saves_as_safetensors_and_loads_back(tmp_path):
    model = small_bert()
    quantize.save(model, quantize.get("none").settings(name="none"), tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"config.json", "model.safetensors", quantize.SAVED_RECORD}
    with torch.no_grad():
        assert torch.equal(quantize.load(tmp_path)(**small_inputs()).start_logits, model(**small_inputs()).start_logits)


def test_bf16_converts_every_weight_and_halves_the_size():
    model = _apply(small_bert(), "bf16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    with torch.no_grad():
        assert model(**small_inputs()).start_logits.dtype == torch.bfloat16
    none = quantize.get("none")
    assert timing.sizes(model, quantize.get("bf16"))["size_mb"] < 0.6 * timing.sizes(small_bert(), none)["size_mb"]


def test_half_precisions_are_refused_exactly_where_the_hardware_lacks_them():
    fp16_reason = quantize.get("fp16").check(None, None)
    assert (fp16_reason is None) == torch.cuda.is_available()
    if fp16_reason is not None:
        assert "needs a CUDA GPU" in fp16_reason
    has_bf16 = (torch.cuda.is_available() and torch.cuda.is_bf16_supported()) or quantize.cpu_has_bf16()
    bf16_reason = quantize.get("bf16").check(None, None)
    assert (bf16_reason is None) == has_bf16
    if bf16_reason is not None:
        assert "AVX512-BF16 or AMX" in bf16_reason


def test_methods_say_where_they_run():
    assert quantize.get("dynamic_int8").device().type == "cpu" and quantize.get("onnx_int8").device().type == "cpu"
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert quantize.get("none").device().type == expected and quantize.get("fp16").runs_on == "gpu"
    assert [m.name for m in quantize.registry if m.identity] == ["none"]


def test_qat_with_frozen_weights_trains_the_quantizer_ranges_and_leaves_the_weights(tokenizer, tiny_bert_dir):
    """`qat_freeze_weights`: after QAT steps the model's weights are as before and the ranges have moved."""
    import nncf

    from qa_compress.model import train
    from qa_compress.quantize.openvino_int8 import train_only_quantizers

    model = AutoModelForQuestionAnswering.from_pretrained(str(tiny_bert_dir)).eval()
    windows = answer_windows(tokenizer, count=8, length=16)
    inputs = ("input_ids", "token_type_ids", "attention_mask")
    calibration = [{name: torch.tensor(windows[i : i + 1][name]) for name in inputs} for i in range(4)]
    fake_quantized = nncf.quantize(
        model, nncf.Dataset(calibration), model_type=nncf.ModelType.TRANSFORMER, subset_size=4
    )
    train_only_quantizers(fake_quantized)
    before = {name: p.detach().clone() for name, p in fake_quantized.named_parameters()}
    trainable = {name for name, p in fake_quantized.named_parameters() if p.requires_grad}
    assert trainable and all("__nncf_hooks" in name for name in trainable)
    train.fine_tune(fake_quantized, tokenizer, windows, {**TRAINING, "max_steps": 4}, seed=0, callbacks=[])
    after = dict(fake_quantized.named_parameters())
    assert all(torch.equal(after[name], before[name]) for name in before if name not in trainable)
    assert any(not torch.equal(after[name], before[name]) for name in trainable)


def test_a_quantization_method_labels_its_way_of_quantizing():
    method = quantize.get("openvino_int8")
    assert method.label(method.settings(name="openvino_int8")) == "post-training"
    assert method.label(method.settings(name="openvino_int8", max_f1_drop=1.0)) == "accuracy control"
    assert method.label(method.settings(name="openvino_int8", qat_steps=10)) == "QAT"
    dynamic = quantize.get("dynamic_int8")
    assert dynamic.label(dynamic.settings(name="dynamic_int8")) == ""
