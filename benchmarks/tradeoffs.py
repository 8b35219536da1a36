"""Head-to-head timing, operator profiles and the targets behind BENCHMARKS.md.

    python benchmarks/tradeoffs.py                      # sweeps (reused when finished), timing, BENCHMARKS.md
    python benchmarks/tradeoffs.py --skip-sweeps        # time and write only

1. Accuracy and size: the experiments `tradeoffs_quantization`, `tradeoffs_unstructured` and
   `tradeoffs_structured` (conf/experiment/), run as `run.py -m experiment=...` sweeps into the
   `tradeoffs` MLflow experiment under --root; every job saves its compressed model. Finished
   jobs are reused on a rerun (their configuration hash matches).
2. Speed: every saved model is loaded into this one process and timed in interleaved rounds at
   batch 1 and at --batch-size on real evaluation windows, threads fixed, after warm-up; each
   round gives each variant a paired ratio against the uncompressed model, so drift common to
   a round cancels. The variants with targets are then timed head to head, alone with the
   uncompressed model, for --target-rounds rounds.
3. The tables (the sweeps' own report rows plus the timing), the targets and the profiles go to
   --out, with the CPU model and its instruction-set flags.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from mlflow.tracking import MlflowClient

from qa_compress import quantize
from qa_compress.data import squad
from qa_compress.evaluate import bootstrap, score
from qa_compress.evaluate.timing import cpu_description
from qa_compress.sweep import tables
from qa_compress.tracking import results, runs

from common import (
    ROOT,
    SHARED,
    UNSTRUCTURED,
    by_kind,
    eval_batches,
    int8_mode,
    keep_sections,
    kind,
    label,
    overrides,
    paired,
    pass_ms,
    profile,
    recovered,
    store,
    summed,
    time_side_by_side,
)

EXPERIMENTS = (
    "tradeoffs_quantization",
    "tradeoffs_unstructured",
    "tradeoffs_structured",
    "tradeoffs_qat",
    "tradeoffs_accuracy_control",
    "tradeoffs_bf16",
)
NEEDS_BF16 = ("tradeoffs_bf16",)  # run only where the CPU has AVX512-BF16 or AMX (run.py refuses them elsewhere)
RUNTIME_FP32 = "openvino_fp32"  # the fastest FP32 runtime: speed-ups are also given against it
TARGETS = {  # name: (pruning, quantization, recovery steps > 0, OpenVINO INT8 mode), speed-up at --batch-size,
    # speed-up against OpenVINO FP32, F1 change bound
    "dynamic_int8": (("none", "dynamic_int8", False, None), 1.6, None, 1.0),
    "onnx_int8": (("none", "onnx_int8", False, None), 2.0, None, 1.0),
    "onnx_static_int8": (("none", "onnx_static_int8", False, None), 2.0, None, 1.0),
    "openvino_fp32": (("none", "openvino_fp32", False, None), None, None, None),
    "openvino_int8": (("none", "openvino_int8", False, "post-training"), 3.0, 2.0, 1.0),
    "openvino_int8, accuracy control": (("none", "openvino_int8", False, "accuracy control"), None, None, 1.0),
    "openvino_int8, QAT": (("none", "openvino_int8", False, "QAT"), None, None, 0.5),
    "bf16": (("none", "bf16", False, None), None, None, None),  # tradeoffs_bf16, where the CPU has bf16
    "openvino_bf16": (("none", "openvino_bf16", False, None), None, None, None),
    "structured + recovery": (("structured", "none", True, None), 1.4, None, 5.0),
    "structured + recovery + openvino_int8": (("structured", "openvino_int8", True, "post-training"), 4.5, None, 2.0),
    "structured, no recovery": (("structured", "none", False, None), None, None, None),
}


# Sweeps ----------------------------------------------------------------------------------------


def experiments(args: argparse.Namespace) -> dict[str, str | None]:
    """Each experiment, and why it is left out this time (None: it runs): --only, or a CPU without bf16."""
    bf16 = quantize.cpu_has_bf16()
    return {
        e: "--only"
        if args.only and e not in args.only
        else "this CPU has neither AVX512-BF16 nor AMX"
        if e in NEEDS_BF16 and not bf16
        else None
        for e in EXPERIMENTS
    }


def run_sweeps(args: argparse.Namespace) -> None:
    for experiment, left_out in experiments(args).items():
        if left_out:
            continue
        command = [
            sys.executable,
            str(ROOT / "run.py"),
            "-m",
            f"experiment={experiment}",
            *overrides(args, experiment),
            f"hydra.sweep.dir={args.root.resolve() / 'sweeps' / experiment}",
        ]
        if args.force:
            command.append("force=true")
        print("$", " ".join(command), flush=True)
        subprocess.run(command, cwd=ROOT, check=True)


def collect(args: argparse.Namespace) -> list[results.Job]:
    """The jobs of the latest sweep of each experiment, every one finished; a variant two sweeps both ran
    (each sweep's uncompressed reference) is kept once, from the first."""
    client = MlflowClient(store(args))
    jobs = []
    args.included, args.left_out = [], {}
    for experiment, left_out in experiments(args).items():
        if left_out:
            print(f"experiment={experiment}: left out ({left_out})", flush=True)
            args.left_out[experiment] = left_out
            continue
        parent = runs.sweep_parent(args.root.resolve() / "sweeps" / experiment)
        if parent is None:
            raise SystemExit(f"no sweep of experiment={experiment} under {args.root}; run without --skip-sweeps")
        jobs += results.sweep_jobs(client, parent)
        args.included.append(experiment)
    unfinished = [job.name for job in jobs if job.status != "FINISHED"]
    if unfinished:
        raise SystemExit(f"these jobs did not finish: {unfinished}")
    kept: dict[str, results.Job] = {}
    for job in jobs:
        kept.setdefault(label(job), job)
    return list(kept.values())


# Timing ----------------------------------------------------------------------------------------


def target_jobs(jobs: list[results.Job]) -> dict[str, results.Job | None]:
    """The uncompressed job, then the variant each target is about (None where it was not run)."""

    def find(pruning: str, quantization: str, with_recovery: bool, mode: str | None) -> results.Job | None:
        return next(
            (
                j
                for j in jobs
                if j.pruning == pruning
                and j.quantization == quantization
                and recovered(j) == with_recovery
                and int8_mode(j) == mode
            ),
            None,
        )

    uncompressed = next((j for j in jobs if j.uncompressed), None)
    if uncompressed is None:
        raise SystemExit("no uncompressed job among these sweeps: nothing to time the variants against")
    return {"uncompressed": uncompressed, **{name: find(*variant) for name, (variant, *_) in TARGETS.items()}}


TIMING_SETTINGS = ("threads", "batch_size", "warmup", "rounds", "target_rounds")  # what the text says of the timing


def reuse_timing(args: argparse.Namespace) -> dict:
    """The last timing run's figures, with its settings put back in `args` so the text describes that run."""
    timing = json.loads((args.root / "timing.json").read_text())
    for key, value in timing.get("settings", {}).items():
        setattr(args, key, value)
    return timing


def time_and_profile(args: argparse.Namespace, jobs: list[results.Job]) -> dict:
    """Latencies of every saved model side by side, head-to-head speed-ups of the targets, and profiles."""
    client = MlflowClient(store(args))
    with tempfile.TemporaryDirectory() as scratch:
        variants = {}
        for job in jobs:
            local = Path(client.download_artifacts(job.run_id, "model", str(Path(scratch) / job.run_id)))
            variants[job.run_id] = quantize.load(local, torch.get_num_threads())
        batches = eval_batches(args, args.model, sorted({1, args.batch_size}))
        print(f"Timing {len(variants)} models side by side ({args.rounds} rounds)...", flush=True)
        times = time_side_by_side(variants, batches, args.warmup, args.rounds)
        contenders = [j.run_id for j in target_jobs(jobs).values() if j is not None]
        print(f"Timing the {len(contenders)} target variants head to head ({args.target_rounds} rounds)...", flush=True)
        contending = {run: variants[run] for run in contenders}
        head_to_head = time_side_by_side(contending, {args.batch_size: batches[args.batch_size]}, 1, args.target_rounds)
        profiled = {
            label(job): profile(variants[job.run_id], batches[args.batch_size], passes=3)
            for job in jobs
            if job.pruning in ("none", "structured") and (not recovered(job) or job.quantization == "openvino_int8")
        }
    at_batch = {run: t[args.batch_size] for run, t in head_to_head.items()}
    runtime_fp32 = target_jobs(jobs).get(RUNTIME_FP32)
    timing = {
        "latency": {run: {b: float(np.median(t)) for b, t in by_size.items()} for run, by_size in times.items()},
        "speedups": paired(at_batch, contenders[0]),
        "speedups_vs_runtime_fp32": paired(at_batch, runtime_fp32.run_id) if runtime_fp32 else {},
        "profiled": profiled,
        "cpu": cpu_description(),
        "settings": {key: getattr(args, key) for key in TIMING_SETTINGS},
    }
    (args.root / "timing.json").write_text(json.dumps(timing))
    return json.loads(json.dumps(timing))  # the same shape as a reused timing.json (keys as strings)


# BENCHMARKS.md -----------------------------------------------------------------------------------


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def header(args: argparse.Namespace, jobs: list[results.Job], timing: dict, command: str) -> list[str]:
    base = next(j for j in jobs if j.uncompressed).metrics
    return [
        "# Measured trade-offs",
        "",
        f"Produced by `{command}` on {datetime.date.today().isoformat()}."
        + (" Accuracy and sizes come from the finished sweeps, reused from MLflow." if args.skip_sweeps else "")
        + (" Latency and profiles are those of the last timing run (`timing.json`)." if args.reuse_timing else ""),
        "",
        f"- Model: `{args.model}` (MiniLM-L6 fine-tuned for SQuAD 2.0), evaluated on `{args.eval}` "
        f"({int(base['eval_features'])} windows of {args.max_seq_length} tokens, stride {args.doc_stride}"
        + (f", first {args.max_eval_samples} questions" if args.max_eval_samples else "")
        + ").",
        f"- Sweeps: `python run.py -m experiment=...` for {', '.join(f'`{e}`' for e in args.included)} "
        "(conf/experiment/)"
        + (
            f"; not run this time: {', '.join(f'`{e}` ({why})' for e, why in args.left_out.items())}."
            if args.left_out
            else "."
        ),
        f"- Machine: {timing['cpu']}, {os.cpu_count()} logical CPUs; {args.threads} threads for PyTorch and ONNX "
        "Runtime. Every speed figure of this script's sections comes from this CPU (the sections other benchmark "
        "scripts write below name their own); INT8 and bf16 speed-ups differ a lot between CPUs, "
        "and so, by tenths of a point, does the F1 of the INT8 variants (they are calibrated and run with that "
        "CPU's kernels).",
        "- Versions: "
        + ", ".join(f"{p} {_version(p)}" for p in ("torch", "transformers", "onnxruntime", "onnx", "openvino", "nncf")),
        f"- Latency: median of {args.rounds} interleaved rounds (each variant: one untimed pass, then the timed "
        f"one) after {args.warmup} warm-up passes, one process, batch 1 and batch {args.batch_size}, real "
        f"evaluation windows padded to {args.max_seq_length}; ×: the uncompressed time over this one (higher is "
        "faster). samples/s counts questions.",
        "- Sizes: `size_mb` is the model as stored (safetensors, the ONNX file, or OpenVINO IR .xml + .bin); "
        "`size_gzip_mb` the same bytes "
        "gzipped; ×: the uncompressed size over this one.",
        "",
    ]


def tradeoff_rows(args: argparse.Namespace, jobs: list[results.Job], timing: dict) -> list[dict[str, object]]:
    """The sweep report's columns for each job, plus its timing against the uncompressed model."""
    base_job = next(j for j in jobs if j.uncompressed)
    base, base_latency = base_job.metrics, timing["latency"][base_job.run_id]
    b, rows = str(args.batch_size), []
    for job, row in zip(jobs, tables.rows(jobs), strict=True):
        m, latency = job.metrics, timing["latency"][job.run_id]
        windows_per_question = m["eval_features"] / m["total"]
        rows.append(
            {
                "pruning": row["pruning"],
                "quantization": label(job).split(" | ", 1)[1],
                "F1": f"{m['f1']:.2f}",
                "HasAns F1": f"{m.get('HasAns_f1', np.nan):.2f}",
                "NoAns F1": f"{m.get('NoAns_f1', np.nan):.2f}",
                "ΔF1": f"{row['Δf1']:+.2f}",
                "size MB": f"{m['size_mb']:.1f}",
                "size ×": f"{base['size_mb'] / m['size_mb']:.2f}",
                "gzip MB": f"{m['size_gzip_mb']:.1f}",
                "gzip ×": f"{base['size_gzip_mb'] / m['size_gzip_mb']:.2f}",
                "params non-zero": f"{int(m['params_nonzero']):,}",
                "bs1 ms": f"{latency['1']:.1f}",
                "bs1 ×": f"{base_latency['1'] / latency['1']:.2f}",
                f"bs{b} ms": f"{latency[b]:.1f}",
                f"bs{b} ×": f"{base_latency[b] / latency[b]:.2f}",
                "samples/s": f"{args.batch_size / (latency[b] / 1e3) / windows_per_question:.1f}",
            }
        )
    return rows


def recovery_rows(jobs: list[results.Job]) -> list[dict[str, object]]:
    return [
        {
            "pruning": job.pruning_label,
            "quantization": job.quantization,
            **{
                f"{name} before": f"{job.metrics.get(f'{key}_before_recovery', np.nan):.2f}"
                for name, key in (("F1", "f1"), ("HasAns", "HasAns_f1"), ("NoAns", "NoAns_f1"))
            },
            "F1 after": f"{job.metrics['f1']:.2f}",
            "HasAns after": f"{job.metrics.get('HasAns_f1', np.nan):.2f}",
            "NoAns after": f"{job.metrics.get('NoAns_f1', np.nan):.2f}",
            "sparsity before": f"{job.metrics['sparsity_before_recovery']:.4f}",
            "sparsity after": f"{job.metrics['sparsity']:.4f}",
        }
        for job in jobs
        if "f1_before_recovery" in job.metrics
    ]


def int8_rows(jobs: list[results.Job]) -> list[dict[str, object]]:
    """What accuracy control and quantization-aware training did, beside post-training INT8."""
    rows = []
    for job in jobs:
        mode, m = int8_mode(job), job.metrics
        if mode is None or job.pruning != "none":
            continue
        rows.append(
            {
                "variant": mode,
                "F1": f"{m['f1']:.2f}",
                "HasAns": f"{m.get('HasAns_f1', np.nan):.2f}",
                "NoAns": f"{m.get('NoAns_f1', np.nan):.2f}",
                "F1 before QAT (its own post-training start)": f"{m['f1_before_qat']:.2f}"
                if "f1_before_qat" in m
                else "",
                "held-out F1 FP32 → INT8": f"{m['held_out_f1_fp32']:.2f} → {m['held_out_f1_int8']:.2f}"
                if "held_out_f1_fp32" in m
                else "",
                "MatMuls kept FP32": f"{int(m.get('float_matmuls', 0))} of {int(m['matmuls'])}"
                if "matmuls" in m
                else f"{int(m.get('float_matmuls', 0))}",
            }
        )
    return rows


def curve_rows(jobs: list[results.Job]) -> list[dict[str, object]]:
    """F1 (HasAns / NoAns) of each unstructured method at each amount."""
    curves = {m: {float(j.params["pruning.amount"]): j.metrics for j in jobs if j.pruning == m} for m in UNSTRUCTURED}
    amounts = sorted({a for curve in curves.values() for a in curve})
    return [
        {
            "amount": f"{a:g}",
            **{
                f"{m} F1 (HasAns / NoAns)": ""
                if a not in curves[m]
                else f"{curves[m][a]['f1']:.2f} ({curves[m][a].get('HasAns_f1', np.nan):.2f} / "
                f"{curves[m][a].get('NoAns_f1', np.nan):.2f})"
                for m in UNSTRUCTURED
            },
        }
        for a in amounts
    ]


def question_f1(client: MlflowClient, job: results.Job, gold: Callable[[], score.Gold]) -> dict[str, float]:
    """A job's F1 on each evaluation question: its `question_f1.json`, or its answers rescored against `gold()`
    (for jobs logged before jobs kept that file)."""
    scores = results.question_f1(client, job.run_id)
    if scores is None:
        with tempfile.TemporaryDirectory() as directory:
            answers = json.loads(Path(client.download_artifacts(job.run_id, "predictions.json", directory)).read_text())
        scores = bootstrap.question_f1(gold(), answers)
    return scores


def _speed_missed(speedup: float, target: float, interval: tuple[float, float]) -> str:
    """How far below a speed target a median speed-up is, and whether the rounds could tell."""
    miss = f"speed short by {target - speedup:.2f}×"
    if interval[1] >= target:
        return f"{miss} (its 95% interval reaches {interval[1]:.2f}×: these rounds cannot tell)"
    return f"{miss} (its whole 95% interval is below it)"


def _bound_missed(change: float, bound: float, interval: tuple[float, float] | None) -> str:
    """How far beyond an F1 bound a change is, and whether the questions could tell."""
    miss = f"F1 lost {-change - bound:.2f} beyond the bound"
    if interval is None:
        return miss
    if interval[1] >= -bound:
        return f"{miss} (its 95% interval reaches {interval[1]:+.2f}: within the bound, so these questions cannot tell)"
    return f"{miss} (its whole 95% interval is beyond it)"


def targets(args: argparse.Namespace, jobs: list[results.Job], timing: dict) -> list[str]:
    """Each target against the head-to-head figures: met or missed, and by how much."""
    chosen = target_jobs(jobs)
    baseline = chosen.pop("uncompressed")
    client = MlflowClient(store(args))
    gold = functools.cache(lambda: squad.gold_answers(squad.load_squad_json(args.eval, "--eval").dataset))  # read once
    scores = {job.run_id: question_f1(client, job, gold) for job in [baseline, *chosen.values()] if job is not None}
    rows = []
    for name, job in chosen.items():
        if job is None:
            continue
        _, speed_target, runtime_target, f1_bound = TARGETS[name]
        ratios = timing["speedups"][job.run_id]
        speedup, (low, high) = float(np.median(ratios)), bootstrap.interval(ratios, np.median)
        over_runtime = timing.get("speedups_vs_runtime_fp32", {}).get(job.run_id)
        runtime_speedup = float(np.median(over_runtime)) if over_runtime else None
        change = job.metrics["f1"] - baseline.metrics["f1"]
        interval = bootstrap.change_interval(scores[job.run_id], scores[baseline.run_id])
        misses = []
        if speed_target is not None and speedup < speed_target:
            misses.append(_speed_missed(speedup, speed_target, (low, high)))
        if runtime_target is not None and runtime_speedup is not None and runtime_speedup < runtime_target:
            misses.append(f"{runtime_speedup:.2f}× over OpenVINO FP32, short of {runtime_target}×")
        if f1_bound is not None and -change > f1_bound:
            misses.append(_bound_missed(change, f1_bound, interval))
        if name == "openvino_int8, QAT" and chosen.get("openvino_int8") is not None:
            post_training = chosen["openvino_int8"]
            if job.metrics["f1"] < post_training.metrics["f1"]:
                against = bootstrap.change_interval(scores[job.run_id], scores[post_training.run_id])
                behind = tables.f1_change(job.metrics["f1"] - post_training.metrics["f1"], against)
                misses.append(f"F1 {behind} against post-training INT8")
        checked = speed_target is not None or f1_bound is not None
        rows.append(
            {
                "variant": name,
                f"speed-up at batch {args.batch_size} [95% interval]": f"{speedup:.2f}× [{low:.2f}, {high:.2f}]",
                "over OpenVINO FP32": "" if runtime_speedup is None else f"{runtime_speedup:.2f}×",
                "target": ""
                if speed_target is None
                else f"≥ {speed_target}×"
                + ("" if runtime_target is None else f", ≥ {runtime_target}× over OpenVINO FP32"),
                "F1 change [95% interval]": tables.f1_change(change, interval),
                "F1 bound": "" if f1_bound is None else f"within {f1_bound}",
                "size ×": f"{baseline.metrics['size_mb'] / job.metrics['size_mb']:.2f}",
                "met?": "(reported)" if not checked else "yes" if not misses else "no: " + "; ".join(misses),
            }
        )
    return [
        "## Targets",
        "",
        f"Speed-ups from a separate head-to-head timing of just these variants and the uncompressed model: "
        f"{args.target_rounds} interleaved rounds at batch {args.batch_size}; each round's paired ratio (the "
        "uncompressed time of that round over the variant's) cancels drift common to the round. Median, in brackets "
        "its 95% interval from resampling the rounds (where it reaches a target, these rounds cannot tell whether "
        "the target is met). F1 change: against the uncompressed model, in brackets its 95% interval "
        f"from a paired bootstrap over the evaluation questions ({bootstrap.RESAMPLES:,} resamples; "
        "`qa_compress/bootstrap.py`): where it reaches both sides of a bound, these questions cannot tell whether the "
        "bound is met.",
        "",
        tables.markdown(rows),
        *int8_explained(timing),
        *structured_int8_explained(timing),
        *onnx_static_explained(timing),
    ]


INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")  # the instructions that give INT8 matrix multiplies a fast path


def linear_time(ops: list) -> tuple[float, list[str]]:
    """Milliseconds per pass in an OpenVINO profile's linear layers (FullyConnected), and their kernels."""
    ms, names = summed(ops, lambda op: op.startswith("FullyConnected"))
    return ms, sorted({name.split("(", 1)[1].rstrip(")") for name in names if "(" in name})


def rest_of_pass(int8: list, fp32: list, linear: float) -> str:
    """What caps INT8's whole-model speed-up once its linear layers (`linear` ms) are fast: the largest other
    operator, in INT8 and in FP32, and the share of the INT8 pass the linear layers still take (Amdahl's law)."""
    total = pass_ms(int8)
    others = [(op, ms) for op, ms, _ in int8 if not op.startswith("FullyConnected")]
    if not total or not others:
        return ""
    op, ms = others[0]
    fp32_ms = next((m for o, m, _ in fp32 if kind(o) == kind(op)), None)
    return (
        f"The linear layers are now {linear / total:.0%} of the INT8 pass; the largest other operator, "
        f"`{op}`, takes {ms:.0f} ms"
        + (f" against {fp32_ms:.0f} ms in FP32" if fp32_ms else "")
        + ", and what INT8 does not speed up bounds the whole model's speed-up."
    )


def int8_explained(timing: dict) -> list[str]:
    """Why INT8 is or is not faster on the CPU that timed it, read from the OpenVINO profiles: the same runtime's
    linear layers in INT8 and in FP32, and the CPU's INT8 instruction-set flags."""
    profiled = timing.get("profiled", {})
    int8, fp32 = profiled.get("none | openvino_int8"), profiled.get(f"none | {RUNTIME_FP32}")
    if not int8 or not fp32:
        return []
    (int8_ms, int8_kernels), (fp32_ms, fp32_kernels) = linear_time(int8), linear_time(fp32)
    flags = timing["cpu"].split("flags:", 1)[-1].rstrip(")").split()
    present = [flag for flag in INT8_FLAGS if flag in flags]
    missing = f"none of {', '.join(INT8_FLAGS)}, the instructions that give INT8 matrix multiplies a fast path"
    cpu = f"it has {', '.join(present) if present else missing}"
    return [
        f"Where INT8 stands on this CPU, {timing['cpu']}: {cpu}. In the profiles below, OpenVINO's INT8 model "
        f"spends {int8_ms:.0f} ms per pass in its linear layers (kernels {', '.join(int8_kernels)}) against "
        f"{fp32_ms:.0f} ms for the same layers in FP32 ({', '.join(fp32_kernels)}): "
        + (
            f"INT8 makes them {fp32_ms / int8_ms:.2f}× faster. " + rest_of_pass(int8, fp32, int8_ms)
            if int8_ms < fp32_ms
            else f"INT8 makes them {int8_ms / fp32_ms:.2f}× slower, so the INT8 speed targets cannot be met here; "
            "measure them on a CPU with VNNI or AMX."
        ),
        "",
    ]


def structured_int8_explained(timing: dict) -> list[str]:
    """What structured pruning removes from the INT8 pass, read from the OpenVINO profiles of the dense and the
    pruned, recovered INT8 models: each of the pruned pass's two largest operator types, before and after."""
    profiled = timing.get("profiled", {})
    dense = profiled.get("none | openvino_int8")
    recovered_int8 = [
        ops
        for name, ops in profiled.items()
        if name.startswith("structured") and "steps" in name and name.endswith("| openvino_int8")
    ]
    pruned = recovered_int8[0] if recovered_int8 else []
    total = pass_ms(pruned)
    if not dense or not total:
        return []
    before, after = by_kind(dense), by_kind(pruned)
    largest = sorted((op for op in after if op in before), key=lambda op: -after[op])[:2]
    changes = ", ".join(
        f"`{op}` from {before[op]:.0f} to {after[op]:.0f} ms ({after[op] / total:.0%} of the pruned pass)"
        for op in largest
    )
    return [
        f"Structured pruning on top of OpenVINO INT8 (profiles of the dense and the pruned, recovered INT8 models, "
        f"ms per pass): {changes}. Removing FFN neurons and heads shrinks the linear layers (FullyConnected); "
        "the fused attention (`Subgraph`, OpenVINO's ScaledDotProductAttention) shrinks only with the heads "
        "removed, over the whole sequence, so what is left of it bounds the pruned model's speed-up.",
        "",
    ]


ORT_INT8_PRODUCTS = ("MatMulIntegerToFloat", "QLinearMatMul", "DynamicQuantizeMatMul", "MatMulInteger", "MatMulNBits")


def onnx_static_explained(timing: dict) -> list[str]:
    """What calibrating the activations buys in ONNX Runtime, read from its profiles: the time of the same matrix
    products in `onnx_static_int8` (int8 in, ranges fixed ahead) and `onnx_int8` (quantized at run time)."""
    profiled = timing.get("profiled", {})
    static, dynamic = profiled.get("none | onnx_static_int8"), profiled.get("none | onnx_int8")
    if not static or not dynamic:
        return []
    (static_ms, static_ops), (dynamic_ms, dynamic_ops) = (
        summed(ops, ORT_INT8_PRODUCTS.__contains__) for ops in (static, dynamic)
    )
    if not static_ops or not dynamic_ops:
        return []
    return [
        f"In ONNX Runtime, `onnx_static_int8` runs its matrix products as {', '.join(static_ops)} in "
        f"{static_ms:.0f} ms per pass, `onnx_int8` the same products as {', '.join(dynamic_ops)} in "
        f"{dynamic_ms:.0f} ms: ranges calibrated ahead of time make them {dynamic_ms / static_ms:.2f}× as fast as "
        "quantizing activations at run time; attention and the embedding are quantized alike in both."
        + rest_of_static_pass(static),
        "",
    ]


def rest_of_static_pass(static: list) -> str:
    """What calibration does not reach in the static pass: its two largest operators other than the products."""
    others = [(op, ms, share) for op, ms, share in static if op not in ORT_INT8_PRODUCTS][:2]
    if not others:
        return ""
    named = " and ".join(f"`{op}` {ms:.0f} ms ({share:.0%} of the pass)" for op, ms, share in others)
    return f" The rest of the static pass is what calibration does not reach, largest first: {named}."


def profiles(args: argparse.Namespace, timing: dict) -> list[str]:
    lines = [
        f"## Where the time goes (batch {args.batch_size}, {args.threads} threads)",
        "",
        "Top operators by self time per forward pass (torch.profiler for PyTorch, the session profiler for "
        "ONNX Runtime; profiling adds overhead, so read the shares, not the absolute times).",
        "",
    ]
    for name, ops in timing["profiled"].items():
        rows = [{"operator": f"`{op}`", "ms per pass": f"{ms:.1f}", "share": f"{share:.0%}"} for op, ms, share in ops]
        lines += [f"**{name.replace(' | ', ' + ')}**", "", tables.markdown(rows)]
    return lines


def write(args: argparse.Namespace, jobs: list[results.Job], timing: dict, command: str) -> str:
    dense = [
        float(r[f"bs{args.batch_size} ×"])
        for j, r in zip(jobs, tradeoff_rows(args, jobs, timing), strict=True)
        if j.pruning in UNSTRUCTURED
    ]
    sections = [
        *header(args, jobs, timing, command),
        tables.markdown(tradeoff_rows(args, jobs, timing)),
        *(
            [
                f"Timing noise: the {len(dense)} unstructured-pruned models do exactly the dense work of the "
                f"uncompressed one, and their batch-{args.batch_size} speed ratios span {min(dense):.2f}–"
                f"{max(dense):.2f}×; read differences of that size as noise.",
                "",
            ]
            if dense
            else []
        ),
        "## Recovery fine-tuning",
        "",
        tables.markdown(recovery_rows(jobs)),
        "## OpenVINO INT8: post-training, accuracy control, quantization-aware training",
        "",
        "Accuracy control scores candidates on 200 held-out training questions (never evaluation ones); QAT "
        "starts from NNCF's post-training quantization of the PyTorch model, whose F1 is given as its start.",
        "",
        tables.markdown(int8_rows(jobs)),
        "## Unstructured pruning: F1 by amount",
        "",
        tables.markdown(curve_rows(jobs)),
        *targets(args, jobs, timing),
        *profiles(args, timing),
    ]
    return "\n".join(sections)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model",
        type=Path,
        default=SHARED / "models" / "minilm-l6-squad2",
        help="a SQuAD 2.0 QA checkpoint directory (default: ../shared/models/minilm-l6-squad2)",
    )
    parser.add_argument(
        "--eval",
        type=Path,
        default=SHARED / "data" / "squad_v2" / "validation.json",
        help="SQuAD 2.0 JSON to evaluate on (default: ../shared/data/squad_v2/validation.json)",
    )
    parser.add_argument("--train", type=Path, help="SQuAD 2.0 JSON for recovery (default: train.json beside --eval)")
    parser.add_argument("--root", type=Path, default=ROOT / "outputs" / "tradeoffs", help="sweeps, MLflow, caches")
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="more run.py overrides: key=value for every sweep, experiment:key=value for one "
        "(tradeoffs_unstructured:pruning.amount=0.5)",
    )
    parser.add_argument("--max-eval-samples", type=int, help="evaluate on the first N questions only (a trial run)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds timing every variant")
    parser.add_argument("--target-rounds", type=int, default=30, help="rounds of the head-to-head timing")
    parser.add_argument("--skip-sweeps", action="store_true", help="reuse the finished sweeps; only time and write")
    parser.add_argument(
        "--only", nargs="+", choices=EXPERIMENTS, help="run and report only these sweeps (finished jobs are reused)"
    )
    parser.add_argument("--reuse-timing", action="store_true", help="reuse the last timing and profiles (timing.json)")
    parser.add_argument("--force", action="store_true", help="rerun jobs even if an identical one finished")
    args = parser.parse_args(argv)
    args.train = args.train or args.eval.with_name("train.json")
    for key in ("model", "eval", "train"):
        if not getattr(args, key).exists():
            parser.error(f"--{key} {getattr(args, key)}: no such file or directory")
    if min(args.threads, args.rounds, args.target_rounds, args.batch_size) < 1:
        parser.error("--threads, --rounds, --target-rounds and --batch-size must be positive")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    args.root.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    command = "python benchmarks/tradeoffs.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if not args.skip_sweeps:
        run_sweeps(args)
    jobs = collect(args)
    settings = jobs[0].params  # the window settings the sweeps used, for the timing windows
    args.max_seq_length, args.doc_stride = int(settings["dataset.max_seq_length"]), int(settings["dataset.doc_stride"])
    if args.reuse_timing:
        timing = reuse_timing(args)
    else:
        timing = time_and_profile(args, jobs)
    previous = args.out.read_text() if args.out.exists() else ""
    args.out.write_text(keep_sections(write(args, jobs, timing, command.strip()), previous))
    print(args.out.read_text())


if __name__ == "__main__":
    main()
