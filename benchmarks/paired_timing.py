"""Does the in-job speed-up survive a busy machine? The quick start, quiet and then crowded.

    python benchmarks/paired_timing.py            # about 6 minutes on 2 CPU cores
    python benchmarks/paired_timing.py --skip-sweeps   # rewrite the section from the stores already there

Runs the quick start sweep twice, each into its own MLflow store under --out (sharing one cache,
so the model is fine-tuned once): first alone with the basic launcher, then with two parallel
jobs (joblib) and a CPU-bound process running beside them the whole time. Prints each job's
`speedup` (paired rounds against the uncompressed model, in the job's own process) and its
interquartile range, next to the latency it measured alone, with the CPU they ran on, and
writes them as BENCHMARKS.md's "Speed-up on a busy machine" section.

Targets: in the crowded run, the three dense unquantized jobs (L1 0, 0.3, 0.6 without
quantization: the same matrix work) report a speed-up within 0.9-1.1, and dynamic INT8 at amount
0 reports one within 15% of the quiet run's.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from qa_compress.evaluate import timing
from qa_compress.tracking import store as stores

import common

BEGIN, END = common.markers("paired-timing")


def burn(stop_at: float) -> None:
    """Keep one core busy until `stop_at`."""
    x = 0
    while time.time() < stop_at:
        x = (x * 31 + 7) % 1_000_003


def sweep(out: Path, name: str, extra: list[str]) -> float:
    run_py = str(common.ROOT / "run.py")
    command = [
        sys.executable,
        run_py,
        "-m",
        "experiment=quickstart",
        f"paths.cache_dir={out / 'cache'}",
        f"paths.mlruns_dir={out / name}",
        f"hydra.sweep.dir={out / name / 'sweep'}",
        *extra,
    ]
    started = time.perf_counter()
    subprocess.run(command, cwd=common.ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def speedups(out: Path, name: str) -> dict[tuple[str, str], dict[str, float]]:
    client = MlflowClient(stores.sqlite_uri(out / name / "mlflow.db"))
    experiment = client.get_experiment_by_name("qa-compress").experiment_id
    runs = client.search_runs([experiment], filter_string="tags.mlflow.parentRunId != ''")
    return {(r.data.params["pruning.amount"], r.data.params["quantization.name"]): r.data.metrics for r in runs}


def section(out: Path, durations: str) -> list[str]:
    """The section's lines: the two runs side by side, and the targets."""
    quiet, crowded = speedups(out, "quiet"), speedups(out, "crowded")
    lines = [
        BEGIN,
        "## Speed-up on a busy machine",
        "",
        "`python benchmarks/paired_timing.py`: the quick start (generated data; MiniLM-L6, batch 16) run alone, then "
        "with two parallel jobs (`hydra/launcher=joblib hydra.launcher.n_jobs=2`) and a CPU-bound process beside "
        "them for the whole sweep. `speedup` is what each job measured against the uncompressed model in its own "
        "process (median of 10 interleaved rounds; interquartile range in brackets); `latency ms` is what the "
        "job measured of its own model alone.",
        "",
        f"CPU: {timing.cpu_description()}, {os.cpu_count()} cores. {durations}",
        "",
        "| job | quiet: speed-up (IQR) | quiet: latency ms | crowded: speed-up (IQR) | crowded: latency ms |",
        "|---|---|---|---|---|",
    ]
    for key in sorted(quiet):
        q, c = quiet[key], crowded[key]
        lines.append(
            f"| L1 {key[0]} + {key[1]} | {q['speedup']:.2f} ({q['speedup_q1']:.2f}-{q['speedup_q3']:.2f}) | "
            f"{q['latency_ms']:.1f} | {c['speedup']:.2f} ({c['speedup_q1']:.2f}-{c['speedup_q3']:.2f}) | "
            f"{c['latency_ms']:.1f} |"
        )
    dense = [crowded[(amount, "none")]["speedup"] for amount in ("0.0", "0.3", "0.6")]
    int8_change = crowded[("0.0", "dynamic_int8")]["speedup"] / quiet[("0.0", "dynamic_int8")]["speedup"] - 1
    met_dense = all(0.9 <= s <= 1.1 for s in dense)
    lines += [
        "",
        f"- Dense unquantized jobs in the crowded run: {', '.join(f'{s:.2f}' for s in dense)} (target 0.9-1.1: "
        f"**{'met' if met_dense else 'missed'}**).",
        f"- dynamic_int8 at amount 0, crowded against quiet: {int8_change:+.1%} (target within 15%: "
        f"**{'met' if abs(int8_change) <= 0.15 else 'missed'}**).",
        END,
    ]
    return lines


def _durations(out: Path, path: Path) -> str:
    """The two sweeps' wall times, and whether the quiet one fine-tuned the model or found it in the cache."""
    if not path.is_file():
        return "Sweep durations not recorded."
    seconds = json.loads(path.read_text())
    client = MlflowClient(stores.sqlite_uri(out / "quiet" / "mlflow.db"))
    experiment = client.get_experiment_by_name("qa-compress").experiment_id
    tags = [r.data.tags.get("baseline_cache") for r in client.search_runs([experiment])]
    baseline = "including the one fine-tune" if "miss" in tags else "the fine-tuned model from the cache"
    return f"Quiet sweep {seconds['quiet']:.0f} s ({baseline}), crowded sweep {seconds['crowded']:.0f} s."


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=common.ROOT / "outputs" / "paired_timing")
    parser.add_argument("--benchmarks", type=Path, default=common.ROOT / "BENCHMARKS.md")
    parser.add_argument("--skip-sweeps", action="store_true", help="write the section from the stores in --out")
    opts = parser.parse_args()
    opts.out.mkdir(parents=True, exist_ok=True)
    durations_file = opts.out / "durations.json"
    if not opts.skip_sweeps:
        quiet_s = sweep(opts.out, "quiet", [])
        burner = multiprocessing.Process(target=burn, args=(time.time() + 3600,), daemon=True)
        burner.start()
        try:
            crowded_s = sweep(opts.out, "crowded", ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"])
        finally:
            burner.terminate()
        durations_file.write_text(json.dumps({"quiet": quiet_s, "crowded": crowded_s}))
    text = "\n".join(section(opts.out, _durations(opts.out, durations_file))) + "\n"
    common.write_section(opts.benchmarks, BEGIN, END, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
