"""A no-answer threshold picked on training questions, never on the evaluation answers.

Compression shifts a model's null scores: a pruned model may answer "no answer" to almost
every question at the threshold that suited the uncompressed one. `predict.null_threshold=
calibrate` carves whole paragraphs out of the training data (seeded; their questions are
then used by no training stage of the job), decodes them with the compressed model and
picks the null-score threshold that maximises SQuAD 2.0 F1 there; the evaluation then uses
it. The run's `best_f1` (the official script's oracle, tuned on the evaluation answers)
stays an upper bound, not a result.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from qa_compress.data import squad
from qa_compress.evaluate import score
from qa_compress.evaluate.predict import Predictions


@dataclass(frozen=True)
class Split:
    """Training examples carved in two: what training may use, and the questions the threshold is picked on."""

    train: squad.Examples
    calibration: squad.Examples


def carve(examples: squad.Examples, questions: int, seed: int, evaluation_ids: set[str]) -> Split:
    """Whole paragraphs drawn (seeded) until they hold `questions` questions, none of them an evaluation question.

    Paragraphs, not questions, so no calibration question's context is trained on. Questions whose
    id is also in the evaluation set go to neither side.
    """
    dataset = examples.dataset
    contexts = dataset["context"]
    ids = dataset["id"]
    paragraphs: dict[str, list[int]] = {}
    for index, context in enumerate(contexts):
        if ids[index] not in evaluation_ids:
            paragraphs.setdefault(context, []).append(index)
    order = np.random.default_rng(seed + 2).permutation(len(paragraphs))
    groups = list(paragraphs.values())
    chosen: list[int] = []
    for position in order:
        if len(chosen) >= questions:
            break
        chosen.extend(groups[position])
    taken = set(chosen)
    rest = [i for group in groups for i in group if i not in taken]

    def part(indices: list[int], name: str) -> squad.Examples:
        digest = hashlib.sha256(f"{examples.digest}:threshold-{name}:{questions}:{seed}".encode()).hexdigest()
        return squad.Examples(dataset.select(sorted(indices)), digest, examples.source)

    return Split(part(rest, "train"), part(chosen, "calibration"))


def best(predictions: Predictions, gold: Mapping[str, list[str]]) -> tuple[float, float]:
    """The null-score threshold that maximises F1 on `gold`'s questions, and that F1 (percent).

    A question is answered when its null-score difference is at most the threshold. Among
    equally good thresholds the one nearest 0 wins; the threshold returned lies midway between
    the two differences that bound it, so it does not sit on one question's score.
    """
    _, answered_f1, _ = score.get_raw_scores(gold, {q: predictions.best_spans[q] for q in gold})
    unanswered = {q: float(not [a for a in answers if score.normalize_answer(a)]) for q, answers in gold.items()}
    base = sum(unanswered.values())  # everything unanswered
    steps = sorted(
        (predictions.null_score_diffs[q], answered_f1[q] - unanswered[q])
        for q in gold
        if math.isfinite(predictions.null_score_diffs[q])
    )
    diffs = [d for d, _ in steps]
    gains = np.cumsum([g for _, g in steps]) if steps else np.zeros(0)
    # Candidate k answers the k questions with the smallest differences (k = 0: none answered).
    candidates = [(base, -math.inf)]
    for k in range(1, len(steps) + 1):
        if k < len(steps) and diffs[k] == diffs[k - 1]:
            continue  # a threshold cannot split tied differences
        candidates.append((base + float(gains[k - 1]), diffs[k - 1]))
    top = max(total for total, _ in candidates)
    winners = [(total, cut) for total, cut in candidates if math.isclose(total, top, rel_tol=0, abs_tol=1e-9)]

    def threshold(cut: float) -> float:
        """Midway between the last difference answered and the next one."""
        following = [d for d in diffs if d > cut]
        if cut == -math.inf:
            return following[0] - 1.0 if following else 0.0
        return (cut + following[0]) / 2 if following else cut + 1.0

    chosen = min((threshold(cut) for _, cut in winners), key=abs)
    return chosen, 100.0 * top / len(gold) if gold else 0.0
