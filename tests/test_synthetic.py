"""The generated quick-start data: seeded, consistent, and valid SQuAD 2.0 JSON."""

import json

from qa_compress.data import squad_json, synthetic


def test_generator_is_seeded_and_consistent():
    a, b = synthetic.generate(5, seed=3), synthetic.generate(5, seed=3)
    assert a == b and a != synthetic.generate(5, seed=4)
    for paragraph in a["data"][0]["paragraphs"]:
        for qa in paragraph["qas"]:
            for answer in qa["answers"]:
                start = answer["answer_start"]
                assert paragraph["context"][start : start + len(answer["text"])] == answer["text"]


def test_written_file_is_the_generated_data_and_passes_validation(tmp_path):
    path = synthetic.write(tmp_path / "s.json", 3, seed=0)
    assert json.loads(path.read_text()) == synthetic.generate(3, seed=0)
    assert squad_json.validate(path, "k")["version"] == "v2.0"
    questions = [qa for p in synthetic.generate(3, seed=0)["data"][0]["paragraphs"] for qa in p["qas"]]
    assert len(questions) == 3 * 8 and sum(1 for qa in questions if not qa["answers"]) == 3 * 4
