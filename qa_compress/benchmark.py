"""Measure what compression buys: size on disk and inference speed, the same way for every variant.

Latency is timed on real evaluation features padded to the configured sequence length:
fixed thread count, warm-up runs first, then repeated timed runs summarised by median and
90th percentile. Throughput counts questions, not windows: a question whose context spans
several windows costs several forward passes.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from safetensors.torch import save_file
from tqdm.auto import tqdm

from qa_compress import quantize


@dataclass(frozen=True)
class Timing:
    median_ms: float
    p90_ms: float


def size_mb(model: torch.nn.Module) -> float:
    """Size in MB (10^6 bytes) of the model's weights written as safetensors.

    Quantized layers are written as int8 values with their scales, so the figure is what
    the compressed model really takes on disk.
    """
    unique, storages = {}, set()
    for name, tensor in quantize.weight_tensors(model).items():
        storage = tensor.untyped_storage().data_ptr()
        if tensor.numel() and storage in storages:  # tied weights are stored once
            continue
        storages.add(storage)
        unique[name] = tensor
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.safetensors"
        save_file(unique, str(path))
        return os.path.getsize(path) / 1e6


@torch.inference_mode()
def time_forward(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], warmup: int, repeats: int, device: torch.device
) -> Timing:
    """Median and p90 wall time of one forward pass on `batch`, after `warmup` untimed passes."""
    model.eval()
    batch = {k: v.to(device) for k, v in batch.items()}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        model(**batch)
    sync()
    times = []
    for _ in tqdm(range(repeats), desc=f"Timing batch {len(next(iter(batch.values())))}", leave=False, disable=None):
        start = time.perf_counter()
        model(**batch)
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return Timing(float(np.median(times)), float(np.percentile(times, 90)))


def batch_of(inputs: Dataset, batch_size: int) -> dict[str, torch.Tensor]:
    """The first `batch_size` feature rows, repeated if the set is smaller."""
    rows = inputs[list(np.arange(batch_size) % len(inputs))]
    return dict(rows)


def run(
    model: torch.nn.Module,
    inputs: Dataset,
    batch_size: int,
    warmup: int,
    repeats: int,
    device: torch.device,
    questions_per_feature: float,
) -> dict[str, float]:
    """Latency at batch size 1 and `batch_size`, and throughput in questions per second."""
    at_batch = time_forward(model, batch_of(inputs, batch_size), warmup, repeats, device)
    at_one = time_forward(model, batch_of(inputs, 1), warmup, repeats, device)
    features_per_s = batch_size / (at_batch.median_ms / 1e3)
    return {
        "latency_ms": at_batch.median_ms,
        "latency_p90_ms": at_batch.p90_ms,
        "latency_bs1_ms": at_one.median_ms,
        "latency_bs1_p90_ms": at_one.p90_ms,
        "features_per_s": features_per_s,
        "samples_per_s": features_per_s * questions_per_feature,
    }
