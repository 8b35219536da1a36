"""Seeded generator of a small SQuAD 2.0-format dataset of invented biographies.

The quick start needs data a small model can learn in minutes on a CPU, so that a sweep
shows what compression costs. Each paragraph states a random subset of facts about an
invented person; answerable questions ask for a stated fact, unanswerable ones ask for a
fact of the same person that the paragraph does not state.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

FIRST_NAMES = [
    "Alda",
    "Berin",
    "Cosmo",
    "Dalia",
    "Edric",
    "Fenna",
    "Goran",
    "Hilde",
    "Ivo",
    "Jorun",
    "Kasimir",
    "Liesl",
    "Marek",
    "Nadia",
    "Orrin",
    "Petra",
    "Quill",
    "Rosa",
    "Soren",
    "Tamsin",
    "Ulrich",
    "Vera",
    "Wendel",
    "Xenia",
    "Yorick",
    "Zelda",
    "Anselm",
    "Brisa",
    "Cyril",
    "Dorit",
]
LAST_NAMES = [
    "Ambrell",
    "Brask",
    "Corvane",
    "Dunmore",
    "Elston",
    "Falk",
    "Grimsby",
    "Holloway",
    "Ingram",
    "Jessup",
    "Kettering",
    "Lindqvist",
    "Marlowe",
    "Norcross",
    "Oakhurst",
    "Pellam",
    "Quarry",
    "Rookwood",
    "Stanhope",
    "Thorne",
    "Underhill",
    "Vance",
    "Whitlock",
    "Yardley",
    "Zeller",
]
TOWNS = [
    "Ashcombe",
    "Brindlemere",
    "Coldharbour",
    "Duskwater",
    "Eastwold",
    "Fernhollow",
    "Glenmarsh",
    "Harrowgate",
    "Ironbridge",
    "Kestrel Bay",
    "Larkspur",
    "Millbrook",
    "Northfold",
    "Oxmere",
    "Pinecrest",
    "Ravenstone",
    "Saltmarsh",
    "Thornbury",
    "Umberfield",
    "Westhaven",
]
JOBS = [
    "clockmaker",
    "glassblower",
    "cartographer",
    "beekeeper",
    "shipwright",
    "bookbinder",
    "astronomer",
    "violin maker",
    "lighthouse keeper",
    "botanist",
    "stonemason",
    "translator",
]
INSTRUMENTS = ["cello", "harp", "oboe", "accordion", "lute", "clarinet", "mandolin", "flute"]
COLOURS = ["amber", "crimson", "teal", "violet", "ochre", "indigo", "silver", "olive"]
ANIMALS = ["a grey parrot", "a tabby cat", "an old sheepdog", "a tortoise", "a ferret", "a goat"]

# Each fact: how the paragraph states it, how questions ask for it, and its answer pool.
FACTS: dict[str, dict[str, Any]] = {
    "birthplace": {
        "statement": "{name} was born in {answer}.",
        "questions": ["Where was {name} born?", "In which town was {name} born?"],
        "pool": TOWNS,
    },
    "birth_year": {
        "statement": "{pronoun} was born in the year {answer}.",
        "questions": ["In what year was {name} born?", "When was {name} born?"],
        "pool": [str(year) for year in range(1801, 1990)],
    },
    "job": {
        "statement": "{pronoun} worked for many years as a {answer}.",
        "questions": ["What did {name} work as?", "What was the profession of {name}?"],
        "pool": JOBS,
    },
    "instrument": {
        "statement": "In the evenings {pronoun_lower} played the {answer}.",
        "questions": ["Which instrument did {name} play?", "What instrument did {name} play?"],
        "pool": INSTRUMENTS,
    },
    "colour": {
        "statement": "{possessive} favourite colour was {answer}.",
        "questions": ["What was the favourite colour of {name}?", "Which colour did {name} like best?"],
        "pool": COLOURS,
    },
    "pet": {
        "statement": "{pronoun} kept {answer} as a pet.",
        "questions": ["What pet did {name} keep?", "Which animal did {name} keep as a pet?"],
        "pool": ANIMALS,
    },
    "children": {
        "statement": "{pronoun} raised {answer} children.",
        "questions": ["How many children did {name} raise?", "How many children did {name} have?"],
        "pool": ["two", "three", "four", "five", "six", "seven"],
    },
    "move_town": {
        "statement": "Later in life {pronoun_lower} moved to {answer}.",
        "questions": ["Where did {name} move later in life?", "To which town did {name} move?"],
        "pool": TOWNS,
    },
}


def _paragraph(rng: random.Random, index: int, facts_per_paragraph: int) -> dict[str, Any]:
    name = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
    she = rng.random() < 0.5
    words = {
        "name": name,
        "pronoun": "She" if she else "He",
        "pronoun_lower": "she" if she else "he",
        "possessive": "Her" if she else "His",
    }
    kinds = list(FACTS)
    rng.shuffle(kinds)
    stated, missing = kinds[:facts_per_paragraph], kinds[facts_per_paragraph:]
    context, answers = "", {}
    for position, kind in enumerate(stated):
        fact = FACTS[kind]
        answer = rng.choice(fact["pool"])
        # The first sentence names the person; later ones use a pronoun, as prose does.
        statement = fact["statement"]
        if position == 0:
            statement = statement.replace("{pronoun}", "{name}").replace("{pronoun_lower}", "{name}")
            statement = statement.replace("{possessive}", "{name}'s")
        sentence = statement.format(answer="\0", **words)
        start = len(context) + sentence.index("\0")
        context += sentence.replace("\0", answer) + " "
        answers[kind] = (answer, start)
    context = context.rstrip()

    qas = []
    for kind in stated:
        answer, start = answers[kind]
        assert context[start : start + len(answer)] == answer
        qas.append(
            {
                "question": rng.choice(FACTS[kind]["questions"]).format(name=name),
                "answers": [{"text": answer, "answer_start": start}],
                "is_impossible": False,
            }
        )
    for kind in missing[: len(stated)]:
        qas.append(
            {
                "question": rng.choice(FACTS[kind]["questions"]).format(name=name),
                "answers": [],
                "is_impossible": True,
            }
        )
    rng.shuffle(qas)
    for number, qa in enumerate(qas):
        qa["id"] = f"bio-{index:05d}-{number}"
    return {"context": context, "qas": qas}


def generate(num_paragraphs: int, seed: int, facts_per_paragraph: int = 4) -> dict[str, Any]:
    """Return a SQuAD 2.0 JSON document of `num_paragraphs` invented biographies.

    Half of the questions are answerable, half are not; the same seed gives the same document.
    """
    if not 1 <= facts_per_paragraph < len(FACTS):
        raise ValueError(f"facts_per_paragraph must be in [1, {len(FACTS) - 1}]")
    rng = random.Random(seed)
    paragraphs = [_paragraph(rng, index, facts_per_paragraph) for index in range(num_paragraphs)]
    return {"version": "v2.0", "data": [{"title": "Invented_biographies", "paragraphs": paragraphs}]}


def write(path: Path, num_paragraphs: int, seed: int, facts_per_paragraph: int = 4) -> Path:
    """Write the generated document to `path` unless an identical one is already there."""
    text = json.dumps(generate(num_paragraphs, seed, facts_per_paragraph), indent=1)
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # parallel jobs may write it at once
        tmp.write_text(text)
        tmp.replace(path)
    return path
