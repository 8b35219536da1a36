"""Pruned and recovered models, cached: jobs that differ only after pruning (the quantization method, the
runtime, the threshold) share one recovery instead of each fine-tuning the same pruned model again.

An entry is keyed by everything that determines the recovered weights and what the pruning stage logs: the
baseline, the training and evaluation questions, the windowing, the pruning, training and prediction
settings, the seed, the device recovery trained on, and the library versions. It holds the model
(safetensors), its tokenizer, and the per-layer rows and metrics the pruning stage returned.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qa_compress.model import models, train
from qa_compress.tracking import cache

FORMAT = 1
RECORD = "recovered.json"
FILES = ("config.json", "model.safetensors", RECORD)  # weights as safetensors, never pickles
DIRECTORY = "recovered"


def entry(cache_dir: Path, parts: dict[str, Any]) -> Path:
    """The cache directory of a recovered model described by `parts`."""
    return cache_dir / DIRECTORY / cache.key({"format": FORMAT, **parts, **train.weight_libraries()})


def save(model: Any, tokenizer: Any, entry: Path, rows: list[dict], metrics: dict[str, float], made_by: str) -> None:
    """Store a recovered model with the pruning stage's rows and metrics, and the run that made it."""
    with cache.building(entry) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        record = {"rows": rows, "metrics": metrics, "made_by_run": made_by}
        (tmp / RECORD).write_text(json.dumps(record, indent=1, default=float))


def load(entry: Path, trust_remote_code: bool) -> tuple[Any, list[dict], dict[str, float], str]:
    """The recovered model, the rows and metrics its pruning stage returned, and the run that made it."""
    model, _ = models.load(str(entry), trust_remote_code)
    record = json.loads((entry / RECORD).read_text())
    return model, record["rows"], record["metrics"], record["made_by_run"]
