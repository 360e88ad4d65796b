"""A blind-deblurring study's report: its tables (table.csv, summary.csv, error_ratio.csv), figures (per problem,
curves, scatter, the cumulative error ratio) and printed lines; also what `python -m dipkit.compare` writes of
several studies merged."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import torch

from . import figures
from .blind import Problem
from .levin import ERROR_RATIOS, error_ratio_curve
from .runs import same_keys, write_csv


def write_tables(folder: Path, rows: list[dict], curves: list[dict], figures_too: bool = True) -> list[dict]:
    """What a study's rows and curves give, written into `folder`: table.csv, summary.csv (returned), curve.csv,
    and with `figures_too` curve.png (every problem), <problem>_curve.png (one problem, every method's curves
    overlaid) and scatter.png."""
    summary = summarise(rows)
    write_csv(folder / "table.csv", same_keys(rows))
    write_csv(folder / "summary.csv", summary)
    if curves:
        write_csv(folder / "curve.csv", same_keys(curves))
    if curves and figures_too:
        _curve_figure(folder / "curve.png", curves)
        for problem in dict.fromkeys(c["problem"] for c in curves):
            _curve_figure(folder / f"{problem}_curve.png", [c for c in curves if c["problem"] == problem])
    if figures_too and any("psnr_gt" in r for r in rows):
        figures.scatter(folder / "scatter.png", rows)
    ratios = _error_ratio_rows(rows)
    if ratios:
        write_csv(folder / "error_ratio.csv", ratios)
    if ratios and figures_too:
        lines = [(list(ERROR_RATIOS), [row[v] for row in ratios], v) for v in ratios[0] if v != "error_ratio"]
        figures.curves(folder / "error_ratio.png", [dict(lines=lines, xlabel="error ratio r", ylabel="fraction of "
                       "runs with error ratio ≤ r", title="cumulative error ratio (Levin's figure)")], n_cols=1)
    return summary



def _error_ratio_rows(rows: list[dict]) -> list[dict]:
    """The cumulative error-ratio curve of each variant's runs (error_ratio.csv): one row per r, one column per
    variant; none where no run has an error ratio."""
    curves = {}
    for variant in dict.fromkeys(r["variant"] for r in rows if r.get("seed", "") != ""):
        ratios = [r["error_ratio"] for r in rows if r["variant"] == variant and r.get("seed", "") != ""
                  and isinstance(r.get("error_ratio"), float) and math.isfinite(r["error_ratio"])]
        if ratios:
            curves[variant] = error_ratio_curve(ratios)
    return [dict(error_ratio=r, **{v: c[i] for v, c in curves.items()}) for i, r in enumerate(ERROR_RATIOS)]



def describe(scores: dict[str, float], seconds: float) -> str:
    parts = [f"{key} {scores[key]:.2f}" for key in ("psnr_gt", "psnr_nb", "isnr") if key in scores]
    parts += [f"{key} {scores[key]:.3f}" for key in ("ssim", "error_ratio", "kernel_error") if key in scores]
    return ", ".join(parts + [f"{seconds:.1f} s"])




def summarise(rows: list[dict]) -> list[dict]:
    """Per variant, over problems and seeds: the mean and standard deviation of every score, and best-of-seeds
    (each problem's best PSNR-GT over the seeds, averaged over problems), reported apart from the mean because
    published DIP deblurring averages may be best-of-several-runs."""
    summary = []
    for variant in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == variant]
        entry: dict[str, Any] = dict(variant=variant, runs=len(mine))
        for key in score_keys(mine):
            values = [r[key] for r in mine if isinstance(r.get(key), float) and math.isfinite(r[key])]
            if values:
                entry[f"{key}_mean"] = statistics.fmean(values)
                entry[f"{key}_std"] = statistics.pstdev(values)
        if any("psnr_gt" in r for r in mine):
            problems = dict.fromkeys(r["problem"] for r in mine)
            best = [max(r["psnr_gt"] for r in mine if r["problem"] == p) for p in problems]
            entry["psnr_gt_best_of_seeds"] = statistics.fmean(best)
        summary.append(entry)
    return same_keys(summary)



def score_keys(rows: list[dict]) -> list[str]:
    """The numeric columns of a table that are summarised, in their first order of appearance."""
    skip = {"problem", "variant", "seed", "shift_rows", "shift_columns", "source", "run"}
    return [key for key in dict.fromkeys(k for r in rows for k in r) if key not in skip]



def summary_lines(summary: list[dict]) -> list[str]:
    return [f"{e['variant']:>20}: PSNR-GT {e['psnr_gt_mean']:.2f} ± {e['psnr_gt_std']:.2f} dB over {e['runs']} run(s), "
            f"SSIM {e['ssim_mean']:.3f}" for e in summary if "psnr_gt_mean" in e]



def _caption(scores: dict[str, float]) -> str:
    if "psnr_gt" in scores:
        return f"{scores['psnr_gt']:.2f} dB / {scores['ssim']:.3f}"
    return f"NB {scores['psnr_nb']:.2f} dB"



def problem_figures(folder: Path, problem: Problem, known, baseline_scores: dict[str, dict],
                     panels: dict[str, list], known_label: str = "known kernel") -> None:
    has_truth = problem.truth is not None
    n_seeds = max(len(v) for v in panels.values())
    first = [(problem.blurred, _caption(baseline_scores["blurred input"]) if has_truth else "")]
    titles = ["blurred"]
    if known is not None:
        first.append((known, _caption(baseline_scores["known kernel"])))
        titles.append(known_label)
    titles += [f"seed {seed}" for seed, *_ in next(iter(panels.values()))] + (["truth"] if has_truth else [])
    grid = []
    for variant, runs in panels.items():
        row = list(first) + [(image, _caption(scores)) for _, image, _, scores in runs]
        row += [(torch.ones_like(problem.blurred), "")] * (n_seeds - len(runs))
        grid.append(row + ([(problem.truth, "PSNR / SSIM")] if has_truth else []))
    figures.image_grid(folder / f"{problem.name}.png", grid, titles, list(panels))
    kernel_rows = []
    for variant, runs in panels.items():
        row = [(problem.true_kernel, "true")] if problem.true_kernel is not None else []
        row += [(estimate.kernel, f"{variant}, seed {seed}" + (f"\nerror {scores['kernel_error']:.3f}"
                                                              if "kernel_error" in scores else ""))
                for seed, _, estimate, scores in runs]
        kernel_rows.append(row)
    figures.kernel_grid(folder / f"{problem.name}_kernels.png", kernel_rows, list(panels))
    for key in dict.fromkeys(key for runs in panels.values() for _, _, estimate, _ in runs for key in estimate.extra):
        _map_figure(folder / f"{problem.name}_{key}.png", key, panels)



def _map_figure(path: Path, key: str, panels: dict[str, list]) -> None:
    """One row per variant that has the map, one panel per seed, on one colour scale (its largest value)."""
    rows = {variant: [(seed, e.extra[key]) for seed, _, e, _ in runs if key in e.extra]
            for variant, runs in panels.items()}
    rows = {variant: maps for variant, maps in rows.items() if maps}
    top = max(m.max().item() for maps in rows.values() for _, m in maps) or 1.0
    n_cols = max(len(maps) for maps in rows.values())
    grid = []
    for maps in rows.values():
        row = [(m / top, f"seed {seed}: mean {m.mean().item():.3g}, max {m.max().item():.3g}") for seed, m in maps]
        grid.append(row + [(torch.zeros_like(maps[0][1]), "")] * (n_cols - len(row)))
    figures.image_grid(path, grid, [f"{key}, scale 0 to {top:.3g}"] + [""] * (n_cols - 1), list(rows),
                       cmap="magma")



def _curve_figure(path: Path, curves: list[dict]) -> None:
    panels = []
    for problem in dict.fromkeys(c["problem"] for c in curves):
        mine = [c for c in curves if c["problem"] == problem]
        for key, label in (("psnr_gt", "PSNR-GT (dB)"), ("psnr_nb", "PSNR-NB (dB)")):
            if not any(key in c for c in mine):
                continue
            lines = []
            for run in dict.fromkeys((c["variant"], c["seed"]) for c in mine):
                points = [c for c in mine if (c["variant"], c["seed"]) == run and key in c]
                lines.append(([c["iteration"] for c in points], [c[key] for c in points], f"{run[0]} s{run[1]}"))
            panels.append(dict(lines=lines, xlabel="iteration", ylabel=label, title=problem))
    figures.curves(path, panels, n_cols=2)
