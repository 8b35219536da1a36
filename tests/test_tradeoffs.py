"""The benchmark script's own logic: which overrides reach which sweep, and paired speed-ups."""

import argparse
import json

import pytest

from qa_compress.job import bookkeeping
from qa_compress.job.config import from_hydra

from .conftest import ROOT, compose_config, load_benchmark


@pytest.fixture(scope="module")
def tradeoffs():
    return load_benchmark("tradeoffs")


@pytest.fixture(scope="module")
def common():
    return load_benchmark("common")


def test_set_values_reach_every_sweep_or_the_one_they_name(common):
    args = argparse.Namespace(set=["seed=3", "tradeoffs_unstructured:pruning.amount=0.5", "tracking.uri=sqlite:///x"])
    assert common.user_overrides(args, "tradeoffs_unstructured") == [
        "seed=3",
        "pruning.amount=0.5",
        "tracking.uri=sqlite:///x",
    ]
    assert common.user_overrides(args, "tradeoffs_quantization") == ["seed=3", "tracking.uri=sqlite:///x"]


def test_speedups_are_paired_round_by_round(common):
    times = {"fp32": [100.0, 200.0], "int8": [50.0, 80.0]}  # the second round ran on a slower machine state
    assert common.paired(times, "fp32") == {"fp32": [1.0, 1.0], "int8": [2.0, 2.5]}


def test_side_by_side_rounds_time_every_variant_once_each_in_a_fresh_order_when_seeded(common):
    calls = []
    variants = {name: (lambda name=name, **batch: calls.append(name)) for name in "abcde"}
    times = common.time_side_by_side(variants, {4: {}}, warmup=1, rounds=4, order_seed=0)
    assert {name: len(by_size[4]) for name, by_size in times.items()} == dict.fromkeys("abcde", 4)
    rounds = [calls[5 + 10 * n : 5 + 10 * (n + 1) : 2] for n in range(4)]  # after the warm-up, every other call
    assert all(sorted(order) == list("abcde") for order in rounds)
    assert len({tuple(order) for order in rounds}) > 1
    calls.clear()
    common.time_side_by_side(variants, {4: {}}, warmup=0, rounds=2)
    assert calls == [name for name in "abcde" for _ in range(2)] * 2  # unseeded: the same order every round


def test_the_int8_explanation_reads_the_profiles_and_the_cpu_flags(tradeoffs):
    fp32 = [
        ["FullyConnected (gemm_mlas_f32)", 300.0, 0.5],
        ["FullyConnected (brgemm_avx2_f32)", 200.0, 0.3],
        ["Subgraph (jit_avx2_f32)", 100.0, 0.2],
    ]
    slow = [["FullyConnected (jit_gemm_I8)", 750.0, 0.7], ["MatMul (jit_gemm_i8)", 70.0, 0.1]]
    without = {
        "cpu": "AMD EPYC (flags: avx2)",
        "profiled": {"none | openvino_fp32": fp32, "none | openvino_int8": slow},
    }
    (text, _) = tradeoffs.int8_explained(without)
    assert "none of avx512_vnni, avx_vnni, amx_int8" in text
    assert "750 ms" in text and "500 ms" in text and "1.50× slower" in text  # linear layers only, not MatMul
    fast = [["FullyConnected (brgemm_avx512_amx_I8)", 125.0, 0.5], ["Subgraph (jit_avx512_i8)", 90.0, 0.36]]
    amx = {
        "cpu": "Xeon (flags: avx2 avx512f avx512_vnni amx_int8)",
        "profiled": {"none | openvino_fp32": fp32, "none | openvino_int8": fast},
    }
    (text, _) = tradeoffs.int8_explained(amx)
    assert "it has avx512_vnni, amx_int8" in text and "4.00× faster" in text
    # Once the linear layers are fast, what is left of the pass is named, against its own FP32 time.
    assert "now 50% of the INT8 pass" in text and "`Subgraph (jit_avx512_i8)`, takes 90 ms against 100 ms" in text
    assert tradeoffs.int8_explained({"cpu": "x (flags: avx2)", "profiled": {}}) == []


def test_the_structured_int8_explanation_compares_each_operator_type_dense_and_pruned(tradeoffs):
    dense = [["FullyConnected (brgemm_avx512_I8)", 70.0, 0.5], ["Subgraph (jit_avx512_i8)", 50.0, 0.36]]
    pruned = [
        ["Subgraph (jit_avx512_i8)", 40.0, 0.4],
        ["FullyConnected (brgemm_avx512_I8)", 30.0, 0.3],
        ["FullyConnected (brgemm_avx512_f32)", 10.0, 0.1],
        ["MVN (jit_avx512_f32)", 5.0, 0.05],
    ]
    profiled = {
        "none | openvino_int8": dense,
        "structured heads 0.25 ffn 0.5 | openvino_int8": dense,
        "structured heads 0.25 ffn 0.5 +200 steps | openvino_int8": pruned,
    }
    (text, _) = tradeoffs.structured_int8_explained({"profiled": profiled})
    assert "`FullyConnected` from 70 to 40 ms (40% of the pruned pass)" in text  # kernels merged, recovered model
    assert "`Subgraph` from 50 to 40 ms (40% of the pruned pass)" in text and "MVN" not in text
    assert tradeoffs.structured_int8_explained({"profiled": {"none | openvino_int8": dense}}) == []


def test_the_onnx_static_explanation_compares_the_same_products_static_and_dynamic(tradeoffs):
    static = [["QAttention", 200.0, 0.4], ["QLinearMatMul", 220.0, 0.4], ["QuantizeLinear", 12.0, 0.02]]
    dynamic = [["DynamicQuantizeMatMul", 264.0, 0.5], ["QAttention", 200.0, 0.4]]
    timing = {"profiled": {"none | onnx_static_int8": static, "none | onnx_int8": dynamic}}
    (text, _) = tradeoffs.onnx_static_explained(timing)
    assert "as QLinearMatMul in 220 ms" in text and "as DynamicQuantizeMatMul in 264 ms" in text
    assert "1.20× as fast" in text  # products only: attention and quantize steps are left out
    assert "largest first: `QAttention` 200 ms (40% of the pass) and `QuantizeLinear` 12 ms (2% of the pass)" in text
    assert tradeoffs.onnx_static_explained({"profiled": {"none | onnx_int8": dynamic}}) == []


def test_a_reused_timing_is_described_with_the_settings_it_ran_with(tradeoffs, tmp_path):
    timing = {"cpu": "x (flags: avx2)", "settings": {"target_rounds": 20, "rounds": 10, "batch_size": 8}}
    (tmp_path / "timing.json").write_text(json.dumps(timing))
    args = argparse.Namespace(root=tmp_path, threads=2, batch_size=16, warmup=3, rounds=10, target_rounds=30)
    assert tradeoffs.reuse_timing(args)["cpu"] == "x (flags: avx2)"
    assert (args.target_rounds, args.rounds, args.batch_size) == (20, 10, 8)


def test_the_experiments_it_runs_exist_and_the_unstructured_methods_come_from_the_registry(tradeoffs, common):
    for experiment in tradeoffs.EXPERIMENTS:
        assert (ROOT / "conf" / "experiment" / f"{experiment}.yaml").is_file()
    assert set(common.UNSTRUCTURED) == {"l1_unstructured", "global_magnitude", "random"}


def test_the_bf16_sweep_runs_only_where_the_cpu_has_bf16_and_says_why_it_did_not(tradeoffs, monkeypatch):
    from qa_compress import quantize

    everything = argparse.Namespace(only=None)
    monkeypatch.setattr(quantize, "cpu_has_bf16", lambda: False)
    assert tradeoffs.experiments(everything)["tradeoffs_bf16"] == "this CPU has neither AVX512-BF16 nor AMX"
    assert tradeoffs.experiments(everything)["tradeoffs_quantization"] is None
    monkeypatch.setattr(quantize, "cpu_has_bf16", lambda: True)
    assert set(tradeoffs.experiments(everything).values()) == {None}
    only = tradeoffs.experiments(argparse.Namespace(only=["tradeoffs_qat"]))
    assert only["tradeoffs_qat"] is None and only["tradeoffs_bf16"] == "--only"


@pytest.fixture(scope="module")
def recovery(tradeoffs):
    return load_benchmark("recovery")


def test_the_recovery_section_replaces_its_old_self_and_survives_a_rewrite_of_the_rest(common, recovery, tmp_path):
    for experiment in recovery.EXPERIMENTS:
        assert (ROOT / "conf" / "experiment" / f"{experiment}.yaml").is_file()
    section = f"{recovery.BEGIN}\nnew figures\n{recovery.END}\n"
    old = f"# Benchmarks\n\ntimings\n\n{recovery.BEGIN}\nold figures\n{recovery.END}\n\ntail\n"
    document = tmp_path / "BENCHMARKS.md"
    for before, after in [
        (old, old.replace("old figures", "new figures")),
        ("# Benchmarks\n", f"# Benchmarks\n\n{section}"),
    ]:
        document.write_text(before)
        common.write_section(document, recovery.BEGIN, recovery.END, section)
        assert document.read_text() == after
    rewritten = common.keep_sections("# Benchmarks\n\nnew timings\n", old)
    assert rewritten == f"# Benchmarks\n\nnew timings\n\n{recovery.BEGIN}\nold figures\n{recovery.END}\n"
    assert common.keep_sections("# B\n", "# B\n") == "# B\n"


def test_a_missed_f1_bound_says_whether_the_questions_could_tell(tradeoffs):
    unsure = tradeoffs._bound_missed(-0.56 - 0.5, 0.5, (-1.92, -0.24))
    assert unsure.startswith("F1 lost 0.56 beyond the bound") and "cannot tell" in unsure
    sure = tradeoffs._bound_missed(-3.0, 1.0, (-4.1, -1.9))
    assert sure == "F1 lost 2.00 beyond the bound (its whole 95% interval is beyond it)"
    assert tradeoffs._bound_missed(-3.0, 1.0, None) == "F1 lost 2.00 beyond the bound"


def test_a_missed_speed_target_says_whether_the_rounds_could_tell(tradeoffs):
    assert tradeoffs._speed_missed(2.71, 3.0, (2.55, 3.02)) == (
        "speed short by 0.29× (its 95% interval reaches 3.02×: these rounds cannot tell)"
    )
    assert (
        tradeoffs._speed_missed(1.47, 2.0, (1.40, 1.55)) == "speed short by 0.53× (its whole 95% interval is below it)"
    )


@pytest.fixture(scope="module")
def compound(tradeoffs):
    return load_benchmark("compound")


def test_each_step_of_the_compound_recipe_is_the_job_it_is_named_for(compound):
    jobs = {step: from_hydra(compose_config(["experiment=compound", *o])) for step, o in compound.STEPS.items()}
    assert bookkeeping.is_uncompressed(jobs[compound.UNCOMPRESSED])
    stack = jobs["depth + width, recovered + static INT8, OpenVINO"]
    assert stack.pruning.layers_amount > 0 and stack.pruning.heads_amount > 0 and stack.pruning.distill_hidden_weight
    assert stack.quantization.name == "openvino_int8" and stack.predict.null_threshold == "calibrate"
    depth = jobs["depth, recovered"].pruning
    assert depth.layers_amount > 0 and depth.heads_amount == depth.ffn_amount == 0 and depth.finetune_steps
    width = jobs["width, recovered"].pruning
    assert width.layers_amount == 0 and width.heads_amount > 0 and width.finetune_steps
    assert not bookkeeping.is_uncompressed(jobs["static INT8, OpenVINO"])


def test_a_compound_target_is_met_by_the_fastest_step_within_its_loss(compound):
    args = argparse.Namespace(batch_size=16)
    speedups = {
        "uncompressed": {16: [1.0] * 3, 1: [1.0] * 3},
        "fast but wrong": {16: [20.0] * 3, 1: [20.0] * 3},
        "close": {16: [11.0, 12.0, 10.5], 1: [4.0] * 3},
        "closest": {16: [7.0] * 3, 1: [6.0] * 3},
    }
    changes = {
        "uncompressed": (0.0, None),
        "fast but wrong": (-3.0, None),
        "close": (-0.8, None),
        "closest": (0.2, None),
    }
    lines = compound.target_lines(args, speedups, changes, {})
    assert lines[0].startswith("- ≥ 10× within 1 F1 at batch 16: met, close: 11.00×")
    assert lines[1].startswith("- ≥ 6× within 0.5 F1 at batch 16: met, closest: 7.00×")
    assert lines[2].startswith("- ≥ 5× within 1 F1 at batch 1: met, closest: 6.00×")
    changes["closest"] = (-0.6, None)
    assert compound.target_lines(args, speedups, changes, {})[1].endswith(
        "missed, no step stays within 0.5 F1 (the fastest, fast but wrong, 20.00× at ΔF1 -3.00)"
    )


def test_a_missed_compound_speed_target_names_the_operators_that_take_its_pass(compound):
    args = argparse.Namespace(batch_size=16)
    speedups = {"uncompressed": {16: [1.0], 1: [1.0]}, "stack": {16: [4.0], 1: [2.0]}}
    changes = {"uncompressed": (0.0, None), "stack": (-0.2, None)}
    # (operator, ms per pass, share of the pass): 100 ms uncompressed; the stack 25 ms, 15 of them outside products
    profiles = {
        "uncompressed": {16: [("aten::addmm", 80.0, 0.8), ("aten::gelu", 20.0, 0.2)], 1: [("aten::addmm", 10.0, 1.0)]},
        "stack": {
            16: [
                ("FullyConnected (jit_avx512_amx_I8)", 10.0, 0.4),
                ("Subgraph (jit)", 9.0, 0.36),
                ("Softmax (jit)", 6.0, 0.24),
            ],
            1: [("FullyConnected (jit)", 5.0, 1.0)],
        },
    }
    line = compound.target_lines(args, speedups, changes, profiles)[0]
    assert line.startswith("- ≥ 10× within 1 F1 at batch 16: missed, stack: 4.00×")
    assert "its pass takes 25.0 ms where 10× allows 10.0 ms (the uncompressed pass: 100.0 ms)" in line
    assert line.endswith("most of it: `FullyConnected` 10.0 ms, `Subgraph` 9.0 ms, `Softmax` 6.0 ms")
