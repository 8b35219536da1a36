"""The part of a sweep report that only a search (`hydra/sweeper=pareto`) has: its front and how it grew.

The search leaves its trials in the parent run (search/trials.json); the front and the hypervolume
after each trial are measured from them and the uncompressed job, as `benchmarks/search.py` measures.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mlflow.tracking import MlflowClient

from qa_compress.sweep import front, search, search_plan

ARTIFACT = f"search/{search.TRIALS_FILE}"
GROWTH_PLOT = "search_front_growth.png"


@dataclass(frozen=True)
class Section:
    lines: list[str]  # Markdown, placed before the jobs table
    files: list[Path]  # the growth plot, when there is a reference to measure from
    front_runs: set[str]  # run ids of the jobs on the front the search found


def load(client: MlflowClient, parent_run_id: str) -> dict | None:
    """The search's trials document from the parent run; None for a grid sweep."""
    if not any(a.path == ARTIFACT for a in client.list_artifacts(parent_run_id, "search")):
        return None
    with tempfile.TemporaryDirectory() as directory:
        return json.loads(Path(client.download_artifacts(parent_run_id, ARTIFACT, directory)).read_text())


def _refined(document: dict) -> str:
    """How many trials front refinement proposed, when it was on (searches written before it say nothing)."""
    if not document.get("refine"):
        return ""
    proposed = sum(bool(t.get("refines_front")) for t in document["trials"])
    return f" with front refinement ({proposed} trial(s) proposed by it)"


def _complete(document: dict) -> list[dict]:
    names = list(document["objectives"])
    return [t for t in document["trials"] if t["state"] == "COMPLETE" and all(t.get(n) is not None for n in names)]


def growth(document: dict, reference: dict[str, float]) -> tuple[list[int], list[float], list[float]]:
    """Trial numbers, the hypervolume after each, and the reference point it is measured from."""
    names = list(document["objectives"])
    directions = [document["objectives"][n] for n in names]
    trials = _complete(document)
    point = search_plan.reference_point(document["objectives"], reference)
    volumes = front.growth([[t[n] for n in names] for t in trials], point, directions)
    return [t["trial"] for t in trials], volumes, point


def _plot(numbers: list[int], volumes: list[float], names: Sequence[str], point: list[float], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    final = volumes[-1] if volumes and volumes[-1] > 0 else 1.0
    shares = [100 * v / final for v in volumes]  # raw hypervolume is in units of F1 x cost: unreadable
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.step(range(1, len(shares) + 1), shares, where="post", color="tab:blue")
    grew = [i for i, v in enumerate(volumes) if v > (volumes[i - 1] if i else 0.0)]
    ax.scatter([i + 1 for i in grew], [shares[i] for i in grew], color="tab:blue", zorder=3, label="front grew")
    ax.set_xlabel("trials finished")
    ax.set_ylabel("hypervolume (% of the final front's)")
    ax.set_ylim(0, 105)
    reference = ", ".join(f"{n} {p:.4g}" for n, p in zip(names, point, strict=True))
    ax.set_title(f"Front growth ({' vs '.join(names)}; reference point {reference})", fontsize=8)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def section(document: dict, jobs: Sequence, reference, out_dir: Path) -> Section:
    """The search's summary lines, its growth plot and the jobs on its front.

    `jobs` are the report's jobs (run_id, name); `reference` the uncompressed job (or None).
    """
    names = list(document["objectives"])
    directions = [document["objectives"][n] for n in names]
    trials = _complete(document)
    on_front = [trials[i] for i in front.front([[t[n] for n in names] for t in trials], directions)]
    number_of = {job.run_id: i for i, job in enumerate(jobs, 1)}
    objectives = ", ".join(f"{n} ({d})" for n, d in zip(names, directions, strict=True))
    lines = [
        "## Search",
        "",
        f"`hydra/sweeper=pareto`, sampler {document['sampler']}{_refined(document)}: "
        f"{len(document['trials'])} trial(s), {len(trials)} finished, over `{document['space']}`; "
        f"objectives {objectives}. "
        f"Optuna study `{document['study']}` in `{document['storage']}` (the same command continues it).",
    ]
    if document.get("max_f1_drop") is not None:
        lines.append(
            f"Constraint mode: the fastest configuration within {document['max_f1_drop']:g} F1 of the uncompressed "
            "model (trial 0) is the recommendation above."
        )
    shown = []
    for t in sorted(on_front, key=lambda t: t[names[0]]):
        values = ", ".join(f"{n} {t[n]:.4g}" for n in names)
        job = f"job #{number_of[t['run_id']]}" if t.get("run_id") in number_of else "job not in this sweep"
        shown.append(f"trial {t['trial']} ({job}: {values})")
    lines += ["", f"Front found ({len(on_front)} of {len(trials)}): " + ("; ".join(shown) or "none") + "."]
    files = []
    if reference is not None and trials:
        numbers, volumes, point = growth(document, reference.metrics)
        files.append(_plot(numbers, volumes, names, point, out_dir / GROWTH_PLOT))
        last = volumes[-1] if volumes else 0.0
        where = ", ".join(f"{n} {p:.4g}" for n, p in zip(names, point, strict=True))
        measured = f"reference point {where}: always-no-answer accuracy, the uncompressed model's speed and size"
        if last > 0:
            reached = next(i + 1 for i, v in enumerate(volumes) if v >= 0.95 * last)
            lines += [
                "",
                f"Hypervolume of the front: {last:.4g} ({measured}); 95% of it was reached after {reached} "
                f"of {len(volumes)} finished trials (`{GROWTH_PLOT}`).",
            ]
        else:
            lines += ["", f"Hypervolume of the front: 0: no finished trial beats the {measured} in every objective."]
    return Section(lines, files, {t["run_id"] for t in on_front if t.get("run_id")})
