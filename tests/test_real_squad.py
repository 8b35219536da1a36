"""Real models on a slice of the real SQuAD 2.0 files that sit beside the project (skipped where absent)."""

import pytest

from .conftest import (
    QA_CHECKPOINT,
    SQUAD_DIR,
    children,
    expected_metrics,
    logged_runs,
    needs_qa_checkpoint,
    needs_shared_squad,
    run_in_process,
)

pytestmark = pytest.mark.slow  # every test here runs jobs or serves a model


@needs_shared_squad
@needs_qa_checkpoint
def test_fine_tuned_minilm_answers_real_questions_and_pruning_costs_accuracy(tmp_path):
    result = run_in_process(
        [
            "-m",
            "training=none",
            "model=minilm_l6",
            f"model.name_or_path={QA_CHECKPOINT}",
            "dataset=squad_json",
            f"dataset.validation_file={SQUAD_DIR / 'validation.json'}",
            "dataset.max_eval_samples=100",
            "dataset.max_seq_length=256",
            "benchmark.repeats=2",
            "benchmark.warmup=1",
            "pruning=l1_unstructured",
            "pruning.amount=0.0,0.9",
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    by_amount = {r.data.params["pruning.amount"]: r for r in children(tmp_path)}
    assert all(expected_metrics(run) <= set(run.data.metrics) for run in by_amount.values())
    dense, pruned = by_amount["0.0"].data.metrics, by_amount["0.9"].data.metrics
    assert dense["total"] == 100
    assert dense["HasAns_f1"] > 25  # the checkpoint really finds answers (38.1 on these 100, 37.5 on the whole file)
    assert dense["f1"] - pruned["f1"] > 20  # 90% of its weights gone, most of its accuracy goes with them
    assert pruned["sparsity"] == pytest.approx(0.9, abs=0.01)


@needs_shared_squad
def test_minilm_l6_from_its_package_fine_tunes_on_real_squad(tmp_path):
    result = run_in_process(
        [
            "model=minilm_l6",
            "dataset=squad_json",
            f"dataset.train_file={SQUAD_DIR / 'train.json'}",
            f"dataset.validation_file={SQUAD_DIR / 'validation.json'}",
            "dataset.max_train_samples=16",
            "dataset.max_eval_samples=16",
            "dataset.max_seq_length=128",
            "dataset.doc_stride=32",
            "training.max_steps=2",
            "training.batch_size=8",
            "benchmark.enabled=false",
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = logged_runs(tmp_path)[1]
    assert run.info.status == "FINISHED"
    assert run.data.tags["baseline_cache"] == "miss"
    assert run.data.metrics["total"] == 16
    assert run.data.metrics["train_steps"] == 2
    assert run.data.metrics["train_loss"] > 0
