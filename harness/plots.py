"""Plots of a compact leaderboard table (harness.compact): the primary metric against
parameters (log scale) and against training energy, each with its Pareto front, every
point labelled with its method and error bars of one std over the seeds, as the
ML.ENERGY leaderboard plots energy against quality; a pruned family's levels as a curve
of validation error against % of the student's parameters, as ShrinkBench's curves and
the pruning papers' figures show them.

matplotlib with the Agg backend (no display); the Figure API without pyplot, so no
global state is touched. Files are written as PNG and SVG beside the markdown, with
their timestamps and SVG ids fixed so rebuilding a board gives the same files.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .compact import PairTable, Point, short_labels
from .leaderboard import METRIC_NAMES

FONT = 7  # points, for the labels
DPI = 150


def pareto_front(xs: Sequence[float], ys: Sequence[float], lower_y_better: bool) -> list[int]:
    """Indices of the points no other point dominates (x no larger, y no worse, one of
    them strictly better), in increasing x. Smaller x (size, energy) is always better."""
    pts = [(x, y if lower_y_better else -y, i) for i, (x, y) in enumerate(zip(xs, ys, strict=True))]
    pts = [p for p in pts if not (math.isnan(p[0]) or math.isnan(p[1]))]
    front = []
    for x, y, i in pts:
        dominated = any((x2 <= x and y2 <= y) and (x2 < x or y2 < y) for x2, y2, j in pts if j != i)
        if not dominated:
            front.append((x, y, i))
    return [i for _x, _y, i in sorted(front)]


def _place_labels(ax: Any, xs: list[float], ys: list[float], errs: list[float], labels: list[str]) -> None:
    """Label every point to its right, moving a label up or down (with a leader line)
    past the points, error bars and labels already placed when their boxes would
    overlap (the points of one model size share an x). Written here because the library
    that does this (adjustText) is not a dependency; a label's box is estimated from its
    length, which is close enough at this font size."""
    to_pt = 72.0 / ax.figure.dpi

    def at(x: float, y: float) -> tuple[float, float]:
        px, py = ax.transData.transform((x, y))
        return px * to_pt, py * to_pt

    blocked: list[tuple[float, float, float, float]] = []
    for x, y, e in zip(xs, ys, errs, strict=True):  # markers and error bars
        px, py = at(x, y)
        lo, hi = at(x, y - e)[1], at(x, y + e)[1]
        blocked.append((px - 3.5, min(lo, py - 3.5), px + 3.5, max(hi, py + 3.5)))
    h = FONT * 1.3
    box = ax.get_window_extent()
    bottom, top = box.y0 * to_pt, box.y1 * to_pt
    for i in sorted(range(len(xs)), key=lambda i: ys[i]):
        px, py = at(xs[i], ys[i])
        w = 0.56 * FONT * len(labels[i])
        x0 = px + 6
        dy = 0.0
        for step in range(80):
            cand = -(step + 1) // 2 * h if step % 2 else step // 2 * h  # 0, -h, +h, -2h, +2h, ...
            y0 = py + cand - h / 2
            if y0 < bottom or y0 + h > top:  # (stay inside the axes)
                continue
            clash = any(
                x0 < bx1 and bx0 < x0 + w and y0 < by1 and by0 < y0 + h for bx0, by0, bx1, by1 in blocked
            )
            if not clash:
                dy = cand
                break
        blocked.append((x0, py + dy - h / 2, x0 + w, py + dy + h / 2))
        ax.annotate(
            labels[i],
            (xs[i], ys[i]),
            xytext=(6, dy),
            textcoords="offset points",
            fontsize=FONT,
            va="center",
            arrowprops={"arrowstyle": "-", "lw": 0.4, "color": "0.55", "shrinkA": 0, "shrinkB": 2}
            if dy
            else None,
        )


def _panel(ax: Any, points: list[Point], xkey: str, xlabel: str, ylabel: str, lower: bool, log: bool) -> None:
    pts = [p for p in points if getattr(p, xkey) is not None and not math.isnan(p.y)]
    if not pts:
        ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel(xlabel)
        return
    labels = short_labels([p.label for p in pts if not p.teacher])
    xs = [float(getattr(p, xkey)) for p in pts]
    ys = [p.y for p in pts]
    for p, x in zip(pts, xs, strict=True):
        xerr = p.train_j_std if xkey == "train_j" and p.train_j_std else None
        marker, color = ("s", "tab:red") if p.teacher else (("D", "black") if p.plain else ("o", "tab:blue"))
        ax.errorbar(x, p.y, yerr=p.y_std or None, xerr=xerr, fmt=marker, color=color, ms=4, lw=0.8, capsize=2)
    # the front of the student rows: the teacher is a reference, its cost is not a method's
    students = [i for i, p in enumerate(pts) if not p.teacher]
    front = [students[i] for i in pareto_front([xs[i] for i in students], [ys[i] for i in students], lower)]
    if front:
        fx, fy = [xs[i] for i in front], [ys[i] for i in front]
        ax.plot(fx, fy, "o", ms=9, mfc="none", mec="tab:green", mew=1.2, label="Pareto front", zorder=3)
        if len(front) > 1:
            ax.plot(fx, fy, drawstyle="steps-post", color="tab:green", lw=1.4, alpha=0.8, zorder=0)
        ax.legend(fontsize=FONT, loc="best")
    if log:
        ax.set_xscale("log")
    ax.margins(x=0.35 if log else 0.25, y=0.2)
    if not log:
        ax.set_xlim(left=max(0.0, ax.get_xlim()[0]))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", lw=0.3, alpha=0.5)
    ax.figure.canvas.draw()  # (fixes the limits before the labels are placed)
    names = ["Teacher" if p.teacher else labels[p.label] for p in pts]
    _place_labels(ax, xs, ys, [p.y_std for p in pts], names)


def write_plot(pt: PairTable, out_dir: Path, hardware: str = "") -> list[Path]:
    """Write `<pt.plot>.png` and `.svg` in out_dir; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    name = METRIC_NAMES.get(pt.primary, pt.primary)
    better = "lower" if pt.lower else "higher"
    ylabel = f"test {name} ({better} is better)"
    panels = 3 if pt.curves else 2
    with matplotlib.rc_context({"svg.hashsalt": "harness", "font.size": 8}):
        fig = Figure(figsize=(4.4 * panels, 3.8), dpi=DPI, layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, panels)
        _panel(axes[0], pt.points, "params", "parameters (log scale)", ylabel, pt.lower, log=True)
        xs = [p.train_j for p in pt.points if p.train_j]
        wide = bool(xs) and max(xs) / max(min(xs), 1e-12) > 20
        _panel(
            axes[1],
            pt.points,
            "train_j",
            "training energy, J" + (" (log scale)" if wide else ""),
            ylabel,
            pt.lower,
            log=wide,
        )
        if pt.curves:
            ax = axes[2]
            labels = short_labels([c.label for c in pt.curves])
            for c in pt.curves:
                ax.errorbar(c.pct, c.y, yerr=c.y_std, fmt="-o", ms=3, lw=1, capsize=2, label=labels[c.label])
                if c.chosen is not None:
                    ax.plot(c.pct[c.chosen], c.y[c.chosen], "*", ms=9, color="black", zorder=5)
            ax.invert_xaxis()
            ax.set_xlabel("% of the student's non-zero parameters (★ the level kept)")
            ax.set_ylabel(f"validation {name} ({better} is better)")
            ax.grid(True, lw=0.3, alpha=0.5)
            ax.legend(fontsize=FONT, loc="best")
        fig.suptitle(
            f"{pt.dataset} — {pt.task}: {pt.title}" + (f"\n{hardware}" if hardware else ""), fontsize=8
        )
        png, svg = out_dir / f"{pt.plot}.png", out_dir / f"{pt.plot}.svg"
        fig.savefig(png, metadata={"Software": None})
        fig.savefig(svg, metadata={"Date": None, "Creator": None})
    return [png, svg]
