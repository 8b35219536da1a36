"""What each recovery step buys on real data, and the targets behind BENCHMARKS.md's recovery section.

    python benchmarks/recovery.py                 # sweeps (finished jobs reused), then the section
    python benchmarks/recovery.py --skip-sweeps   # write the section from the finished sweeps

Runs `run.py -m experiment=X` for the recovery experiments (conf/experiment/tradeoffs_threshold,
tradeoffs_recovery, tradeoffs_recovery_structured) into the same store as benchmarks/common.py,
then writes, between the recovery markers of --out (kept when common.py rewrites the rest), a
table of F1 per job before recovery, after recovery and after threshold calibration, with the
oracle best_f1 beside them, and each target met or missed. Accuracy only: speed is
common.py's business.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys

from mlflow.tracking import MlflowClient

from qa_compress.evaluate.timing import cpu_description
from qa_compress.sweep import tables
from qa_compress.tracking import results, runs

import common

EXPERIMENTS = ("tradeoffs_threshold", "tradeoffs_recovery_structured", "tradeoffs_recovery")
BEGIN, END = common.markers("recovery")
# name: (pruning method, amount label, recovery steps > 0, quantization), largest F1 loss allowed
TARGETS = {
    "global_magnitude 0.5, gradual + distillation": (("global_magnitude", "0.5", True, "none"), 1.0),
    "global_magnitude 0.7, gradual + distillation": (("global_magnitude", "0.7", True, "none"), 3.0),
    "structured (heads 0.25, FFN 0.5) + distillation": (("structured", "heads 0.25 ffn 0.5", True, "none"), 0.3),
}
CALIBRATION_TARGETS = {  # threshold calibration alone must win back at least half of what these lose
    "l1_unstructured 0.5": ("l1_unstructured", "0.5", "none"),
    "dynamic_int8": ("l1_unstructured", "0", "dynamic_int8"),
}


def run_sweeps(args: argparse.Namespace) -> None:
    for experiment in EXPERIMENTS:
        command = [
            sys.executable,
            str(common.ROOT / "run.py"),
            "-m",
            f"experiment={experiment}",
            *common.overrides(args, experiment),
            f"hydra.sweep.dir={args.root.resolve() / 'sweeps' / experiment}",
        ]
        print("$", " ".join(command), flush=True)
        subprocess.run(command, cwd=common.ROOT, check=True)


def collect(args: argparse.Namespace) -> list[results.Job]:
    """The finished jobs of the experiments' latest sweeps; with --partial, what is missing goes to args.missing."""
    client = MlflowClient(common.store(args))
    jobs, args.missing = [], []
    for experiment in EXPERIMENTS:
        parent = runs.sweep_parent(args.root.resolve() / "sweeps" / experiment)
        if parent is None:
            args.missing.append(f"experiment={experiment} (no sweep)")
            continue
        jobs += results.sweep_jobs(client, parent)
    args.missing += [f"{job.name} ({job.status})" for job in jobs if job.status != "FINISHED"]
    if args.missing and not args.partial:
        raise SystemExit(f"not finished: {', '.join(args.missing)}; run without --skip-sweeps (or with --partial)")
    return [job for job in jobs if job.status == "FINISHED"]


def _amount(job: results.Job) -> str:
    """The pruning amount as the method labels it ("0.5", "heads 0.25 ffn 0.5")."""
    label = job.pruning_label.removeprefix(job.pruning).strip()
    return label.split(" gradual")[0].split(" +")[0].strip()


def find(jobs: list[results.Job], pruning: str, amount: str, recovered: bool, quantization: str) -> results.Job | None:
    return next(
        (
            j
            for j in jobs
            if j.pruning == pruning
            and _amount(j) == amount
            and j.quantization == quantization
            and common.recovered(j) == recovered
        ),
        None,
    )


def rows(jobs: list[results.Job], reference: results.Job) -> list[dict[str, object]]:
    """Per job: F1 before recovery, after recovery (at the fixed threshold), after threshold calibration."""
    base = reference.metrics["f1_uncalibrated"]
    table = []
    for job in jobs:
        m = job.metrics
        table.append(
            {
                "job": common.label(job),
                "sparsity": m.get("sparsity", math.nan),
                "F1 before recovery": m.get("f1_before_recovery", math.nan),
                "F1 after recovery": m["f1_uncalibrated"] if common.recovered(job) else math.nan,
                "F1 at fixed threshold": m["f1_uncalibrated"],
                "F1 calibrated": m["f1"],
                "ΔF1 vs uncompressed": m["f1"] - base,
                "HasAns F1": m.get("HasAns_f1", math.nan),
                "NoAns F1": m.get("NoAns_f1", math.nan),
                "threshold": m.get("null_threshold", math.nan),
                "best_f1 (oracle)": m.get("best_f1", math.nan),
            }
        )
    return [{k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()} for row in table]


def targets(jobs: list[results.Job], reference: results.Job) -> list[str]:
    base = reference.metrics["f1_uncalibrated"]
    lines = [
        "### Targets",
        "",
        f"Against the uncompressed model's F1 at the fixed threshold ({base:.2f}), the "
        "figure the pruned model is compared with elsewhere in this file; each recovered model at the fixed "
        "threshold and at its calibrated one.",
        "",
        "| target | ΔF1 at fixed threshold | ΔF1 calibrated | bound | met (fixed / calibrated) |",
        "|---|---|---|---|---|",
    ]
    for name, ((pruning, amount, recovered, quantization), bound) in TARGETS.items():
        job = find(jobs, pruning, amount, recovered, quantization)
        if job is None:
            lines.append(f"| {name} | not run | not run | ≥ −{bound} | – |")
            continue
        fixed, calibrated = job.metrics["f1_uncalibrated"] - base, job.metrics["f1"] - base
        met = " / ".join("yes" if change >= -bound else "no" for change in (fixed, calibrated))
        lines.append(f"| {name} | {fixed:+.2f} | {calibrated:+.2f} | ≥ −{bound} | {met} |")
    lines += ["", "| threshold calibration alone | measured | bound | met |", "|---|---|---|---|"]
    for name, (pruning, amount, quantization) in CALIBRATION_TARGETS.items():
        job = find(jobs, pruning, amount, False, quantization)
        if job is None:
            lines.append(f"| {name} | not run | half of the loss | – |")
            continue
        lost = base - job.metrics["f1_uncalibrated"]
        won = job.metrics["f1"] - job.metrics["f1_uncalibrated"]
        oracle = job.metrics.get("best_f1", math.nan) - job.metrics["f1_uncalibrated"]
        share = won / lost if lost > 0 else math.nan
        met = "yes" if share >= 0.5 else "no"
        lines.append(
            f"| {name} | lost {lost:.2f}, won back {won:+.2f} ({share:.0%}); "
            f"the oracle threshold would win {oracle:+.2f} | ≥ 50% | {met} |"
        )
    return lines


def seen_questions(reference: results.Job) -> list[str]:
    """Why a threshold picked on training questions can mislead for a checkpoint fine-tuned on them."""
    m = reference.metrics
    return [
        f"The uncompressed checkpoint scores F1 {m['threshold_split_f1']:.2f} on the set-aside training questions "
        f"against {m['f1_uncalibrated']:.2f} on the evaluation file: it was fine-tuned on all of `train.json` "
        "(its training_record.json), so those questions are not new to it, it answers them better, and the "
        "threshold that is best there leans toward answering. `predict.null_threshold=calibrate` keeps the "
        "set-aside paragraphs out of every training stage of a job, which makes them held out only when the job "
        "fine-tunes its own baseline (`training=finetune`).",
        "",
    ]


def section(args: argparse.Namespace, jobs: list[results.Job], command: str) -> str:
    reference = find(jobs, "l1_unstructured", "0", False, "none")
    if reference is None:
        raise SystemExit("the tradeoffs_threshold sweep has no uncompressed job")
    calibration = reference.metrics.get("threshold_questions", math.nan)
    lines = [
        BEGIN,
        "## Keeping the answers: threshold calibration, distillation, gradual pruning",
        "",
        f"`{command}` on {cpu_description()}; accuracy only (no timing). Every job picks its "
        f"no-answer threshold on {calibration:.0f} questions of whole training paragraphs that no training "
        "stage sees (`predict.null_threshold=calibrate`); *F1 at fixed threshold* is the same model at "
        "`predict.null_score_diff_threshold` (0). *best_f1 (oracle)* tunes the threshold on the evaluation "
        "answers themselves: an upper bound, not a result. Recovery: 400 steps, batch 16, learning rate 1e-4, "
        "distillation from the uncompressed model (T = 2, weight 0.5); unstructured amounts reached gradually "
        "(8 cubic stages over the first 75% of the steps). *F1 before recovery* is the one-shot pruned model.",
        "",
        tables.markdown(rows(jobs, reference)),
        *targets(jobs, reference),
        "",
        *seen_questions(reference),
        *([f"Not finished when this section was written: {', '.join(args.missing)}.", ""] if args.missing else []),
        END,
    ]
    return "\n".join(lines) + "\n"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = common.base_parser(__doc__)
    parser.add_argument("--skip-sweeps", action="store_true", help="write the section from the finished sweeps")
    parser.add_argument("--partial", action="store_true", help="write what finished, naming what did not")
    return common.checked(parser, argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    args.root.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/recovery.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if not args.skip_sweeps:
        run_sweeps(args)
    text = section(args, collect(args), command.strip())
    common.write_section(args.out, BEGIN, END, text)


if __name__ == "__main__":
    main()
