"""Command-line SQuAD 2.0 evaluation with the official script's interface and output.

    python -m qa_compress.eval_squad_v2 DATA_JSON PRED_JSON [--na-prob-file F] [--na-prob-thresh T]
        [--out-file F] [--out-image-dir D]

Prints (or writes) the same JSON as `evaluate-v2.0.py`, so a run's `predictions.json` and
`na_probs.json` artifacts can be re-scored by anyone, with either tool.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from qa_compress.data.squad_json import validate as validate_squad_json
from qa_compress.errors import UserError
from qa_compress.evaluate.score import evaluate, gold_from_squad_json, precision_recall_analysis


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser("Official evaluation script for SQuAD version 2.0.")
    parser.add_argument("data_file", metavar="data.json", help="Input data JSON file.")
    parser.add_argument("pred_file", metavar="pred.json", help="Model predictions.")
    parser.add_argument(
        "--out-file", "-o", metavar="eval.json", help="Write accuracy metrics to file (default is stdout)."
    )
    parser.add_argument(
        "--na-prob-file", "-n", metavar="na_prob.json", help="Model estimates of probability of no answer."
    )
    parser.add_argument(
        "--na-prob-thresh",
        "-t",
        type=float,
        default=1.0,
        help='Predict "" if no-answer probability exceeds this (default = 1.0).',
    )
    parser.add_argument(
        "--out-image-dir", "-p", metavar="out_images", default=None, help="Save precision-recall curves to directory."
    )
    parser.add_argument("--verbose", "-v", action="store_true")
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        parser.print_help()
        sys.exit(1)
    return parser.parse_args(argv)


def _read_json(path: str, what: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as err:
        raise UserError(f"{what} {path}: cannot be read ({err.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise UserError(f"{what} {path}: not a JSON file ({str(err).splitlines()[0][:200]})") from None


def _mapping(content: Any, path: str, what: str, valid, expected: str) -> dict:
    """`content` as a question id -> value mapping, every value `valid`; refused naming the first bad one."""
    if not isinstance(content, dict):
        raise UserError(f"{what} {path}: expected a JSON object of question id -> {expected}")
    for qid, value in content.items():
        if not valid(value):
            raise UserError(f"{what} {path}: the value for {qid!r} is {value!r}; expected {expected}")
    return content


def _probability(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0.0 <= value <= 1.0


def load(opts: argparse.Namespace) -> tuple[dict, dict, dict | None]:
    """Gold answers, predictions and no-answer probabilities, each checked; a bad file is a UserError."""
    _read_json(opts.data_file, "data file")  # unreadable or not JSON: said as such, before the layout check
    gold = gold_from_squad_json(validate_squad_json(Path(opts.data_file), "data file")["data"])
    preds = _mapping(
        _read_json(opts.pred_file, "prediction file"),
        opts.pred_file,
        "prediction file",
        lambda v: isinstance(v, str),
        'an answer string ("" for no answer)',
    )
    unanswered = [qid for qid in gold if qid not in preds]
    if unanswered:  # the official script prints each, then fails with a KeyError
        raise UserError(
            f"prediction file {opts.pred_file}: no prediction for {unanswered[0]!r} ({len(unanswered)} "
            f"of the data file's {len(gold)} questions have none)"
        )
    na_probs = None
    if opts.na_prob_file:
        na_probs = _mapping(
            _read_json(opts.na_prob_file, "no-answer probability file"),
            opts.na_prob_file,
            "no-answer probability file",
            _probability,
            "a probability in [0, 1]",
        )
        absent = [qid for qid in preds if qid not in na_probs]
        if absent:
            raise UserError(
                f"no-answer probability file {opts.na_prob_file}: no probability for {absent[0]!r} "
                f"({len(absent)} predicted questions have none)"
            )
    return gold, preds, na_probs


def _file_place(path: Path) -> bool:
    """Whether a file can be written at `path`: not a directory, in a folder that exists."""
    return not path.is_dir() and path.parent.resolve().is_dir()


def main(argv: list[str] | None = None) -> dict:
    opts = parse_args(argv)
    if not 0.0 <= opts.na_prob_thresh <= 1.0:  # NaN fails too
        sys.exit(f"--na-prob-thresh {opts.na_prob_thresh}: must be a probability in [0, 1]")
    if opts.out_file and not _file_place(Path(opts.out_file)):
        sys.exit(
            f"--out-file {opts.out_file}: not a place for a file (a directory, or in a folder that does not exist)"
        )
    try:
        gold, preds, na_probs = load(opts)
    except UserError as err:
        sys.exit(str(err))
    out_eval, _ = evaluate(gold, preds, na_probs, opts.na_prob_thresh)  # nothing is missing: checked above
    if na_probs is not None and opts.out_image_dir:
        precision_recall_analysis(out_eval, gold, preds, na_probs, opts.out_image_dir)
    if opts.out_file:
        with open(opts.out_file, "w") as f:
            json.dump(out_eval, f)
    else:
        print(json.dumps(out_eval, indent=2))
    return out_eval


if __name__ == "__main__":
    main()
