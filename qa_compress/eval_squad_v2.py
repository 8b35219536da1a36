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

from qa_compress.score import evaluate, gold_from_squad_json, precision_recall_analysis


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


def main(argv: list[str] | None = None) -> dict:
    opts = parse_args(argv)
    with open(opts.data_file) as f:
        gold = gold_from_squad_json(json.load(f)["data"])
    with open(opts.pred_file) as f:
        preds = json.load(f)
    na_probs = None
    if opts.na_prob_file:
        with open(opts.na_prob_file) as f:
            na_probs = json.load(f)
    out_eval, missing = evaluate(gold, preds, na_probs, opts.na_prob_thresh)
    for qid in missing:
        print(f"Missing prediction for {qid}")
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
