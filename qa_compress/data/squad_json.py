"""Reading a SQuAD 2.0 JSON file and checking its layout, without `datasets` or torch.

The checks a job runs before anything heavy is imported use this; so do `data` (which turns the
checked file into examples) and the scorer CLI.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qa_compress.errors import UserError

MAX_FILE_BYTES = 512 * 2**20  # the official SQuAD 2.0 training file is 40 MiB; parsing takes about 3x the size


def readable(path: Path, key: str) -> None:
    """`path` is a regular file: a pipe or a device would block or never end, a directory cannot be parsed."""
    if not path.exists():
        raise UserError(f"{key}={path}: no such file")
    if not path.is_file():
        raise UserError(f"{key}={path}: not a regular file (a directory, pipe or device); give a SQuAD 2.0 JSON file")


def validate(path: Path, key: str) -> dict[str, Any]:
    """Parse `path` and check it has the official SQuAD 2.0 layout; `key` names the config value in errors."""
    readable(path, key)
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
