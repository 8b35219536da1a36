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
BAND_STEPS = 4  # the F1 axis reaches this many allowed losses below the uncompressed F1
MARKER_PX = 9.0  # the diameter of a point as drawn (matplotlib's default 36 pt² marker at 100 dpi), plus a pixel


def _place_labels(ax, points: Sequence[tuple[float, float, str]], fontsize: float) -> None:
    """Number each point, moving a label up or down, a line at a time, until it overlaps no label placed before
    it (a thin line joins a moved label to its point); overlap is measured on the drawn text."""
    ax.figure.canvas.draw()  # fixes the axes limits, so data and pixels convert
    renderer = ax.figure.canvas.get_renderer()
    height = fontsize * ax.figure.dpi / 72 * 1.3
    placed = []
    for x, y, text in sorted(points, key=lambda p: (-p[1], p[0])):
        label = ax.annotate(text, (x, y), xytext=(4, 3), textcoords="offset pixels", fontsize=fontsize)
        for step in range(400):
            dy = (step + 1) // 2 * height * (1 if step % 2 else -1)
            label.set_position((4, 3 + dy))
            box = label.get_window_extent(renderer).expanded(1.05, 1.1)
            if not any(box.overlaps(other) for other in placed):
                break
        placed.append(box)
        if dy:  # drawn again with the line to its point
            label.remove()
            ax.annotate(
                text,
                (x, y),
                xytext=(4, 3 + dy),
                textcoords="offset pixels",
                fontsize=fontsize,
                arrowprops={"arrowstyle": "-", "color": "0.5", "linewidth": 0.5},
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
    max_f1_drop: float  # the loss the recommendation allows: the plots zoom on the band it spans

    @classmethod
    def of(cls, jobs: Sequence[Job], max_f1_drop: float) -> Picture:
        done = [j for j in jobs if j.done]
        floor = next((j.metrics["always_no_answer_f1"] for j in done if "always_no_answer_f1" in j.metrics), None)
        numbers = {job.run_id: number for number, job in enumerate(jobs, 1)}
        return cls(done, numbers, sorted({j.model for j in done}), baseline_of(done), floor, max_f1_drop)

    def f1_band(self) -> tuple[float, float] | None:
        """The F1 range the plots show: the uncompressed F1, the allowed loss below it, and the jobs within a few
        allowed losses of it (the one-point differences a recommendation turns on); None without a reference."""
        if self.baseline is None or not self.done:
            return None
        f1 = self.baseline.metrics["f1"]
        step = max(self.max_f1_drop, 0.25)
        near = [j.metrics["f1"] for j in self.done if j.metrics["f1"] >= f1 - BAND_STEPS * step]
        low = min([*near, f1 - self.max_f1_drop]) - step / 2
        high = max([*near, f1]) + step / 2
        return low, high

    def shown(self, f1: float) -> float:
        """Where a job's F1 is drawn: at the lower edge when it is below the band."""
        band = self.f1_band()
        return f1 if band is None or f1 >= band[0] else band[0]

    def below(self, f1: float) -> bool:
        band = self.f1_band()
        return band is not None and f1 < band[0]

    @property
    def subject(self) -> str:
        dataset = ", ".join(sorted({j.dataset for j in self.done})) or "?"
        return f"{', '.join(self.models) or '?'} on {dataset}"

    def references(self, ax) -> None:
        """Lines at the uncompressed job's F1, the allowed loss and always answering "no answer" (named in the
        legend when it lies below the band), and the F1 axis zoomed on the band."""
        band = self.f1_band()
        if band is not None:
            ax.set_ylim(*band)
        if self.baseline is not None:
            f1 = self.baseline.metrics["f1"]
            ax.axhline(f1, color="tab:green", linestyle="--", linewidth=1, label=f"uncompressed ({f1:.2f})")
            allowed = f1 - self.max_f1_drop
            ax.axhline(allowed, color="tab:green", linestyle=":", linewidth=0.8, label=f"allowed loss ({allowed:.2f})")
        if self.floor is not None:
            where = ", below" if self.below(self.floor) else ""
            label = f"always no answer ({self.floor:.2f}{where})"
            ax.axhline(self.shown(self.floor), color="tab:red", linestyle=":", linewidth=1, label=label)
        if any(self.below(j.metrics["f1"]) for j in self.done):
            ax.scatter([], [], marker="v", color="0.3", label="below the axis (F1 beside)")

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
                ax.plot(xs, [picture.shown(y) for y in ys], marker="o", label=f"{pruning} + {quantization}")
                for x, y in line:
                    if picture.below(y):
                        ax.annotate(f"{y:.1f}", (x, picture.shown(y)), xytext=(3, 3), textcoords="offset points")
    picture.references(ax)
    ax.set(
        xlabel="sparsity of prunable weights (fraction of zeros)",
        ylabel="F1 (%)",
        title=f"F1 against sparsity: {picture.subject}",
    )
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _dodged(ax, points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points moved sideways, a few pixels at a time, until no two markers overlap (equal sizes, equal F1)."""
    to_pixels, to_data = ax.transData.transform, ax.transData.inverted().transform
    placed: list[tuple[float, float]] = []
    moved = []
    for x, y in points:
        px, py = to_pixels((x, y))
        for step in range(200):
            shift = (step + 1) // 2 * MARKER_PX * (1 if step % 2 else -1)
            if all((px + shift - qx) ** 2 + (py - qy) ** 2 >= MARKER_PX**2 for qx, qy in placed):
                break
        placed.append((px + shift, py))
        moved.append(tuple(to_data((px + shift, py))))
    return moved


def _cost_limits(ax, costs: Sequence[float]) -> None:
    """x limits with room at both ends, so that no point sits on an edge of the axes."""
    if costs:
        low, high = min(costs), max(costs)
        pad = (high - low) * 0.08 or abs(high) * 0.05 or 1.0
        ax.set_xlim(low - pad, high + pad)


def _cost_plot(plt, picture: Picture, metric: str, label: str, path: Path) -> None:
    """F1 against a cost (speed-up, latency or size), the Pareto front drawn, points numbered."""
    points = [(j.metrics[metric], j.metrics["f1"], j) for j in picture.done if metric in j.metrics]
    higher_is_better = metric == "speedup"
    fig, ax = plt.subplots(figsize=(10, 5))
    picture.references(ax)
    _cost_limits(ax, [p[0] for p in points])
    what = "speed-up" if higher_is_better else label.split(" (")[0]
    ax.set(xlabel=label, ylabel="F1 (%)", title=f"F1 against {what}: {picture.subject}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    picture.key(fig, [p[2] for p in points])  # the axes' final place: pixels and data convert from here on
    places = _dodged(ax, [(cost, picture.shown(f1)) for cost, f1, _ in points])
    drawn = {id(job): place for (_, _, job), place in zip(points, places, strict=True)}
    for quantization in sorted({p[2].quantization for p in points}):
        for below in (False, True):
            group = [p[2] for p in points if p[2].quantization == quantization and picture.below(p[1]) == below]
            if group:
                ax.scatter(
                    [drawn[id(j)][0] for j in group],
                    [drawn[id(j)][1] for j in group],
                    marker="v" if below else "o",
                    color=f"C{sorted({p[2].quantization for p in points}).index(quantization)}",
                    label=None if below else f"quantization: {quantization}",
                    zorder=3,
                    clip_on=False,
                )
    if higher_is_better:  # the interquartile range of each job's paired speed-up
        spread = [
            (p[0] - p[2].metrics.get("speedup_q1", p[0]), p[2].metrics.get("speedup_q3", p[0]) - p[0]) for p in points
        ]
        xerr = list(zip(*spread, strict=True)) or None
        ax.errorbar(
            [drawn[id(p[2])][0] for p in points],
            [drawn[id(p[2])][1] for p in points],
            xerr=xerr,
            fmt="none",
            ecolor="0.6",
            elinewidth=1,
            zorder=1,
        )
    directions = (front.MAXIMIZE if higher_is_better else front.MINIMIZE, front.MAXIMIZE)
    frontier = sorted(points[i][:2] for i in front.front([p[:2] for p in points], directions))
    if frontier:
        ax.step(
            [p[0] for p in frontier],
            [picture.shown(p[1]) for p in frontier],
            where="pre" if higher_is_better else "post",
            color="black",
            linewidth=1.2,
            label="Pareto front",
            zorder=2,
        )
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="lower left", bbox_to_anchor=(1.01, 0.0))  # beside the axes: no point hidden
    labels = [
        (*drawn[id(job)], f"{picture.numbers[job.run_id]}" + (f" ({f1:.1f})" if picture.below(f1) else ""))
        for _, f1, job in points
    ]
    _place_labels(ax, labels, fontsize=8)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot(jobs: Sequence[Job], out_dir: Path, max_f1_drop: float) -> list[Path]:
    """The three trade-off plots, as PNG files in `out_dir`; points carry the job numbers of the report's table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 10})
    picture = Picture.of(jobs, max_f1_drop)
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
