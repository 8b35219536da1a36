"""Decoding logits into answers and no-answer probabilities, as Hugging Face's QA post-processing does."""

import numpy as np
from datasets import Dataset

from qa_compress.evaluate import predict


def _features(offsets_per_window, example_ids):
    return Dataset.from_dict({"example_id": example_ids, "offset_mapping": offsets_per_window})


def test_decode_picks_the_best_valid_span_and_a_real_no_answer_probability():
    examples = Dataset.from_dict({"id": ["e"], "context": ["alpha beta gamma"]})
    offsets = [None, None, [0, 5], [6, 10], [11, 16]]  # [CLS], question token, 3 context tokens
    start = np.array([[0.0, 9.0, 1.0, 5.0, 0.0]])  # the question token scores highest but is not context
    end = np.array([[0.0, 9.0, 0.0, 1.0, 4.0]])
    result = predict.decode(examples, _features([offsets], ["e"]), start, end, n_best_size=5, max_answer_length=5)
    assert result.answers["e"] == "beta gamma"
    assert 0 < result.na_probs["e"] < 0.01


def test_decode_answers_nothing_when_null_wins_and_respects_max_length():
    examples = Dataset.from_dict({"id": ["e"], "context": ["alpha beta gamma"]})
    offsets = [None, [0, 5], [6, 10], [11, 16]]
    start = np.array([[3.0, 2.0, 0.0, 0.0]])
    end = np.array([[3.0, 0.0, 0.0, 2.0]])
    null = predict.decode(examples, _features([offsets], ["e"]), start, end)
    assert null.answers["e"] == "" and null.na_probs["e"] > 0.5
    # With the null score lowered, the best span "alpha beta gamma" is 3 tokens: too long at max 2.
    start[0, 0] = end[0, 0] = -10
    short = predict.decode(examples, _features([offsets], ["e"]), start, end, max_answer_length=2)
    assert short.answers["e"] in {"alpha", "alpha beta", "gamma", "beta gamma", "beta"}
    assert short.answers["e"] != "alpha beta gamma"


def test_decode_uses_the_minimum_null_score_over_windows():
    examples = Dataset.from_dict({"id": ["e"], "context": ["alpha beta"]})
    windows = [[None, [0, 5], [6, 10]], [None, [6, 10], None]]
    start = np.array([[5.0, 1.0, 0.0], [0.0, 2.0, 0.0]])
    end = np.array([[5.0, 1.0, 0.0], [0.0, 2.0, 0.0]])
    # Window 1 prefers null (10 > 2) but window 2's null score (0) is lower than its span (4).
    result = predict.decode(examples, _features(windows, ["e", "e"]), start, end)
    assert result.answers["e"] == "beta"


def test_the_null_threshold_trades_answers_for_no_answers():
    examples = Dataset.from_dict({"id": ["e"], "context": ["alpha beta"]})
    offsets = [None, [0, 5], [6, 10]]
    start, end = np.array([[2.0, 1.5, 0.0]]), np.array([[2.0, 1.5, 0.0]])  # null 4 against span 3
    features = _features([offsets], ["e"])
    assert predict.decode(examples, features, start, end).answers["e"] == ""
    assert predict.decode(examples, features, start, end, null_score_diff_threshold=1.5).answers["e"] == "alpha"
