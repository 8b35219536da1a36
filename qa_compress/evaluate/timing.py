"""Measure what compression buys: size on disk and inference speed, the same way for every variant.

Latency is timed on real evaluation features padded to the configured sequence length:
fixed thread count, warm-up runs first, then repeated timed runs summarised by median and
90th percentile. Throughput counts questions, not windows: a question whose context spans
several windows costs several forward passes.
"""

from __future__ import annotations

import gzip
import random
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from datasets import Dataset
from tqdm.auto import tqdm


@dataclass(frozen=True)
class Timing:
    median_ms: float
    p90_ms: float


def _is_parameter(name: str, values: np.ndarray | torch.Tensor) -> bool:
    """Weights and biases, not quantization scales, zero points or graph constants (shapes, axes)."""
    if name.endswith(("scale", "zero_point")) or values.ndim == 0 or values.shape == (1,):
        return False
    return not isinstance(values, np.ndarray) or values.dtype in (np.float32, np.float16, np.int8, np.uint8)


def _count_nonzero(values: np.ndarray | torch.Tensor) -> int:
    return int(np.count_nonzero(values)) if isinstance(values, np.ndarray) else int(torch.count_nonzero(values))


def gzip_size(data: bytes, chunks: int = 4) -> int:
    """Bytes of `data` gzipped at level 6, compressed in parallel chunks (a multi-member gzip file).

    zlib releases the GIL, so the chunks use every core; each member restarts the 32 KB window,
    which costs a few hundred bytes on tens of megabytes.
    """
    size = -(-len(data) // chunks) or 1
    parts = [data[i : i + size] for i in range(0, len(data), size)] or [b""]
    with ThreadPoolExecutor(max_workers=chunks) as pool:
        return sum(pool.map(lambda part: len(gzip.compress(part, compresslevel=6, mtime=0)), parts))


class Storage(Protocol):
    """How a quantization method stores its models (what `sizes` measures)."""

    def serialized(self, model: Any) -> bytes: ...

    def stored_tensors(self, model: Any) -> dict[str, Any]: ...


def sizes(model: Any, method: Storage) -> dict[str, float]:
    """size_mb (as stored), size_gzip_mb (what zeros buy once compressed), and parameter counts.

    `method` is the quantization method that made `model`: it knows how the model is stored.
    Sizes are in MB (10^6 bytes); gzip runs at its default level 6. int8 values count as
    parameters; scales and zero points do not.
    """
    data = method.serialized(model)
    arrays = [v for k, v in method.stored_tensors(model).items() if _is_parameter(k, v)]
    return {
        "size_mb": len(data) / 1e6,
        "size_gzip_mb": gzip_size(data) / 1e6,
        "params_total": sum(int(v.size) if isinstance(v, np.ndarray) else v.numel() for v in arrays),
        "params_nonzero": sum(_count_nonzero(v) for v in arrays),
    }


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


def ratios(slower: Sequence[float], faster: Sequence[float]) -> list[float]:
    """Round by round, how many times faster `faster` ran than `slower`."""
    return [s / f for s, f in zip(slower, faster, strict=True)]


def _timed(call: Callable[[], Any], sync: Callable[[], None]) -> float:
    start = time.perf_counter()
    call()
    sync()
    return (time.perf_counter() - start) * 1e3


@torch.inference_mode()
def interleaved(
    variants: Mapping[str, Callable[[], Any]],
    warmup: int,
    rounds: int,
    *,
    mirrored: bool = False,
    order_seed: int | None = None,
    sync: Callable[[], None] = lambda: None,
    desc: str | None = None,
) -> dict[str, list[float]]:
    """Milliseconds of every variant, round by round, the variants interleaved within each round, so whatever
    else slows the machine (a parallel job, frequency changes) slows them alike: the one timing routine of jobs
    and benchmarks.

    Plain rounds give each variant in turn an untimed pass and then the timed one, so it is timed with its own
    weights in the caches, as a deployed model would be. Mirrored rounds visit the variants in order and then in
    reverse, timing every pass, and a variant's time is the sum of its two (A B B A for two), so a slowdown that
    grows or fades within the round cancels out. With `order_seed`, each round visits the variants in a fresh
    seeded order, so none always follows the same neighbour.
    """
    order, shuffle = list(variants), random.Random(order_seed).shuffle
    for _ in range(warmup):
        for name in order:
            variants[name]()
    times: dict[str, list[float]] = {name: [] for name in order}
    for _ in tqdm(range(rounds), desc=desc, leave=False, disable=None if desc else True):
        if order_seed is not None:
            shuffle(order)
        took = dict.fromkeys(order, 0.0)
        for name in order + order[::-1] if mirrored else order:
            if not mirrored:
                variants[name]()
            took[name] += _timed(variants[name], sync)
        for name, ms in took.items():
            times[name].append(ms)
    return times


def paired(
    model: Any,
    reference: Any,
    batch: dict[str, torch.Tensor],
    warmup: int,
    rounds: int,
    device: torch.device,
    reference_device: torch.device,
) -> dict[str, float]:
    """How many times faster `model` is than `reference`, timed in mirrored rounds in this process (`interleaved`).

    `speedup` is the median of the rounds' ratios, with its interquartile range; absolute latencies of the
    same rounds come along.
    """
    model.eval()
    reference.eval()
    sync = torch.cuda.synchronize if "cuda" in (device.type, reference_device.type) else (lambda: None)
    mine = {k: v.to(device) for k, v in batch.items()}
    theirs = {k: v.to(reference_device) for k, v in batch.items()}
    variants = {"model": lambda: model(**mine), "reference": lambda: reference(**theirs)}
    times = interleaved(
        variants, warmup, rounds, mirrored=True, sync=sync, desc="Timing against the uncompressed model"
    )
    ours, refs = np.array(times["model"]), np.array(times["reference"])
    q1, median, q3 = np.percentile(ratios(refs, ours), [25, 50, 75])
    return {
        "speedup": float(median),
        "speedup_q1": float(q1),
        "speedup_q3": float(q3),
        "speedup_iqr": float(q3 - q1),
        "paired_latency_ms": float(np.median(ours)) / 2,
        "reference_latency_ms": float(np.median(refs)) / 2,
    }


CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def describe_cpu(cpuinfo: str, fallback: str = "unknown CPU") -> str:
    """The CPU model and the instruction-set flags of CPU_FLAGS it has, from the text of /proc/cpuinfo."""
    lines = cpuinfo.splitlines()
    name = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")
    flags_line = next((line for line in lines if line.startswith("flags")), "")
    flags = set(flags_line.split(":", 1)[1].split()) if flags_line else set()
    present = [flag for flag in CPU_FLAGS if flag in flags] or ["none of " + ", ".join(CPU_FLAGS)]
    return f"{name or fallback} (flags: {' '.join(present)})"


def cpu_description() -> str:
    """This machine's CPU and the instruction-set flags that decide INT8 and bf16 speed (`describe_cpu`)."""
    import platform
    from pathlib import Path

    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return describe_cpu(info, platform.processor() or "unknown CPU")
