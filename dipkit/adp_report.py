"""The analytic deep prior experiments' outputs. ADP.py: the reconstructions (ADP.png), the learned kernels
(kernel.png), MAID's curves (curve.png, curve.csv), the table and the printed lines. adp_1d.py: the solvers' loss
curves (curve.png, curve.csv), reconstructions and B − A, the table of time and lower-level iterations to within
1% of the best loss (time_to_target, also the tuned IFT's measure), the tuning grid, the speed-ups and the printed
lines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from . import figures
from .runs import write_csv

# ---------------------------------------------------------------------------------------------------------------
# ADP.py: colour deblurring, one result per image

METHOD_TITLES = {"blurry": "blurry + noisy", "tv": "TV (same λ, converged)",
                 "paper_tv": "TV, the paper's code (100 steps of step 1/L₁₀₀)", "x_b0_same_budget": "x(b0), ADP's budget",
                 "tv_oracle": "TV (λ tuned on truth: oracle)", "adp": "ADP-β-MAID"}
ORIGINAL_TITLES = {"blurry": "blurry + noisy", "paper_tv": "TV, the paper's code",
                   "paper_adp": "ADP-β-MAID, the paper's code", "tv": "TV (same λ, converged)"}


def write_deblurring(folder: Path, results: list[dict[str, Any]], channels: int, original_code: bool) -> None:
    """ADP.png (the images and each method's reconstruction), kernel.png (b0, b* and |b* − b0| per channel),
    curve.png and curve.csv (MAID's log), table.csv. Each result holds the image's name, x_true, b0 and b (one
    kernel per channel), its MAID log, its methods' reconstructions and its metrics; `original_code`: the results
    hold the paper code's columns."""
    caption = lambda m: f"{m['psnr']:.2f} dB / {m['ssim']:.3f}"  # noqa: E731
    titles = ORIGINAL_TITLES if original_code else METHOD_TITLES
    shown = ("blurry", "paper_tv", "paper_adp", "tv") if original_code else ("blurry", "paper_tv", "tv", "adp")
    names, colours, c = [r["name"] for r in results], "RGB" if channels == 3 else "I", range(channels)
    figures.image_grid(folder / "ADP.png", [[(r["x_true"], "PSNR / SSIM")] + [
        (r["methods"][m]["x"], caption(r["metrics"][m])) for m in shown] for r in results],
        ["ground truth"] + [titles[m] for m in shown], names)
    figures.kernel_grid(folder / "kernel.png", [[(r["b0"][0], "b0")] + [(r["b"][i], f"b* ({colours[i]})") for i in c]
                                                + [((r["b"][i] - r["b0"][i]).abs(), f"|b* − b0| ({colours[i]})")
                                                   for i in c] for r in results],
                        names, log_scale=[False] * (1 + channels) + [True] * channels)
    panels = [dict(lines=[([row[x] for row in r["log"]], [row[key] for row in r["log"]], r["name"]) for r in results],
                   xlabel=x_label, ylabel=label, logy=key == "upper_loss")
              for key, label in (("psnr", "PSNR (dB)"), ("upper_loss", "upper loss F"))
              for x, x_label in (("iteration", "upper iteration"), ("cumulative_lower_evaluations",
                                 "cumulative lower-level gradient evaluations"), ("seconds", "wall time (s)"))]
    figures.curves(folder / "curve.png", panels)
    write_csv(folder / "curve.csv", [row for r in results for row in r["log"]])
    write_csv(folder / "table.csv", [dict(image=r["name"], method=m, psnr=r["metrics"][m]["psnr"],
                                          ssim=r["metrics"][m]["ssim"], tv_weight=r["metrics"][m].get("tv_weight", ""),
                                          lower_iterations=r["metrics"][m].get("iterations", ""))
                                     for r in results for m in titles])


def deblurring_lines(results: list[dict[str, Any]]) -> list[str]:
    """One line per image: each method's PSNR and how MAID stopped."""
    lines = []
    for r in results:
        m = r["metrics"]
        shown = [(label, key) for label, key in (("blurry", "blurry"), ("paper TV", "paper_tv"), ("paper ADP",
                 "paper_adp"), ("TV", "tv"), ("TV-oracle", "tv_oracle"), ("ADP", "adp")) if key in m]
        scores = "  ".join(f"{label} {m[key]['psnr']:.2f}" for label, key in shown)
        lines.append(f"{r['name']:>12}: {scores} dB  ({m['stop_reason']})")
    return lines


# ---------------------------------------------------------------------------------------------------------------
# adp_1d.py: the solvers compared; each result holds its final B and x, a log of (seconds, lower_iterations,
# linear_work, loss) and how it stopped


def time_to_target(log: list[dict[str, Any]], target: float) -> dict[str, Any]:
    """The first logged point with loss ≤ target: its time and lower-level iterations (None if never)."""
    for row in log:
        if row["loss"] <= target:
            return dict(seconds=row["seconds"], lower_iterations=row["lower_iterations"], linear_work=row["linear_work"])
    return dict(seconds=None, lower_iterations=None, linear_work=None)


def solver_table(results: dict[str, dict[str, Any]], labels: dict[str, str], truth: torch.Tensor,
                 best: float) -> list[dict[str, Any]]:
    """table.csv: per solver, its final loss, time and work, the time and work to within 1% of the best final loss
    `best`, and the ℓ1 error of its x against the truth (on the grid of spacing 2/n)."""
    table = []
    for name, res in results.items():
        reached = time_to_target(res["log"], 1.01 * best)
        table.append(dict(solver=labels[name], final_loss=res["log"][-1]["loss"],
                          seconds=res["log"][-1]["seconds"], lower_iterations=res["log"][-1]["lower_iterations"],
                          linear_work=res["log"][-1]["linear_work"],
                          seconds_to_1pct=reached["seconds"], lower_iterations_to_1pct=reached["lower_iterations"],
                          l1_error=(res["x"] - truth).abs().sum().item() * 2 / len(truth),
                          stop_reason=res["stop_reason"]))
    return table


def write_comparison(folder: Path, t: torch.Tensor, truth: torch.Tensor, y: torch.Tensor, a: torch.Tensor,
                     results: dict[str, dict[str, Any]], labels: dict[str, str], table: list[dict[str, Any]],
                     grid_rows: list[dict[str, Any]]) -> None:
    """curve.png and curve.csv (the loss against time and lower-level iterations), reconstructions.png,
    B_minus_A.png, table.csv and, when the tuned IFT ran, grid.csv (its grid's rows)."""
    lines = lambda key: [([r[key] for r in res["log"]], [r["loss"] for r in res["log"]], labels[n])  # noqa: E731
                         for n, res in results.items()]
    figures.curves(folder / "curve.png", [
        dict(lines=lines("seconds"), xlabel="wall time (s)", ylabel="upper loss ½‖Ax − y‖²", logy=True),
        dict(lines=[(x[1:], l[1:], n) for x, l, n in lines("lower_iterations")],
             xlabel="cumulative lower-level iterations", ylabel="upper loss ½‖Ax − y‖²", logx=True, logy=True),
    ], n_cols=2)
    write_csv(folder / "curve.csv", [dict(solver=n, **row) for n, res in results.items() for row in res["log"]])
    reconstructions = [(t, truth, "truth"), (t, y, "noisy data")] + [
        (t, res["x"], f"{labels[n]} (ℓ1 error {(res['x'] - truth).abs().sum().item() * 2 / len(t):.3f})")
        for n, res in results.items()
    ]
    figures.curves(folder / "reconstructions.png", [dict(lines=reconstructions, xlabel="t", ylabel="signal")], n_cols=1)
    figures.kernel_grid(folder / "B_minus_A.png", [[(res["b"] - a, f"B − A, {labels[n]}") for n, res in results.items()]])
    write_csv(folder / "table.csv", table)
    if grid_rows:
        write_csv(folder / "grid.csv", grid_rows)


def speedup(fast: dict[str, Any] | None, slow: dict[str, Any] | None) -> dict[str, float]:
    """How many times faster `fast` came within 1% of the best loss than `slow` (two rows of solver_table), in
    time and in lower iterations (empty when either row is missing or never got there)."""
    if not (fast and slow) or None in (fast["seconds_to_1pct"], slow["seconds_to_1pct"]):
        return {}
    if not (fast["seconds_to_1pct"] > 0 and fast["lower_iterations_to_1pct"] > 0):  # there at the start: no ratio
        return {}
    return dict(time=slow["seconds_to_1pct"] / fast["seconds_to_1pct"],
                lower_iterations=slow["lower_iterations_to_1pct"] / fast["lower_iterations_to_1pct"])


def comparison_lines(table: list[dict[str, Any]], best: float, speedups: dict[str, dict[str, float]]) -> list[str]:
    """The best loss, each solver's final loss and time to within 1% of it, and MAID's speed-ups ({against: ratios})."""
    lines = [f"best upper loss {best:.5g}; to within 1% of it:"]
    for row in table:
        when = "never" if row["seconds_to_1pct"] is None else \
            f"{row['seconds_to_1pct']:.2f} s, {row['lower_iterations_to_1pct']} lower iterations"
        lines.append(f"  {row['solver']:>10}: final {row['final_loss']:.5g} in {row['seconds']:.1f} s; 1%: {when}")
    for label, ratios in speedups.items():
        if ratios:
            lines.append(f"MAID over {label}: {ratios['time']:.1f}x in time, {ratios['lower_iterations']:.1f}x in "
                         "lower iterations")
    return lines
