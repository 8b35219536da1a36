"""OpenVINO and NNCF on small models: conversion, static INT8, accuracy control, saving without pickles."""

import signal

import numpy as np
import pytest
import torch

from qa_compress import quantize
from qa_compress.evaluate import calibration, timing
from qa_compress.quantize import openvino_bf16
from qa_compress.quantize.backends import openvino_runtime
from qa_compress.tracking import signal_stack

from .conftest import small_bert, small_inputs

NAMES = ["input_ids", "attention_mask"]


def _windows(count: int, length: int = 24, seed: int = 1) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [
        {
            "input_ids": torch.randint(5, 120, (1, length), generator=generator),
            "attention_mask": torch.ones(1, length, dtype=torch.long),
        }
        for _ in range(count)
    ]


def _context(tmp_path, windows) -> quantize.QuantizeContext:
    from datasets import Dataset

    rows = {name: [w[name][0].tolist() for w in windows] for name in NAMES}
    drawn = calibration.draw(Dataset.from_dict(rows), len(windows), 0, "test windows")
    return quantize.QuantizeContext(NAMES, tmp_path / "work", num_threads=1, calibration=drawn)


def _apply(name, model, tmp_path, windows=(), **settings):
    method = quantize.get(name)
    settings = method.settings(name=name, **settings)
    return method.apply(model, settings, _context(tmp_path, list(windows))), settings


def test_openvino_fp32_matches_pytorch_and_int8_stays_close_and_smaller(tmp_path):
    model = small_bert().eval()
    inputs = small_inputs()
    with torch.no_grad():
        reference = model(**inputs).start_logits
    fp32, _ = _apply("openvino_fp32", model, tmp_path)
    assert torch.allclose(fp32(**inputs).start_logits, reference, atol=1e-4)
    int8, _ = _apply("openvino_int8", model, tmp_path, _windows(16), calibration_samples=16)
    assert int8.record["calibration_windows"] == 16 and int8.record["float_matmuls"] == 0
    assert torch.allclose(int8(**inputs).start_logits, reference, atol=0.1)
    assert not torch.equal(int8(**inputs).start_logits, fp32(**inputs).start_logits)
    stored = quantize.get("openvino_int8").stored_tensors(int8)
    linear_weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    int8_values = sum(v.size for v in stored.values() if v.dtype == np.int8)
    assert int8_values >= linear_weights  # every Linear weight is stored in int8 (some embeddings too)
    sizes = {m: timing.sizes(x, quantize.get(m)) for m, x in (("openvino_fp32", fp32), ("openvino_int8", int8))}
    assert sizes["openvino_int8"]["size_mb"] < sizes["openvino_fp32"]["size_mb"] - 2 * linear_weights / 1e6


def test_full_bias_correction_is_the_default_and_the_choice_reaches_nncf(tmp_path, monkeypatch):
    """Which correction NNCF runs; what it changes on the real checkpoint is measured in BENCHMARKS.md (a tiny
    random model's biases need none)."""
    import nncf

    asked, quantize_for_real = [], nncf.quantize

    def recording(*args, **kwargs):
        asked.append(kwargs["fast_bias_correction"])
        return quantize_for_real(*args, **kwargs)

    monkeypatch.setattr(nncf, "quantize", recording)
    model = small_bert().eval()
    for choice in ("full", "fast"):
        int8, _ = _apply(
            "openvino_int8", model, tmp_path / choice, _windows(8), calibration_samples=8, bias_correction=choice
        )
        assert int8.record["bias_correction"] == choice
    assert asked == [False, True]
    assert quantize.get("openvino_int8").settings(name="openvino_int8").bias_correction == "full"
    with pytest.raises(ValueError, match="bias_correction"):
        quantize.get("openvino_int8").settings(name="openvino_int8", bias_correction="slow")


@pytest.mark.parametrize("name", ["openvino_int8", "onnx_static_int8"])
def test_static_int8_saves_without_pickles_and_loads_back_to_the_same_outputs(tmp_path, name):
    model = small_bert().eval()
    quantized, settings = _apply(name, model, tmp_path, _windows(8), calibration_samples=8)
    quantize.save(quantized, settings, tmp_path / "saved")
    suffixes = {p.suffix for p in (tmp_path / "saved").iterdir()}
    assert suffixes == ({".xml", ".bin", ".json"} if name == "openvino_int8" else {".onnx", ".json"})
    loaded = quantize.load(tmp_path / "saved", num_threads=1)
    inputs = small_inputs()
    assert torch.equal(loaded(**inputs).start_logits, quantized(**inputs).start_logits)


class _Agreement:
    """A stand-in for held-out questions: the share of windows whose start argmax matches the FP32 model's."""

    def __init__(self, model, windows):
        self.windows = windows
        with torch.no_grad():
            self.reference = [int(model(**w).start_logits.argmax()) for w in windows]

    def __len__(self):
        return len(self.windows)

    def f1(self, candidate, questions=None):
        indices = range(len(self.windows)) if questions is None else list(questions)
        values = [
            100.0 * (int(candidate(**self.windows[i]).start_logits.argmax()) == self.reference[i]) for i in indices
        ]
        return float(np.mean(values)), values


@pytest.mark.slow
def test_accuracy_control_keeps_sensitive_layers_in_fp32_until_the_drop_is_within_bound():
    model = small_bert().eval()
    windows = _windows(40)
    agreement = _Agreement(model, windows)
    items = [{k: v.numpy() for k, v in w.items()} for w in windows]
    plain = openvino_runtime.quantize(openvino_runtime.convert(model, NAMES), items)
    plain_score = agreement.f1(openvino_runtime.OvModel(plain, 1))[0]
    assert plain_score < 99.5, "the small model must lose agreement to plain INT8 for this test to mean anything"
    controlled, f1 = openvino_runtime.quantize_with_accuracy_control(
        openvino_runtime.convert(model, NAMES), items, agreement, max_f1_drop=0.5
    )
    assert f1["reference"] == 100.0 and f1["reference"] - f1["quantized"] <= 0.5
    assert agreement.f1(openvino_runtime.OvModel(controlled, 1))[0] >= 99.5
    kept = openvino_runtime.float_matmuls(controlled)
    assert 0 < len(kept) < openvino_runtime.matmul_count(controlled)  # some layers reverted, not all


def test_openvino_bf16_is_refused_exactly_where_the_cpu_lacks_bf16(monkeypatch):
    method = quantize.get("openvino_bf16")
    monkeypatch.setattr(openvino_bf16, "cpu_has_bf16", lambda: False)
    reason = method.check(None, None)
    assert "AVX512-BF16 or AMX" in reason and "openvino_int8" in reason
    monkeypatch.setattr(openvino_bf16, "cpu_has_bf16", lambda: True)
    assert method.check(None, None) is None


def test_a_bf16_cpu_runs_openvino_bf16_close_to_fp32(tmp_path):
    if not openvino_bf16.cpu_has_bf16():
        pytest.skip("this CPU has neither AVX512-BF16 nor AMX: run on a CPU that has one to test openvino_bf16")
    model = small_bert().eval()
    with torch.no_grad():
        reference = model(**small_inputs()).start_logits
    half, _ = _apply("openvino_bf16", model, tmp_path)
    assert torch.allclose(half(**small_inputs()).start_logits, reference, atol=0.1)


@pytest.mark.slow
def test_after_openvino_work_signals_land_on_a_stack_the_process_owns(tmp_path):
    """OpenVINO's CPU plugin sets the thread's alternate signal stack and frees it later; a SIGTERM then crashed."""
    model = small_bert().eval()
    quantized, settings = _apply("openvino_int8", model, tmp_path, _windows(4), calibration_samples=4)
    quantize.save(quantized, settings, tmp_path / "saved")
    quantize.load(tmp_path / "saved")(**small_inputs())
    assert signal_stack.current() == signal_stack.own()
    received = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        signal.raise_signal(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert received == [signal.SIGTERM]
