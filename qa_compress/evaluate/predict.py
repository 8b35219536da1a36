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
from dataclasses import dataclass, field

import numpy as np
import torch
from datasets import Dataset
from tqdm.auto import tqdm

from qa_compress.data.features import trim_padding


@dataclass(frozen=True)
class Predictions:
    """Per question id: the answer ("" for no answer), its no-answer probability, and what decided it.

    `best_spans` holds the best non-null span ("" when there is none) and `null_score_diffs` the
    null score minus that span's score, so another null threshold can be applied without decoding again.
    """

    answers: dict[str, str]
    na_probs: dict[str, float]
    best_spans: dict[str, str] = field(default_factory=dict)
    null_score_diffs: dict[str, float] = field(default_factory=dict)


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

    answers, na_probs, best_spans, diffs = {}, {}, {}, {}
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

        if candidates:
            best_score, start_char, end_char = candidates[0]
            # SentencePiece and byte-level tokens carry the space before a word in their offsets: not the answer's.
            best_spans[example["id"]] = context[start_char:end_char].strip()
            diffs[example["id"]] = min_null_score - best_score
        else:
            best_spans[example["id"]], diffs[example["id"]] = "", math.inf
        answers[example["id"]] = with_threshold(
            best_spans[example["id"]], diffs[example["id"]], null_score_diff_threshold
        )
    return Predictions(answers, na_probs, best_spans, diffs)


def with_threshold(best_span: str, null_score_diff: float, threshold: float) -> str:
    """The answer: "" (no answer) when the null score beats the best span's by more than `threshold`."""
    return "" if null_score_diff > threshold else best_span


def rethreshold(predictions: Predictions, threshold: float) -> Predictions:
    """The same predictions with answers decided by another null threshold."""
    answers = {
        qid: with_threshold(predictions.best_spans[qid], diff, threshold)
        for qid, diff in predictions.null_score_diffs.items()
    }
    return Predictions(answers, predictions.na_probs, predictions.best_spans, predictions.null_score_diffs)
