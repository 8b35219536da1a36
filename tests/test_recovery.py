"""Keeping the answers on tiny models: the calibrated null threshold, distillation and gradual pruning."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForQuestionAnswering

from qa_compress import prune
from qa_compress.data import squad, synthetic
from qa_compress.evaluate import predict, threshold
from qa_compress.model import distill, families, models, train
from qa_compress.prune import layers as prune_layers
from qa_compress.prune import schedule

from .conftest import (
    TRAINING,
    answer_windows,
    assert_refused,
    children,
    logged_runs,
    run_in_process,
    small_bert,
    small_inputs,
    tiny_job_args,
)


def _tiny(directory: Path):
    return AutoModelForQuestionAnswering.from_pretrained(str(directory)).eval()


def _layers(model):
    settings = prune.get("none").settings(name="none")
    return prune_layers.prunable_layers(model, prune.layer_patterns(settings, model.config.model_type))


# The calibrated threshold -------------------------------------------------------------------


def _predictions(rows: dict[str, tuple[str, float]]) -> predict.Predictions:
    """Predictions from (best span, null-score difference) per question, answered at threshold 0."""
    spans = {q: span for q, (span, _) in rows.items()}
    diffs = {q: diff for q, (_, diff) in rows.items()}
    answers = {q: predict.with_threshold(spans[q], diffs[q], 0.0) for q in rows}
    return predict.Predictions(answers, {q: 0.5 for q in rows}, spans, diffs)


def test_best_threshold_maximises_f1_between_scores_and_prefers_the_one_nearest_zero():
    gold = {"a": ["Ada"], "b": ["1843"], "c": [], "d": []}
    # Right spans for a and b, but their null scores are higher: at threshold 0 nothing is answered.
    p = _predictions({"a": ("Ada", 1.0), "b": ("1843", 2.0), "c": ("wrong", 3.0), "d": ("wrong", 5.0)})
    chosen, f1 = threshold.best(p, gold)
    assert 2.0 < chosen < 3.0 and f1 == 100.0  # a and b answered, c and d not
    assert chosen == pytest.approx(2.5)  # midway, not on one question's score
    rescored = predict.rethreshold(p, chosen).answers
    assert rescored == {"a": "Ada", "b": "1843", "c": "", "d": ""}
    # Nothing worth answering: every threshold below the lowest difference ties; the one nearest 0 wins.
    chosen, f1 = threshold.best(_predictions({"c": ("x", 1.0), "d": ("y", 2.0)}), {"c": [], "d": []})
    assert chosen < 1.0 and f1 == 100.0
    assert threshold.best(_predictions({"c": ("x", -4.0)}), {"c": []})[0] < -4.0  # below the one difference


def test_rethresholding_equals_decoding_at_that_threshold():
    examples = Dataset.from_dict({"id": ["e", "f"], "context": ["alpha beta", "gamma delta"]})
    offsets = [[None, [0, 5], [6, 10]], [None, [0, 5], [6, 11]]]
    features = Dataset.from_dict({"example_id": ["e", "f"], "offset_mapping": offsets})
    start = np.array([[2.0, 1.5, 0.0], [0.0, 1.0, 3.0]])
    end = np.array([[2.0, 1.5, 0.0], [0.0, 0.0, 3.0]])
    at_zero = predict.decode(examples, features, start, end)
    for t in (-5.0, 0.5, 1.5):
        assert (
            predict.rethreshold(at_zero, t).answers
            == predict.decode(examples, features, start, end, null_score_diff_threshold=t).answers
        )


def test_the_threshold_split_takes_whole_paragraphs_and_never_an_evaluation_question(tmp_path):
    path = synthetic.write(tmp_path / "train.json", 12, seed=0)
    examples = squad.load_squad_json(path, "k")
    ids = examples.dataset["id"]
    evaluation = set(ids[:5])  # questions that are also in the evaluation set go to neither side
    split = threshold.carve(examples, 6, seed=3, evaluation_ids=evaluation)
    calibration, rest = set(split.calibration.dataset["id"]), set(split.train.dataset["id"])
    assert len(calibration) >= 6 and not calibration & rest and not (calibration | rest) & evaluation
    assert calibration | rest == set(ids) - evaluation
    contexts = set(split.calibration.dataset["context"])
    assert not contexts & set(split.train.dataset["context"])  # no calibration paragraph is trained on
    again = threshold.carve(examples, 6, seed=3, evaluation_ids=evaluation)
    assert again.calibration.dataset["id"] == split.calibration.dataset["id"]  # seeded
    assert again.calibration.digest == split.calibration.digest != split.train.digest
    other = threshold.carve(examples, 6, seed=4, evaluation_ids=evaluation)
    assert other.calibration.dataset["id"] != split.calibration.dataset["id"]


# Distillation --------------------------------------------------------------------------------


def test_distillation_loss_is_zero_for_a_perfect_student_ignores_padding_and_mixes_the_label_loss():
    logits = (torch.randn(2, 6), torch.randn(2, 6))
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    label = torch.tensor(0.7)
    assert distill.loss(logits, logits, mask, label, 2.0, 1.0).item() == pytest.approx(0.0, abs=1e-6)
    assert distill.loss(logits, logits, mask, label, 2.0, 0.0).item() == pytest.approx(0.7)
    teacher = tuple(t.clone() for t in logits)
    for t in teacher:
        t[0, 4:] = 50.0  # only padding differs: no loss
    assert distill.loss(logits, teacher, mask, label, 2.0, 1.0).item() == pytest.approx(0.0, abs=1e-6)
    teacher[0][1, 0] += 5.0
    assert distill.loss(logits, teacher, mask, label, 2.0, 1.0).item() > 0.01


def test_teacher_logits_are_computed_once_then_read_from_the_cache(tokenizer, tiny_bert_dir, tmp_path, monkeypatch):
    model = _tiny(tiny_bert_dir)
    windows = answer_windows(tokenizer)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    calls = []
    real = predict.logits
    monkeypatch.setattr(predict, "logits", lambda *a, **k: calls.append(1) or real(*a, **k))
    start, end, origin = distill.teacher_logits(model, windows, names, 8, torch.device("cpu"), tmp_path, 60)
    again_start, _, again = distill.teacher_logits(model, windows, names, 8, torch.device("cpu"), tmp_path, 60)
    assert (origin, again, len(calls)) == ("miss", "hit", 1)
    assert start.shape == end.shape == (16, 24) and torch.equal(start, again_start)
    with torch.no_grad():
        direct = model(**{k: torch.tensor(windows[k]) for k in names}).start_logits
    kept = torch.tensor(windows["attention_mask"]).bool()  # padding positions are -inf: no answer there
    assert torch.allclose(start[kept], direct[kept], atol=1e-5) and torch.isneginf(start[~kept]).all()
    assert list((tmp_path / "teachers").glob(f"*/{distill.TEACHER_FILE}"))  # safetensors, no pickle
    other = _tiny(tiny_bert_dir)
    with torch.no_grad():
        next(other.parameters()).add_(1.0)
    assert distill.teacher_logits(other, windows, names, 8, torch.device("cpu"), tmp_path, 60)[2] == "miss"


def test_distillation_pulls_the_student_to_the_teacher_and_masks_hold(tokenizer, tiny_bert_dir):
    model = _tiny(tiny_bert_dir)
    windows = answer_windows(tokenizer)
    layers = _layers(model)
    prune.get("l1_unstructured").apply(
        model,
        layers,
        prune.get("l1_unstructured").settings(name="l1_unstructured", amount=0.5),
        prune.PruneContext(0, None, torch.device("cpu")),
    )
    zeros = {name: (m.weight == 0).clone() for name, m in layers.items()}
    # A teacher whose answer is token 3 (the labels say 7); pure distillation must follow the teacher.
    peaked = torch.full((16, 24), -5.0)
    peaked[:, 3] = 5.0
    teacher = distill.Teacher(peaked, peaked.clone(), temperature=1.0, weight=1.0)
    train.fine_tune(model, tokenizer, windows, {**TRAINING, "max_steps": 30}, seed=0, callbacks=[], teacher=teacher)
    model.eval()
    with torch.no_grad():
        out = model(**{k: torch.tensor(windows[k][:4]) for k in ("input_ids", "attention_mask", "token_type_ids")})
    assert (out.start_logits.argmax(-1) == 3).all() and (out.end_logits.argmax(-1) == 3).all()
    prune_layers.make_permanent(layers)
    for name, module in layers.items():
        assert torch.equal(module.weight == 0, zeros[name])  # masks held through distillation


def _hidden_distance(student, teacher, windows) -> float:
    """The layer-wise distillation term between a student and its teacher on the windows."""
    inputs = {k: torch.tensor(windows[k]) for k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        mine = student.eval()(**inputs, output_hidden_states=True).hidden_states
        theirs = teacher.eval()(**inputs, output_hidden_states=True).hidden_states
    mapping = distill.layer_map(student, len(mine))
    return float(distill.hidden_loss(mine, theirs, mapping, inputs["attention_mask"]))


def test_layer_wise_distillation_pulls_each_kept_layer_toward_the_teachers_layer_it_came_from(tokenizer, tiny_bert_dir):
    windows = answer_windows(tokenizer)
    teacher_model = _tiny(tiny_bert_dir).eval()
    with torch.no_grad():  # the teacher's own logits: the student learns its answers either way
        out = teacher_model(**{k: torch.tensor(windows[k]) for k in ("input_ids", "attention_mask", "token_type_ids")})
    distances = {}
    for hidden_weight in (0.0, 10.0):
        student = _tiny(tiny_bert_dir)
        families.keep_layers(student, [1])  # a one-layer student, its layer the teacher's second
        assert distill.layer_map(student, 2) == [0, 2]
        with torch.no_grad(), torch.random.fork_rng(devices=[]):  # far from the teacher's layer to begin with
            torch.manual_seed(1)
            for parameter in families.of_model(student).blocks(student)[0].attention_out.parameters():
                parameter.normal_(0, 1)
        before = _hidden_distance(student, teacher_model, windows)
        teacher = distill.Teacher(out.start_logits, out.end_logits, 1.0, 1.0, teacher_model, hidden_weight)
        settings = {**TRAINING, "max_steps": 20, "learning_rate": 3e-3}
        train.fine_tune(student, tokenizer, windows, settings, seed=0, callbacks=[], teacher=teacher)
        distances[hidden_weight] = _hidden_distance(student, teacher_model, windows) / before
    assert distances[10.0] < 0.5 and distances[10.0] < 0.5 * distances[0.0], distances  # logits alone do not


# Gradual pruning -----------------------------------------------------------------------------


def test_cubic_schedule_front_loads_and_ends_exactly_at_the_amount():
    fractions = schedule.cubic(0.7, 4)
    assert fractions[-1] == 0.7 and fractions == sorted(fractions)
    steps = np.diff([0.0, *fractions])
    assert (np.diff(steps) < 0).all()  # each stage prunes less than the one before
    assert schedule.stage_starts(400, 8, 0.75) == [0, 37, 75, 112, 150, 187, 225, 262]
    assert sum(schedule.stage_lengths(400, 8, 0.75)) == 400


@pytest.mark.parametrize("method", ["l1_unstructured", "global_magnitude", "random"])
def test_gradual_masks_nest_and_reach_exactly_the_one_shot_sparsity(method, tokenizer, tiny_bert_dir):
    model = _tiny(tiny_bert_dir)
    layers = _layers(model)
    original = {name: m.weight.numel() for name, m in layers.items()}
    chosen = prune.get(method)
    chosen.apply(model, layers, chosen.settings(name=method, amount=0.6), prune.PruneContext(0, None, "cpu"))
    one_shot = prune_layers.sparsity(prune_layers.layer_sparsity(layers, original))
    seen = []

    class Watch(schedule.GradualMasks):
        def on_step_begin(self, args, state, control, **kwargs):
            super().on_step_begin(args, state, control, **kwargs)
            seen.append({name: (m.weight_mask == 0).clone() for name, m in layers.items()})

    gradual = Watch(chosen, layers, 0.6, stages=4, end=0.5, seed=0, steps=8)
    train.fine_tune(model, tokenizer, answer_windows(tokenizer), TRAINING, seed=0, callbacks=[gradual])
    assert [step for step, _ in gradual.applied] == [0, 1, 2, 3]
    amounts = [amount for _, amount in gradual.applied]
    assert amounts == sorted(amounts) and amounts[0] < 0.6 and amounts[-1] == 0.6
    for earlier, later in zip(seen, seen[1:], strict=False):
        assert all((later[n] | ~earlier[n]).all() for n in layers)  # once pruned, pruned for good
    prune_layers.make_permanent(layers)
    assert prune_layers.sparsity(prune_layers.layer_sparsity(layers, original)) == one_shot == pytest.approx(0.6, 1e-3)


def test_structured_stages_name_removed_heads_by_their_original_index_and_load_back(tmp_path):
    model = small_bert(heads=4).eval()
    method = prune.get("structured")
    context = prune.PruneContext(0, None, torch.device("cpu"))
    for heads_amount in (0.25, 1 / 3):  # one head of 4, then one of the 3 left
        method.apply(model, {}, method.settings(name="structured", heads_amount=heads_amount, ffn_amount=0.0), context)
    removed = model.config.pruned_heads
    assert all(len(heads) == 2 and len(set(heads)) == 2 and max(heads) < 4 for heads in removed.values())
    assert families.of_model(model).blocks(model)[0].heads == 2
    with torch.no_grad():
        expected = model(**small_inputs()).start_logits
    model.save_pretrained(str(tmp_path), safe_serialization=True)
    with torch.no_grad():
        assert torch.allclose(models.load_weights(tmp_path)(**small_inputs()).start_logits, expected, atol=1e-5)


def test_recovery_settings_are_checked_before_any_work():
    none = prune.get("none").settings
    with pytest.raises(ValueError, match="pruning.distill=true"):
        none(name="none", distill=True)
    gm = prune.get("global_magnitude").settings
    with pytest.raises(ValueError, match="pruning=none has nothing"):
        none(name="none", schedule="gradual", finetune_steps=10)
    with pytest.raises(ValueError, match="pruning.gradual_stages=8"):
        gm(name="global_magnitude", schedule="gradual", finetune_steps=10)
    s = gm(name="global_magnitude", amount=0.5, schedule="gradual", finetune_steps=400, distill=True)
    assert prune.describe(s) == "global_magnitude 0.5 gradual +400 steps distilled"


# Through run.py -----------------------------------------------------------------------------


@pytest.mark.slow
def test_a_gradual_distilled_sweep_calibrates_its_threshold_and_reports_each_step(tmp_path, tiny_bert_dir, squad_files):
    args = tiny_job_args(
        tiny_bert_dir,
        squad_files,
        "pruning=global_magnitude",
        "pruning.amount=0.5",
        "pruning.schedule=gradual",
        "pruning.gradual_stages=2",
        "pruning.finetune_steps=4",
        "pruning.finetune_batch_size=4",
        "pruning.distill=true",
        "predict.null_threshold=calibrate",
        "predict.threshold_questions=8",
        "quantization=none,onnx_int8",
        fine_tune=False,
    )
    result = run_in_process(["-m", *args], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    client, _ = logged_runs(tmp_path)
    jobs = [j for j in children(tmp_path) if j.data.tags["uncompressed"] == "false"]
    assert len(jobs) == 2 and all(j.info.status == "FINISHED" for j in jobs)
    # one recovery, shared: the second runtime's job quantizes the model the first one recovered
    assert sorted(j.data.tags["recovery_cache"] for j in jobs) == ["hit", "miss"]
    (trained,) = [j for j in jobs if j.data.tags["recovery_cache"] == "miss"]
    (reused,) = [j for j in jobs if j.data.tags["recovery_cache"] == "hit"]
    assert trained.data.tags["teacher_cache"] == "miss" and "teacher_cache" not in reused.data.tags
    assert reused.data.tags["recovered_by_run"] == trained.info.run_id
    for key in ("recovery_train_loss", "f1_before_recovery", "sparsity", "gradual_stages_applied"):
        assert reused.data.metrics[key] == trained.data.metrics[key]
    assert "evaluated it as run" in result.stdout  # the sweep had no uncompressed job: it evaluated one
    train_file, validation = squad_files
    evaluation_ids = set(squad.gold_answers(squad.load_squad_json(validation, "k").dataset))
    for job in jobs:
        m = job.data.metrics
        assert {"null_threshold", "threshold_split_f1", "f1_uncalibrated", "f1_before_recovery"} <= set(m)
        assert m["threshold_questions"] >= 8 and m["gradual_stages_applied"] == 2
        inputs = {i.dataset.name: i for i in client.get_run(job.info.run_id).inputs.dataset_inputs}
        split = inputs["squad_json/threshold"]
        assert {t.key: t.value for t in split.tags}["mlflow.data.context"] == "threshold"
        assert str(train_file) in split.dataset.source
    for predictions in (tmp_path / "sweep").glob("*/predictions.json"):
        assert set(json.loads(predictions.read_text())) == evaluation_ids  # evaluation answers, never the split's
    pruned = jobs[0]
    assert pruned.data.metrics["sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert pruned.info.run_name.startswith("0.5 gradual +4 steps distilled | ")
    (parent,) = [r for r in logged_runs(tmp_path)[1] if "mlflow.parentRunId" not in r.data.tags]
    table = Path(client.download_artifacts(parent.info.run_id, "report/report.md", str(tmp_path / "dl"))).read_text()
    for column in ("F1 before recovery", "F1 before threshold calibration", "best_f1 (oracle)"):
        assert column in table


def test_a_rerun_answers_as_its_recovery_did_and_a_changed_recovery_setting_recovers_anew(
    tmp_path, tiny_bert_dir, squad_files
):
    args = tiny_job_args(
        tiny_bert_dir,
        squad_files,
        "pruning=global_magnitude",
        "pruning.amount=0.5",
        "pruning.finetune_steps=3",
        "pruning.finetune_batch_size=4",
        fine_tune=False,
    )
    for extra in ([], ["force=true"], ["pruning.finetune_learning_rate=0.001"]):
        result = run_in_process([*args, *extra], tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
    first, again, changed = sorted(logged_runs(tmp_path)[1], key=lambda r: r.info.start_time)
    assert [r.data.tags["recovery_cache"] for r in (first, again, changed)] == ["miss", "hit", "miss"]
    assert again.data.tags["recovery_key"] == first.data.tags["recovery_key"] != changed.data.tags["recovery_key"]
    for key in ("f1", "exact", "HasAns_f1", "NoAns_f1", "sparsity", "recovery_train_loss"):
        assert again.data.metrics[key] == first.data.metrics[key]
    assert changed.data.metrics["recovery_train_loss"] != first.data.metrics["recovery_train_loss"]


def test_calibration_needs_training_data_left_to_train_on(tmp_path, tiny_bert_dir, squad_files):
    args = tiny_job_args(
        tiny_bert_dir, squad_files, "predict.null_threshold=calibrate", "predict.threshold_questions=100000"
    )
    assert_refused(run_in_process(args, tmp_path), tmp_path, "predict.threshold_questions=100000")


@pytest.mark.slow
@pytest.mark.parametrize("depth", [False, True], ids=["width", "depth_and_width_distilled_layer_wise"])
def test_staged_structured_pruning_with_distillation_saves_a_model_that_answers_as_logged(
    depth, tmp_path, tiny_bert_dir, squad_files, tokenizer
):
    from .test_pipeline import _answers_of_saved_model

    compound = ["pruning.layers_amount=0.5", "pruning.distill_hidden_weight=1.0"] if depth else []
    args = tiny_job_args(
        tiny_bert_dir,
        squad_files,
        "pruning=structured",
        "pruning.heads_amount=0.5",
        "pruning.schedule=gradual",
        "pruning.gradual_stages=3",
        "pruning.finetune_steps=6",
        "pruning.finetune_batch_size=4",
        "pruning.distill=true",
        *compound,
        "save_model=true",
        fine_tune=False,
    )
    result = run_in_process(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (job,) = logged_runs(tmp_path)[1]
    m = job.data.metrics
    layers = 1 if depth else 2  # of the tiny model's 2
    assert m["gradual_stages_applied"] == 3 and m["recovery_train_steps"] == 6
    assert m.get("layers_removed", 0) == 2 - layers
    assert m["heads_removed"] == layers and m["ffn_neurons_removed"] == layers * 32  # 1 of 2 heads, 32 of 64 neurons
    assert "f1_before_recovery" in m and job.data.tags["teacher_cache"] == "miss"
    saved = tmp_path / "run" / "model"
    config = json.loads((saved / "config.json").read_text())
    assert config["num_hidden_layers"] == layers and len(config.get("kept_layers") or [0, 1]) == layers
    assert {k: len(v) for k, v in config["pruned_heads"].items()} == {str(i): 1 for i in range(layers)}
    logged = json.loads((tmp_path / "run" / "predictions.json").read_text())
    assert _answers_of_saved_model(saved, squad_files[1], tokenizer, tmp_path / "cache") == logged


@pytest.mark.slow
def test_a_threshold_file_replaces_the_carved_questions_and_never_the_evaluation_file(
    tmp_path, tiny_bert_dir, squad_files
):
    train, validation = squad_files
    generated = json.loads(synthetic.write(tmp_path / "generated.json", 4, seed=7).read_text())
    for article in generated["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                qa["id"] = "held-out-" + qa["id"]  # generated ids repeat from file to file
    held_out = tmp_path / "held_out.json"
    held_out.write_text(json.dumps(generated))
    args = tiny_job_args(
        tiny_bert_dir,
        squad_files,
        "predict.null_threshold=calibrate",
        f"predict.threshold_file={held_out}",
        fine_tune=False,
    )
    result = run_in_process(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    client, (job,) = logged_runs(tmp_path)
    inputs = {i.dataset.name: i.dataset for i in client.get_run(job.info.run_id).inputs.dataset_inputs}
    assert str(held_out) in inputs["squad_json/threshold"].source and "squad_json/train" not in inputs
    held = squad.load_squad_json(held_out, "k").dataset
    assert job.data.metrics["threshold_questions"] == len(held)
    same = tiny_job_args(
        tiny_bert_dir,
        squad_files,
        "predict.null_threshold=calibrate",
        f"predict.threshold_file={validation}",
        fine_tune=False,
    )
    assert_refused(
        run_in_process(same, tmp_path / "again"),
        tmp_path / "again",
        f"predict.threshold_file={validation}: the same data as dataset.validation_file",
    )
