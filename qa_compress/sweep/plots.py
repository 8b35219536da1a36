"""The report's plots: F1 against sparsity, speed and size, each point numbered as the report's table."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from qa_compress.sweep import front
from qa_compress.sweep.recommend import speed_cost
from qa_compress.sweep.tables import job_label
from qa_compress.tracking.results import Job, baseline_of

PLOTS = ("f1_vs_sparsity.png", "f1_vs_speed.png", "f1_vs_size.png")


def _place_labels(ax, points: Sequence[tuple[float, float, str]], fontsize: float) -> None:
    """Number each point, moving a label away from labels already placed so none overlap (a line joins a moved one)."""
    ax.figure.canvas.draw()  # fixes the axes limits, so data and pixels convert
    to_pixels = ax.transData.transform
    height = fontsize * ax.figure.dpi / 72 * 1.3
    placed: list[tuple[float, float, float, float]] = []
    for x, y, text in sorted(points, key=lambda p: (-p[1], p[0])):
        px, py = to_pixels((x, y))
        width = fontsize * ax.figure.dpi / 72 * 0.65 * len(text) + 4
        for step in range(60):
            dy = (step + 1) // 2 * height * (1 if step % 2 else -1)
            box = (px + 4, py + 3 + dy, px + 4 + width, py + 3 + dy + height)
            if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed):
                break
        placed.append(box)
        ax.annotate(
            text,
            (x, y),
            xytext=(box[0] - px, box[1] - py),
            textcoords="offset pixels",
            fontsize=fontsize,
            arrowprops={"arrowstyle": "-", "color": "0.5", "linewidth": 0.5} if dy else None,
        )


@dataclass(frozen=True)
class Picture:
    """What every plot of a sweep shows: its finished jobs, their numbers in the report's table, the reference
    lines and the title's model and data."""

    done: list[Job]
    numbers: dict[str, int]
    models: list[str]
    baseline: Job | None
    floor: float | None  # always-no-answer F1

    @classmethod
    def of(cls, jobs: Sequence[Job]) -> Picture:
        done = [j for j in jobs if j.done]
        floor = next((j.metrics["always_no_answer_f1"] for j in done if "always_no_answer_f1" in j.metrics), None)
        numbers = {job.run_id: number for number, job in enumerate(jobs, 1)}
        return cls(done, numbers, sorted({j.model for j in done}), baseline_of(done), floor)

    @property
    def subject(self) -> str:
        dataset = ", ".join(sorted({j.dataset for j in self.done})) or "?"
        return f"{', '.join(self.models) or '?'} on {dataset}"

    def references(self, ax) -> None:
        """Lines at the uncompressed job's F1 and at always answering "no answer"."""
        if self.baseline is not None:
            f1 = self.baseline.metrics["f1"]
            ax.axhline(f1, color="tab:green", linestyle="--", linewidth=1, label=f"uncompressed ({f1:.2f})")
        if self.floor is not None:
            ax.axhline(
                self.floor, color="tab:red", linestyle=":", linewidth=1, label=f"always no answer ({self.floor:.2f})"
            )

    def key(self, fig, points: Sequence[Job]) -> None:
        """The job numbers' meaning beside the axes (up to 16 jobs; past that, the report's table)."""
        fig.subplots_adjust(right=0.73)
        if 0 < len(points) <= 16:
            ordered = sorted(points, key=lambda j: self.numbers[j.run_id])
            text = "\n".join(f"{self.numbers[j.run_id]}: {job_label(j, len(self.models))}" for j in ordered)
            fig.text(0.745, 0.88, text, fontsize=7.5, va="top", family="monospace")


def _sparsity_plot(plt, picture: Picture, path: Path) -> None:
    """F1 against sparsity, one line per pruning method and quantization."""
    fig, ax = plt.subplots(figsize=(10, 5))
    for quantization in sorted({j.quantization for j in picture.done}):
        for pruning in sorted({j.pruning for j in picture.done}):
            line = sorted(
                (j.metrics.get("sparsity", 0.0), j.metrics["f1"])
                for j in picture.done
                if j.pruning == pruning and j.quantization == quantization
            )
            if line:
                xs, ys = zip(*line, strict=True)
                ax.plot(xs, ys, marker="o", label=f"{pruning} + {quantization}")
    picture.references(ax)
    ax.set(
        xlabel="sparsity of prunable weights (fraction of zeros)",
        ylabel="F1 (%)",
        title=f"F1 against sparsity: {picture.subject}",
    )
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _cost_plot(plt, picture: Picture, metric: str, label: str, path: Path) -> None:
    """F1 against a cost (speed-up, latency or size), the Pareto front drawn, points numbered."""
    points = [(j.metrics[metric], j.metrics["f1"], j) for j in picture.done if metric in j.metrics]
    higher_is_better = metric == "speedup"
    fig, ax = plt.subplots(figsize=(10, 5))
    for quantization in sorted({p[2].quantization for p in points}):
        group = [p for p in points if p[2].quantization == quantization]
        ax.scatter([p[0] for p in group], [p[1] for p in group], label=f"quantization: {quantization}", zorder=3)
    if higher_is_better:  # the interquartile range of each job's paired speed-up
        spread = [
            (p[0] - p[2].metrics.get("speedup_q1", p[0]), p[2].metrics.get("speedup_q3", p[0]) - p[0]) for p in points
        ]
        xerr = list(zip(*spread, strict=True)) or None
        ax.errorbar(
            [p[0] for p in points], [p[1] for p in points], xerr=xerr, fmt="none", ecolor="0.6", elinewidth=1, zorder=1
        )
    directions = (front.MAXIMIZE if higher_is_better else front.MINIMIZE, front.MAXIMIZE)
    frontier = sorted(points[i][:2] for i in front.front([p[:2] for p in points], directions))
    if frontier:
        ax.step(
            [p[0] for p in frontier],
            [p[1] for p in frontier],
            where="pre" if higher_is_better else "post",
            color="black",
            linewidth=1.2,
            label="Pareto front",
            zorder=2,
        )
    picture.references(ax)
    what = "speed-up" if higher_is_better else label.split(" (")[0]
    ax.set(xlabel=label, ylabel="F1 (%)", title=f"F1 against {what}: {picture.subject}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    picture.key(fig, [p[2] for p in points])
    ax.legend(fontsize=8, loc="lower left", bbox_to_anchor=(1.01, 0.0))  # beside the axes: no point hidden
    _place_labels(ax, [(cost, f1, str(picture.numbers[job.run_id])) for cost, f1, job in points], fontsize=8)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot(jobs: Sequence[Job], out_dir: Path) -> list[Path]:
    """The three trade-off plots, as PNG files in `out_dir`; points carry the job numbers of the report's table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 10})
    picture = Picture.of(jobs)
    speed_metric, _ = speed_cost(picture.done)
    speed_label = (
        "speed-up over the uncompressed model (x, paired rounds in each job; bars: interquartile range)"
        if speed_metric == "speedup"
        else "latency per batch (ms, median; each job timed on its own)"
    )
    paths = [out_dir / name for name in PLOTS]
    _sparsity_plot(plt, picture, paths[0])
    _cost_plot(plt, picture, speed_metric, speed_label, paths[1])
    _cost_plot(plt, picture, "size_mb", "size on disk (MB)", paths[2])
    return paths
