"""Sizes and timings, measured the same way for every variant."""

import time
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForQuestionAnswering

from qa_compress import prune, quantize
from qa_compress.evaluate import timing
from qa_compress.prune import layers as prune_layers

from .conftest import small_bert


def test_sizes_count_zeros_and_gzip_rewards_sparsity():
    dense, sparse = small_bert(), small_bert()
    layers = prune_layers.prunable_layers(sparse, [r"\.(query|key|value|dense)$"])
    method = prune.get("l1_unstructured")
    method.apply(
        sparse,
        layers,
        method.settings(name="l1_unstructured", amount=0.9),
        prune.PruneContext(0, None, torch.device("cpu")),
    )
    prune_layers.make_permanent(layers)
    none = quantize.get("none")
    a, b = timing.sizes(dense, none), timing.sizes(sparse, none)
    assert a["size_mb"] == pytest.approx(b["size_mb"], rel=1e-3)  # zeros are still stored densely
    assert b["size_gzip_mb"] < 0.8 * a["size_gzip_mb"]
    pruned = sum(m.weight.numel() for m in layers.values()) * 0.9
    assert a["params_nonzero"] - b["params_nonzero"] == pytest.approx(pruned, rel=0.01)
    assert a["params_total"] == b["params_total"] == sum(p.numel() for p in dense.parameters())


def test_benchmark_reports_latencies_and_question_throughput(tiny_distilbert_dir, tokenizer):
    model = AutoModelForQuestionAnswering.from_pretrained(str(tiny_distilbert_dir))
    encoded = tokenizer(["q"] * 3, ["some context"] * 3, padding="max_length", max_length=32)
    inputs = Dataset.from_dict({k: encoded[k] for k in ("input_ids", "attention_mask")}).with_format("torch")
    result = timing.run(
        model, inputs, batch_size=4, warmup=1, repeats=3, device=torch.device("cpu"), questions_per_feature=0.5
    )
    assert result["latency_ms"] > 0 and result["latency_bs1_ms"] > 0
    assert result["latency_p90_ms"] >= result["latency_ms"]
    assert result["samples_per_s"] == pytest.approx(result["features_per_s"] * 0.5)
    assert result["features_per_s"] == pytest.approx(4 / (result["latency_ms"] / 1e3))


def test_parallel_gzip_size_matches_one_stream_within_a_kilobyte():
    import gzip

    data = (b"qa-compress " * 50_000) + bytes(range(256)) * 4_000  # 1.6 MB that compresses 300-fold
    assert abs(timing.gzip_size(data) - len(gzip.compress(data, compresslevel=6, mtime=0))) < 1_000
    assert timing.gzip_size(b"") > 0  # an empty file still has a gzip header


def test_the_cpu_is_described_with_the_flags_that_decide_int8_speed():
    cpuinfo = (
        "processor\t: 0\nmodel name\t: Example Xeon\nflags\t\t: fpu sse avx2 avx512f avx512_vnni rdrand amx_int8\n"
    )
    assert timing.describe_cpu(cpuinfo) == "Example Xeon (flags: avx2 avx512f avx512_vnni amx_int8)"
    assert timing.describe_cpu("flags\t: sse2\n", "x86_64") == (
        "x86_64 (flags: none of avx2, avx512f, avx512_vnni, avx_vnni, avx512_bf16, amx_bf16, amx_int8)"
    )


def test_this_machines_description_names_exactly_the_listed_flags_it_has():
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("no /proc/cpuinfo on this system: nothing to compare the description with")
    flags = set(
        next(line for line in cpuinfo.read_text().splitlines() if line.startswith("flags")).split(":")[1].split()
    )
    expected = [flag for flag in timing.CPU_FLAGS if flag in flags]
    described = timing.cpu_description().split("(flags: ", 1)[1].rstrip(")")
    assert described == (" ".join(expected) if expected else "none of " + ", ".join(timing.CPU_FLAGS))


class _Sleeper(torch.nn.Module):
    """A model whose forward pass takes `ms` milliseconds (sleeping frees the CPU: no contention between the two);
    tens of milliseconds, so that a busy machine's late wake-ups (a few ms) do not move the ratio."""

    def __init__(self, ms: float) -> None:
        super().__init__()
        self.ms = ms

    def forward(self, **inputs):
        time.sleep(self.ms / 1e3)


def test_paired_timing_gives_the_ratio_of_the_two_models_times_and_its_spread():
    batch = {"input_ids": torch.zeros(2, 8, dtype=torch.long)}
    cpu = torch.device("cpu")
    timed = timing.paired(_Sleeper(20), _Sleeper(60), batch, warmup=1, rounds=9, device=cpu, reference_device=cpu)
    assert timed["speedup"] == pytest.approx(3.0, rel=0.25)
    assert timed["speedup_q1"] <= timed["speedup"] <= timed["speedup_q3"]
    assert timed["speedup_iqr"] == pytest.approx(timed["speedup_q3"] - timed["speedup_q1"])
    assert timed["paired_latency_ms"] == pytest.approx(20, rel=0.5)
    assert timed["reference_latency_ms"] == pytest.approx(60, rel=0.5)
    same = timing.paired(_Sleeper(25), _Sleeper(25), batch, warmup=1, rounds=9, device=cpu, reference_device=cpu)
    assert same["speedup"] == pytest.approx(1.0, rel=0.25)
