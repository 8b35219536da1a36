"""Load SQuAD 2.0 examples, from the Hub or from files in the official JSON format.

Either way the result is a `datasets.Dataset` with the Hub's `squad_v2` columns
(`id, title, context, question, answers{text, answer_start}`), so later stages do not
care where the examples came from.
"""

from __future__ import annotations

import hashlib
import json
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import datasets
from datasets import Dataset

from qa_compress import cache
from qa_compress.errors import UserError

MAX_FILE_BYTES = 512 * 2**20  # the official SQuAD 2.0 training file is 40 MiB; parsing takes about 3x the size
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
        },  # fmt: skip
    }
)  # the Hub's squad_v2 columns


@dataclass(frozen=True)
class Examples:
    """One split of examples with a digest of its content (the key for caches built from it)."""

    dataset: Dataset
    digest: str
    source: str


def validate_squad_json(path: Path, key: str) -> dict[str, Any]:
    """Parse `path` and check it has the official SQuAD 2.0 layout; `key` names the config value in errors."""
    if not path.is_file():
        raise UserError(f"{key}={path}: no such file")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise UserError(
            f"{key}={path}: {size / 2**20:,.0f} MiB, more than the {MAX_FILE_BYTES / 2**20:,.0f} MiB a SQuAD file "
            "is read whole into memory at; split it"
        )
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{key}={path}: not a JSON file ({err})") from None
    except RecursionError:
        raise UserError(f"{key}={path}: not SQuAD 2.0 JSON (nested deeper than Python's parser allows)") from None
    articles = document.get("data") if isinstance(document, dict) else None
    if not isinstance(articles, list) or not articles:
        raise UserError(f"{key}={path}: not SQuAD 2.0 JSON (expected a non-empty top-level 'data' list)")
    seen: dict[str, int] = {}
    for a, article in enumerate(articles):
        for p, paragraph in enumerate(_field(article, "paragraphs", list, path, key, f"data[{a}]")):
            where = f"data[{a}].paragraphs[{p}]"
            context = _field(paragraph, "context", str, path, key, where)
            for q, qa in enumerate(_field(paragraph, "qas", list, path, key, where)):
                here = f"{where}.qas[{q}]"
                question_id = _field(qa, "id", str, path, key, here)
                seen[question_id] = seen.get(question_id, 0) + 1
                _field(qa, "question", str, path, key, here)
                for n, answer in enumerate(_field(qa, "answers", list, path, key, here)):
                    text = _field(answer, "text", str, path, key, f"{here}.answers[{n}]")
                    start = _field(answer, "answer_start", int, path, key, f"{here}.answers[{n}]")
                    if start < 0 or context[start : start + len(text)] != text:
                        raise UserError(
                            f"{key}={path}: not SQuAD 2.0 JSON ({here}.answers[{n}].answer_start={start} "
                            f"does not point at the answer text {text!r})"
                        )
    if not seen:
        raise UserError(f"{key}={path}: not SQuAD 2.0 JSON (no paragraph holds a question)")
    repeated = [question_id for question_id, count in seen.items() if count > 1]
    if repeated:
        names = ", ".join(repr(i) for i in repeated[:3])
        names += f" and {len(repeated) - 3} more" if len(repeated) > 3 else ""
        raise UserError(
            f"{key}={path}: question ids must be unique, and {len(repeated)} occur more than once ({names}); "
            "answers and scores would be matched to the wrong questions"
        )
    return document


def _field(node: Any, name: str, kind: type, path: Path, key: str, where: str) -> Any:
    if not isinstance(node, dict) or not isinstance(node.get(name), kind) or isinstance(node.get(name), bool):
        raise UserError(f"{key}={path}: not SQuAD 2.0 JSON ({where} needs a {kind.__name__} field '{name}')")
    return node[name]


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
    document = validate_squad_json(path, key)
    articles = document["data"]
    rows = _flatten({"title": [a.get("title") for a in articles], "paragraphs": [a["paragraphs"] for a in articles]})
    return Examples(Dataset.from_dict(rows, features=SQUAD_COLUMNS), cache.input_digest(path), str(path))


def hub_reachable(timeout_s: float = 5.0) -> bool:
    """Whether the Hugging Face Hub answers (offline mode counts as unreachable)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout_s).close()
    except OSError:
        return False
    return True


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
