"""The scorer against hand-computed SQuAD 2.0 cases, and the command-line tool's output format."""

import json

import pytest

from qa_compress.evaluate import eval_squad_v2
from qa_compress.evaluate.score import always_no_answer, compute_f1, evaluate, normalize_answer

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
    data = {
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
        ]
    }
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


def _files(tmp_path, preds, na_probs=None) -> list[str]:
    data = {
        "version": "v2.0",
        "data": [
            {
                "title": "t",
                "paragraphs": [
                    {
                        "context": "red barn",
                        "qas": [
                            {"id": "q1", "question": "?", "answers": [{"text": "red barn", "answer_start": 0}]},
                            {"id": "q2", "question": "?", "answers": []},
                        ],
                    }
                ],
            }
        ],
    }
    args = [str(write_json(tmp_path / "data.json", data)), str(write_json(tmp_path / "pred.json", preds))]
    return args + (["-n", str(write_json(tmp_path / "na.json", na_probs))] if na_probs is not None else [])


@pytest.mark.parametrize(
    ("preds", "na_probs", "message"),
    [
        ({"q1": "barn", "q2": ""}, {"q1": 1.5, "q2": 0.1}, "the value for 'q1' is 1.5; expected a probability in"),
        ({"q1": "barn", "q2": ""}, {"q1": -3, "q2": 0.1}, "the value for 'q1' is -3"),
        ({"q1": "barn", "q2": ""}, {"q1": float("nan"), "q2": 0.1}, "the value for 'q1' is nan"),
        ({"q1": "barn", "q2": ""}, {"q1": True, "q2": 0.1}, "the value for 'q1' is True"),
        ({"q1": "barn", "q2": ""}, {"q1": 0.2}, "no probability for 'q2'"),
        ({"q1": 7, "q2": ""}, None, "the value for 'q1' is 7; expected an answer string"),
        (["barn", ""], None, "expected a JSON object of question id -> an answer string"),
    ],
)
def test_cli_refuses_malformed_predictions_in_one_line(tmp_path, preds, na_probs, message):
    with pytest.raises(SystemExit) as err:
        eval_squad_v2.main(_files(tmp_path, preds, na_probs))
    assert isinstance(err.value.code, str) and message in err.value.code and "\n" not in err.value.code


def test_cli_refuses_missing_and_malformed_files_and_missing_predictions(tmp_path):
    data, preds = _files(tmp_path, {"q1": "red barn"})
    torn = tmp_path / "torn.json"
    torn.write_text('{"q1": "red')
    for argv, message in [
        ([str(tmp_path / "absent.json"), preds], "cannot be read (No such file or directory)"),
        ([data, str(torn)], f"prediction file {torn}: not a JSON file"),
        ([str(tmp_path), preds], "cannot be read"),
        ([data, preds, "-t", "nan"], "--na-prob-thresh nan"),
        ([data, preds, "-o", str(tmp_path)], f"--out-file {tmp_path}: not a place for a file"),
        ([data, preds, "-o", str(tmp_path / "no" / "such" / "eval.json")], "not a place for a file"),
    ]:
        with pytest.raises(SystemExit) as err:
            eval_squad_v2.main(argv)
        assert message in err.value.code, (argv, err.value.code)
    with pytest.raises(SystemExit) as err:  # the official script prints the id, then fails with a KeyError
        eval_squad_v2.main([data, preds])
    assert "no prediction for 'q2' (1 of the data file's 2 questions have none)" in err.value.code
