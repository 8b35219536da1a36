"""How long a refusal takes: `python run.py` with one bad input, timed from start to exit.

    python benchmarks/refusal_time.py             # about a minute on 2 CPU cores
    python benchmarks/refusal_time.py --repeats 9

Each case runs --repeats times in a new process (after one warm-up run that fills the OS file
cache); the table gives the median and the range, the exit code and the one line printed, with
the CPU, and is written as BENCHMARKS.md's "Refusal times" section. Inputs are the real SQuAD 2.0
files and the fine-tuned MiniLM-L6 checkpoint under ../shared, damaged copies of them in a
temporary directory.

Targets: refusals that need no model weights (values, data files, the weights' headers, places,
the store) take at most 2 s on an idle 2-core machine; they come before torch is imported. A bad value
among the 300 jobs of a sweep is refused within 5 s (every job's values are checked first), and a
sweep of 300 good jobs starts its first within 30 s (Hydra's launcher announces job #0).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from qa_compress.evaluate import timing

import common

BEGIN, END = common.markers("refusal-time")
TARGET_S = 2.0
SWEEP_TARGET_S = 5.0  # a bad value among SWEEP_JOBS jobs
SWEEP_JOBS = 300
FIRST_JOB_TARGET_S = 30.0  # a sweep of SWEEP_JOBS good jobs starts its first


def cases(work: Path, squad: Path, checkpoint: Path) -> dict[str, tuple[list[str], bool]]:
    """Name: (run.py arguments, whether the refusal needs torch: the checkpoint's config or tokenizer)."""
    content = json.loads((squad / "validation.json").read_text())
    qas = [qa for article in content["data"] for p in article["paragraphs"] for qa in p["qas"]]
    qas[7]["id"] = qas[0]["id"]
    duplicated = work / "duplicated.json"
    duplicated.write_text(json.dumps(content))
    torn = Path(shutil.copytree(checkpoint, work / "torn"))
    weights = torn / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    data = ["dataset=squad_json", f"dataset.train_file={squad / 'train.json'}"]
    good = [*data, f"dataset.validation_file={squad / 'validation.json'}", f"model.name_or_path={checkpoint}"]
    return {
        "unknown option (Hydra's own)": (["pruning=magnitude_of_doom"], False),
        "value out of range": ([*good, "pruning=l1_unstructured", "pruning.amount=1.5"], False),
        "duplicate question ids (real SQuAD files)": (
            [*data, f"dataset.validation_file={duplicated}", f"model.name_or_path={checkpoint}"],
            False,
        ),
        "truncated model.safetensors": ([*good[:-1], f"model.name_or_path={torn}", "training=none"], False),
        "more threads than cores": ([*good, "training=none", "benchmark.num_threads=10000"], False),
        f"a bad value among {SWEEP_JOBS} swept jobs": (
            [
                "-m",
                *good,
                "pruning=l1_unstructured",
                f"pruning.amount=range(0,{SWEEP_JOBS * 0.005:g},0.005)",
                f"hydra.sweep.dir={work / 'sweep'}",
            ],
            False,
        ),
        "a stride as long as the window (tokenizer)": (
            [*good, "training=none", "dataset.max_seq_length=64", "dataset.doc_stride=60"],
            True,
        ),
    }


def command_of(args: list[str], out: Path) -> list[str]:
    run_py = str(common.ROOT / "run.py")
    return [sys.executable, run_py, *args, f"hydra.run.dir={out}", f"paths.cache_dir={out}/cache"]


def first_job_args(squad: Path, checkpoint: Path, out: Path) -> list[str]:
    """A sweep of SWEEP_JOBS good pruning amounts over the real checkpoint, its store under `out`."""
    return [
        "-m",
        "dataset=squad_json",
        f"dataset.train_file={squad / 'train.json'}",
        f"dataset.validation_file={squad / 'validation.json'}",
        f"model.name_or_path={checkpoint}",
        "training=none",
        "pruning=l1_unstructured",
        f"pruning.amount=range(0,{SWEEP_JOBS * 0.003:g},0.003)",
        f"hydra.sweep.dir={out / 'sweep'}",
        f"paths.mlruns_dir={out / 'mlruns'}",
    ]


def time_to_first_job(args: list[str], out: Path) -> float:
    """Seconds from start until Hydra's launcher announces job #0; the sweep is then stopped (SIGTERM)."""
    start = time.perf_counter()
    process = subprocess.Popen(
        command_of(args, out), cwd=common.ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        for line in process.stdout:
            if "\t#0 : " in line:
                return time.perf_counter() - start
        raise RuntimeError(f"the sweep ended (exit {process.wait()}) before its first job")
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=300)


def time_once(args: list[str], out: Path) -> tuple[float, int, str]:
    command = command_of(args, out)
    start = time.perf_counter()
    result = subprocess.run(command, cwd=common.ROOT, capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - start
    lines = result.stderr.strip().splitlines()
    return seconds, result.returncode, lines[0] if lines else ""


def section(rows: list[dict], first_job: list[float], repeats: int) -> str:
    table = [
        "| refusal | needs torch | median s | range s | exit | the line printed (abridged) |",
        "|---|---|---:|---:|---:|---|",
    ]
    for row in rows:
        line = row["line"] if len(row["line"]) <= 110 else row["line"][:107] + "..."
        line = line.replace(str(common.ROOT.parent), "..").replace("|", "\\|")
        table.append(
            f"| {row['name']} | {'yes' if row['torch'] else 'no'} | {row['median']:.2f} | "
            f"{row['low']:.2f}-{row['high']:.2f} | {row['exit']} | {line} |"
        )
    sweep = next(row for row in rows if row["name"].startswith("a bad value among"))
    light = [row["median"] for row in rows if not row["torch"] and row is not sweep]
    verdict = "met" if max(light) <= TARGET_S else "not met"
    sweep_verdict = "met" if sweep["median"] <= SWEEP_TARGET_S else "not met"
    first = statistics.median(first_job)
    first_verdict = "met" if first <= FIRST_JOB_TARGET_S else "not met"
    return "\n".join(
        [
            BEGIN,
            "## Refusal times",
            "",
            f"`python benchmarks/refusal_time.py --repeats {repeats}` on {timing.cpu_description()}, "
            f"{os.cpu_count()} cores: `python run.py` with one bad input, start to exit, median of {repeats} runs "
            "after a warm-up.",
            "",
            *table,
            "",
            f"Target: refusals that need no model weights take at most {TARGET_S:.0f} s. Slowest of them: "
            f"{max(light):.2f} s ({verdict}). A bad value among {SWEEP_JOBS} swept jobs (the 201st) within "
            f"{SWEEP_TARGET_S:.0f} s: {sweep['median']:.2f} s ({sweep_verdict}). A refusal that needs the "
            "checkpoint's tokenizer or config imports torch and transformers first.",
            "",
            f"A sweep of {SWEEP_JOBS} good jobs (every one checked, the checkpoint's config and tokenizer "
            f"included) starts its first job after {first:.2f} s (range {min(first_job):.2f}-{max(first_job):.2f}, "
            f"{len(first_job)} runs; target {FIRST_JOB_TARGET_S:.0f} s: {first_verdict}).",
            END,
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--squad-dir", type=Path, default=common.SHARED / "data" / "squad_v2")
    parser.add_argument("--checkpoint", type=Path, default=common.SHARED / "models" / "minilm-l6-squad2")
    parser.add_argument("--benchmarks", type=Path, default=common.ROOT / "BENCHMARKS.md")
    opts = parser.parse_args()
    for needed in (opts.squad_dir / "validation.json", opts.checkpoint / "model.safetensors"):
        if not needed.is_file():
            sys.exit(f"{needed}: not found (see --squad-dir and --checkpoint)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, (args, needs_torch) in cases(work, opts.squad_dir, opts.checkpoint).items():
            time_once(args, work / "warm-up")
            timed = [time_once(args, work / "out") for _ in range(opts.repeats)]
            seconds = [t for t, _, _ in timed]
            _, code, line = timed[-1]
            line = line.replace(str(work), "<tmp>")
            rows.append(
                {
                    "name": name,
                    "torch": needs_torch,
                    "median": statistics.median(seconds),
                    "low": min(seconds),
                    "high": max(seconds),
                    "exit": code,
                    "line": line,
                }
            )
            print(f"{name}: median {rows[-1]['median']:.2f} s, exit {code}: {line[:150]}", flush=True)
        first_job = [
            time_to_first_job(first_job_args(opts.squad_dir, opts.checkpoint, work / f"first-{i}"), work / "out")
            for i in range(opts.repeats)
        ]
        print(f"first of {SWEEP_JOBS} jobs started: median {statistics.median(first_job):.2f} s", flush=True)
    text = section(rows, first_job, opts.repeats)
    common.write_section(opts.benchmarks, BEGIN, END, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
