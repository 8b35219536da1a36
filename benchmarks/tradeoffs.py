"""What each compression method costs in F1 and buys in size and speed, on real SQuAD 2.0, side by side.

    python benchmarks/tradeoffs.py --model ../shared/models/minilm-l6-squad2 \\
        --eval ../shared/data/squad_v2/validation.json --train ../shared/data/squad_v2/train.json

1. Accuracy and size: `run.py -m` sweeps (one MLflow experiment, `tradeoffs`): quantization
   options on the unpruned model; l1_unstructured, global_magnitude and random at each amount;
   structured pruning with and without recovery fine-tuning. Every job saves its compressed model.
   Finished jobs are reused when the script is rerun (delete --root to start over).
2. Speed: every saved model is loaded into this one process and timed in interleaved rounds at
   batch 1 and at --batch-size on real evaluation windows, with a fixed thread count, after
   warm-up; medians over the rounds. Interleaving spreads machine drift over all variants alike.
   The variants with targets are then timed head to head with the uncompressed model for
   --target-rounds rounds, and each round's paired ratio gives their speed-ups.
3. The table, with ratios to the uncompressed model, goes to --out (BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qa_compress import data, features, models, onnxrt, quantize, report, tracking  # noqa: E402

EXPERIMENT = "tradeoffs"
UNSTRUCTURED = ("l1_unstructured", "global_magnitude", "random")


def sweeps(args: argparse.Namespace) -> dict[str, list[str]]:
    """The sweeps to run, by name, as run.py overrides."""
    amounts = ",".join(f"{a:g}" for a in args.amounts)
    return {
        "quantization": ["quantization=none,dynamic_int8,onnx_int8"],
        "unstructured": [f"pruning={','.join(UNSTRUCTURED)}", f"pruning.amount={amounts}"],
        "structured": [
            "pruning=structured",
            f"pruning.heads_amount={args.heads_amount}",
            f"pruning.ffn_amount={args.ffn_amount}",
            f"pruning.importance={args.importance}",
            f"pruning.finetune_steps=0,{args.finetune_steps}",
            f"pruning.finetune_learning_rate={args.finetune_learning_rate}",
        ],
    }


def common_overrides(args: argparse.Namespace) -> list[str]:
    overrides = [
        "model=minilm_l6",
        f"model.name_or_path={args.model.resolve()}",
        "training=none",
        "dataset=squad_json",
        f"dataset.validation_file={args.eval.resolve()}",
        f"dataset.train_file={args.train.resolve()}",
        f"dataset.max_seq_length={args.max_seq_length}",
        f"dataset.doc_stride={args.doc_stride}",
        f"benchmark.num_threads={args.threads}",
        "benchmark.enabled=false",  # timed below, side by side in one process
        "save_model=true",
        f"tracking.experiment_name={EXPERIMENT}",
        f"tracking.uri={tracking_uri(args)}",
        f"paths.mlruns_dir={args.root.resolve()}",  # the saved models go beside the store, under --root
        f"paths.cache_dir={args.root.resolve() / 'cache'}",
    ]
    if args.max_eval_samples:
        overrides.append(f"dataset.max_eval_samples={args.max_eval_samples}")
    return overrides


def tracking_uri(args: argparse.Namespace) -> str:
    return f"sqlite:///{args.root.resolve() / 'mlflow.db'}"


def run_sweeps(args: argparse.Namespace, parents: dict[str, str]) -> dict[str, str]:
    """Run the chosen sweeps through run.py; returns the parent run id of each sweep (earlier ones kept)."""
    parents = dict(parents)
    for name, overrides in sweeps(args).items():
        if args.only and name not in args.only:
            continue
        sweep_dir = args.root.resolve() / "sweeps" / name
        command = [sys.executable, str(ROOT / "run.py"), "-m", *common_overrides(args), *overrides]
        command.append(f"hydra.sweep.dir={sweep_dir}")
        if args.force:
            command.append("force=true")
        print("$", " ".join(command), flush=True)
        subprocess.run(command, cwd=ROOT, check=True)
        parents[name] = tracking.sweep_parent(sweep_dir)
    return parents


def _load(directory: Path, quantization: str):
    if quantization == "onnx_int8":
        return onnxrt.OrtModel(directory / onnxrt.QUANTIZED_FILE, torch.get_num_threads())
    if quantization == "dynamic_int8":
        return quantize.load(directory)
    model, _ = models.load(str(directory), safetensors_only=True)
    return model.eval()


def eval_batches(args: argparse.Namespace, tokenizer_dir: Path, sizes: list[int]) -> dict[int, dict[str, torch.Tensor]]:
    """For each size, the first that many evaluation windows of the evaluation file, padded to the sequence length.

    The file is read and tokenized once, for the largest size.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    examples = data.load_squad_json(args.eval, "--eval", args.root / "cache")
    windows = examples.dataset.select(range(max(sizes))).map(
        features.prepare_eval_features,
        batched=True,
        remove_columns=examples.dataset.column_names,
        fn_kwargs={"tokenizer": tokenizer, "max_seq_length": args.max_seq_length, "doc_stride": args.doc_stride},
    )
    names = [n for n in tokenizer.model_input_names if n in windows.column_names]
    rows = windows.with_format("torch", columns=names)
    return {size: dict(rows[list(np.arange(size) % len(windows))]) for size in sizes}


@torch.inference_mode()
def time_side_by_side(
    variants: dict[str, object], batches: dict[int, dict], warmup: int, rounds: int
) -> dict[str, dict[int, list[float]]]:
    """Milliseconds per forward pass of every variant at every batch size, round by round, timed interleaved.

    In each round every variant runs one untimed pass and then the timed one, so each is timed
    with its own weights in the caches, as a deployed model would be, not those of the variant before.
    """
    times: dict[str, dict[int, list[float]]] = {name: {b: [] for b in batches} for name in variants}
    for size, batch in batches.items():
        for model in variants.values():
            for _ in range(warmup):
                model(**batch)
        for _ in range(rounds):
            for name, model in variants.items():
                model(**batch)
                start = time.perf_counter()
                model(**batch)
                times[name][size].append((time.perf_counter() - start) * 1e3)
    return times


def medians(times: dict[str, dict[int, list[float]]]) -> dict[str, dict[int, float]]:
    return {name: {b: float(np.median(t)) for b, t in by_size.items()} for name, by_size in times.items()}


def paired_speedups(times: dict[str, list[float]], reference: str) -> dict[str, list[float]]:
    """Each variant's speed-up over `reference`, round by round: drift common to a round cancels out."""
    return {name: [r / t for r, t in zip(times[reference], t_list, strict=True)] for name, t_list in times.items()}


@torch.inference_mode()
def profile(model, batch: dict[str, torch.Tensor], passes: int, top: int = 6) -> list[tuple[str, float, float]]:
    """Where a forward pass spends its time: (operator, ms per pass, share of the total), largest first.

    PyTorch models go through torch.profiler (self CPU time per aten/quantized op); ONNX Runtime
    sessions through the session's own profiler (time per graph node type).
    """
    if isinstance(model, onnxrt.OrtModel):
        with tempfile.TemporaryDirectory() as scratch:
            session = onnxrt.OrtModel(model.path, torch.get_num_threads(), profile_prefix=str(Path(scratch) / "ort"))
            session(**batch)  # warm-up, also profiled; dropped below by counting only the last `passes` runs
            for _ in range(passes):
                session(**batch)
            events = json.loads(session.end_profiling().read_text())
        totals: dict[str, float] = {}
        runs = [e for e in events if e.get("name") == "model_run"]
        start = runs[-passes]["ts"] if len(runs) >= passes else 0
        for event in events:
            if event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and event["ts"] >= start:
                op = event["args"]["op_name"]
                totals[op] = totals.get(op, 0.0) + event["dur"] / 1e3
    else:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        model(**batch)
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(passes):
                model(**batch)
        totals = {e.key: e.self_cpu_time_total / 1e3 for e in prof.key_averages()}
    overall = sum(totals.values()) or 1.0
    ranked = sorted(totals.items(), key=lambda item: item[1], reverse=True)[:top]
    return [(op, ms / passes, ms / overall) for op, ms in ranked]


def collect(args: argparse.Namespace, parents: dict[str, str]) -> list[report.Job]:
    client = MlflowClient(tracking_uri(args))
    jobs = [job for parent in parents.values() for job in report.sweep_jobs(client, parent)]
    failed = [job.name for job in jobs if job.status != "FINISHED"]
    if failed:
        raise SystemExit(f"these jobs did not finish: {failed}")
    return jobs


def label(job: report.Job) -> str:
    pruning = "none" if job.pruning == "none" else f"{job.pruning} {job.pruning_label}"
    if job.finetune_steps:
        pruning += f" + {job.finetune_steps} recovery steps"
    return f"{pruning} | {job.quantization}"  # two table cells


def _fmt(value: float, digits: int = 2) -> str:
    return "n/a" if value is None or np.isnan(value) else f"{value:.{digits}f}"


def write_markdown(args: argparse.Namespace, jobs: list[report.Job], latency: dict, command: str) -> str:
    baseline = next(j for j in jobs if j.uncompressed)
    base = baseline.metrics
    base_lat = latency[baseline.run_id]
    lines = [
        "# Measured trade-offs",
        "",
        f"Produced by `{command}` on {datetime.date.today().isoformat()}."
        + (
            " Accuracy and sizes come from the sweeps of an earlier run with the same settings, reused from MLflow."
            if args.skip_sweeps
            else ""
        )
        + (" Latency and profiles are those of the last timing run (`timing.json`)." if args.reuse_timing else ""),
        "",
        f"- Model: `{args.model}` (MiniLM-L6 fine-tuned for SQuAD 2.0), evaluated on `{args.eval}` "
        f"({int(base['eval_features'])} windows of {args.max_seq_length} tokens, stride {args.doc_stride}"
        + (f", first {args.max_eval_samples} questions" if args.max_eval_samples else "")
        + ").",
        f"- Machine: {_cpu_name()}, {os.cpu_count()} logical CPUs; {args.threads} threads for PyTorch and ONNX "
        f"Runtime; {platform.platform()}.",
        "- Versions: " + ", ".join(f"{p} {_version(p)}" for p in ("torch", "transformers", "onnxruntime", "onnx")),
        f"- Latency: median of {args.rounds} interleaved rounds (each variant: one untimed pass, then the timed one) "
        f"after {args.warmup} warm-up passes, one process, batch 1 and batch {args.batch_size}, real evaluation "
        f"windows padded to {args.max_seq_length}."
        " samples/s counts questions (windows per second at batch "
        f"{args.batch_size} divided by windows per question).",
        "- Sizes: `size_mb` is the model as stored (safetensors, or the ONNX file); `size_gzip_mb` the same bytes "
        "gzipped; ×: ratio to the uncompressed model (speed: higher is faster; size: uncompressed / this).",
        "",
        "| pruning | quantization | F1 | HasAns F1 | NoAns F1 | ΔF1 | size MB | size × | gzip MB | gzip × "
        f"| params non-zero | bs1 ms | bs1 × | bs{args.batch_size} ms | bs{args.batch_size} × | samples/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for job in jobs:
        m, lat = job.metrics, latency[job.run_id]
        questions_per_window = m["total"] / m["eval_features"]
        samples = args.batch_size / (lat[args.batch_size] / 1e3) * questions_per_window
        lines.append(
            f"| {label(job)} | {_fmt(m['f1'])} | {_fmt(m.get('HasAns_f1', np.nan))} | "
            f"{_fmt(m.get('NoAns_f1', np.nan))} | {m['f1'] - base['f1']:+.2f} | {_fmt(m['size_mb'], 1)} | "
            f"{base['size_mb'] / m['size_mb']:.2f} | {_fmt(m['size_gzip_mb'], 1)} | "
            f"{base['size_gzip_mb'] / m['size_gzip_mb']:.2f} | {int(m['params_nonzero']):,} | "
            f"{_fmt(lat[1], 1)} | {base_lat[1] / lat[1]:.2f} | {_fmt(lat[args.batch_size], 1)} | "
            f"{base_lat[args.batch_size] / lat[args.batch_size]:.2f} | {samples:.1f} |"
        )
    dense = [base_lat[args.batch_size] / latency[j.run_id][args.batch_size] for j in jobs if j.pruning in UNSTRUCTURED]
    if dense:
        lines += [
            "",
            f"Timing noise: the {len(dense)} unstructured-pruned models do exactly the dense work of the uncompressed "
            f"one, and their batch-{args.batch_size} speed ratios span {min(dense):.2f}–{max(dense):.2f}×; read "
            "differences of that size as noise.",
        ]
    recovered = [j for j in jobs if "f1_before_recovery" in j.metrics]
    if recovered:
        lines += [
            "",
            "## Recovery fine-tuning",
            "",
            "| pruning | quantization | F1 before | F1 after | HasAns before | HasAns after "
            "| NoAns before | NoAns after | sparsity before | sparsity after |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for job in recovered:
            m = job.metrics
            lines.append(
                f"| {label(job)} | {_fmt(m['f1_before_recovery'])} | {_fmt(m['f1'])} | "
                f"{_fmt(m.get('HasAns_f1_before_recovery', np.nan))} | {_fmt(m.get('HasAns_f1', np.nan))} | "
                f"{_fmt(m.get('NoAns_f1_before_recovery', np.nan))} | {_fmt(m.get('NoAns_f1', np.nan))} | "
                f"{m['sparsity_before_recovery']:.4f} | {m['sparsity']:.4f} |"
            )
    lines += ["", "## Unstructured pruning: F1 by amount", ""]
    curves = {method: {j.amount: j for j in jobs if j.pruning == method} for method in UNSTRUCTURED}
    amounts = sorted({a for c in curves.values() for a in c})
    lines.append("| amount | " + " | ".join(f"{m} F1 (HasAns / NoAns)" for m in UNSTRUCTURED) + " |")
    lines.append("|---|" + "---|" * len(UNSTRUCTURED))
    for amount in amounts:
        cells = []
        for method in UNSTRUCTURED:
            job = curves[method].get(amount)
            cells.append(
                ""
                if job is None
                else f"{_fmt(job.metrics['f1'])} ({_fmt(job.metrics.get('HasAns_f1', np.nan))} / "
                f"{_fmt(job.metrics.get('NoAns_f1', np.nan))})"
            )
        lines.append(f"| {amount:g} | " + " | ".join(cells) + " |")
    lines.append("")
    for method in UNSTRUCTURED:
        losing = [a for a in amounts if a in curves[method] and curves[method][a].metrics["f1"] < base["f1"] - 1.0]
        lines.append(
            f"- {method}: first loses more than 1 F1 point at amount {losing[0]:g}"
            if losing
            else f"- {method}: within 1 F1 point at every amount measured"
        )
    return "\n".join(lines) + "\n"


TARGETS = {  # variant: (pruning, quantization, with recovery), speed-up at the benchmark batch size, F1 change bound
    "dynamic_int8": (("none", "dynamic_int8", False), 1.6, 1.0),
    "onnx_int8": (("none", "onnx_int8", False), 2.0, 1.0),
    "structured + recovery": (("structured", "none", True), 1.4, 5.0),
    "structured, no recovery": (("structured", "none", False), None, None),
}


def target_jobs(jobs: list[report.Job]) -> dict[str, report.Job | None]:
    """The uncompressed job first, then the variant each target is about (None where it was not run)."""

    def find(pruning: str, quantization: str, recovered: bool) -> report.Job | None:
        return next(
            (
                j
                for j in jobs
                if j.pruning == pruning and j.quantization == quantization and (j.finetune_steps > 0) == recovered
            ),
            None,
        )

    return {
        "uncompressed": next(j for j in jobs if j.uncompressed),
        **{name: find(*variant) for name, (variant, _, _) in TARGETS.items()},
    }


def targets_markdown(args: argparse.Namespace, jobs: list[report.Job], speedups: dict, profiled: dict) -> str:
    """Each target against what was measured head to head, met or missed and by how much."""
    chosen = target_jobs(jobs)
    baseline = chosen.pop("uncompressed")
    lines = [
        "",
        "## Targets",
        "",
        f"Speed-ups here come from a separate head-to-head timing of just these variants and the uncompressed "
        f"model: {args.target_rounds} interleaved rounds at batch {args.batch_size}, one untimed pass before each "
        "timed one; each round gives a paired ratio (the uncompressed time of that round over the variant's), so "
        "drift common to a round cancels. Median, with the interquartile range of the rounds.",
        "",
        f"| variant | speed-up at batch {args.batch_size} (IQR) | target | F1 change | target | size × | met? |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, job in chosen.items():
        if job is None:
            continue
        _, speed_target, f1_target = TARGETS[name]
        ratios = speedups[job.run_id]
        speedup = float(np.median(ratios))
        low, high = np.percentile(ratios, [25, 75])
        change = job.metrics["f1"] - baseline.metrics["f1"]
        size = baseline.metrics["size_mb"] / job.metrics["size_mb"]
        if speed_target is None:
            verdict = "(reported)"
        else:
            misses = []
            if speedup < speed_target:
                misses.append(f"speed short by {speed_target - speedup:.2f}×")
            if abs(change) > f1_target:
                misses.append(f"F1 off by {abs(change) - f1_target:.2f} beyond the bound")
            verdict = "yes" if not misses else "no: " + "; ".join(misses)
        speed_bound = "" if speed_target is None else f"≥ {speed_target}×"
        f1_bound = "" if f1_target is None else f"within {f1_target}"
        lines.append(
            f"| {name} | {speedup:.2f}× ({low:.2f}–{high:.2f}) | {speed_bound} | {change:+.2f} | {f1_bound} "
            f"| {size:.2f} | {verdict} |"
        )
    lines += ["", *explain(profiled, label(baseline), [label(j) for j in jobs if j.pruning == "none"])]
    return "\n".join(lines) + "\n"


def _op(ops: list, *names: str) -> tuple[float, float]:
    """Milliseconds per pass and share of the first profiled operator among `names` (0, 0 if absent)."""
    return next(((ms, share) for op, ms, share in ops if op in names), (0.0, 0.0))


def explain(profiled: dict[str, list], fp32_label: str, labels: list[str]) -> list[str]:
    """Why the INT8 paths gain what they gain, in numbers taken from the profiles of this run."""
    fp32 = profiled.get(fp32_label, [])
    linear_ms, linear_share = _op(fp32, "aten::addmm", "aten::linear", "aten::mm")
    attention_ms, attention_share = _op(fp32, "aten::_scaled_dot_product_flash_attention_for_cpu")
    if not linear_share:
        return []
    lines = [
        f"- In the FP32 PyTorch pass, Linear layers (`aten::addmm`) take {linear_share:.0%} of the time and "
        f"attention {attention_share:.0%}: INT8 weights speed up only the Linear layers, so even infinitely fast "
        f"ones would make the model at most {1 / (1 - linear_share):.2f}× faster.",
    ]
    for name in labels:
        ops = profiled.get(name, [])
        int8_ms, int8_share = _op(ops, "quantized::linear_dynamic")
        if int8_ms:
            lines.append(
                f"- dynamic_int8: `quantized::linear_dynamic` takes {int8_ms:.0f} ms per profiled pass against "
                f"{linear_ms:.0f} ms for `aten::addmm` in FP32 ({linear_ms / int8_ms:.2f}× faster), and is still "
                f"the dominant operator ({int8_share:.0%}); attention, GELU and layer norm are unchanged FP32 work."
            )
        qattention_ms, qattention_share = _op(ops, "QAttention")
        if qattention_ms:
            matmul_ms, matmul_share = _op(ops, "DynamicQuantizeMatMul")
            lines.append(
                f"- onnx_int8: the dominant operator is the fused `QAttention` ({qattention_share:.0%} of the pass, "
                f"{qattention_ms:.0f} ms: INT8 Q/K/V projections plus FP32 attention), ahead of the INT8 "
                f"feed-forward and output products (`DynamicQuantizeMatMul`, {matmul_share:.0%}); PyTorch's "
                f"flash attention takes {attention_ms:.0f} ms in FP32. Layer norms and GELU "
                f"(`SkipLayerNormalization`, `BiasGelu`) stay FP32 too."
            )
    return lines


def profile_markdown(args: argparse.Namespace, profiled: dict[str, list]) -> str:
    lines = [
        "",
        f"## Where the time goes (batch {args.batch_size}, {args.threads} threads)",
        "",
        "Top operators by self time per forward pass (torch.profiler for PyTorch, the session profiler for "
        "ONNX Runtime; profiling adds overhead, so read the shares, not the absolute times).",
        "",
    ]
    for name, ops in profiled.items():
        lines += [f"**{name.replace(' | ', ' + ')}**", "", "| operator | ms per pass | share |", "|---|---|---|"]
        lines += [f"| `{op}` | {ms:.1f} | {share:.0%} |" for op, ms, share in ops]
        lines.append("")
    return "\n".join(lines)


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="a SQuAD 2.0 QA checkpoint directory")
    parser.add_argument("--eval", type=Path, required=True, help="SQuAD 2.0 JSON to evaluate on")
    parser.add_argument(
        "--train", type=Path, help="SQuAD 2.0 JSON for recovery fine-tuning (default: train.json next to --eval)"
    )
    parser.add_argument("--root", type=Path, default=ROOT / "outputs" / "tradeoffs", help="sweeps, MLflow, caches")
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--amounts", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    parser.add_argument("--heads-amount", type=float, default=0.25)
    parser.add_argument("--ffn-amount", type=float, default=0.5)
    parser.add_argument("--importance", choices=("weight_norm", "gradient"), default="gradient")
    parser.add_argument("--finetune-steps", type=int, default=200)
    parser.add_argument("--finetune-learning-rate", type=float, default=1e-4)
    parser.add_argument("--max-seq-length", type=int, default=256)
    parser.add_argument("--doc-stride", type=int, default=128)
    parser.add_argument("--max-eval-samples", type=int, help="evaluate on the first N questions only (a trial run)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds timing every variant")
    parser.add_argument(
        "--target-rounds", type=int, default=30, help="rounds of the head-to-head timing behind the targets"
    )
    parser.add_argument("--skip-sweeps", action="store_true", help="reuse the finished sweeps; only time and write")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=("quantization", "unstructured", "structured"),
        help="run only these sweeps, reuse the others' last results",
    )
    parser.add_argument("--reuse-timing", action="store_true", help="reuse the last timing and profiles (timing.json)")
    parser.add_argument("--force", action="store_true", help="rerun jobs even if an identical one finished")
    args = parser.parse_args(argv)
    args.train = args.train or args.eval.with_name("train.json")
    for key in ("model", "eval", "train"):
        if not getattr(args, key).exists():
            parser.error(f"--{key} {getattr(args, key)}: no such file or directory")
    if not all(0 < a < 1 for a in args.amounts):
        parser.error(f"--amounts {args.amounts}: each must be in (0, 1)")
    if min(args.threads, args.rounds, args.target_rounds, args.batch_size) < 1:
        parser.error("--threads, --rounds, --target-rounds and --batch-size must be positive")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    args.root.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    command = "python benchmarks/tradeoffs.py " + " ".join(sys.argv[1:] if argv is None else argv)
    parents_file = args.root / "parents.json"
    parents = json.loads(parents_file.read_text()) if parents_file.is_file() else {}
    if not args.skip_sweeps:
        parents = run_sweeps(args, parents)
        parents_file.write_text(json.dumps(parents))
    missing = set(sweeps(args)) - set(parents)
    if missing:
        raise SystemExit(f"no finished sweep for {sorted(missing)} under {args.root}; run without --skip-sweeps/--only")
    jobs = collect(args, parents)
    if args.reuse_timing:
        saved = json.loads((args.root / "timing.json").read_text())
        latency = {run: {int(b): ms for b, ms in by_size.items()} for run, by_size in saved["latency"].items()}
        speedups, profiled = saved["speedups"], saved["profiled"]
    else:
        latency, speedups, profiled = time_and_profile(args, jobs)
    args.out.write_text(
        write_markdown(args, jobs, latency, command)
        + targets_markdown(args, jobs, speedups, profiled)
        + profile_markdown(args, profiled)
    )
    print(args.out.read_text())


def time_and_profile(args: argparse.Namespace, jobs: list[report.Job]) -> tuple[dict, dict, dict]:
    """Latency of every job's saved model, side by side, and operator profiles of the main variants."""
    client = MlflowClient(tracking_uri(args))
    with tempfile.TemporaryDirectory() as scratch:
        variants = {}
        for job in jobs:
            local = Path(client.download_artifacts(job.run_id, "model", str(Path(scratch) / job.run_id)))
            variants[job.run_id] = _load(local, job.quantization)
        batches = eval_batches(args, args.model, sorted({1, args.batch_size}))
        print(f"Timing {len(variants)} models side by side ({args.rounds} rounds)...", flush=True)
        latency = medians(time_side_by_side(variants, batches, args.warmup, args.rounds))
        contenders = [j.run_id for j in target_jobs(jobs).values() if j is not None]
        print(f"Timing the {len(contenders)} target variants head to head ({args.target_rounds} rounds)...", flush=True)
        head_to_head = time_side_by_side(
            {run: variants[run] for run in contenders},
            {args.batch_size: batches[args.batch_size]},
            1,
            args.target_rounds,
        )
        speedups = paired_speedups({run: t[args.batch_size] for run, t in head_to_head.items()}, contenders[0])
        profiled = {
            label(job): profile(variants[job.run_id], batches[args.batch_size], passes=3)
            for job in jobs
            if job.pruning in ("none", "structured") and job.finetune_steps == 0
        }
    (args.root / "timing.json").write_text(json.dumps({"latency": latency, "speedups": speedups, "profiled": profiled}))
    return latency, speedups, profiled


if __name__ == "__main__":
    main()
