"""The ΔF1 interval: a paired bootstrap over the evaluation questions, checked against what theory says it is."""

import math

import numpy as np
import pytest

from qa_compress.evaluate import bootstrap


def _scores(values):
    return {f"q{i}": float(v) for i, v in enumerate(values)}


def test_a_change_on_every_question_alike_has_no_spread_and_none_has_none():
    reference = _scores([0, 100, 50, 100, 0] * 20)
    assert bootstrap.change_interval(reference, reference) == (0.0, 0.0)
    shifted = {qid: score + 5 for qid, score in reference.items()}
    assert bootstrap.change_interval(shifted, reference) == pytest.approx((5.0, 5.0))


def test_the_interval_matches_the_normal_approximation_and_narrows_with_more_questions():
    # Half the questions gain 10 points, half none: mean change 5, standard deviation 5.
    for questions in (400, 1600):
        reference = _scores([0] * questions)
        scores = _scores([10, 0] * (questions // 2))
        low, high = bootstrap.change_interval(scores, reference)
        half_width = 1.96 * 5 / math.sqrt(questions)
        assert low == pytest.approx(5 - half_width, abs=0.25 * half_width)
        assert high == pytest.approx(5 + half_width, abs=0.25 * half_width)


def test_a_rare_loss_on_many_questions_is_told_apart_from_none():
    # 30 of 1,770 questions lose a whole answer: -1.7 F1, and the interval stays below 0.
    reference = _scores([100] * 1770)
    scores = _scores([0] * 30 + [100] * 1740)
    low, high = bootstrap.change_interval(scores, reference)
    assert low < -100 * 30 / 1770 < high < 0


def test_the_same_seed_gives_the_same_interval_and_other_questions_give_none():
    reference = _scores(range(300))
    scores = _scores([v + (7 if v % 3 else -4) for v in range(300)])
    assert bootstrap.change_interval(scores, reference, seed=3) == bootstrap.change_interval(scores, reference, seed=3)
    assert bootstrap.change_interval(scores, {**reference, "extra": 1.0}) is None
    assert bootstrap.change_interval({}, {}) is None


def test_question_f1_averages_to_the_official_f1():
    gold = {"a": ["the cat"], "b": [], "c": ["blue sky", "sky"], "d": []}
    answers = {"a": "a cat", "b": "", "c": "sky today", "d": "something"}
    scores = bootstrap.question_f1(gold, answers)
    assert scores == pytest.approx({"a": 100.0, "b": 100.0, "c": 2 / 3 * 100, "d": 0.0})


def test_the_interval_of_a_median_matches_its_standard_error():
    # The median of 400 draws from N(0, 1) has standard error sqrt(pi / 2) / sqrt(400), about 0.063.
    values = np.random.default_rng(1).normal(0.0, 1.0, 400)
    low, high = bootstrap.interval(values, np.median)
    assert low < np.median(values) < high
    assert high - low == pytest.approx(2 * 1.96 * math.sqrt(math.pi / 2) / 20, rel=0.35)
