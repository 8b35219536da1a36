"""Loading SQuAD JSON into a `datasets.Dataset`, one row per question, and refusing files that are not SQuAD 2.0."""

import json
import re

import pytest

from qa_compress.data import squad, squad_json
from qa_compress.errors import UserError

from .conftest import write_json


def test_squad_json_becomes_one_row_per_question(squad_files, tmp_path):
    _, validation = squad_files
    document = json.loads(validation.read_text())
    qas = [qa for paragraph in document["data"][0]["paragraphs"] for qa in paragraph["qas"]]
    examples = squad.load_squad_json(validation, "dataset.validation_file")
    rows = examples.dataset
    assert len(rows) == len(qas)
    assert rows["id"] == [qa["id"] for qa in qas]
    assert rows[0]["answers"]["text"] == [a["text"] for a in qas[0]["answers"]]
    gold = squad.gold_answers(rows)
    assert sum(1 for answers in gold.values() if not answers) == len(qas) / 2  # generator: half unanswerable


def test_digest_follows_content_and_selection(squad_files, tmp_path):
    train, validation = squad_files
    a = squad.load_squad_json(train, "k")
    b = squad.load_squad_json(validation, "k")
    assert a.digest != b.digest
    assert squad.limit(a, 5).digest != a.digest and len(squad.limit(a, 5).dataset) == 5
    assert squad.limit(a, 10_000) is a


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json at all", "not a JSON file"),
        (json.dumps({"version": "v2.0"}), "expected a non-empty top-level 'data' list"),
        (
            json.dumps({"data": [{"paragraphs": [{"context": "abc", "qas": [{"id": "1", "question": "q"}]}]}]}),
            "data[0].paragraphs[0].qas[0] needs a list field 'answers'",
        ),
        (
            json.dumps(
                {
                    "data": [
                        {
                            "paragraphs": [
                                {
                                    "context": "abc",
                                    "qas": [
                                        {"id": "1", "question": "q", "answers": [{"text": "zz", "answer_start": 0}]}
                                    ],
                                }
                            ]
                        }
                    ]
                }
            ),
            "does not point at the answer text 'zz'",
        ),
    ],
)
def test_bad_files_are_refused_naming_the_value(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(UserError) as err:
        squad_json.validate(path, "dataset.validation_file")
    assert str(err.value).startswith(f"dataset.validation_file={path}: ")
    assert message in str(err.value)


def _file(qas: list[dict], context: str = "Ada wrote it in 1843.") -> str:
    return json.dumps({"data": [{"title": "t", "paragraphs": [{"context": context, "qas": qas}]}]})


@pytest.mark.parametrize(
    ("qas", "message"),
    [
        (
            [
                {"id": "a", "question": "q", "answers": []},
                {"id": "a", "question": "r", "answers": []},
                {"id": "b", "question": "s", "answers": []},
            ],
            "1 occur more than once ('a')",
        ),
        (
            [{"id": "a", "question": "q", "answers": [{"text": "1843.", "answer_start": -5}]}],
            "answer_start=-5 does not point at the answer text '1843.'",
        ),  # Python's slicing would find it
    ],
)
def test_duplicate_ids_and_negative_offsets_are_refused(tmp_path, qas, message):
    path = tmp_path / "bad.json"
    path.write_text(_file(qas))
    with pytest.raises(UserError, match=re.escape(message)):
        squad_json.validate(path, "dataset.validation_file")


def test_odd_but_valid_layouts_load_and_hostile_ones_are_refused(tmp_path, monkeypatch):
    odd = {
        "data": [
            {
                "paragraphs": [
                    {
                        "context": "Ada wrote it.",
                        "qas": [
                            {
                                "id": "a",
                                "question": "Who?",
                                "answers": [{"text": "Ada", "answer_start": 0}],
                                "extra": 1,
                            },
                            {"id": "b", "question": "When?", "answers": [], "extra": "text"},
                        ],
                    },
                    {"context": "Empty.", "qas": []},
                ]
            },
        ]
    }  # no title; a paragraph without questions; a field whose type changes
    examples = squad.load_squad_json(write_json(tmp_path / "odd.json", odd), "k")
    assert examples.dataset["id"] == ["a", "b"] and examples.dataset["title"] == ["", ""]
    assert examples.dataset["answers"][0] == {"text": ["Ada"], "answer_start": [0]}
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 200_000 + "]" * 200_000)
    empty = write_json(tmp_path / "empty.json", {"data": [{"paragraphs": [{"context": "x", "qas": []}]}]})
    for path, message in [(deep, "nested deeper than Python's parser"), (empty, "no paragraph holds a question")]:
        with pytest.raises(UserError, match=re.escape(message)):
            squad_json.validate(path, "k")
    monkeypatch.setattr(squad_json, "MAX_FILE_BYTES", 100)
    with pytest.raises(UserError, match="MiB a SQuAD file is read whole"):
        squad_json.validate(write_json(tmp_path / "big.json", odd), "k")


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        squad_json.validate(tmp_path / "absent.json", "dataset.train_file")
