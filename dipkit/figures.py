"""Figures: image grids with PSNR/SSIM captions, kernel panels, curves, the PSNR-GT against PSNR-NB scatter, and
8-bit PNGs of single images. PNG files, no window: figures are matplotlib.figure.Figure objects drawn straight to
their files, so importing this module leaves the process's matplotlib backend alone (notebooks keep theirs)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import matplotlib.colors
import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image


def to_display(image: torch.Tensor):
    """(1, C, H, W) tensor in [0, 1] -> (H, W, C) or (H, W) array for imshow."""
    array = image.detach().float().clamp(0, 1)[0].permute(1, 2, 0).cpu().numpy()
    return array[..., 0] if array.shape[-1] == 1 else array


def save_png(path: Path, image: torch.Tensor) -> None:
    """An 8-bit PNG of an image (1, C, H, W) or (H, W) in [0, 1]: round(255·clip(x, 0, 1)), grey for one channel."""
    if image.dim() == 2:
        image = image[None, None]
    Image.fromarray((to_display(image) * 255).round().astype("uint8")).save(path)


def save_kernel_png(path: Path, kernel: torch.Tensor) -> None:
    """A kernel as an 8-bit PNG scaled to a maximum of 255, as SelfDeblur (and Levin's gt/kernel*.png) store them."""
    k = kernel.detach().float()
    save_png(path, (k / k.max())[None, None])


def _no_ticks(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def _title_rows(axes, i: int, row_titles: Sequence[str], fontsize: int) -> None:
    """Row i's title on its first panel, if there is one."""
    if i < len(row_titles):
        axes[i, 0].set_ylabel(row_titles[i], fontsize=fontsize)


def _subplots(n_rows: int = 1, n_cols: int = 1, figsize: tuple[float, float] = (6.4, 4.8), squeeze: bool = True):
    """A figure that no pyplot state knows of (freed with its last reference), and its axes."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(n_rows, n_cols, squeeze=squeeze)


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def image_grid(
    path: Path,
    rows: Sequence[Sequence[tuple[torch.Tensor, str]]],
    column_titles: Sequence[str],
    row_titles: Sequence[str] = (),
    panel_size: float = 3.0,
    cmap: str = "gray",
) -> None:
    """A grid of images, each with a caption below (for example its PSNR and SSIM); `cmap` for grey ones. Column
    titles name the first row's panels; a row may be shorter than the first."""
    n_rows, n_cols = len(rows), max(len(column_titles), *(len(row) for row in rows))
    height, width = rows[0][0][0].shape[-2:]
    fig, axes = _subplots(
        n_rows, n_cols, figsize=(panel_size * n_cols, panel_size * height / width * n_rows + 0.6 * n_rows),
        squeeze=False,
    )
    for i, row in enumerate(rows):
        for j, (image, caption) in enumerate(row):
            ax = axes[i, j]
            ax.imshow(to_display(image), cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            _no_ticks(ax)
            ax.set_xlabel(caption, fontsize=9)
            if i == 0:
                ax.set_title(column_titles[j], fontsize=10)
        for ax in axes[i, len(row):]:  # a shorter row leaves its last panels empty
            ax.axis("off")
        _title_rows(axes, i, row_titles, 10)
    _save(fig, path)


def kernel_grid(
    path: Path,
    rows: Sequence[Sequence[tuple[torch.Tensor, str]]],
    row_titles: Sequence[str] = (),
    log_scale: Sequence[bool] = (),
) -> None:
    """Kernels as heat maps with colour bars; column j on a logarithmic colour scale if log_scale[j]."""
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    fig, axes = _subplots(n_rows, n_cols, figsize=(2.6 * n_cols, 2.4 * n_rows), squeeze=False)
    for i, row in enumerate(rows):
        for j, (kernel, title) in enumerate(row):
            ax = axes[i, j]
            values = kernel.detach().double().cpu().numpy()
            norm = None
            if j < len(log_scale) and log_scale[j]:
                positive = values[values > 0]
                low = max(positive.min(), positive.max() * 1e-6) if positive.size else 1e-12
                norm = matplotlib.colors.LogNorm(vmin=low, vmax=max(values.max(), low * 10))
                values = values.clip(min=low)
            image = ax.imshow(values, cmap="viridis", norm=norm, interpolation="nearest")
            fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
            ax.set_title(title, fontsize=8)
            _no_ticks(ax)
        for j in range(len(row), n_cols):
            axes[i, j].axis("off")
        _title_rows(axes, i, row_titles, 9)
    _save(fig, path)


def curves(
    path: Path,
    panels: Sequence[dict],
    n_cols: int = 3,
    panel_size: tuple[float, float] = (4.2, 3.2),
) -> None:
    """Line plots and point clouds. Each panel: {'lines': [(x, y, label), ...], 'points': [(x, y, label), ...]
    (a marker per point; 'colours': {label: colour} keeps a label's colour across panels), 'xlabel', 'ylabel',
    'logx', 'logy', 'title', 'marks': [(x, label), ...] (vertical lines), 'levels': [(y, label), ...] (horizontal
    lines)}."""
    n_rows = -(-len(panels) // n_cols)
    fig, axes = _subplots(n_rows, n_cols, figsize=(panel_size[0] * n_cols, panel_size[1] * n_rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        for x, y, label in panel.get("lines", []):
            ax.plot(x, y, label=label, marker="." if len(x) < 60 else None)
        for x, y, label in panel.get("points", []):
            ax.scatter(x, y, label=label, alpha=0.75, s=22, color=panel.get("colours", {}).get(label))
        for x, label in panel.get("marks", []):  # vertical lines at chosen iterations
            ax.axvline(x, linestyle="--", color="grey" if "oracle" in label else "black", lw=1, label=label)
        for y, label in panel.get("levels", []):
            ax.axhline(y, linestyle="--", color="grey", lw=1, label=label)
        ax.set_xlabel(panel.get("xlabel", ""))
        ax.set_ylabel(panel.get("ylabel", ""))
        ax.set_title(panel.get("title", ""), fontsize=10)
        if panel.get("logx"):
            ax.set_xscale("log")
        if panel.get("logy") and _has_positive(y for _, y, _ in panel.get("lines", [])):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        if sum(len(panel.get(key, [])) for key in ("lines", "points", "marks", "levels")) > 1:
            ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    _save(fig, path)


def scatter(path: Path, rows: Sequence[dict]) -> None:
    """A study's runs as points (PSNR-NB, PSNR-GT), one colour per variant, with the blurred input's mean PSNR-GT
    as a dashed line: whether fitting y better (higher PSNR-NB) means a better image. `rows` are table rows with
    'variant', 'psnr_nb' and, where there is a truth, 'psnr_gt'; rows without a truth or with a non-finite
    PSNR-NB are left out."""
    _save(_scatter_figure(rows), path)


def _scatter_figure(rows: Sequence[dict]):
    fig, ax = _subplots(figsize=(5.5, 4.5))
    for variant in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == variant and "psnr_gt" in r and math.isfinite(r["psnr_nb"])]
        if mine:
            ax.scatter([r["psnr_nb"] for r in mine], [r["psnr_gt"] for r in mine], label=variant, alpha=0.8)
    blurred = [r["psnr_gt"] for r in rows if r["variant"] == "blurred input"]
    if blurred:
        ax.axhline(float(np.mean(blurred)), color="grey", ls="--", lw=1, label="blurred input (mean PSNR-GT)")
    ax.set_xlabel("PSNR-NB: estimate against the blurred input (dB)")
    ax.set_ylabel("PSNR-GT (dB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _has_positive(series) -> bool:
    """Whether any finite value is positive (a log axis needs one)."""
    return any(math.isfinite(v) and v > 0 for values in series for v in values)
