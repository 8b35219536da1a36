"""Knowledge distillation during recovery: the pruned student learns the uncompressed model's start/end logits.

The loss is Hinton et al.'s: weight * T^2 * KL(teacher_T || student_T) + (1 - weight) * the
label loss, with T the temperature and the KL taken over the window's token positions
(padding excluded), averaged over start and end. The teacher's logits are computed once
per training window and kept in the cache as safetensors, keyed by the teacher's weights
and the windows' tokens, so a sweep of pruning amounts computes them once.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset
from safetensors.torch import load_file, save_file
from transformers import Trainer

from qa_compress.evaluate import predict
from qa_compress.tracking import cache

log = logging.getLogger(__name__)

TEACHER_FORMAT = 1
TEACHER_FILE = "teacher_logits.safetensors"
WINDOW_INDEX = "window_index"  # the column that tells the loss which cached logits belong to a window
MASKED = -1e4  # logit for padding positions: softmax weight ~0, finite so the KL has no inf - inf


@dataclass(frozen=True)
class Teacher:
    """The uncompressed model's logits per training window (rows in window order) and how to weigh them; for
    layer-wise distillation, the uncompressed model itself, run beside the student (its hidden states for one
    recovery run would take gigabytes to cache: 16 windows of 256 tokens per step, per layer)."""

    start_logits: torch.Tensor
    end_logits: torch.Tensor
    temperature: float
    weight: float
    model: torch.nn.Module | None = None
    hidden_weight: float = 0.0


def layer_map(student: torch.nn.Module, states: int) -> list[int]:
    """For each of the student's `states` hidden states (embeddings, then each layer's output), the teacher's it is
    pulled toward: that of the layer it was kept from (config `kept_layers`, written by depth pruning), else its own."""
    kept = getattr(student.config, "kept_layers", None)
    return [0, *(k + 1 for k in kept)] if kept else list(range(states))


def hidden_loss(
    student: tuple[torch.Tensor, ...],
    teacher: tuple[torch.Tensor, ...],
    mapping: list[int],
    attention_mask: torch.Tensor,
) -> torch.Tensor:
    """Mean squared distance between each student hidden state and the teacher's it maps to, over real tokens."""
    real = attention_mask.bool()
    distances = [F.mse_loss(student[i][real], teacher[j][real].to(student[i].dtype)) for i, j in enumerate(mapping)]
    return torch.stack(distances).mean()


def model_digest(model: torch.nn.Module) -> str:
    """Content digest of a model's weights (names, shapes, values)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def windows_digest(windows: Dataset) -> str:
    """Content digest of training windows: their token ids, in order."""
    digest = hashlib.sha256()
    for ids in windows.with_format("numpy", columns=["input_ids"])["input_ids"]:
        digest.update(np.asarray(ids, dtype=np.int64).tobytes())
    return digest.hexdigest()


def teacher_logits(
    model: torch.nn.Module,
    windows: Dataset,
    input_names: list[str],
    batch_size: int,
    device: torch.device,
    cache_dir: Path,
    lock_timeout_s: float,
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Start and end logits of `model` for every training window, from the cache when there; and hit or miss."""
    key = cache.key({"format": TEACHER_FORMAT, "teacher": model_digest(model), "windows": windows_digest(windows)})
    entry = cache_dir / "teachers" / key
    with cache.locked(entry, lock_timeout_s):
        if cache.usable(entry, required=(TEACHER_FILE,)):
            tensors = load_file(str(entry / TEACHER_FILE))
            return tensors["start_logits"], tensors["end_logits"], "hit"
        log.info("Teacher logits for %d training windows", len(windows))
        inputs = predict.forward_inputs(windows, input_names)
        starts, ends = predict.logits(model.to(device), inputs, batch_size, device)
        tensors = {"start_logits": torch.from_numpy(starts), "end_logits": torch.from_numpy(ends)}
        with cache.building(entry) as tmp:
            save_file(tensors, str(tmp / TEACHER_FILE))
    return tensors["start_logits"], tensors["end_logits"], "miss"


def loss(
    student: tuple[torch.Tensor, torch.Tensor],
    teacher: tuple[torch.Tensor, torch.Tensor],
    attention_mask: torch.Tensor,
    label_loss: torch.Tensor,
    temperature: float,
    weight: float,
) -> torch.Tensor:
    """weight * T^2 * KL(teacher || student) at temperature T, averaged over start and end, + (1 - weight) * labels."""
    padding = attention_mask == 0
    kl = 0.0
    for s, t in zip(student, teacher, strict=True):
        s = (s / temperature).masked_fill(padding, MASKED)
        t = (t.to(s.dtype) / temperature).masked_fill(padding, MASKED)
        kl = kl + F.kl_div(F.log_softmax(s, dim=-1), F.log_softmax(t, dim=-1), log_target=True, reduction="batchmean")
    return weight * temperature**2 * kl / 2 + (1 - weight) * label_loss


def training_windows(windows: Dataset, model: torch.nn.Module) -> Dataset:
    """The windows with the columns the model takes (labels included) and each window's row index."""
    accepted = set(inspect.signature(model.forward).parameters)
    keep = [c for c in windows.column_names if c in accepted]
    return windows.select_columns(keep).add_column(WINDOW_INDEX, list(range(len(windows))))


class DistillationTrainer(Trainer):
    """A `Trainer` whose loss mixes the teacher's cached logits with the labels."""

    def __init__(self, *args, teacher: Teacher, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.teacher = teacher

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        rows = inputs.pop(WINDOW_INDEX).cpu()
        layer_wise = self.teacher.model is not None and self.teacher.hidden_weight > 0
        outputs = model(**inputs, output_hidden_states=layer_wise)
        length = outputs.start_logits.shape[1]  # batches are trimmed of padding none of their windows needs
        device = outputs.start_logits.device
        teacher = tuple(t[rows, :length].to(device) for t in (self.teacher.start_logits, self.teacher.end_logits))
        value = loss(
            (outputs.start_logits, outputs.end_logits),
            teacher,
            inputs["attention_mask"],
            outputs.loss,
            self.teacher.temperature,
            self.teacher.weight,
        )
        if layer_wise:
            plain = {k: v for k, v in inputs.items() if k not in ("start_positions", "end_positions")}
            with torch.no_grad():
                states = self.teacher.model(**plain, output_hidden_states=True).hidden_states
            mapping = layer_map(model, len(outputs.hidden_states))
            value = value + self.teacher.hidden_weight * hidden_loss(
                outputs.hidden_states, states, mapping, inputs["attention_mask"]
            )
        return (value, outputs) if return_outputs else value
