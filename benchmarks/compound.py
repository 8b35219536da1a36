"""The compound recipe step by step and stacked, and its targets: the compound section of BENCHMARKS.md.

    python benchmarks/compound.py                 # the steps' jobs (finished ones reused), timing, the section
    python benchmarks/compound.py --skip-jobs     # time and write from the finished jobs

1. Accuracy: each step of `experiment=compound` (conf/experiment/compound.yaml) on its own and stacked, one
   `run.py` job each, into the store of benchmarks/common.py (experiment `compound`). Every job picks its
   no-answer threshold on held-out training paragraphs, the uncompressed one too, and saves its model.
2. Speed: every saved model is loaded into this one process and timed in interleaved rounds at --batch-size
   and at batch 1 on real evaluation windows, threads fixed, after warm-up; each round gives each variant a
   paired ratio against the uncompressed model (PyTorch FP32), so drift common to a round cancels. Then each
   is profiled: a missed speed target says which operators take the pass the target would allow.
3. The table, each target met or missed, and the CPU with its instruction-set flags go between the compound
   markers of --out.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from mlflow.tracking import MlflowClient

from qa_compress import quantize
from qa_compress.evaluate import bootstrap
from qa_compress.evaluate.timing import cpu_description
from qa_compress.sweep import tables
from qa_compress.tracking import results

import common

BEGIN, END = common.markers("compound")
EXPERIMENT = "compound"
UNCOMPRESSED = "uncompressed"
WHOLE = ["pruning.layers_amount=0", "pruning.heads_amount=0", "pruning.ffn_amount=0"]
NO_RECOVERY = ["pruning.finetune_steps=0", "pruning.distill=false", "pruning.distill_hidden_weight=0"]
STEPS = {  # each step of the recipe: run.py overrides on top of experiment=compound
    UNCOMPRESSED: [*WHOLE, *NO_RECOVERY, "pruning.schedule=oneshot", "quantization=none"],
    "static INT8, OpenVINO": [*WHOLE, *NO_RECOVERY, "pruning.schedule=oneshot", "quantization=openvino_int8"],
    "static INT8, ONNX Runtime": [*WHOLE, *NO_RECOVERY, "pruning.schedule=oneshot", "quantization=onnx_static_int8"],
    "depth, recovered": ["pruning.heads_amount=0", "pruning.ffn_amount=0", "quantization=none"],
    "width, recovered": ["pruning.layers_amount=0", "quantization=none"],
    "width, recovered + static INT8, OpenVINO": ["pruning.layers_amount=0", "quantization=openvino_int8"],
    "width, recovered + static INT8, ONNX Runtime": ["pruning.layers_amount=0", "quantization=onnx_static_int8"],
    "half the heads, recovered + static INT8, OpenVINO": [
        "pruning.layers_amount=0",
        "pruning.heads_amount=0.5",
        "quantization=openvino_int8",
    ],
    "half the heads and three quarters of the FFN, recovered + static INT8, OpenVINO": [  # the search's pick
        "pruning.layers_amount=0",
        "pruning.heads_amount=0.5",
        "pruning.ffn_amount=0.75",
        "quantization=openvino_int8",
    ],
    "depth + width, recovered": ["quantization=none"],
    "depth + width, recovered + static INT8, OpenVINO": ["quantization=openvino_int8"],
    "depth + width, recovered + static INT8, ONNX Runtime": ["quantization=onnx_static_int8"],
}
# (batch, largest F1 loss, smallest speed-up), for CPUs with AVX512-VNNI
TARGETS = [("batch", 1.0, 10.0), ("batch", 0.5, 6.0), ("one", 1.0, 5.0)]


def step_overrides(args: argparse.Namespace, step: str) -> list[str]:
    timed_here = ["save_model=true", "benchmark.enabled=false"]  # every model timed in this process instead
    return [f"experiment={EXPERIMENT}", *common.overrides(args, EXPERIMENT), *STEPS[step], *timed_here]


def run_order() -> list[str]:
    """The steps in the order their jobs run: the stack's first (its quantized steps reuse its recovery from the
    cache), so a run cut short has the targets' rows; the single techniques after."""
    return sorted(STEPS, key=lambda step: step != UNCOMPRESSED and "depth + width" not in step)


def run_jobs(args: argparse.Namespace) -> None:
    """One job per step; a step that finished before is skipped by run.py itself (its configuration hash)."""
    for step in run_order():
        command = [sys.executable, str(common.ROOT / "run.py"), *step_overrides(args, step)]
        command.append(f"hydra.run.dir={args.root.resolve() / 'compound' / step.replace(' ', '_').replace(',', '')}")
        print("$", " ".join(command), flush=True)
        subprocess.run(command, cwd=common.ROOT, check=True)


def step_hashes(args: argparse.Namespace) -> dict[str, str]:
    """Each step's configuration hash: what run.py reuses a finished job by, whatever overrides spelled it."""
    from hydra import initialize_config_dir

    from qa_compress.job import bookkeeping, config

    with tempfile.TemporaryDirectory() as scratch, initialize_config_dir(str(common.ROOT / "conf"), version_base="1.3"):
        return {
            step: bookkeeping.job_hash(config.compose_job("config", step_overrides(args, step), scratch))
            for step in STEPS
        }


def collect(args: argparse.Namespace) -> dict[str, results.Job]:
    """The latest finished job of each step, found by its configuration hash."""
    client = MlflowClient(common.store(args))
    experiment = client.get_experiment_by_name(EXPERIMENT)
    found = client.search_runs([experiment.experiment_id], "attributes.status = 'FINISHED'") if experiment else []
    steps = {digest: step for step, digest in step_hashes(args).items()}
    jobs = {}
    for run in sorted(found, key=lambda run: run.info.start_time):
        step = steps.get(run.data.tags.get("config_hash"))
        if step is not None:
            jobs[step] = results.job_of(run)  # the latest wins
    missing = [step for step in STEPS if step not in jobs]
    if UNCOMPRESSED in missing or (missing and not args.partial):
        raise SystemExit(f"no finished job for: {', '.join(missing)}; run without --skip-jobs")
    return jobs


Speedups = dict[str, dict[int, list[float]]]  # step -> batch size -> its paired ratio in each round
Profiles = dict[str, dict[int, list[tuple[str, float, float]]]]  # step -> batch size -> operators
Changes = dict[str, tuple[float, tuple[float, float] | None]]  # step -> ΔF1 and its interval


def time_steps(args: argparse.Namespace, jobs: dict[str, results.Job]) -> tuple[Speedups, Profiles]:
    """Per step and batch size, its speed-up over the uncompressed model in each interleaved round, and where
    its forward pass spends its time (profiled after the timing, so the profilers' overhead touches no round)."""
    client = MlflowClient(common.store(args))
    with tempfile.TemporaryDirectory() as scratch:
        variants = {}
        for step, job in jobs.items():
            local = Path(client.download_artifacts(job.run_id, "model", str(Path(scratch) / job.run_id)))
            variants[step] = quantize.load(local, torch.get_num_threads())
        batches = common.eval_batches(args, args.model, sorted({1, args.batch_size}))
        times = common.time_side_by_side(variants, batches, args.warmup, args.rounds, order_seed=0)
        profiles = {
            step: {size: common.profile(model, batch, passes=3, top=None) for size, batch in batches.items()}
            for step, model in variants.items()
        }
    speedups = {
        step: {size: common.paired({s: t[size] for s, t in times.items()}, UNCOMPRESSED)[step] for size in batches}
        for step in times
    }
    return speedups, profiles


def shortfall(step: str, size: int, wanted: float, profiles: Profiles) -> str:
    """Where `step` misses a speed target at batch `size`, from the profiles: its pass against the pass the
    target allows (the uncompressed pass over `wanted`), and the operators that take the most of it."""
    ops, uncompressed = profiles[step][size], common.pass_ms(profiles[UNCOMPRESSED][size])
    total = common.pass_ms(ops)
    if not total or not uncompressed:
        return ""
    largest = sorted(common.by_kind(ops).items(), key=lambda item: item[1], reverse=True)[:3]
    listed = ", ".join(f"`{name}` {ms:.1f} ms" for name, ms in largest)
    return (
        f"profiled at batch {size}, its pass takes {total:.1f} ms where {wanted:g}× allows "
        f"{uncompressed / wanted:.1f} ms (the uncompressed pass: {uncompressed:.1f} ms); most of it: {listed}"
    )


def change(client: MlflowClient, job: results.Job, reference: results.Job) -> tuple[float, tuple[float, float] | None]:
    """ΔF1 against the uncompressed job, with its paired-bootstrap interval over the evaluation questions."""
    mine, theirs = results.question_f1(client, job.run_id), results.question_f1(client, reference.run_id)
    interval = bootstrap.change_interval(mine, theirs) if mine and theirs else None
    return job.metrics["f1"] - reference.metrics["f1"], interval


def spread(ratios: list[float]) -> str:
    q1, median, q3 = np.percentile(ratios, [25, 50, 75])
    return f"{median:.2f} ({q1:.2f}-{q3:.2f})"


def rows(
    args: argparse.Namespace,
    jobs: dict[str, results.Job],
    speedups: Speedups,
    changes: Changes,
) -> list[dict[str, object]]:
    """One row per step: its scores, size and speed-ups with their spread, and its run."""
    return [
        {
            "step": step,
            "F1": f"{job.metrics['f1']:.2f}",
            "ΔF1 [95%]": tables.f1_change(*changes[step]) if step != UNCOMPRESSED else "",
            "HasAns F1": f"{job.metrics['HasAns_f1']:.2f}",
            "size MB": f"{job.metrics['size_mb']:.1f}",
            f"× faster, batch {args.batch_size} (IQR)": spread(speedups[step][args.batch_size]),
            "× faster, batch 1 (IQR)": spread(speedups[step][1]),
            "run": f"`{job.run_id[:8]}`",
        }
        for step, job in jobs.items()
    ]


def target_lines(args: argparse.Namespace, speedups: Speedups, changes: Changes, profiles: Profiles) -> list[str]:
    """Each target: the fastest step within its F1 loss and whether it reaches the speed-up; a miss says what
    the step's profile shows."""
    lines = []
    for batch, loss, wanted in TARGETS:
        size = args.batch_size if batch == "batch" else 1
        compressed = [s for s in speedups if s != UNCOMPRESSED]
        within = [s for s in compressed if changes[s][0] >= -loss]
        best = max(within, key=lambda s: float(np.median(speedups[s][size])), default=None)
        head = f"- ≥ {wanted:g}× within {loss:g} F1 at batch {size}: "
        if best is None:
            fastest = max(compressed, key=lambda s: float(np.median(speedups[s][size])))
            lines.append(
                f"{head}missed, no step stays within {loss:g} F1 (the fastest, {fastest}, "
                f"{float(np.median(speedups[fastest][size])):.2f}× at ΔF1 {tables.f1_change(*changes[fastest])})"
            )
            continue
        got = float(np.median(speedups[best][size]))
        verdict = "met" if got >= wanted else "missed"
        line = f"{head}{verdict}, {best}: {got:.2f}×, ΔF1 {tables.f1_change(*changes[best])}"
        why = shortfall(best, size, wanted, profiles) if verdict == "missed" and profiles else ""
        lines.append(f"{line}; {why}" if why else line)
    return lines


def profile_tables(args: argparse.Namespace, speedups: Speedups, profiles: Profiles) -> list[str]:
    """The largest operators of the uncompressed model and of the fastest step, at each batch size."""
    lines = []
    for size in (args.batch_size, 1):
        fastest = max((s for s in speedups if s != UNCOMPRESSED), key=lambda s: float(np.median(speedups[s][size])))
        for step in (UNCOMPRESSED, fastest):
            ops = profiles[step][size][:6]
            lines += [
                f"**{step}, batch {size}** ({common.pass_ms(profiles[step][size]):.1f} ms per profiled pass)",
                "",
                tables.markdown(
                    [
                        {"operator": f"`{op}`", "ms per pass": f"{ms:.1f}", "share": f"{share:.0%}"}
                        for op, ms, share in ops
                    ]
                ).rstrip("\n"),
                "",
            ]
    return lines


def section(
    args: argparse.Namespace,
    jobs: dict[str, results.Job],
    speedups: Speedups,
    changes: Changes,
    profiles: Profiles,
    command: str,
) -> str:
    """The compound section of BENCHMARKS.md: how it was measured, the table, each target met or missed."""
    vnni = "avx512_vnni" in cpu_description() or "amx_int8" in cpu_description()
    lines = [
        BEGIN,
        "## The compound recipe, step by step",
        "",
        f"`{command}` on {cpu_description()}, {args.threads} threads. Each step is one job of "
        "`experiment=compound` (conf/experiment/compound.yaml) on the evaluation file, its no-answer threshold "
        "calibrated on held-out training paragraphs (the uncompressed job's too). Speed-ups are medians of "
        f"{args.rounds} interleaved rounds in this one process against the uncompressed model in PyTorch FP32, "
        "with the interquartile range.",
        "",
        tables.markdown(rows(args, jobs, speedups, changes)).rstrip("\n"),
        "",
        f"Answering no to every question scores F1 {jobs[UNCOMPRESSED].metrics['always_no_answer_f1']:.2f} on these "
        f"questions and the checkpoint only {jobs[UNCOMPRESSED].metrics['f1']:.2f}: a compressed model can hold its "
        "F1 by answering less, so read HasAns F1 (the answerable questions) beside it.",
        "",
        *(
            [f"Not run to the end: {', '.join(s for s in STEPS if s not in jobs)}.", ""]
            if len(jobs) < len(STEPS)
            else []
        ),
        "Targets (for CPUs with AVX512-VNNI"
        + ("" if vnni else "; this CPU has none, so they do not apply here")
        + "):",
        *target_lines(args, speedups, changes, profiles),
        "",
        "### Where the time goes",
        "",
        "Self time per operator over 3 profiled passes, after the timing (torch.profiler for PyTorch, the "
        "session profiler for ONNX Runtime, performance counters for OpenVINO; profiling adds overhead, so "
        "read the shares).",
        "",
        *profile_tables(args, speedups, profiles),
        END,
    ]
    return "\n".join(lines) + "\n"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = common.base_parser(__doc__)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds timing every step")
    parser.add_argument("--skip-jobs", action="store_true", help="time and write from the finished jobs")
    parser.add_argument("--partial", action="store_true", help="write what finished, naming the steps that did not")
    return common.checked(parser, argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    args.root.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per downloaded model
    torch.set_num_threads(args.threads)
    command = "python benchmarks/compound.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if not args.skip_jobs:
        run_jobs(args)
    jobs = collect(args)
    settings = jobs[UNCOMPRESSED].params
    args.max_seq_length, args.doc_stride = int(settings["dataset.max_seq_length"]), int(settings["dataset.doc_stride"])
    speedups, profiles = time_steps(args, jobs)
    client = MlflowClient(common.store(args))
    changes = {step: change(client, job, jobs[UNCOMPRESSED]) for step, job in jobs.items()}
    common.write_section(args.out, BEGIN, END, section(args, jobs, speedups, changes, profiles, command.strip()))


if __name__ == "__main__":
    main()
