"""The pipeline's pictures as PNG files, drawn with matplotlib's Agg canvas.

DVC's HTML plots load Vega from a CDN; these PNGs need nothing at view time, so they work
air-gapped. Every function takes plain Python data and an output path, writes the PNG
atomically (a temp file in the same folder, then ``os.replace``) and returns the path.
No pyplot: each picture is its own ``Figure`` on a ``FigureCanvasAgg``, so there is no global
figure state to leak or close. Size, dpi and PNG metadata are fixed (no "Software" chunk),
so the same data gives byte-identical files.
"""
from __future__ import annotations

import contextlib
import csv
import math
import os
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 100
FIGSIZE = (8.0, 4.5)          # inches; single-panel pictures
PANEL_WIDTH = 4.5             # inches per group in perplexity_png
KEPT, DROPPED, TOTAL = "tab:blue", "tab:red", "lightgray"


def label_issues_size(n_classes: int) -> tuple[float, float]:
    """Figure size (inches) of label_issues_png: taller with more classes."""
    return FIGSIZE[0], max(2.5, 1.5 + 0.4 * n_classes)


@contextlib.contextmanager
def _png(path, figsize) -> Iterator[Figure]:
    """Yield a fresh figure; on a clean exit render it and write ``path`` atomically."""
    path = Path(path)
    fig = Figure(figsize=figsize, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    # Fonts lack CJK glyphs (class names may be Chinese): boxes are drawn, not warned about.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"Glyph \d+ .*missing from font", UserWarning)
        yield fig
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
        try:
            with open(tmp, "xb") as fh:
                fig.savefig(fh, format="png", dpi=DPI, metadata={"Software": None})
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def _no_data(ax, text: str = "no data") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="gray")
    ax.set_xticks([])
    ax.set_yticks([])


def cluster_sizes_png(sizes: dict[int, int], path) -> Path:
    """Bar chart: x = rows per duplicate cluster, y = number of clusters of that size."""
    with _png(path, FIGSIZE) as fig:
        ax = fig.add_subplot()
        ax.set_title("Dedup: duplicate cluster sizes")
        items = sorted((int(k), int(v)) for k, v in sizes.items())
        if not items:
            _no_data(ax)
        else:
            # Categorical positions: sizes are sparse (2, 3, ..., 480), numeric bars would vanish.
            ax.bar(range(len(items)), [v for _, v in items], color=KEPT)
            step = math.ceil(len(items) / 20)
            ax.set_xticks(range(0, len(items), step), [str(k) for k, _ in items][::step])
            ax.set_xlabel("cluster size (rows)")
            ax.set_ylabel("clusters")
            positive = [v for _, v in items if v > 0]
            if positive and max(positive) / min(positive) >= 100:
                ax.set_yscale("log")
    return Path(path)


def perplexity_png(groups: dict[str, dict], path) -> Path:
    """Histograms of log10(perplexity) per group with the cut bounds; kept vs dropped.

    Each group is ``{"scores": [...], "lower": float | None, "upper": float | None}`` (bounds in
    perplexity units; a row is kept when lower <= score <= upper). Scores that are None, not
    finite or not positive cannot go on a log axis and are left out of the picture.
    """
    names = sorted(groups)
    with _png(path, (PANEL_WIDTH * max(1, len(names)), FIGSIZE[1])) as fig:
        fig.suptitle("Perplexity filter: log10(perplexity) per group")
        if not names:
            _no_data(fig.add_subplot())
        for i, name in enumerate(names):
            ax = fig.add_subplot(1, len(names), i + 1)
            g = groups[name]
            lo, hi = g.get("lower"), g.get("upper")
            s = np.array([x for x in g.get("scores") or () if x is not None], dtype=float)
            s = s[np.isfinite(s) & (s > 0)]
            keep = np.ones(len(s), dtype=bool)
            if lo is not None:
                keep &= s >= lo
            if hi is not None:
                keep &= s <= hi
            ax.set_title(f"{name} (n={len(s)}, dropped={int((~keep).sum())})")
            if not len(s):
                _no_data(ax, "no scores")
                continue
            logs = np.log10(s)
            a, b = float(logs.min()), float(logs.max())
            edges = np.linspace(a - 0.5, b + 0.5, 11) if a == b else np.linspace(a, b, 41)
            ax.hist([logs[keep], logs[~keep]], bins=edges, stacked=True,
                    color=[KEPT, DROPPED], label=["kept", "dropped"])
            for bound, label in ((lo, "lower"), (hi, "upper")):
                if bound is not None and bound > 0:   # lower = 0 means no lower cut
                    ax.axvline(math.log10(bound), color="black", linestyle="--",
                               label=f"{label} = {bound:.4g}")
            ax.set_xlabel("log10(perplexity)")
            ax.set_ylabel("rows")
            ax.legend(fontsize="small")
    return Path(path)


def label_issues_png(per_class: dict[str, dict], path) -> Path:
    """Horizontal bars per class: total ``rows`` with the flagged ``issues`` drawn over them."""
    names = sorted(per_class)
    with _png(path, label_issues_size(len(names))) as fig:
        ax = fig.add_subplot()
        ax.set_title("Label issues per class")
        if not names:
            _no_data(ax)
        else:
            rows = [int(per_class[n].get("rows", 0)) for n in names]
            issues = [int(per_class[n].get("issues", 0)) for n in names]
            y = np.arange(len(names))
            ax.barh(y, rows, color=TOTAL, label="rows")
            ax.barh(y, issues, height=0.5, color=DROPPED, label="issues")
            for yi, r, k in zip(y, rows, issues):
                pct = f" ({100 * k / r:.1f}%)" if r else ""
                ax.text(max(r, k), yi, f" {k}/{r}{pct}", va="center", fontsize="small")
            ax.set_yticks(y, names)
            ax.invert_yaxis()                 # first class name at the top
            ax.set_xlim(0, max(1, *rows, *issues) * 1.3)   # room for the counts
            ax.set_xlabel("rows")
            fig.legend(loc="outside lower center", ncols=2, fontsize="small")
    return Path(path)


def training_curves_png(history: dict[str, list[tuple[float, float]]], path, x_label: str = "step") -> Path:
    """Line plot of each series (name -> [(x, value)]) against x; empty series skipped.

    All series share one y axis: pass comparable ones (e.g. train/loss and eval/loss).
    """
    series = {k: sorted(v) for k, v in sorted(history.items()) if v}
    with _png(path, FIGSIZE) as fig:
        ax = fig.add_subplot()
        ax.set_title("Training curves")
        if not series:
            _no_data(ax)
        for name, points in series.items():
            steps, values = zip(*points)
            ax.plot(steps, values, label=name, marker="o" if len(points) == 1 else None)
        if series:
            ax.set_xlabel(x_label)
            ax.set_ylabel("value")
            ax.grid(alpha=0.3)
            ax.legend(fontsize="small")
    return Path(path)


def read_dvclive_history(plots_dir) -> dict[str, list[tuple[int, float]]]:
    """Read dvclive's per-metric TSVs under ``plots_dir/metrics`` (e.g. metrics/dvclive/plots).

    dvclive writes one tab-separated file per metric with the header ``[timestamp] step <leaf>``
    (timestamp only when logged with one), so the value is the column that is neither. Series
    are named by the path below ``metrics`` without ``.tsv`` ("train/loss"), sorted by step;
    rows whose step or value is not a number are skipped. A missing folder gives {}.
    """
    root = Path(plots_dir) / "metrics"
    history: dict[str, list[tuple[int, float]]] = {}
    for tsv in sorted(root.rglob("*.tsv")):
        with open(tsv, encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh, delimiter="\t")
            value_cols = [c for c in reader.fieldnames or () if c not in ("timestamp", "step")]
            points = []
            for row in reader:
                try:
                    points.append((int(row["step"]), float(row[value_cols[0]])))
                except (KeyError, IndexError, TypeError, ValueError):
                    continue
        history[tsv.relative_to(root).with_suffix("").as_posix()] = sorted(points)
    return history


def by_epoch(history: dict[str, list[tuple[int, float]]], names) -> dict[str, list[tuple[float, float]]]:
    """The series ``names`` of a dvclive history with dvclive's step (one per logging event, train
    logs and evaluations alike) replaced by the epoch the Trainer logged at that step."""
    epoch_at = dict(history.get("epoch", []))
    return {name: [(epoch_at[step], value) for step, value in history.get(name, []) if step in epoch_at]
            for name in names}
