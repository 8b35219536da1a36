"""How much of an F1 change the choice of questions alone could make: a paired bootstrap over the questions.

Two models answer the same evaluation questions. Drawing that many questions again, with replacement,
and averaging the per-question F1 differences on each draw shows how far the change would move on
another sample of questions of the same kind; its percentile interval is printed beside ΔF1. An
interval that holds 0 is no evidence that compression changed F1 at all, only that these questions
could not tell. The same resampling over timed rounds gives a median speed-up its interval.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from qa_compress.evaluate import score

QUESTION_F1 = "question_f1.json"  # the artifact of each job: question id -> F1 (percent)
RESAMPLES = 2000
LEVEL = 0.95
_CHUNK = 100  # resamples drawn at once (a chunk holds CHUNK x questions indices)


def question_f1(gold: score.Gold, answers: Mapping[str, str]) -> dict[str, float]:
    """Each answered question's F1 in percent, as the official script scores it: their mean is the job's `f1`."""
    _, f1, _ = score.get_raw_scores(gold, answers)
    return {qid: 100.0 * value for qid, value in f1.items()}


def interval(
    values: Sequence[float] | np.ndarray,
    statistic: Callable[..., np.ndarray] = np.mean,
    resamples: int = RESAMPLES,
    level: float = LEVEL,
    seed: int = 0,
) -> tuple[float, float]:
    """The `level` percentile interval of `statistic` (called with `axis=1`) over `values` resampled with
    replacement `resamples` times: how far it would move on another sample of the same kind."""
    values = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    draws = np.concatenate(
        [
            statistic(values[rng.integers(0, len(values), (min(_CHUNK, resamples - done), len(values)))], axis=1)
            for done in range(0, resamples, _CHUNK)
        ]
    )
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(draws, [tail, 100 - tail])
    return float(low), float(high)


def change_interval(
    scores: Mapping[str, float],
    reference: Mapping[str, float],
    resamples: int = RESAMPLES,
    level: float = LEVEL,
    seed: int = 0,
) -> tuple[float, float] | None:
    """The interval of the mean per-question change `scores - reference`, the questions resampled (paired);
    None unless both were scored on the same questions."""
    if not scores or scores.keys() != reference.keys():
        return None
    change = [scores[qid] - reference[qid] for qid in sorted(scores)]
    return interval(change, np.mean, resamples, level, seed)
