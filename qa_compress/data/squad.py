"""Load SQuAD 2.0 examples, from the Hub or from files in the official JSON format.

Either way the result is a `datasets.Dataset` with the Hub's `squad_v2` columns
(`id, title, context, question, answers{text, answer_start}`), so later stages do not
care where the examples came from.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import datasets
from datasets import Dataset

from qa_compress.data import squad_json
from qa_compress.data.sources import hub_reachable
from qa_compress.errors import UserError
from qa_compress.tracking import cache

DATASET_HELP = "use dataset=squad_json dataset.validation_file=<SQuAD 2.0 JSON file> (and dataset.train_file=...)"


SQUAD_COLUMNS = datasets.Features(
    {
        "id": datasets.Value("string"),
        "title": datasets.Value("string"),
        "context": datasets.Value("string"),
        "question": datasets.Value("string"),
        "answers": {
            "text": datasets.Sequence(datasets.Value("string")),
            "answer_start": datasets.Sequence(datasets.Value("int32")),
        },
    }
)  # the Hub's squad_v2 columns


@dataclass(frozen=True)
class Examples:
    """One split of examples with a digest of its content (the key for caches built from it)."""

    dataset: Dataset
    digest: str
    source: str


def _flatten(batch: dict[str, list]) -> dict[str, list]:
    """Expand a batch of articles into one row per question, in the Hub's squad_v2 columns."""
    rows: dict[str, list] = {"id": [], "title": [], "context": [], "question": [], "answers": []}
    for title, paragraphs in zip(batch["title"], batch["paragraphs"], strict=True):
        for paragraph in paragraphs:
            for qa in paragraph["qas"]:
                rows["id"].append(qa["id"])
                rows["title"].append(title or "")
                rows["context"].append(paragraph["context"])
                rows["question"].append(qa["question"])
                rows["answers"].append(
                    {
                        "text": [a["text"] for a in qa["answers"]],
                        "answer_start": [a["answer_start"] for a in qa["answers"]],
                    }
                )
    return rows


def load_squad_json(path: Path, key: str) -> Examples:
    """A SQuAD 2.0 JSON file as one row per question, built in memory from the checked file itself.

    No intermediate cache: what is scored always comes from the file as it is now (the windows
    built from it are cached, sealed and keyed by this file's content).
    """
    document = squad_json.validate(path, key)
    articles = document["data"]
    rows = _flatten({"title": [a.get("title") for a in articles], "paragraphs": [a["paragraphs"] for a in articles]})
    return Examples(Dataset.from_dict(rows, features=SQUAD_COLUMNS), cache.input_digest(path), str(path))


def check_hub_dataset(name: str) -> None:
    """Fail with one clear line if a Hub dataset is neither reachable nor in the local `datasets` cache."""
    cached = Path(datasets.config.HF_DATASETS_CACHE) / name.replace("/", "___")
    if not cached.exists() and not hub_reachable():
        raise UserError(
            f"dataset.hub_name={name}: not in the local datasets cache, and the Hugging Face Hub cannot be reached; "
            f"{DATASET_HELP}"
        )


def load_hub(name: str, split: str) -> Examples:
    """Load a split of a Hub dataset such as `squad_v2`."""
    try:
        dataset = datasets.load_dataset(name, split=split)
    except (ConnectionError, FileNotFoundError, ValueError) as err:
        raise UserError(f"dataset.hub_name={name}: could not be loaded from the Hub ({err}); {DATASET_HELP}") from None
    missing = {"id", "context", "question", "answers"} - set(dataset.column_names)
    if missing:
        raise UserError(f"dataset.hub_name={name}: not in SQuAD 2.0 layout (missing columns {sorted(missing)})")
    return Examples(dataset, dataset._fingerprint, f"hub:{name}/{split}")


def limit(examples: Examples, max_samples: int | None) -> Examples:
    """Keep the first `max_samples` questions (all when None); the digest follows the selection."""
    if max_samples is None or max_samples >= len(examples.dataset):
        return examples
    digest = hashlib.sha256(f"{examples.digest}:first{max_samples}".encode()).hexdigest()
    return Examples(examples.dataset.select(range(max_samples)), digest, examples.source)


def gold_answers(examples: Dataset) -> dict[str, list[str]]:
    """Reference answer texts per question id ([] for unanswerable questions)."""
    return {row["id"]: list(row["answers"]["text"]) for row in examples}
