"""Run a QA model over evaluation features and decode its logits into answers.

Decoding follows Hugging Face's `postprocess_qa_predictions`: pair the top-n start and end
logits of each window, drop spans outside the context, reversed or too long, keep the
best span of the example, and compare it with the null ([CLS]) score, the minimum over
the example's windows. Unlike that code, each question also gets a real no-answer
probability: the softmax weight of the null answer among the n-best candidates.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass

import numpy as np
import torch
from datasets import Dataset
from tqdm.auto import tqdm

from qa_compress.features import trim_padding


@dataclass(frozen=True)
class Predictions:
    """Answer text ("" for no answer) and no-answer probability per question id."""

    answers: dict[str, str]
    na_probs: dict[str, float]


def forward_inputs(features: Dataset, input_names: list[str]) -> Dataset:
    """The feature columns the model's forward pass takes, as torch tensors."""
    keep = [name for name in input_names if name in features.column_names]
    return features.with_format("torch", columns=keep)


@torch.inference_mode()
def logits(
    model: torch.nn.Module, inputs: Dataset, batch_size: int, device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    """Start and end logits for every feature, as float32 arrays of shape (features, seq_len).

    Each batch runs without the padding none of its windows needs; the trimmed positions get
    logits of -inf, so no answer can start or end there (their offsets are None anyway).
    """
    model.eval()
    starts, ends = [], []
    for begin in tqdm(range(0, len(inputs), batch_size), desc="Predicting", unit="batch", leave=False, disable=None):
        full = inputs[begin : begin + batch_size]
        length = full["input_ids"].shape[1]
        out = model(**{k: v.to(device) for k, v in trim_padding(full).items()})
        for outputs, logits_ in ((starts, out.start_logits), (ends, out.end_logits)):
            padded = np.full((len(full["input_ids"]), length), -np.inf, dtype=np.float32)
            padded[:, : logits_.shape[1]] = logits_.float().cpu().numpy()
            outputs.append(padded)
    return np.concatenate(starts), np.concatenate(ends)


def decode(
    examples: Dataset,
    features: Dataset,
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    n_best_size: int = 20,
    max_answer_length: int = 30,
    null_score_diff_threshold: float = 0.0,
) -> Predictions:
    """Turn per-feature logits into one answer and one no-answer probability per example."""
    if len(features) != len(start_logits):
        raise ValueError(f"{len(features)} features but {len(start_logits)} rows of logits")
    features_of = collections.defaultdict(list)
    for index, example_id in enumerate(features["example_id"]):
        features_of[example_id].append(index)
    offsets_all = features["offset_mapping"]

    answers, na_probs = {}, {}
    for example in examples:
        context = example["context"]
        min_null_score = math.inf
        candidates = []
        for index in features_of[example["id"]]:
            start, end, offsets = start_logits[index], end_logits[index], offsets_all[index]
            min_null_score = min(min_null_score, float(start[0] + end[0]))
            for s in np.argsort(start)[-1 : -n_best_size - 1 : -1]:
                for e in np.argsort(end)[-1 : -n_best_size - 1 : -1]:
                    if s >= len(offsets) or e >= len(offsets) or offsets[s] is None or offsets[e] is None:
                        continue
                    if e < s or e - s + 1 > max_answer_length:
                        continue
                    candidates.append((float(start[s] + end[e]), offsets[s][0], offsets[e][1]))
        candidates.sort(key=lambda c: c[0], reverse=True)
        candidates = candidates[:n_best_size]
        if min_null_score is math.inf:  # an example with no features (cannot happen with real tokenizers)
            min_null_score = -math.inf

        # Softmax over the n-best spans plus the null answer; its weight is the no-answer probability.
        scores = np.array([c[0] for c in candidates] + [min_null_score], dtype=np.float64)
        weights = np.exp(scores - scores.max())
        na_probs[example["id"]] = float(weights[-1] / weights.sum())

        if not candidates or min_null_score > candidates[0][0] + null_score_diff_threshold:
            answers[example["id"]] = ""
        else:
            _, start_char, end_char = candidates[0]
            answers[example["id"]] = context[start_char:end_char]
    return Predictions(answers, na_probs)
