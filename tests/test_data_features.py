"""Loading SQuAD JSON through `datasets`, refusing bad files, and preparing (cached) features."""

import json

import pytest

from qa_compress import data, features, synthetic
from qa_compress.errors import UserError

from .conftest import write_json


def test_squad_json_becomes_one_row_per_question(squad_files, tmp_path):
    _, validation = squad_files
    document = json.loads(validation.read_text())
    qas = [qa for paragraph in document["data"][0]["paragraphs"] for qa in paragraph["qas"]]
    examples = data.load_squad_json(validation, "dataset.validation_file", tmp_path)
    rows = examples.dataset
    assert len(rows) == len(qas)
    assert rows["id"] == [qa["id"] for qa in qas]
    assert rows[0]["answers"]["text"] == [a["text"] for a in qas[0]["answers"]]
    gold = data.gold_answers(rows)
    assert sum(1 for answers in gold.values() if not answers) == len(qas) / 2  # generator: half unanswerable


def test_digest_follows_content_and_selection(squad_files, tmp_path):
    train, validation = squad_files
    a = data.load_squad_json(train, "k", tmp_path)
    b = data.load_squad_json(validation, "k", tmp_path)
    assert a.digest != b.digest
    assert data.limit(a, 5).digest != a.digest and len(data.limit(a, 5).dataset) == 5
    assert data.limit(a, 10_000) is a


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
        data.validate_squad_json(path, "dataset.validation_file")
    assert str(err.value).startswith(f"dataset.validation_file={path}: ")
    assert message in str(err.value)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        data.validate_squad_json(tmp_path / "absent.json", "dataset.train_file")


def _long_example():
    context = " ".join(f"word{i}" for i in range(60)) + " The treasure lies under the old oak tree."
    start = context.index("old oak tree")
    return {
        "id": ["x"],
        "title": [""],
        "question": ["Where is the treasure?"],
        "context": [context],
        "answers": [{"text": ["old oak tree"], "answer_start": [start]}],
    }


def test_train_labels_point_at_the_answer_or_cls(tokenizer):
    batch = _long_example()
    feats = features.prepare_train_features(batch, tokenizer, max_seq_length=64, doc_stride=16)
    assert len(feats["input_ids"]) > 1  # the long context overflowed into several windows
    found = 0
    for ids, start, end in zip(feats["input_ids"], feats["start_positions"], feats["end_positions"], strict=True):
        if start == 0:
            assert end == 0  # answer not inside this window: labelled as [CLS]
            continue
        found += 1
        assert tokenizer.decode(ids[start : end + 1]) == "old oak tree"
    assert found >= 1


def test_unanswerable_questions_are_labelled_cls(tokenizer):
    batch = {
        "id": ["u"],
        "title": [""],
        "question": ["Who?"],
        "context": ["Nobody is named here."],
        "answers": [{"text": [], "answer_start": []}],
    }
    feats = features.prepare_train_features(batch, tokenizer, max_seq_length=32, doc_stride=8)
    assert feats["start_positions"] == [0] and feats["end_positions"] == [0]


def test_eval_features_keep_offsets_of_context_tokens_only(tokenizer):
    batch = _long_example()
    feats = features.prepare_eval_features(batch, tokenizer, max_seq_length=64, doc_stride=16)
    assert set(feats["example_id"]) == {"x"}
    for offsets in feats["offset_mapping"]:
        assert offsets[0] is None  # [CLS]
        context_tokens = [o for o in offsets if o is not None]
        assert context_tokens and all(batch["context"][0][a:b] for a, b in context_tokens)


def test_prepared_features_are_cached_on_disk(squad_files, tokenizer, tmp_path):
    _, validation = squad_files
    examples = data.load_squad_json(validation, "k", tmp_path)
    first, hit1 = features.prepare(examples.dataset, examples.digest, tokenizer, 64, 16, "eval", tmp_path)
    second, hit2 = features.prepare(examples.dataset, examples.digest, tokenizer, 64, 16, "eval", tmp_path)
    other, hit3 = features.prepare(examples.dataset, examples.digest, tokenizer, 48, 16, "eval", tmp_path)
    assert (hit1, hit2, hit3) == (False, True, False)
    assert first["input_ids"] == second["input_ids"]
    assert len(other[0]["input_ids"]) == 48
    entries = [p.name for p in (tmp_path / "features").iterdir() if p.is_dir()]
    assert len(entries) == 2 and not any(name.startswith(".") for name in entries)  # no temporary directories left


def test_generator_is_seeded_and_consistent():
    a, b = synthetic.generate(5, seed=3), synthetic.generate(5, seed=3)
    assert a == b and a != synthetic.generate(5, seed=4)
    for paragraph in a["data"][0]["paragraphs"]:
        for qa in paragraph["qas"]:
            for answer in qa["answers"]:
                start = answer["answer_start"]
                assert paragraph["context"][start : start + len(answer["text"])] == answer["text"]


def test_written_file_passes_validation(tmp_path):
    path = synthetic.write(tmp_path / "s.json", 3, seed=0)
    assert data.validate_squad_json(path, "k")["version"] == "v2.0"
    write_json(tmp_path / "other.json", {})
