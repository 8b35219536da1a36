"""The compound recipe step by step and stacked, and its targets: the compound section of BENCHMARKS.md.

    python benchmarks/compound.py                 # the steps' jobs (finished ones reused), timing, the section
    python benchmarks/compound.py --skip-jobs     # time and write from the finished jobs

1. Accuracy: each step of `experiment=compound` (conf/experiment/compound.yaml) on its own and stacked, one
   `run.py` job each, into the store of benchmarks/common.py (experiment `compound`). Every job picks its
   no-answer threshold on held-out training paragraphs, the uncompressed one too, and saves its model.
2. Speed: every saved model is loaded into this one process and timed in interleaved rounds at --batch-size
   and at batch 1 on real evaluation windows, threads fixed, after warm-up; each round gives each variant a
   paired ratio against the uncompressed model (PyTorch FP32), so drift common to a round cancels.
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
    "depth + width, recovered": ["quantization=none"],
    "depth + width, recovered + static INT8, OpenVINO": ["quantization=openvino_int8"],
    "depth + width, recovered + static INT8, ONNX Runtime": ["quantization=onnx_static_int8"],
}
# (batch, largest F1 loss, smallest speed-up), for CPUs with AVX512-VNNI
TARGETS = [("batch", 1.0, 10.0), ("batch", 0.5, 6.0), ("one", 1.0, 5.0)]


def step_overrides(args: argparse.Namespace, step: str) -> list[str]:
    timed_here = ["save_model=true", "benchmark.enabled=false"]  # every model timed in this process instead
    return [f"experiment={EXPERIMENT}", *common.overrides(args, EXPERIMENT), *STEPS[step], *timed_here]


def run_jobs(args: argparse.Namespace) -> None:
    """One job per step; a step that finished before is skipped by run.py itself (its configuration hash)."""
    for step in STEPS:
        command = [sys.executable, str(common.ROOT / "run.py"), *step_overrides(args, step)]
        command.append(f"hydra.run.dir={args.root.resolve() / 'compound' / step.replace(' ', '_').replace(',', '')}")
        print("$", " ".join(command), flush=True)
        subprocess.run(command, cwd=common.ROOT, check=True)


def collect(args: argparse.Namespace) -> dict[str, results.Job]:
    """The latest finished job of each step, found by its overrides."""
    client = MlflowClient(common.store(args))
    experiment = client.get_experiment_by_name(EXPERIMENT)
    found = client.search_runs([experiment.experiment_id], "attributes.status = 'FINISHED'") if experiment else []
    jobs = {}
    for run in sorted(found, key=lambda run: run.info.start_time):
        job = results.job_of(run)
        for step in STEPS:
            if job.overrides is not None and set(job.overrides) == set(step_overrides(args, step)):
                jobs[step] = job  # the latest wins
    missing = [step for step in STEPS if step not in jobs]
    if missing:
        raise SystemExit(f"no finished job for: {', '.join(missing)}; run without --skip-jobs")
    return jobs


def time_steps(args: argparse.Namespace, jobs: dict[str, results.Job]) -> dict[str, dict[int, list[float]]]:
    """Per step and batch size, its speed-up over the uncompressed model in each interleaved round."""
    client = MlflowClient(common.store(args))
    with tempfile.TemporaryDirectory() as scratch:
        variants = {}
        for step, job in jobs.items():
            local = Path(client.download_artifacts(job.run_id, "model", str(Path(scratch) / job.run_id)))
            variants[step] = quantize.load(local, torch.get_num_threads())
        batches = common.eval_batches(args, args.model, sorted({1, args.batch_size}))
        times = common.time_side_by_side(variants, batches, args.warmup, args.rounds, order_seed=0)
    return {
        step: {size: common.paired({s: t[size] for s, t in times.items()}, UNCOMPRESSED)[step] for size in batches}
        for step in times
    }


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
    speedups: dict[str, dict[int, list[float]]],
    changes: dict[str, tuple[float, tuple[float, float] | None]],
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


def target_lines(
    args: argparse.Namespace,
    speedups: dict[str, dict[int, list[float]]],
    changes: dict[str, tuple[float, tuple[float, float] | None]],
) -> list[str]:
    """Each target: the fastest step within its F1 loss, and whether it reaches the speed-up."""
    lines = []
    for batch, loss, wanted in TARGETS:
        size = args.batch_size if batch == "batch" else 1
        within = [s for s in speedups if s != UNCOMPRESSED and changes[s][0] >= -loss]
        best = max(within, key=lambda s: float(np.median(speedups[s][size])), default=None)
        if best is None:
            lines.append(
                f"- ≥ {wanted:g}× within {loss:g} F1 at batch {size}: missed, no step stays within {loss:g} F1"
            )
            continue
        got = float(np.median(speedups[best][size]))
        verdict = "met" if got >= wanted else "missed"
        lines.append(
            f"- ≥ {wanted:g}× within {loss:g} F1 at batch {size}: {verdict}, {best}: {got:.2f}×, "
            f"ΔF1 {tables.f1_change(*changes[best])}"
        )
    return lines


def section(
    args: argparse.Namespace,
    jobs: dict[str, results.Job],
    speedups: dict[str, dict[int, list[float]]],
    changes: dict[str, tuple[float, tuple[float, float] | None]],
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
        tables.markdown(rows(args, jobs, speedups, changes)),
        "",
        "Targets (for CPUs with AVX512-VNNI"
        + ("" if vnni else "; this CPU has none, so they do not apply here")
        + "):",
        *target_lines(args, speedups, changes),
        END,
    ]
    return "\n".join(lines) + "\n"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = common.base_parser(__doc__)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds timing every step")
    parser.add_argument("--skip-jobs", action="store_true", help="time and write from the finished jobs")
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
    speedups = time_steps(args, jobs)
    client = MlflowClient(common.store(args))
    changes = {step: change(client, job, jobs[UNCOMPRESSED]) for step, job in jobs.items()}
    common.write_section(args.out, BEGIN, END, section(args, jobs, speedups, changes, command.strip()))


if __name__ == "__main__":
    main()
