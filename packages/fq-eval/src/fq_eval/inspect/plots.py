"""The PNGs: one per layer (sorted per-channel magnitudes) and a summary over layers.

Figures are built as `matplotlib.figure.Figure` objects, never through pyplot: no global state and
no GUI backend, so the Agg renderer draws them on a headless machine.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure
from PIL import Image

from fq_eval.inspect.analysis import LayerReport
from fq_eval.inspect.capture import SITES
from fq_eval.inspect.files import write_atomically
from fq_eval.inspect.transforms import LABELS, TRANSFORMS

COLORS = {"none": "#7f7f7f", "smooth": "#ff7f0e", "hadamard": "#1f77b4", "flatquant": "#2ca02c"}
DPI = 100


def layer_figure(report: LayerReport, title: str) -> Figure:
    """Activations (top) and weights (bottom) per site: channel magnitudes sorted, over their mean.

    Dividing by the mean puts every transform on one scale: a flat profile is the line at 1 and
    each line starts at its flatness number (max / mean).
    """
    figure = Figure(figsize=(4 * len(SITES), 7.2), dpi=DPI, layout="constrained")
    axes = figure.subplots(2, len(SITES), sharey="row")
    for column, site in enumerate(SITES):
        for row, side in enumerate(("act", "weight")):
            ax = axes[row][column]
            for name in TRANSFORMS:
                stats = report.sites[site][name]
                magnitude = getattr(stats, f"{side}_magnitude").double()
                profile = magnitude.sort(descending=True).values / magnitude.mean()
                label = f"{LABELS[name]} ({getattr(stats, f'{side}_flatness'):.1f})"
                ax.plot(profile.numpy(), color=COLORS[name], label=label, linewidth=1.2)
            ax.set_yscale("log")
            ax.grid(True, which="both", alpha=0.25)
            ax.legend(fontsize=8, title="max / mean", title_fontsize=8)
            ax.set_title(f"{site}: {'activations X' if side == 'act' else 'weights W'}", fontsize=10)
            ax.set_xlabel("channel (sorted by magnitude)", fontsize=8)
        axes[0][column].set_ylabel("max |x| / mean" if column == 0 else "")
        axes[1][column].set_ylabel("max |w| / mean" if column == 0 else "")
    figure.suptitle(title, fontsize=11)
    return figure


def summary_figure(reports: Sequence[LayerReport], title: str) -> Figure:
    """Per site: activation flatness (top) and the linears' output error under W/A RTN (bottom)."""
    figure = Figure(figsize=(4 * len(SITES), 7.2), dpi=DPI, layout="constrained")
    axes = figure.subplots(2, len(SITES), sharex=True)
    layers = [report.layer for report in reports]
    rows = (("act_flatness", "activation flatness (max / mean)"), ("output_error", "per-token output error"))
    for column, site in enumerate(SITES):
        for row, (number, ylabel) in enumerate(rows):
            ax = axes[row][column]
            for name in TRANSFORMS:
                values = [getattr(report.sites[site][name], number) for report in reports]
                ax.plot(layers, values, color=COLORS[name], label=LABELS[name], marker=".", linewidth=1.2)
            ax.set_yscale("log")
            ax.grid(True, which="both", alpha=0.25)
            ax.set_ylabel(ylabel if column == 0 else "")
        axes[0][column].set_title(site, fontsize=10)
        axes[1][column].set_xlabel("layer")
    figure.legend(*axes[0][0].get_legend_handles_labels(), loc="outside lower center", ncols=len(TRANSFORMS))
    figure.suptitle(title, fontsize=11)
    return figure


def save_png(figure: Figure, path: Path) -> None:
    """Write `figure` as a 256-colour palette PNG: line plots use few colours, so it looks the same
    as full RGB at about a third of the size (small enough to commit next to the docs)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    buffer.seek(0)
    image = Image.open(buffer).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    write_atomically(path, lambda tmp: image.save(tmp, format="png", optimize=True))
