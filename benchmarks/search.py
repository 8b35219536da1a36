"""Search against grid: does `hydra/sweeper=pareto` find the grid's front with a third of its jobs?

    python benchmarks/search.py                        # the 60-job grid (about an hour on 2 cores), searches, timing
    python benchmarks/search.py --skip-grid --fresh    # searches anew over the finished grid (minutes), timing
    python benchmarks/search.py --skip-grid --skip-searches --reuse-timing   # judge again, no new timing

The side-by-side timing takes about 20 minutes on 2 cores (27 models, 40 rounds), the replays about 10.
    python benchmarks/search.py --seeds 0 1 2 --trials 20 --replay-seeds 24

The grid is 60 jobs of `experiment=search_common` (the fine-tuned MiniLM-L6 under ../shared, the
first 1,000 questions of the real SQuAD 2.0 validation file, each job timed against the
uncompressed model in its own process): no pruning, global magnitude and L1 pruning at amounts
0.1-0.5, structured pruning at three head and three FFN amounts, each with no quantization,
dynamic INT8 and ONNX Runtime INT8. The searches explore the same space, written as choices, with
at most --trials jobs each (a third of the grid by default), for each sampler and seed; a trial
whose configuration the grid ran reuses that run (same configuration hash), so search and grid
differ only in which jobs they chose to run.

Objectives: F1 up and speed up (`speedup`: the job's paired speed-up over the uncompressed model).
Hypervolume reference point: always-no-answer F1 on the slice, and the uncompressed model's speed
(speed-up 1). Jobs time themselves in their own processes at their own moments, and jobs doing the
same work came out further apart than different configurations do; so before judging, every grid
configuration that can add to a front (F1 above the always-no-answer F1) is rebuilt and timed side by
side in one process (--side-rounds interleaved rounds, a fresh order each round), and the targets are
judged on that run, the jobs' own timings given beside it. Each sampler is also replayed
--replay-seeds times through the same search loop, each trial answered with the grid job's
measurement of its configuration: many seeds in minutes, where three real searches say little.
Targets: each TPE search covers at least 95% of the grid front's hypervolume, and in constraint
mode (`hydra.sweeper.max_f1_drop=1.0`) finds a configuration at least as fast as the grid's fastest
within 1.0 F1. Written to BENCHMARKS.md ("Search against grid") with docs/search_vs_grid.png.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qa_compress.evaluate import bootstrap, timing
from qa_compress.evaluate.timing import cpu_description
from qa_compress.job import config, stages
from qa_compress.sweep import front, search, search_plan
from qa_compress.tracking import results, runs
from qa_compress.tracking import store as stores

import common

BEGIN, END = common.markers("search")
QUANTIZATION = "quantization=none,dynamic_int8,onnx_int8"
GRID = {  # sweep name: its overrides (60 jobs in all)
    "grid_none": ["pruning=none", QUANTIZATION],
    "grid_unstructured": [
        "pruning=global_magnitude,l1_unstructured",
        "pruning.amount=0.1,0.2,0.3,0.4,0.5",
        QUANTIZATION,
    ],
    "grid_structured": [
        "pruning=structured",
        "pruning.heads_amount=0,0.25,0.5",
        "pruning.ffn_amount=0.25,0.5,0.75",
        QUANTIZATION,
    ],
}
SPACE = [
    "pruning=choice(none,global_magnitude,l1_unstructured,structured)",
    "pruning.amount=choice(0.1,0.2,0.3,0.4,0.5)",
    "pruning.heads_amount=choice(0,0.25,0.5)",
    "pruning.ffn_amount=choice(0.25,0.5,0.75)",
    "quantization=choice(none,dynamic_int8,onnx_int8)",
]
SEARCHED = tuple(item.split("=", 1)[0] for item in SPACE)
OBJECTIVES = ["f1", "speedup"]
DIRECTIONS = [search_plan.OBJECTIVES[name] for name in OBJECTIVES]
HYPERVOLUME_TARGET = 0.95
SEARCHERS = {  # name: (hydra.sweeper.sampler, hydra.sweeper.refine); "tpe" is the sweeper's default
    "tpe": ("tpe", True),
    "tpe-unrefined": ("tpe", False),
    "nsga2": ("nsga2", True),
    "random": ("random", False),
}
PLOT = common.ROOT / "docs" / "search_vs_grid.png"
SIDE_BY_SIDE = "side_by_side.json"  # under --root: the grid's configurations timed in one process


def sweep_overrides(args: argparse.Namespace) -> list[str]:
    """What every job is told: the inputs, the threads, where to write."""
    root = args.root.resolve()
    return [
        "experiment=search_common",
        f"model.name_or_path={args.model.resolve()}",
        f"dataset.validation_file={args.eval.resolve()}",
        f"dataset.train_file={args.train.resolve()}",
        f"benchmark.num_threads={args.threads}",
        f"tracking.uri={stores.sqlite_uri(root / 'mlflow.db')}",
        f"paths.mlruns_dir={root}",
        f"paths.cache_dir={root / 'cache'}",
    ]


def run(command: list[str]) -> None:
    print("$", " ".join(command), flush=True)
    subprocess.run(command, cwd=common.ROOT, check=True)


def sweeper_options(searcher: str) -> list[str]:
    sampler, refine = SEARCHERS[searcher]
    return [f"hydra.sweeper.sampler={sampler}", f"hydra.sweeper.refine={str(refine).lower()}"]


def study_name(sampler: str, seed: int, trials: int, max_f1_drop: float | None) -> str:
    mode = f"within{max_f1_drop:g}" if max_f1_drop is not None else "front"
    return f"bench-{mode}-{sampler}-seed{seed}-trials{trials}"


def forget_studies(args: argparse.Namespace) -> None:
    """Delete the studies this run would otherwise continue (the grid's runs stay: trials reuse them)."""
    import optuna

    storage = stores.sqlite_uri(args.root / "optuna.db")
    existing = {summary.study_name for summary in optuna.get_all_study_summaries(storage)}
    for sampler in args.samplers:
        for seed in args.seeds:
            for drop in (None, args.max_f1_drop):
                name = study_name(sampler, seed, args.trials, drop)
                if name in existing:
                    optuna.delete_study(study_name=name, storage=storage)
                    print(f"deleted study {name}", flush=True)


def run_search(args: argparse.Namespace, sampler: str, seed: int, max_f1_drop: float | None = None) -> str:
    name = study_name(sampler, seed, args.trials, max_f1_drop)
    options = [
        "hydra/sweeper=pareto",
        *sweeper_options(sampler),
        f"hydra.sweeper.seed={seed}",
        f"hydra.sweeper.n_trials={args.trials}",
        f"hydra.sweeper.n_startup_trials={args.startup}",
        f"hydra.sweeper.objectives=[{','.join(OBJECTIVES)}]",
        f"hydra.sweeper.study_name={name}",
        f"hydra.sweep.dir={args.root.resolve() / 'sweeps' / name}",
    ]
    if max_f1_drop is not None:
        options.append(f"hydra.sweeper.max_f1_drop={max_f1_drop}")
    run([sys.executable, str(common.ROOT / "run.py"), "-m", *sweep_overrides(args), *SPACE, *options])
    return name


def grid_jobs(args: argparse.Namespace) -> list[results.Job]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(stores.sqlite_uri(args.root / "mlflow.db"))
    jobs = {}
    for name in GRID:
        parent = runs.sweep_parent(args.root.resolve() / "sweeps" / name)
        if parent is None:
            raise SystemExit(f"the grid sweep {name} has not run (drop --skip-grid)")
        for job in results.sweep_jobs(client, parent):
            if job.done:
                jobs[job.run_id] = job
    return list(jobs.values())


def study_runs(args: argparse.Namespace, name: str) -> tuple[Ran, int]:
    """A study's finished trials (in trial order) as the runs they answered with, and how many jobs it ran."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=name, storage=stores.sqlite_uri(args.root / "optuna.db"))
    ran = [t for t in study.trials if "overrides" in t.user_attrs and "duplicate_of" not in t.user_attrs]
    done = [t for t in ran if t.state == optuna.trial.TrialState.COMPLETE]
    return [(t.user_attrs["run_id"], dict(t.user_attrs["metrics"])) for t in done], len(ran)


def same_work(jobs: list[results.Job]) -> dict[str, list[results.Job]]:
    """Per quantization, the jobs that do the same dense work: no pruning, or unstructured pruning, which
    leaves every matrix its shape (the methods read from the pruning registry)."""
    dense = ("none", *common.UNSTRUCTURED)
    groups = {}
    for quantization in QUANTIZATION.split("=", 1)[1].split(","):
        same = [
            job
            for job in jobs
            if job.params["quantization.name"] == quantization and job.params["pruning.name"] in dense
        ]
        if same:
            groups[quantization] = same
    return groups


def same_work_spread(jobs: list[results.Job], speedup: Callable[[results.Job], float]) -> list[str]:
    """How far apart a timing puts identical work: each same-work group's speed-ups."""
    spans = []
    for quantization, same in same_work(jobs).items():
        speeds = [speedup(job) for job in same]
        spans.append(f"{quantization} {min(speeds):.2f}–{max(speeds):.2f}× ({len(same)} jobs)")
    return spans


def as_fast(best: dict | None, grid_best: dict) -> bool:
    """Whether a search's fastest within the loss is at least as fast as the grid's."""
    return best is not None and best["speedup"] >= grid_best["speedup"] - 1e-9


# Side by side ------------------------------------------------------------------------------------


Ran = list[tuple[str, dict]]  # the jobs a grid or a search ran: (run id, metrics), in order


def retime_grid(args: argparse.Namespace, jobs: list[results.Job], floor: float) -> dict:
    """Rebuild every grid configuration whose F1 is above `floor` (the always-no-answer F1: no other can add to a
    front's hypervolume) and time them all in one process, interleaved, each round in a fresh order."""
    import torch
    from hydra import initialize_config_dir
    from mlflow.tracking import MlflowClient

    client = MlflowClient(stores.sqlite_uri(args.root / "mlflow.db"))
    chosen = [job for job in jobs if job.metrics["f1"] > floor]
    if not chosen:
        raise SystemExit(f"no grid job scores above the always-no-answer F1 {floor:.2f}: nothing to time")
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as scratch, initialize_config_dir(str(common.ROOT / "conf"), version_base="1.3"):
        models, settings = {}, None
        for n, job in enumerate(chosen):
            workdir = Path(scratch) / job.run_id
            overrides = json.loads(client.get_run(job.run_id).data.tags["overrides"])
            settings = config.compose_job("config", overrides, workdir)
            print(f"building {n + 1}/{len(chosen)}: {job.pruning_label} | {job.quantization}", flush=True)
            models[job.run_id] = stages.compressed(settings, workdir)
        where = argparse.Namespace(
            eval=args.eval,
            root=args.root,
            max_seq_length=settings.dataset.max_seq_length,
            doc_stride=settings.dataset.doc_stride,
        )
        size = settings.benchmark.batch_size
        batches = common.eval_batches(where, args.model, [size])
        print(f"timing {len(models)} configurations side by side ({args.side_rounds} rounds)...", flush=True)
        times = common.time_side_by_side(models, batches, args.warmup, args.side_rounds, order_seed=0)
    timing = {
        "cpu": cpu_description(),
        "threads": args.threads,
        "batch_size": size,
        "max_seq_length": settings.dataset.max_seq_length,
        "rounds": args.side_rounds,
        "warmup": args.warmup,
        "reference": results.baseline_of(jobs).run_id,
        "times": {run: t[size] for run, t in times.items()},
    }
    (args.root / SIDE_BY_SIDE).write_text(json.dumps(timing))
    return timing


@dataclass(frozen=True)
class SideBySide:
    """The grid's configurations timed again side by side in one process (`retime_grid`): a job is judged by
    the speed of its configuration in that one run, where the jobs' own timings, each taken in its own process at
    its own moment, differ by more between jobs doing the same work than between configurations."""

    times: dict[str, list[float]]  # run id -> ms per pass, round by round
    reference: str  # the uncompressed job's run id

    @functools.cached_property
    def speedups(self) -> dict[str, float]:
        """Each configuration's median, over the rounds, of the uncompressed model's time over its own."""
        return {run: float(statistics.median(self.ratios(self.reference, run))) for run in self.times}

    def ratios(self, slower: str, faster: str) -> list[float]:
        """Round by round, how many times faster `faster` ran than `slower`."""
        return timing.ratios(self.times[slower], self.times[faster])

    def interval(self, slower: str, faster: str) -> tuple[float, float]:
        """The 95% interval of the median of `ratios`, the rounds resampled."""
        return bootstrap.interval(self.ratios(slower, faster), np.median)

    def judged(self, ran: Ran) -> Ran:
        """The jobs with their side-by-side speed-ups (jobs not timed again keep their own: they add to no front)."""
        return [(run, {**m, "speedup": self.speedups[run]} if run in self.times else m) for run, m in ran]


def points(ran: Ran) -> list[list[float]]:
    return [[metrics[name] for name in OBJECTIVES] for _, metrics in ran]


def fastest(ran: Ran, reference_f1: float, drop: float) -> tuple[str, dict] | None:
    """The fastest job within `drop` F1 of the uncompressed model (the more accurate of equally fast ones)."""
    within = [(run, m) for run, m in ran if m["f1"] >= reference_f1 - drop - 1e-9]
    return max(within, key=lambda item: (item[1]["speedup"], item[1]["f1"]), default=None)


@dataclass(frozen=True)
class Verdict:
    """One search judged against the grid on one timing: the share of the grid front's hypervolume its front
    covers, and (constraint mode) its fastest configuration within the loss against the grid's."""

    share: float
    found: tuple[str, dict] | None = None
    met: bool | None = None  # constraint mode: found at least as fast as the grid's fastest within the loss
    indistinct: bool = False  # missed, but the side-by-side rounds cannot tell the two apart


# Replay ------------------------------------------------------------------------------------------


IDENTITIES: dict[tuple[str, ...], str] = {}  # a trial's overrides -> its configuration key, across replays


def grid_lookup(jobs: list[results.Job]) -> Callable[[list[str]], results.Job]:
    """The grid job a trial's overrides describe (same method, quantization and amounts)."""

    def find(overrides: list[str]) -> results.Job:
        chosen = dict(o.split("=", 1) for o in overrides if o.split("=", 1)[0] in SEARCHED)
        for job in jobs:
            methods = job.params["pruning.name"], job.params["quantization.name"]
            if methods == (chosen["pruning"], chosen["quantization"]) and all(
                float(job.params[k]) == float(v) for k, v in chosen.items() if k.startswith("pruning.")
            ):
                return job
        raise SystemExit(f"the grid has no job for {overrides}: the replay needs the whole grid")

    return find


def replay(
    args: argparse.Namespace, jobs: list[results.Job], sampler: str, seed: int, max_f1_drop: float | None
) -> Ran:
    """One search through the shipped loop (`search.Search`, the sampler, the space, the duplicate and constraint
    handling), each trial answered with the grid job's own measurement of its configuration instead of a new job
    (what a real search is told): the runs its finished trials answered with."""
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from qa_compress.sweep import callback, search_space

    settings = [
        *sweeper_options(sampler),
        f"hydra.sweeper.seed={seed}",
        f"hydra.sweeper.n_trials={args.trials}",
        f"hydra.sweeper.n_startup_trials={args.startup}",
        f"hydra.sweeper.objectives=[{','.join(OBJECTIVES)}]",
        f"hydra.sweeper.storage={args.replay_storage}",
        f"hydra.sweeper.study_name=replay-{sampler}-{seed}-{max_f1_drop}",
    ]
    if max_f1_drop is not None:
        settings.append(f"hydra.sweeper.max_f1_drop={max_f1_drop}")
    find = grid_lookup(jobs)
    with initialize_config_dir(config_dir=str(common.ROOT / "conf"), version_base="1.3"):
        config = compose(
            "config", overrides=[*sweep_overrides(args), "hydra/sweeper=pareto", *settings], return_hydra_config=True
        )
        with open_dict(config):
            config.hydra.overrides.task = [*sweep_overrides(args), *SPACE]

        def composed(overrides: list[str]) -> dict:
            return callback.composed("config", overrides)

        plan = search_plan.plan(config, composed, "")
        _, reference = callback.reference_job("config", list(plan.space.fixed))

        def launch(batch: list[list[str]], first_index: int) -> list[search.Outcome]:
            answers = [find(overrides) for overrides in batch]
            return [search.outcome_of(OBJECTIVES, {**job.metrics, "run_id": job.run_id}, None) for job in answers]

        def identify(overrides: list[str]) -> str:
            if tuple(overrides) not in IDENTITIES:  # every replay proposes the same few configurations
                IDENTITIES[tuple(overrides)] = search_space.config_key(composed(overrides))
            return IDENTITIES[tuple(overrides)]

        runner = search.Search(plan, launch, lambda batch: None, identify, reference, None, "")
        finished = runner.run()
    return [(t.user_attrs["run_id"], dict(t.user_attrs["metrics"])) for t in finished]


TIMINGS = ("side by side", "as timed by the jobs")  # the two timings every search is judged on


class Judge:
    """What searches are judged against on each timing (`TIMINGS`): the grid's jobs with that timing's speeds,
    the hypervolume of their front and the grid's fastest within the loss, each computed once."""

    def __init__(self, grid: Ran, reference: list[float], reference_f1: float, drop: float, side: SideBySide):
        self.reference, self.reference_f1, self.drop, self.side = reference, reference_f1, drop, side
        self.grid = {timing: self.timed(grid, timing) for timing in TIMINGS}
        self.whole = {timing: front.hypervolume(points(g), reference, DIRECTIONS) for timing, g in self.grid.items()}
        self.best = {timing: fastest(g, reference_f1, drop) for timing, g in self.grid.items()}

    def timed(self, ran: Ran, timing: str) -> Ran:
        """The jobs with `timing`'s speed-ups."""
        return self.side.judged(ran) if timing == TIMINGS[0] else ran

    def verdict(self, ran: Ran, timing: str, constrained: Ran | None = None) -> Verdict:
        """A search's verdict on one timing; with `constrained` (its constraint-mode run), that mode's too."""
        share = front.hypervolume(points(self.timed(ran, timing)), self.reference, DIRECTIONS) / self.whole[timing]
        if constrained is None:
            return Verdict(share)
        found, best = fastest(self.timed(constrained, timing), self.reference_f1, self.drop), self.best[timing]
        met = as_fast(found[1] if found else None, best[1])
        indistinct = False
        if not met and found and timing == TIMINGS[0] and found[0] in self.side.times:
            low, high = self.side.interval(found[0], best[0])
            indistinct = low <= 1.0 <= high
        return Verdict(share, found, met, indistinct)

    def __call__(self, ran: Ran, constrained: Ran | None = None) -> dict[str, Verdict]:
        return {timing: self.verdict(ran, timing, constrained) for timing in TIMINGS}


def reached(verdicts: list[dict[str, Verdict]], timing: str) -> int:
    return sum(v[timing].share >= HYPERVOLUME_TARGET for v in verdicts)


def not_slower(verdicts: list[dict[str, Verdict]]) -> int:
    """Constraint-mode searches whose pick is at least as fast side by side, or slower by less than the rounds
    can tell (the 95% interval of the ratio of the two holds 1)."""
    return sum(v[TIMINGS[0]].met or v[TIMINGS[0]].indistinct for v in verdicts)


def replays(
    args: argparse.Namespace, jobs: list[results.Job], judged: Judge, key_run: str
) -> tuple[list[str], dict[str, list[float]]]:
    """Each sampler replayed over --replay-seeds seeds, judged on both timings: the hypervolume shares side by side,
    how many seeds reached the target on each timing, how many ran the grid job that carries most of the front,
    and how many constraint-mode searches found a configuration as fast as the grid's fastest within the loss."""
    rows, by_sampler = [], {}
    side, timed = TIMINGS
    for sampler in args.replay_samplers:
        verdicts, ran_key = [], []
        for seed in range(args.replay_seeds):
            ran = replay(args, jobs, sampler, seed, None)
            verdicts.append(judged(ran, replay(args, jobs, sampler, seed, args.max_f1_drop)))
            if key_run in dict(ran):
                ran_key.append(verdicts[-1])
        shares = [v[side].share for v in verdicts]
        print(f"replay {sampler}: {' '.join(f'{100 * v:.0f}' for v in shares)}", flush=True)
        quartiles = statistics.quantiles([100 * v for v in shares], n=4)
        cells = [
            sampler,
            str(args.replay_seeds),
            f"{100 * statistics.median(shares):.1f}%",
            f"{quartiles[0]:.1f}–{quartiles[2]:.1f}%",
            f"{100 * min(shares):.1f}%",
            f"{reached(verdicts, side)} of {len(verdicts)}",
            f"{reached(verdicts, timed)} of {len(verdicts)}",
            f"{len(ran_key)} ({reached(ran_key, side)} reached {HYPERVOLUME_TARGET:.0%})",
            f"{sum(v[side].met for v in verdicts)} of {len(verdicts)} ({not_slower(verdicts)} not measurably slower)",
            f"{sum(v[timed].met for v in verdicts)} of {len(verdicts)}",
        ]
        rows.append("| " + " | ".join(cells) + " |")
        by_sampler[sampler] = shares
    return rows, by_sampler


def replay_section(
    args: argparse.Namespace, rows: list[str], real: dict[str, list[float]], replayed: dict[str, list[float]]
) -> list[str]:
    if not rows:
        return []
    covered = all(seed < args.replay_seeds for seed in args.seeds)
    pairs = [
        (sampler, real[sampler], [100 * replayed[sampler][seed] for seed in args.seeds])
        for sampler in real
        if sampler in replayed and covered
    ]
    check = " ".join(
        f"Replayed with the real searches' seeds, {sampler} covers {', '.join(f'{v:.1f}' for v in again)}% "
        f"(the real searches: {', '.join(f'{v:.1f}' for v in first)}%)."
        for sampler, first, again in pairs
    )
    return [
        "",
        f"Three seeds say little about a sampler. The replay runs each sampler's search {args.replay_seeds} times "
        f"(seeds 0 to {args.replay_seeds - 1}) through the same search loop, space and settings, answering each "
        "trial with the grid job's own measurement of its configuration (what a real search is told) instead of "
        "running a job, so it costs seconds; each search is then judged as the real ones are: the share of the grid "
        "front's hypervolume its front covers side by side (median, interquartile range, worst, how many reached "
        "the target) and as timed by the jobs, how many searches ran the grid job that carries most of the front "
        "(and of those, how many reached the target), and how many constraint-mode searches (same seeds) found a "
        f"configuration at least as fast as the grid's fastest within {args.max_f1_drop:g} F1, on each timing. "
        f"{check}",
        "",
        f"| sampler | searches | median hypervolume, side by side | interquartile range | worst "
        f"| reached {HYPERVOLUME_TARGET:.0%}, side by side | reached {HYPERVOLUME_TARGET:.0%}, as timed by the jobs "
        f"| ran the job that carries most | constraint mode: as fast as the grid's fastest within "
        f"{args.max_f1_drop:g} F1, side by side | the same, as timed by the jobs |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *rows,
    ]


def plot(
    grid: list[list[float]], reference: list[float], searches: dict[str, list[list[float]]], shown: str, path: Path
) -> None:
    """Left: the grid, its front and one search's front; right: each search's hypervolume after each trial."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.scatter([p[1] for p in grid], [p[0] for p in grid], s=18, color="lightgray", label=f"grid ({len(grid)} jobs)")
    fronts = ((grid, "k--", "grid front"), (searches[shown], "b-", f"search front ({shown})"))
    for found, style, label in fronts:
        on = sorted((found[i] for i in front.front(found, DIRECTIONS)), key=lambda p: p[1])
        left.plot([p[1] for p in on], [p[0] for p in on], style, marker="o", markersize=4, label=label)
    chosen = searches[shown]
    left.scatter(
        [p[1] for p in chosen],
        [p[0] for p in chosen],
        s=10,
        color="tab:blue",
        alpha=0.5,
        label=f"search trials ({len(chosen)})",
    )
    left.axhline(reference[0], color="tab:red", lw=0.8, label="always-no-answer F1")
    left.set_xlabel("speed-up over the uncompressed model (side by side above the red line)")
    left.set_ylabel("F1")
    left.legend(fontsize=7)
    whole = front.hypervolume(grid, reference, DIRECTIONS)
    styles = ["-", "--", ":", "-."]
    for n, (name, found) in enumerate(searches.items()):
        growth = [100 * v / whole for v in front.growth(found, reference, DIRECTIONS)]
        right.step(
            range(1, len(growth) + 1),
            growth,
            where="post",
            label=name,
            alpha=0.8,
            ls=styles[n % len(styles)],
            color="tab:blue" if name.startswith("tpe") else "tab:orange",
        )
    right.axhline(100 * HYPERVOLUME_TARGET, color="k", lw=0.8, ls="--", label="95% of the grid front")
    right.set_xlabel("trials (jobs)")
    right.set_ylabel("hypervolume side by side, % of the grid front's")
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def side_timing(args: argparse.Namespace, jobs: list[results.Job], floor: float) -> dict:
    """The side-by-side timing: run now, or (--reuse-timing) the last one, if it holds every configuration needed."""
    if not args.reuse_timing:
        return retime_grid(args, jobs, floor)
    path = args.root / SIDE_BY_SIDE
    if not path.exists():
        raise SystemExit(f"{path}: no side-by-side timing yet (drop --reuse-timing)")
    timing = json.loads(path.read_text())
    missing = [job.run_id for job in jobs if job.metrics["f1"] > floor and job.run_id not in timing["times"]]
    if missing:
        raise SystemExit(f"{path} lacks {len(missing)} of the grid's configurations (drop --reuse-timing)")
    return timing


def share_cell(verdict: Verdict, judged_by_target: bool, found_key: str) -> str:
    mark = "baseline" if not judged_by_target else "met" if verdict.share >= HYPERVOLUME_TARGET else "missed"
    return f"{100 * verdict.share:.1f}% ({mark}{found_key})"


def constraint_cell(verdict: Verdict) -> str:
    found = verdict.found
    what = f"{found[1]['speedup']:.2f}× at F1 {found[1]['f1']:.2f}" if found else "none"
    note = "met" if verdict.met else "missed, the rounds cannot tell it slower" if verdict.indistinct else "missed"
    return f"{what} ({note})"


@dataclass
class Findings:
    """The grid judged on the side-by-side timing, and what every paragraph of the section reads from it."""

    jobs: list[results.Job]
    timing: dict  # the side-by-side run's settings and times (`side_timing`)
    side: SideBySide
    judged: Judge
    reference: list[float]  # the hypervolume's reference point
    ref_f1: float  # the uncompressed model's F1
    drop: float
    losses: list[float]  # hypervolume the grid front loses without each grid job
    key: int  # the grid job whose loss costs the front most: what a search must find
    runner_up: int

    @functools.cached_property
    def grid(self) -> list[list[float]]:
        return points(self.judged.grid[TIMINGS[0]])

    @property
    def whole(self) -> float:
        return self.judged.whole[TIMINGS[0]]


def findings(args: argparse.Namespace) -> Findings:
    """The grid's jobs, timed side by side, judged, and its key jobs."""
    jobs = grid_jobs(args)
    reference_job = results.baseline_of(jobs)
    if reference_job is None:
        raise SystemExit("the grid has no finished uncompressed job")
    reference = search_plan.reference_point(dict(zip(OBJECTIVES, DIRECTIONS, strict=True)), reference_job.metrics)
    timing = side_timing(args, jobs, reference[0])
    side = SideBySide(timing["times"], timing["reference"])
    as_timed: Ran = [(job.run_id, job.metrics) for job in jobs]
    judged = Judge(as_timed, reference, reference_job.metrics["f1"], args.max_f1_drop, side)
    grid, whole = points(judged.grid[TIMINGS[0]]), judged.whole[TIMINGS[0]]
    losses = [whole - front.hypervolume(grid[:i] + grid[i + 1 :], reference, DIRECTIONS) for i in range(len(grid))]
    key, runner_up = sorted(range(len(grid)), key=lambda i: -losses[i])[:2]
    return Findings(
        jobs, timing, side, judged, reference, reference_job.metrics["f1"], args.max_f1_drop, losses, key, runner_up
    )


def search_rows(args: argparse.Namespace, f: Findings) -> tuple[list[str], dict[str, list], dict[str, list]]:
    """Each real search's table row, its verdicts by sampler, and its front's points by name (for the plot)."""
    on_side, on_timed = TIMINGS
    rows, verdicts, searches = [], {sampler: [] for sampler in args.samplers}, {}
    for sampler in args.samplers:
        for seed in args.seeds:
            ran, count = study_runs(args, study_name(sampler, seed, args.trials, None))
            constrained, constrained_count = None, 0
            if sampler == "tpe":
                constrained, constrained_count = study_runs(args, study_name(sampler, seed, args.trials, f.drop))
            verdict = f.judged(ran, constrained)
            verdicts[sampler].append(verdict)
            searches[f"{sampler} seed {seed}"] = points(f.judged.timed(ran, on_side))
            found_key = ", found it" if f.jobs[f.key].run_id in dict(ran) else ""
            shares = [share_cell(verdict[timing], sampler == "tpe", found_key) for timing in TIMINGS]
            constraint = ["", ""]
            if constrained is not None:
                constraint = [
                    f"{constraint_cell(verdict[on_side])} in {constrained_count} jobs",
                    constraint_cell(verdict[on_timed]),
                ]
            cells = [sampler, str(seed), f"{count} of {len(f.jobs)}", *shares, *constraint]
            rows.append("| " + " | ".join(cells) + " |")
    return rows, verdicts, searches


def intro(args: argparse.Namespace, f: Findings) -> str:
    """The command, the machine, the model, the grid, the space and the searches."""
    timing, reference = f.timing, f.reference
    return (
        f"`python benchmarks/search.py --trials {args.trials} --seeds {' '.join(map(str, args.seeds))}` on "
        f"{timing['cpu']}, {timing['threads']} threads: the fine-tuned MiniLM-L6 on the first 1,000 "
        "questions of the real SQuAD 2.0 validation file (`experiment=search_common`). The grid: "
        f"{len(f.jobs)} jobs (no pruning; global magnitude and L1 at 0.1-0.5; structured at heads 0/0.25/0.5 × FFN "
        "0.25/0.5/0.75; each with no quantization, dynamic_int8, onnx_int8). Each search explores the same space "
        f"(`{' '.join(SPACE)}`) with at most {args.trials} jobs; a trial the grid ran reuses the grid's run, so "
        "both are judged on the same measurements. Objectives F1 and `speedup` (paired against the uncompressed "
        f"model in each job); hypervolume reference point: always-no-answer F1 ({reference[0]:.2f}) and the "
        f"uncompressed model's speed (1×); the uncompressed model scores F1 {f.ref_f1:.2f}. Searches: `tpe` (the "
        "sweeper's default: TPE, then front refinement, README), `tpe-unrefined` (`hydra.sweeper.refine=false`), "
        "`nsga2` (with refinement) and `random` (no refinement: the baseline)."
    )


def timing_paragraph(f: Findings) -> str:
    """How far apart the jobs' own timings put identical work, the side-by-side run, and the grid front on each."""
    on_side, on_timed = TIMINGS
    jobs, side, timing, drop, grid, whole, losses = f.jobs, f.side, f.timing, f.drop, f.grid, f.whole, f.losses
    key, runner_up = f.key, f.runner_up
    best, best_timed = f.judged.best[on_side], f.judged.best[on_timed]
    timed_points = points([(job.run_id, job.metrics) for job in jobs])
    timed_spread = "; ".join(same_work_spread(jobs, lambda job: job.metrics["speedup"]))
    retimed = [job for job in jobs if job.run_id in side.times]
    side_spread = "; ".join(same_work_spread(retimed, lambda job: side.speedups[job.run_id]))
    widths = [
        np.subtract(*side.interval(side.reference, job.run_id)[::-1]) / 2
        for job in retimed
        if job.run_id != side.reference
    ]
    return (
        "**Timing.** Each job times itself against the uncompressed model in its own process, at its own moment. "
        "Jobs that do the same dense work (no pruning, or unstructured pruning, which leaves every matrix its "
        f"shape) came out at {timed_spread}: which of them sit on the grid front was decided by when each was "
        "timed, not by what it computes. Speeds are compared only when timed in one run, so every grid "
        f"configuration with F1 above the always-no-answer F1 ({len(side.times)} of {len(jobs)}; the others add "
        "nothing to any front's hypervolume and are further than "
        f"{drop:g} F1 from the uncompressed model) was rebuilt and timed side by side in one process: "
        f"{timing['rounds']} rounds at batch {timing['batch_size']} (real evaluation windows of "
        f"{timing['max_seq_length']} tokens), each round visiting the models in a fresh random order, after "
        f"{timing['warmup']} warm-up passes each; a configuration's speed-up is the median over the rounds of the "
        f"uncompressed model's time over its own, known to ±{statistics.median(widths):.2f}× (the median half-width of "
        f"the configurations' 95% intervals over the rounds). There the same groups span {side_spread}. The targets "
        "are judged on that run (each job keeps its F1, which the timing does not touch); the jobs' own timings "
        f"are given beside it. Side by side the grid front has {len(front.front(grid, DIRECTIONS))} jobs and "
        f"hypervolume {whole:.3f} (as timed by the jobs: {len(front.front(timed_points, DIRECTIONS))} jobs, "
        f"{f.judged.whole[on_timed]:.3f}); the grid's fastest within {drop:g} F1 "
        f"is {best[1]['speedup']:.2f}× at F1 {best[1]['f1']:.2f} (as timed by the jobs: "
        f"{best_timed[1]['speedup']:.2f}× at F1 {best_timed[1]['f1']:.2f}). One grid job carries "
        f"{100 * losses[key] / whole:.0f}% of the grid front's hypervolume on its own: "
        f"{jobs[key].pruning_label} | {jobs[key].quantization} (F1 {grid[key][0]:.2f}, {grid[key][1]:.2f}×); "
        '"found it" marks the searches that ran it. The next, '
        f"{jobs[runner_up].pruning_label} | {jobs[runner_up].quantization} (F1 {grid[runner_up][0]:.2f}, "
        f"{grid[runner_up][1]:.2f}×), carries {100 * losses[runner_up] / whole:.1f}%."
    )


def targets_paragraph(f: Findings, verdicts: dict[str, list], shown: str) -> str:
    """The targets met by the TPE searches, and each sampler's median share."""
    on_side, on_timed = TIMINGS
    tpe, drop = verdicts.get("tpe", []), f.drop
    medians = ", ".join(
        f"{sampler} {100 * statistics.median(v[on_side].share for v in found):.1f}%"
        for sampler, found in verdicts.items()
        if found
    )
    return (
        f"Targets (TPE, the default sampler): hypervolume ≥ {HYPERVOLUME_TARGET:.0%} with at most a third of the "
        f"grid's jobs: {reached(tpe, on_side)} of {len(tpe)} seeds side by side ({reached(tpe, on_timed)} of "
        f"{len(tpe)} as timed by the jobs); constraint mode at least as fast as the grid's fastest within "
        f"{drop:g} F1: {sum(v[on_side].met for v in tpe)} of {len(tpe)} side by side on the medians, "
        f"{not_slower(tpe)} of {len(tpe)} not measurably slower (the 95% interval over the rounds of how many times "
        "faster the grid's pick ran holds 1), "
        f"{sum(v[on_timed].met for v in tpe)} of {len(tpe)} as timed by the jobs. Median hypervolume side by side by "
        "sampler: "
        f"{medians}. Left: the grid (side by side) and the search front of {shown}; right: each search's "
        "hypervolume after each trial (`docs/search_vs_grid.png`)."
    )


def measure(args: argparse.Namespace) -> str:
    """The section: the grid timed side by side, every search judged on it, the replays, the plot."""
    f = findings(args)
    rows, verdicts, searches = search_rows(args, f)
    replayed, replayed_shares = [], {}
    if args.replay_seeds:
        with tempfile.TemporaryDirectory() as scratch:
            args.replay_storage = stores.sqlite_uri(Path(scratch) / "replay.db")
            replayed, replayed_shares = replays(args, f.jobs, f.judged, f.jobs[f.key].run_id)
    shown = next(iter(searches))
    plot(f.grid, f.reference, searches, shown, PLOT)
    real_shares = {sampler: [100 * v[TIMINGS[0]].share for v in found] for sampler, found in verdicts.items()}
    best, best_timed = f.judged.best[TIMINGS[0]], f.judged.best[TIMINGS[1]]
    lines = [
        BEGIN,
        "## Search against grid",
        "",
        intro(args, f),
        "",
        timing_paragraph(f),
        "",
        f"| sampler | seed | jobs | hypervolume, side by side (target ≥ {HYPERVOLUME_TARGET:.0%} for tpe) "
        f"| as timed by the jobs | constraint mode: fastest within {f.drop:g} F1, side by side (target ≥ "
        f"{best[1]['speedup']:.2f}×) | as timed by the jobs (target ≥ {best_timed[1]['speedup']:.2f}×) |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        targets_paragraph(f, verdicts, shown),
        "",
        "![search against grid](docs/search_vs_grid.png)",
        *replay_section(args, replayed, real_shares, replayed_shares),
        END,
    ]
    return "\n".join(lines) + "\n"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    shared = common.ROOT.parent / "shared"
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=shared / "models" / "minilm-l6-squad2")
    parser.add_argument("--eval", type=Path, default=shared / "data" / "squad_v2" / "validation.json")
    parser.add_argument("--train", type=Path, default=shared / "data" / "squad_v2" / "train.json")
    parser.add_argument("--root", type=Path, default=common.ROOT / "outputs" / "search", help="store, cache and sweeps")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--trials", type=int, default=20, help="jobs per search (default: a third of the grid)")
    parser.add_argument("--startup", type=int, default=8, help="random trials before TPE models the space")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--samplers",
        nargs="+",
        default=["tpe", "tpe-unrefined", "random"],
        choices=SEARCHERS,
        help="searches to run: tpe (the default: TPE with front refinement), tpe-unrefined, nsga2, "
        "random (no refinement: the baseline)",
    )
    parser.add_argument("--max-f1-drop", type=float, default=1.0)
    parser.add_argument(
        "--side-rounds",
        type=int,
        default=40,
        help="rounds of the grid's configurations timed side by side in one process",
    )
    parser.add_argument("--warmup", type=int, default=3, help="untimed passes of each model before those rounds")
    parser.add_argument(
        "--reuse-timing", action="store_true", help=f"judge on the last side-by-side timing (--root/{SIDE_BY_SIDE})"
    )
    parser.add_argument(
        "--replay-seeds",
        type=int,
        default=24,
        help="searches per sampler replayed on the grid's measurements (0: none)",
    )
    parser.add_argument("--replay-samplers", nargs="+", default=list(SEARCHERS), choices=SEARCHERS)
    parser.add_argument(
        "--fresh", action="store_true", help="delete the benchmark's earlier studies first, so the searches start anew"
    )
    parser.add_argument("--skip-grid", action="store_true", help="the grid ran already: do not start it")
    parser.add_argument("--skip-searches", action="store_true", help="only measure the studies already run")
    parser.add_argument("--skip-measure", action="store_true", help="run the sweeps, write nothing (grid unfinished)")
    parser.add_argument("--output", type=Path, default=common.ROOT / "BENCHMARKS.md")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if not args.skip_grid:
        for name, overrides in GRID.items():
            run(
                [
                    sys.executable,
                    str(common.ROOT / "run.py"),
                    "-m",
                    *sweep_overrides(args),
                    *overrides,
                    f"hydra.sweep.dir={args.root.resolve() / 'sweeps' / name}",
                ]
            )
    if not args.skip_searches:
        if args.fresh:
            forget_studies(args)
        for sampler in args.samplers:
            for seed in args.seeds:
                run_search(args, sampler, seed)
                if sampler == "tpe":
                    run_search(args, sampler, seed, args.max_f1_drop)
    if not args.skip_measure:
        common.write_section(args.output, BEGIN, END, measure(args))


if __name__ == "__main__":
    main()
