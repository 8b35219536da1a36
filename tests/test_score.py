"""The scorer against hand-computed SQuAD 2.0 cases, and the command-line tool's output format."""

import json

import pytest

from qa_compress import eval_squad_v2
from qa_compress.score import always_no_answer, compute_f1, evaluate, normalize_answer

from .conftest import write_json


def test_normalisation_drops_case_punctuation_articles_and_spaces():
    assert normalize_answer("  The  Quick, brown-fox!  ") == "quick brownfox"
    assert normalize_answer("an apple a day") == "apple day"
    assert normalize_answer("theory") == "theory"  # "the" only as a whole word


def test_f1_counts_shared_tokens():
    # gold "big red barn" vs pred "red barn door": 2 shared, precision 2/3, recall 2/3
    assert compute_f1("big red barn", "red barn door") == pytest.approx(2 / 3)
    assert compute_f1("", "") == 1
    assert compute_f1("", "something") == 0


def test_best_reference_counts_and_unanswerable_needs_empty_answer():
    gold = {"q1": ["Paris", "the city of Paris"], "q2": [], "q3": ["1874"]}
    preds = {"q1": "city of Paris", "q2": "", "q3": "in 1875"}
    result, missing = evaluate(gold, preds)
    assert missing == []
    # q1 exact via second reference; q2 exact; q3 F1 0 (no shared token)
    assert result["exact"] == pytest.approx(100 * 2 / 3)
    assert result["f1"] == pytest.approx(100 * 2 / 3)
    assert result["HasAns_total"] == 2 and result["NoAns_total"] == 1
    assert result["HasAns_exact"] == 50.0 and result["NoAns_exact"] == 100.0
    assert "best_f1" not in result


def test_no_answer_threshold_turns_answers_into_abstentions():
    gold = {"a": ["x y"], "b": []}
    preds = {"a": "x y", "b": "wrong"}
    na_probs = {"a": 0.2, "b": 0.9}
    plain, _ = evaluate(gold, preds, na_probs, na_prob_thresh=1.0)
    assert plain["exact"] == 50.0
    thresholded, _ = evaluate(gold, preds, na_probs, na_prob_thresh=0.5)
    assert thresholded["exact"] == 100.0
    # The best threshold keeps "a" (0.2) answered and abstains on "b": 100, at threshold 0.2.
    assert plain["best_exact"] == 100.0 and plain["best_exact_thresh"] == 0.2
    assert plain["best_f1"] == 100.0 and plain["best_f1_thresh"] == 0.2


def test_always_no_answer_scores_the_unanswerable_share():
    gold = {"a": ["x"], "b": [], "c": [], "d": ["y"]}
    assert always_no_answer(gold)["f1"] == 50.0


def test_cli_prints_the_official_json(tmp_path, capsys):
    data = {
        "version": "v2.0",
        "data": [
            {
                "title": "t",
                "paragraphs": [
                    {
                        "context": "red barn",
                        "qas": [
                            {
                                "id": "q1",
                                "question": "?",
                                "answers": [{"text": "red barn", "answer_start": 0}],
                                "is_impossible": False,
                            },
                            {"id": "q2", "question": "?", "answers": [], "is_impossible": True},
                        ],
                    }
                ],
            }
        ],
    }
    data_file = write_json(tmp_path / "data.json", data)
    pred_file = write_json(tmp_path / "pred.json", {"q1": "barn", "q2": ""})
    na_file = write_json(tmp_path / "na.json", {"q1": 0.1, "q2": 0.7})

    eval_squad_v2.main([str(data_file), str(pred_file), "--na-prob-file", str(na_file)])
    printed = capsys.readouterr().out
    expected = {
        "exact": 50.0,
        "f1": 100 * (1 + 2 / 3) / 2,
        "total": 2,
        "HasAns_exact": 0.0,
        "HasAns_f1": 100 * 2 / 3,
        "HasAns_total": 1,
        "NoAns_exact": 100.0,
        "NoAns_f1": 100.0,
        "NoAns_total": 1,
        "best_exact": 50.0,
        "best_exact_thresh": 0.0,
        "best_f1": 100 * (1 + 2 / 3) / 2,
        "best_f1_thresh": 0.1,
    }
    result = json.loads(printed)
    assert list(result) == list(expected)  # same keys, same order
    assert result == pytest.approx(expected)
    assert printed == json.dumps(result, indent=2) + "\n"  # same layout as the official script

    out_file = tmp_path / "eval.json"
    eval_squad_v2.main([str(data_file), str(pred_file), "-t", "0.05", "-n", str(na_file), "-o", str(out_file)])
    assert json.loads(out_file.read_text())["exact"] == 50.0  # both abstain: q1 wrong, q2 right


def test_cli_out_image_dir_adds_average_precision_and_plots(tmp_path, capsys):
    data = {"data": [{"title": "t", "paragraphs": [{"context": "red barn", "qas": [
        {"id": "q1", "question": "?", "answers": [{"text": "red barn", "answer_start": 0}], "is_impossible": False},
        {"id": "q2", "question": "?", "answers": [], "is_impossible": True},
    ]}]}]}  # fmt: skip
    data_file = write_json(tmp_path / "d.json", data)
    pred_file = write_json(tmp_path / "p.json", {"q1": "barn", "q2": ""})
    na_file = write_json(tmp_path / "n.json", {"q1": 0.1, "q2": 0.7})
    eval_squad_v2.main([str(data_file), str(pred_file), "-n", str(na_file), "-p", str(tmp_path / "images")])
    result = json.loads(capsys.readouterr().out)
    # Ranked by no-answer probability, q1 comes first: exact 0, F1 2/3 at recall 2/3, oracle 1 at recall 1.
    assert result["pr_exact_ap"] == 0.0
    assert result["pr_f1_ap"] == pytest.approx(100 * 4 / 9)
    assert result["pr_oracle_ap"] == 100.0
    images = {p.name for p in (tmp_path / "images").iterdir()}
    assert images == {"pr_exact.png", "pr_f1.png", "pr_oracle.png", "na_prob_hist_hasAns.png", "na_prob_hist_noAns.png"}
