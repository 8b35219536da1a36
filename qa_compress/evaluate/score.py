"""SQuAD 2.0 scoring, computed exactly as the official `evaluate-v2.0.py` computes it.

Same answer normalisation, same max over references, same handling of unanswerable
questions and of the no-answer probability threshold, same keys, units (percent) and
summation order, so figures match the official script to the last digit. Works offline.
"""

from __future__ import annotations

import collections
import os
import re
import string
from collections.abc import Iterable, Mapping

Gold = Mapping[str, list[str]]  # question id -> reference answer texts, [] when unanswerable

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def normalize_answer(s: str) -> str:
    """Lower text and remove punctuation, articles and extra whitespace."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCTUATION)
    s = re.sub(_ARTICLES, " ", s)
    return " ".join(s.split())


def get_tokens(s: str) -> list[str]:
    return normalize_answer(s).split() if s else []


def compute_exact(a_gold: str, a_pred: str) -> int:
    return int(normalize_answer(a_gold) == normalize_answer(a_pred))


def compute_f1(a_gold: str, a_pred: str) -> float:
    gold_toks, pred_toks = get_tokens(a_gold), get_tokens(a_pred)
    common = collections.Counter(gold_toks) & collections.Counter(pred_toks)
    num_same = sum(common.values())
    if len(gold_toks) == 0 or len(pred_toks) == 0:
        # If either is no-answer, then F1 is 1 if they agree, 0 otherwise.
        return int(gold_toks == pred_toks)
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(pred_toks)
    recall = 1.0 * num_same / len(gold_toks)
    return (2 * precision * recall) / (precision + recall)


def gold_from_squad_json(articles: Iterable[dict]) -> dict[str, list[str]]:
    """Question id -> reference texts from the `data` list of an official SQuAD JSON file, in file order."""
    return {
        qa["id"]: [a["text"] for a in qa["answers"]]
        for article in articles
        for paragraph in article["paragraphs"]
        for qa in paragraph["qas"]
    }


def get_raw_scores(gold: Gold, preds: Mapping[str, str]) -> tuple[dict[str, int], dict[str, float], list[str]]:
    """Per-question exact and F1 (max over references), and the ids that have no prediction."""
    exact_scores: dict[str, int] = {}
    f1_scores: dict[str, float] = {}
    missing = []
    for qid, answers in gold.items():
        gold_answers = [a for a in answers if normalize_answer(a)]
        if not gold_answers:
            # For unanswerable questions, only correct answer is empty string.
            gold_answers = [""]
        if qid not in preds:
            missing.append(qid)
            continue
        a_pred = preds[qid]
        exact_scores[qid] = max(compute_exact(a, a_pred) for a in gold_answers)
        f1_scores[qid] = max(compute_f1(a, a_pred) for a in gold_answers)
    return exact_scores, f1_scores, missing


def apply_no_ans_threshold(
    scores: Mapping[str, float], na_probs: Mapping[str, float], qid_to_has_ans: Mapping[str, bool], thresh: float
) -> dict[str, float]:
    """Score a question as "no answer" wherever its no-answer probability exceeds `thresh`."""
    new_scores = {}
    for qid, s in scores.items():
        pred_na = na_probs[qid] > thresh
        new_scores[qid] = float(not qid_to_has_ans[qid]) if pred_na else s
    return new_scores


def make_eval_dict(exact_scores, f1_scores, qid_list=None) -> collections.OrderedDict:
    if not qid_list:
        total = len(exact_scores)
        return collections.OrderedDict(
            [
                ("exact", 100.0 * sum(exact_scores.values()) / total),
                ("f1", 100.0 * sum(f1_scores.values()) / total),
                ("total", total),
            ]
        )
    total = len(qid_list)
    return collections.OrderedDict(
        [
            ("exact", 100.0 * sum(exact_scores[k] for k in qid_list) / total),
            ("f1", 100.0 * sum(f1_scores[k] for k in qid_list) / total),
            ("total", total),
        ]
    )


def merge_eval(main_eval: dict, new_eval: dict, prefix: str) -> None:
    for k in new_eval:
        main_eval[f"{prefix}_{k}"] = new_eval[k]


def find_best_thresh(preds, scores, na_probs, qid_to_has_ans) -> tuple[float, float]:
    """The no-answer threshold that maximises the score, and that score (percent)."""
    num_no_ans = sum(1 for k in qid_to_has_ans if not qid_to_has_ans[k])
    cur_score = num_no_ans
    best_score = cur_score
    best_thresh = 0.0
    qid_list = sorted(na_probs, key=lambda k: na_probs[k])
    for qid in qid_list:
        if qid not in scores:
            continue
        if qid_to_has_ans[qid]:
            diff = scores[qid]
        else:
            diff = -1 if preds[qid] else 0
        cur_score += diff
        if cur_score > best_score:
            best_score = cur_score
            best_thresh = na_probs[qid]
    return 100.0 * best_score / len(scores), best_thresh


def find_all_best_thresh(main_eval, preds, exact_raw, f1_raw, na_probs, qid_to_has_ans) -> None:
    best_exact, exact_thresh = find_best_thresh(preds, exact_raw, na_probs, qid_to_has_ans)
    best_f1, f1_thresh = find_best_thresh(preds, f1_raw, na_probs, qid_to_has_ans)
    main_eval["best_exact"] = best_exact
    main_eval["best_exact_thresh"] = exact_thresh
    main_eval["best_f1"] = best_f1
    main_eval["best_f1_thresh"] = f1_thresh


def make_precision_recall_eval(scores, na_probs, num_true_pos, qid_to_has_ans, out_image=None, title=None):
    """Average precision of answering, ranking questions by no-answer probability (official script)."""
    qid_list = sorted(na_probs, key=lambda k: na_probs[k])
    true_pos = 0.0
    precisions = [1.0]
    recalls = [0.0]
    avg_prec = 0.0
    for i, qid in enumerate(qid_list):
        if qid_to_has_ans[qid]:
            true_pos += scores[qid]
        cur_p = true_pos / float(i + 1)
        cur_r = true_pos / float(num_true_pos)
        if i == len(qid_list) - 1 or na_probs[qid] != na_probs[qid_list[i + 1]]:
            # i.e., if we can put a threshold after this point
            avg_prec += cur_p * (cur_r - recalls[-1])
            precisions.append(cur_p)
            recalls.append(cur_r)
    if out_image:
        _plot_pr_curve(precisions, recalls, out_image, title)
    return {"ap": 100.0 * avg_prec}


def _plot_pr_curve(precisions, recalls, out_image, title) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.step(recalls, precisions, color="b", alpha=0.2, where="post")
    plt.fill_between(recalls, precisions, step="post", alpha=0.2, color="b")
    plt.xlabel("Recall")
    plt.ylabel("Precision")
    plt.xlim([0.0, 1.05])
    plt.ylim([0.0, 1.05])
    plt.title(title)
    plt.savefig(out_image)
    plt.clf()


def _histogram_na_prob(na_probs, qid_list, image_dir, name) -> None:
    if not qid_list:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    x = [na_probs[k] for k in qid_list]
    weights = np.ones_like(x) / float(len(x))
    plt.hist(x, weights=weights, bins=20, range=(0.0, 1.0))
    plt.xlabel("Model probability of no-answer")
    plt.ylabel("Proportion of dataset")
    plt.title(f"Histogram of no-answer probability: {name}")
    plt.savefig(os.path.join(image_dir, f"na_prob_hist_{name}.png"))
    plt.clf()


def precision_recall_analysis(main_eval, gold: Gold, preds, na_probs, out_image_dir: str) -> None:
    """The official script's --out-image-dir: PR curves, their average precision, no-answer histograms."""
    qid_to_has_ans = {qid: bool(answers) for qid, answers in gold.items()}
    exact_raw, f1_raw, _ = get_raw_scores(gold, preds)
    os.makedirs(out_image_dir, exist_ok=True)
    num_true_pos = sum(1 for v in qid_to_has_ans.values() if v)
    if num_true_pos:
        curves = [
            ("pr_exact", exact_raw, "pr_exact.png", "Precision-Recall curve for Exact Match score"),
            ("pr_f1", f1_raw, "pr_f1.png", "Precision-Recall curve for F1 score"),
            (
                "pr_oracle",
                {k: float(v) for k, v in qid_to_has_ans.items()},
                "pr_oracle.png",
                "Oracle Precision-Recall curve (binary task of HasAns vs. NoAns)",
            ),
        ]
        for prefix, scores, image, title in curves:
            result = make_precision_recall_eval(
                scores, na_probs, num_true_pos, qid_to_has_ans, os.path.join(out_image_dir, image), title
            )
            merge_eval(main_eval, result, prefix)
    _histogram_na_prob(na_probs, [k for k, v in qid_to_has_ans.items() if v], out_image_dir, "hasAns")
    _histogram_na_prob(na_probs, [k for k, v in qid_to_has_ans.items() if not v], out_image_dir, "noAns")


def evaluate(
    gold: Gold,
    preds: Mapping[str, str],
    na_probs: Mapping[str, float] | None = None,
    na_prob_thresh: float = 1.0,
) -> tuple[collections.OrderedDict, list[str]]:
    """Official SQuAD 2.0 metrics of `preds` against `gold`, and the ids with no prediction.

    With `na_probs`, the result also holds `best_exact`, `best_f1` and their thresholds.
    """
    has_na_probs = na_probs is not None
    if na_probs is None:
        na_probs = {k: 0.0 for k in preds}
    qid_to_has_ans = {qid: bool(answers) for qid, answers in gold.items()}
    has_ans_qids = [k for k, v in qid_to_has_ans.items() if v]
    no_ans_qids = [k for k, v in qid_to_has_ans.items() if not v]
    exact_raw, f1_raw, missing = get_raw_scores(gold, preds)
    exact_thresh = apply_no_ans_threshold(exact_raw, na_probs, qid_to_has_ans, na_prob_thresh)
    f1_thresh = apply_no_ans_threshold(f1_raw, na_probs, qid_to_has_ans, na_prob_thresh)
    out_eval = make_eval_dict(exact_thresh, f1_thresh)
    if has_ans_qids:
        merge_eval(out_eval, make_eval_dict(exact_thresh, f1_thresh, qid_list=has_ans_qids), "HasAns")
    if no_ans_qids:
        merge_eval(out_eval, make_eval_dict(exact_thresh, f1_thresh, qid_list=no_ans_qids), "NoAns")
    if has_na_probs:
        find_all_best_thresh(out_eval, preds, exact_raw, f1_raw, na_probs, qid_to_has_ans)
    return out_eval, missing


def always_no_answer(gold: Gold) -> collections.OrderedDict:
    """The score of predicting "no answer" for every question: the floor any QA model must beat."""
    return evaluate(gold, {qid: "" for qid in gold})[0]
