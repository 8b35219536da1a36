"""The measuring stages of a job: answers and scores on the evaluation questions, the calibrated null threshold,
size, latency, and the speed-up over the uncompressed model timed in the same process."""

from __future__ import annotations

import logging
import time
from typing import Any

import torch

from qa_compress import quantize
from qa_compress.data import squad
from qa_compress.evaluate import predict, score, threshold, timing
from qa_compress.job import inputs
from qa_compress.job.context import Context, Evaluation

log = logging.getLogger(__name__)


def evaluate(ctx: Context, model: Any, device: torch.device) -> Evaluation:
    """Predictions and SQuAD 2.0 scores of `model` on the evaluation set."""
    p = ctx.job.predict
    started = time.perf_counter()
    start_logits, end_logits = predict.logits(model, ctx.model_inputs, p.batch_size, device)
    predictions = predict.decode(
        ctx.evaluation.dataset,
        ctx.eval_windows,
        start_logits,
        end_logits,
        p.n_best_size,
        p.max_answer_length,
        p.null_score_diff_threshold,
    )
    seconds = time.perf_counter() - started
    gold = squad.gold_answers(ctx.evaluation.dataset)
    scores, _ = score.evaluate(gold, predictions.answers, predictions.na_probs)
    return Evaluation(predictions, scores, seconds)


def calibrate_threshold(
    ctx: Context, model: Any, evaluation: Evaluation, device: torch.device
) -> tuple[Evaluation, dict]:
    """The evaluation redone at the null threshold that maximises F1 on the questions set aside for it.

    Also returns what to log: the threshold, the F1 it reached on those questions, and the
    evaluation scores at the configured (uncalibrated) threshold.
    """
    questions, p = ctx.threshold, ctx.job.predict
    windows = inputs.windows(ctx.job, questions, ctx.tokenizer, "eval")
    starts, ends = predict.logits(model, predict.forward_inputs(windows, ctx.input_names(model)), p.batch_size, device)
    on_split = predict.decode(
        questions.dataset, windows, starts, ends, p.n_best_size, p.max_answer_length, p.null_score_diff_threshold
    )
    chosen, split_f1 = threshold.best(on_split, squad.gold_answers(questions.dataset))
    predictions = predict.rethreshold(evaluation.predictions, chosen)
    gold = squad.gold_answers(ctx.evaluation.dataset)
    scores, _ = score.evaluate(gold, predictions.answers, predictions.na_probs)
    uncalibrated = {
        f"{k}_uncalibrated": evaluation.scores[k]
        for k in ("exact", "f1", "HasAns_f1", "NoAns_f1")
        if k in evaluation.scores
    }
    record = {
        "null_threshold": chosen,
        "threshold_questions": len(questions.dataset),
        "threshold_split_f1": split_f1,
        **uncalibrated,
    }
    log.info(
        "Null threshold %.3f (F1 %.2f on the set-aside questions): evaluation F1 %.2f -> %.2f",
        chosen,
        split_f1,
        evaluation.scores["f1"],
        scores["f1"],
    )
    return Evaluation(predictions, scores, evaluation.seconds), record


def scores(ctx: Context, evaluation: Evaluation) -> dict[str, float]:
    """The official scores, the always-no-answer floor on the same questions, and how long prediction took."""
    floor = score.always_no_answer(squad.gold_answers(ctx.evaluation.dataset))
    return {
        **evaluation.scores,
        "predict_s": evaluation.seconds,
        "eval_features": len(ctx.eval_windows),
        "always_no_answer_exact": floor["exact"],
        "always_no_answer_f1": floor["f1"],
    }


def measured(ctx: Context, model: Any, device: torch.device) -> dict[str, float]:
    """Size as stored and, unless turned off, latency and throughput."""
    metrics = timing.sizes(model, quantize.get(ctx.job.quantization.name))
    b = ctx.job.benchmark
    if b.enabled:
        per_window = len(ctx.evaluation.dataset) / len(ctx.model_inputs)
        metrics.update(
            timing.run(
                model, ctx.model_inputs, b.batch_size, b.warmup, b.repeats, device, questions_per_feature=per_window
            )
        )
    return metrics


def against_reference(ctx: Context, model: Any, reference: Any, device: torch.device) -> dict[str, float]:
    """Speed-up over the uncompressed model, timed in interleaved rounds in this job (see timing.paired)."""
    b = ctx.job.benchmark
    reference_device = quantize.get("none").device()
    timed = timing.paired(
        model,
        reference.to(reference_device),
        timing.batch_of(ctx.model_inputs, b.batch_size),
        b.warmup,
        b.repeats,
        device,
        reference_device,
    )
    log.info(
        "%.2fx the uncompressed model's speed (interquartile range %.2f-%.2f over %d paired rounds)",
        timed["speedup"],
        timed["speedup_q1"],
        timed["speedup_q3"],
        b.repeats,
    )
    return timed
