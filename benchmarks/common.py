"""What the benchmark scripts share: where they write, the store and overrides of their sweeps, the labels of
their jobs, real evaluation windows, side-by-side timing, operator profiles, and the sections of BENCHMARKS.md
each one owns.

The scripts import this module and never each other.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import AutoTokenizer

from qa_compress import prune
from qa_compress.data import features, squad
from qa_compress.evaluate import predict, timing
from qa_compress.quantize.backends import onnxrt, openvino_runtime
from qa_compress.tracking import results
from qa_compress.tracking import store as stores

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"  # the real SQuAD 2.0 files and checkpoint beside the checkout


def markers(name: str) -> tuple[str, str]:
    """The comments that open and close the section of BENCHMARKS.md that the script `name` writes."""
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


# Sections other scripts write (and `options`, `install`, kept by hand): tradeoffs.py keeps them when it rewrites.
KEPT_SECTIONS = [
    markers(name) for name in ("recovery", "compound", "paired-timing", "refusal-time", "search", "options", "install")
]
UNSTRUCTURED = tuple(m.name for m in prune.registry if isinstance(m, prune.UnstructuredMethod))


def base_parser(description: str) -> argparse.ArgumentParser:
    """The options of a script that runs jobs on the real data: inputs, where to write, overrides, threads."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=SHARED / "models" / "minilm-l6-squad2")
    parser.add_argument("--eval", type=Path, default=SHARED / "data" / "squad_v2" / "validation.json")
    parser.add_argument("--train", type=Path, help="SQuAD 2.0 JSON for recovery (default: train.json beside --eval)")
    parser.add_argument("--root", type=Path, default=ROOT / "outputs" / "tradeoffs")
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="more run.py overrides")
    parser.add_argument("--max-eval-samples", type=int, help="evaluate on the first N questions only (a trial run)")
    parser.add_argument("--threads", type=int, default=2)
    return parser


def checked(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """The parsed options of a `base_parser`, the training file defaulted and every input and count checked."""
    args = parser.parse_args(argv)
    args.train = args.train or args.eval.with_name("train.json")
    for key in ("model", "eval", "train"):
        if not getattr(args, key).exists():
            parser.error(f"--{key} {getattr(args, key)}: no such file or directory")
    for key in ("threads", "rounds", "batch_size"):
        if getattr(args, key, 1) < 1:
            parser.error(f"--{key.replace('_', '-')} {getattr(args, key)}: must be positive")
    return args


def user_overrides(args: argparse.Namespace, experiment: str) -> list[str]:
    """The --set values for `experiment`: `key=value` for every sweep, `experiment:key=value` for one."""
    chosen = []
    for item in args.set:
        scope, _, override = item.partition(":") if ":" in item.split("=", 1)[0] else ("", "", item)
        if scope in ("", experiment):
            chosen.append(override)
    return chosen


def overrides(args: argparse.Namespace, experiment: str) -> list[str]:
    """What a sweep is told besides its experiment: inputs, where to write, and the user's --set."""
    result = [
        f"model.name_or_path={args.model.resolve()}",
        f"dataset.validation_file={args.eval.resolve()}",
        f"dataset.train_file={args.train.resolve()}",
        f"benchmark.num_threads={args.threads}",
        f"tracking.uri={store(args)}",
        f"paths.mlruns_dir={args.root.resolve()}",  # saved models go beside the store, under --root
        f"paths.cache_dir={args.root.resolve() / 'cache'}",
        *user_overrides(args, experiment),
    ]
    if args.max_eval_samples:
        result.append(f"dataset.max_eval_samples={args.max_eval_samples}")
    return result


def store(args: argparse.Namespace) -> str:
    """The benchmark's own MLflow store, under --root (its experiment is `tradeoffs`)."""
    return stores.sqlite_uri(args.root / "mlflow.db")


def recovered(job: results.Job) -> bool:
    return job.params.get("pruning.finetune_steps", "0") != "0"


def int8_mode(job: results.Job) -> str | None:
    """How an OpenVINO INT8 job was quantized, as the method labels it: post-training, accuracy control or QAT
    (None for other methods)."""
    return (job.quantization_label or None) if job.quantization == "openvino_int8" else None


def label(job: results.Job) -> str:
    mode = int8_mode(job)
    return f"{job.pruning_label} | {job.quantization}" + (f" ({mode})" if mode not in (None, "post-training") else "")


def eval_batches(args: argparse.Namespace, tokenizer_dir: Path, sizes: list[int]) -> dict[int, dict[str, torch.Tensor]]:
    """For each size, that many real evaluation windows, padded to the sequence length the jobs used."""
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    examples = squad.limit(squad.load_squad_json(args.eval, "--eval"), max(sizes))
    windows = features.prepare(
        examples.dataset, examples.digest, tokenizer, args.max_seq_length, args.doc_stride, "eval", args.root / "cache"
    )
    inputs = predict.forward_inputs(windows, [n for n in tokenizer.model_input_names if n in windows.column_names])
    return {size: timing.batch_of(inputs, size) for size in sizes}


def time_side_by_side(
    variants: dict[str, object], batches: dict[int, dict], warmup: int, rounds: int, order_seed: int | None = None
) -> dict[str, dict[int, list[float]]]:
    """Milliseconds per forward pass of every variant at every batch size, round by round, interleaved
    (`timing.interleaved`: an untimed pass then the timed one, a fresh seeded order each round with `order_seed`)."""
    times: dict[str, dict[int, list[float]]] = {name: {} for name in variants}
    for size, batch in batches.items():
        calls = {name: (lambda model=model, batch=batch: model(**batch)) for name, model in variants.items()}
        for name, ms in timing.interleaved(calls, warmup, rounds, order_seed=order_seed).items():
            times[name][size] = ms
    return times


def paired(times: dict[str, list[float]], reference: str) -> dict[str, list[float]]:
    """Each variant's speed-up over `reference`, round by round."""
    return {name: timing.ratios(times[reference], own) for name, own in times.items()}


def write_section(path: Path, begin: str, end: str, text: str) -> None:
    """Print `text` (a section from `begin` to `end`) and put it in `path` in place of the old one, or at its end."""
    print(text)
    if not path.is_file():
        return
    document = path.read_text()
    if begin in document and end in document:
        head, rest = document.split(begin, 1)
        document = head + text.strip("\n") + rest.split(end, 1)[1]
    else:
        document = document.rstrip("\n") + "\n\n" + text.strip("\n") + "\n"
    path.write_text(document)
    print(f"written to {path}")


def keep_sections(document: str, previous: str) -> str:
    """`document` followed by the sections other scripts wrote into the previous file (benchmarks/recovery.py)."""
    kept = []
    for begin, end in KEPT_SECTIONS:
        if begin in previous and end in previous.split(begin, 1)[1]:
            kept.append(begin + previous.split(begin, 1)[1].split(end, 1)[0] + end)
    return "\n\n".join([document.rstrip("\n"), *kept]) + "\n"


# Profiles ------------------------------------------------------------------------------------


@torch.inference_mode()
def profile(model, batch: dict[str, torch.Tensor], passes: int, top: int | None = 6) -> list[tuple[str, float, float]]:
    """Where a forward pass spends its time: (operator, ms per pass, share), largest first (`top` of them, or all).

    PyTorch models through torch.profiler (self CPU time per operator); ONNX Runtime sessions
    through the session's own profiler (time per graph node type); OpenVINO through its
    performance counters (time per operator type and the kernel, with its precision, that ran it).
    """
    if isinstance(model, openvino_runtime.OvModel):
        profiled = openvino_runtime.OvModel(model.model, torch.get_num_threads(), profile=True)
        profiled(**batch)
        totals = {}
        for _ in range(passes):
            profiled(**batch)
            for op in profiled.profile():
                key = f"{op['type']} ({op['exec_type']})"
                totals[key] = totals.get(key, 0.0) + op["ms"]
    elif isinstance(model, onnxrt.OrtModel):
        with tempfile.TemporaryDirectory() as scratch:
            session = onnxrt.OrtModel(model.path, torch.get_num_threads(), profile_prefix=str(Path(scratch) / "ort"))
            for _ in range(passes + 1):  # the first is warm-up, dropped below
                session(**batch)
            events = json.loads(session.end_profiling().read_text())
        runs = [e for e in events if e.get("name") == "model_run"]
        start = runs[-passes]["ts"] if len(runs) >= passes else 0
        totals: dict[str, float] = {}
        for event in events:
            if event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and event["ts"] >= start:
                totals[event["args"]["op_name"]] = totals.get(event["args"]["op_name"], 0.0) + event["dur"] / 1e3
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


def summed(ops: list, keep: Callable[[str], bool]) -> tuple[float, list[str]]:
    """Milliseconds per pass of a profile's operators that `keep` accepts, and their names."""
    chosen = [(op, ms) for op, ms, _ in ops if keep(op)]
    return sum(ms for _, ms in chosen), sorted({op for op, _ in chosen})


def kind(op: str) -> str:
    """An operator's type without its kernel: `Subgraph (jit_avx512_i8)` is a `Subgraph`."""
    return op.split(" (", 1)[0]


def pass_ms(ops: list) -> float:
    """A profile's whole pass in ms, from its first row's time and share (0 when it has none)."""
    return ops[0][1] / ops[0][2] if ops and ops[0][2] else 0.0


def by_kind(ops: list) -> dict[str, float]:
    """Milliseconds per pass of each operator type in a profile, kernels merged."""
    kinds: dict[str, float] = {}
    for op, ms, _ in ops:
        kinds[kind(op)] = kinds.get(kind(op), 0.0) + ms
    return kinds
