"""The generative-prior experiment's outputs (generative_prior.py): the deblurred test images and their kernels
(deblurring.png, kernels.png), the per-image table, each method's summary at each noise level (summary.csv,
noise.csv, noise.png), the printed lines, and the trained generators' samples. A method's results are a dict
{method: dict(image (N, 1, H, W), kernel (N, 1, h, w) or None, seconds, psnr, ssim: one per image, and with a
kernel kernel_ncc)}."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from . import figures
from .runs import write_csv


def summary_rows(results: dict[str, dict], noise_level: float, oracles: Sequence[str]) -> list[dict]:
    """One row per method at one noise level: its mean PSNR, SSIM (and kernel NCC) over the images, its time,
    and whether it is an oracle (told the truth)."""
    rows = []
    for method, entry in results.items():
        row = dict(method=method, oracle=method in oracles, noise_level=noise_level,
                   psnr=sum(entry["psnr"]) / len(entry["psnr"]),
                   ssim=sum(entry["ssim"]) / len(entry["ssim"]), seconds=entry["seconds"])
        if "kernel_ncc" in entry:
            row["kernel_ncc"] = sum(entry["kernel_ncc"]) / len(entry["kernel_ncc"])
        rows.append(row)
    return rows


def image_rows(results: dict[str, dict], digits: Sequence[int]) -> list[dict]:
    """table.csv: one row per method and test image (its index and digit), with its scores."""
    table = []
    for method, entry in results.items():
        for n in range(len(digits)):
            row = dict(image=n, digit=int(digits[n]), method=method, psnr=entry["psnr"][n], ssim=entry["ssim"][n])
            if "kernel_ncc" in entry:
                row["kernel_ncc"] = entry["kernel_ncc"][n]
            table.append(row)
    return table


def deblurring_figures(folder: Path, results: dict[str, dict], truth: torch.Tensor, true_kernels: torch.Tensor,
                       rows: int, known_kernel: str, repeated: Sequence[str] = ()) -> None:
    """deblurring.png (a row per test image, up to `rows`: every method's image with its PSNR / SSIM, then the
    truth) and kernels.png (the true kernel, then every method's with its NCC; `known_kernel`, the method given
    the true kernel, without one; the methods `repeated` show another's kernel and are left out)."""
    methods = list(results)
    grid = []
    for n in range(min(rows, len(truth))):
        row = [(results[m]["image"][n : n + 1], f"{results[m]['psnr'][n]:.2f} / {results[m]['ssim'][n]:.3f}")
               for m in methods]
        grid.append(row + [(truth[n : n + 1], "PSNR / SSIM")])
    figures.image_grid(folder / "deblurring.png", grid, methods + ["truth"], [f"test {n}" for n in range(len(grid))],
                       panel_size=1.9)
    with_kernels = [m for m in methods if results[m]["kernel"] is not None and m not in repeated]
    kernel_rows = []
    for n in range(min(rows, len(truth))):
        row = [(true_kernels[n, 0], "true")]
        row += [(results[m]["kernel"][n, 0], f"{m}" + (f"\nNCC {results[m]['kernel_ncc'][n]:.2f}"
                                                      if m != known_kernel else "")) for m in with_kernels]
        kernel_rows.append(row)
    figures.kernel_grid(folder / "kernels.png", kernel_rows, [f"test {n}" for n in range(len(kernel_rows))])


def write_tables(folder: Path, table: list[dict], summary: list[dict], sweep: list[dict], noise_level: float) -> None:
    """table.csv, summary.csv (the main noise level's rows), noise.csv (every level's) and, when there are several
    levels, noise.png: the PSNR of each method run at a level other than the main one, against the noise level."""
    write_csv(folder / "table.csv", table, ("image", "digit", "method", "psnr", "ssim", "kernel_ncc"))
    write_csv(folder / "summary.csv", summary, ("method", "oracle", "psnr", "ssim", "kernel_ncc", "seconds"))
    write_csv(folder / "noise.csv", sweep, ("noise_level", "method", "psnr", "ssim", "kernel_ncc"))
    if len({r["noise_level"] for r in sweep}) > 1:
        methods = dict.fromkeys(r["method"] for r in sweep if r["noise_level"] != noise_level)
        lines = [([r["noise_level"] for r in sweep if r["method"] == m], [r["psnr"] for r in sweep if r["method"] == m],
                  m) for m in methods]
        figures.curves(folder / "noise.png", [dict(lines=lines, xlabel="noise σ", ylabel="PSNR (dB)",
                                                   title="PSNR against the noise level", logx=True)], n_cols=1)


def summary_lines(summary: list[dict]) -> list[str]:
    return [f"{row['method']:>20}: PSNR {row['psnr']:.2f} dB, SSIM {row['ssim']:.3f}"
            + (f", kernel NCC {row['kernel_ncc']:.3f}" if "kernel_ncc" in row else "")
            + (f", {row['seconds']:.1f} s" if row["seconds"] else "") for row in summary]


def sample_figures(folder: Path, images: torch.Tensor, kernels: torch.Tensor, shake: torch.Tensor) -> None:
    """samples.png (the image generator's samples) and kernel_samples.png (the kernel generator's samples above
    Boracchi–Foi kernels, `shake`)."""
    figures.image_grid(folder / "samples.png", [[(im[None], "") for im in images]],
                       [f"G_I sample {i}" for i in range(len(images))], panel_size=1.6)
    figures.kernel_grid(folder / "kernel_samples.png", [[(k[0], "G_K") for k in kernels],
                                                        [(k, "Boracchi–Foi") for k in shake]])
