"""A blind-deblurring study: one method over problems x variants x seeds, scored and written to a run folder.

The method is a function deblur(problem, config, seed, scorer) -> Estimate; selfdeblur.py and vdip.py each bring
theirs. What is written (into the run folder):
    <problem>.png             estimates beside the blurred input, the known-kernel deconvolution and the truth
    <problem>_kernels.png     estimated kernels beside the true one
    <problem>_<map>.png       the maps an estimate brings (VDIP's σ: std), one panel per run
    estimates/                every estimate and kernel as 8-bit PNG (the MATLAB protocol scores 8-bit images)
    curve.png, curve.csv      PSNR-GT and PSNR-NB over the iterations; <problem>_curve.png one problem's alone
    scatter.png               PSNR-GT against PSNR-NB, one point per run: the no-blur mode sits at high PSNR-NB
    table.csv                 one row per run;  summary.csv  mean, spread and best-of-seeds per variant

Runs of the same problems made apart (two scripts, two machines) are put side by side by
    python -m dipkit.study Results/selfdeblur/run-a Results/vdip/run-b --out Results/comparison
which writes one table.csv, summary.csv, scatter.png, curve.csv and curve.png over all of them, and each problem's
PSNR curves of every method overlaid in <problem>_curve.png (merge_runs). This is how SelfDeblur's variants and
VDIP's are compared on the same problems and seeds: each script runs with the same data flags, then one merge.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm import tqdm

from . import figures
from .blind import Problem, with_chroma
from .cli import RunError, run_main
from .device import choose_device, keep_freed_memory, seed_everything, synchronize
from .figures import save_png
from .levin import Scorer, check_scoring, known_kernel_baseline, quantise_8bit
from .runs import start_run, write_csv, write_metrics


@dataclass
class Estimate:
    image: torch.Tensor  # the deblurred image, (1, 1, H, W) like y
    kernel: torch.Tensor  # the estimated kernel, (K_h, K_w)
    curve: list[dict[str, float]]  # rows: iteration, loss, psnr_gt, psnr_nb
    seconds: float  # optimisation time (scoring excluded)
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # other maps to save and show (VDIP's std)
    stats: dict[str, float] = field(default_factory=dict)  # other numbers for the table (skipped steps)


def prepare(device_name: str, seed: int, deterministic: bool) -> torch.device:
    """The device of a run, everything seeded; cuDNN's autotuner as the originals ran it unless deterministic."""
    device = choose_device(device_name)
    seed_everything(seed, deterministic)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not deterministic
    return device


def two_rate_adam(image_net: torch.nn.Module, kernel_net: torch.nn.Module, lr_image: float, lr_kernel: float,
                  beta1_image: float, milestones: tuple[int, ...], gamma: float):
    """SelfDeblur's and VDIP's optimiser: one Adam, lr_image (β1 beta1_image) for G_x and lr_kernel for G_k, with
    the learning rates multiplied by gamma at the milestones."""
    optimiser = torch.optim.Adam([
        dict(params=image_net.parameters(), lr=lr_image, betas=(beta1_image, 0.999)),
        dict(params=kernel_net.parameters(), lr=lr_kernel),
    ])
    return optimiser, torch.optim.lr_scheduler.MultiStepLR(optimiser, list(milestones), gamma)


class Progress:
    """The steps of one run, from −pretrain_iterations (negative steps: the pretraining) to iterations, under a
    progress bar (`show`); every `curve_every` steps (0: never) the loss is checked and the estimate scored
    (PSNR-GT, PSNR-NB), the scoring time kept out of the run's time."""

    def __init__(self, problem: Problem, seed: int, scorer: Scorer | None, device: torch.device,
                 pretrain_iterations: int, iterations: int, curve_every: int, show: bool = True):
        self.problem, self.scorer, self.device = problem, scorer, device
        self.iterations, self.curve_every = iterations, curve_every
        self.steps = tqdm(range(-pretrain_iterations, iterations), disable=not show, leave=False,
                          desc=f"{problem.name} s{seed}")
        self.curve: list[dict[str, float]] = []
        self.scoring_seconds = 0.0
        synchronize(device)
        self.start = time.perf_counter()

    def after(self, step: int, loss: torch.Tensor, estimate: Callable[[], torch.Tensor],
              allow_non_finite: bool = False) -> None:
        done, every = step + 1, self.curve_every
        if done <= 0 or not every or (done % every and done != self.iterations):
            return
        value = loss.item()
        if not math.isfinite(value) and not allow_non_finite:
            raise RunError(f"{self.problem.name}: the loss became {value} at iteration {done}; "
                           "try smaller learning rates")
        tick = time.perf_counter()
        scores = self.scorer(estimate().detach(), full=False) if self.scorer is not None else {}
        self.scoring_seconds += time.perf_counter() - tick
        self.curve.append(dict(iteration=done, loss=value, **scores))
        self.steps.set_postfix(loss=f"{value:.2e}", **{key: f"{v:.2f}" for key, v in scores.items()})

    def seconds(self, image: torch.Tensor) -> float:
        """The run's time without the scoring; checks that the final image is finite."""
        if not torch.isfinite(image).all():
            raise RunError(f"{self.problem.name}: the image network's output became NaN; try smaller learning rates")
        synchronize(self.device)
        return time.perf_counter() - self.start - self.scoring_seconds


def save_kernel_png(path: Path, kernel: torch.Tensor) -> None:
    """Scaled to a maximum of 255, as SelfDeblur (and Levin's gt/kernel*.png) store kernels."""
    k = kernel.detach().float()
    save_png(path, (k / k.max())[None, None])


@dataclass(frozen=True)
class Scoring:
    """Levin's protocol as a study applies it: `crop` pixels off each side, shifts up to `max_shift` (and, when
    `wide_shift` > 0, PSNR-GT, SSIM and the error ratio under that wider search beside them), the known-kernel
    deconvolution's TV weight (the error ratio's denominator)."""

    crop: int = 15
    max_shift: float = 5
    wide_shift: float = 0
    known_kernel_weight: float = 1e-3

    def check(self, problems: list[Problem]) -> None:
        """A RunError if the wide search is not wider, or a problem is too small for the crop and the shifts."""
        if 0 < self.wide_shift <= self.max_shift:
            raise RunError(f"wide_shift ({self.wide_shift}) must exceed max_shift ({self.max_shift}), or be 0")
        for p in problems:
            check_scoring(p.blurred.shape[-2:], self.crop, max(self.max_shift, self.wide_shift), p.name)


def run_script(record: Any, script: str, method: str, headline: str, device_name: str, problems: list[Problem],
               variants: dict[str, Any], seeds: tuple[int, ...], deblur: Callable[[Problem, Any, int, Scorer], Estimate],
               scoring: Scoring) -> dict[str, Any]:
    """What selfdeblur.py's and vdip.py's run() do once their constants are checked: say what runs where
    ("<method> on <device>: <headline>"), open Results/<script>/<run> with `record` (the script's constants) as its
    config.json, run the study; returns its rows and the folder."""
    device = choose_device(device_name)
    keep_freed_memory()
    print(f"{method} on {device}: {headline}")
    folder = start_run(record, script, device)
    result = run_study(problems, variants, seeds, deblur, folder, scoring)
    seconds = sum(r.get("seconds", 0.0) for r in result["rows"] if r.get("seed", "") != "")
    write_metrics(folder, script, result["summary"], result["rows"], seconds, str(device))
    print(f"wrote {folder}")
    return dict(result, folder=folder)


def run_study(
    problems: list[Problem],
    variants: dict[str, Any],
    seeds: tuple[int, ...],
    deblur: Callable[[Problem, Any, int, Scorer], Estimate],
    folder: Path,
    scoring: Scoring = Scoring(),
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run every variant (name -> what `deblur` takes) with every seed on every problem; write the folder; return
    the rows. Scores follow `scoring` (wide-shift scores are named `psnr_gt_shift10`, ...)."""
    crop, max_shift = scoring.crop, scoring.max_shift
    (folder / "estimates").mkdir(exist_ok=True)
    rows, curves = [], []
    for problem in problems:
        known = (known_kernel_baseline(problem, scoring.known_kernel_weight, crop, max_shift)
                 if problem.true_kernel is not None else None)
        scorer = Scorer(problem, known, crop, max_shift, scoring.wide_shift)
        baselines = [("blurred input", problem.blurred)] + ([("known kernel", known)] if known is not None else [])
        baseline_scores = {}  # scored once, for the table and the figure's captions
        if problem.truth is not None:
            for name, image in baselines:
                baseline_scores[name] = scorer(quantise_8bit(image))
                rows.append(dict(problem=problem.name, variant=name, seed="", **baseline_scores[name]))
        panels: dict[str, list] = {}
        for variant, config in variants.items():
            for seed in seeds:
                estimate = deblur(problem, config, seed, scorer)
                image = quantise_8bit(estimate.image)
                scores = scorer(image, estimate.kernel)
                stem = f"{problem.name}__{variant}__seed{seed}"
                save_png(folder / "estimates" / f"{stem}.png", image)
                save_kernel_png(folder / "estimates" / f"{stem}_kernel.png", estimate.kernel)
                if problem.colour is not None:
                    save_png(folder / "estimates" / f"{stem}_colour.png", with_chroma(image, problem.colour))
                for key, extra in estimate.extra.items():
                    save_png(folder / "estimates" / f"{stem}_{key}.png", extra / extra.max().clamp(min=1e-12))
                rows.append(dict(problem=problem.name, variant=variant, seed=seed, **scores,
                                 seconds=estimate.seconds, **estimate.stats))
                curves += [dict(problem=problem.name, variant=variant, seed=seed, **point) for point in estimate.curve]
                panels.setdefault(variant, []).append((seed, image, estimate, scores))
                log(f"{problem.name:>16} {variant:>14} seed {seed}: " + _describe(scores, estimate.seconds))
        _problem_figures(folder, problem, known, baseline_scores, panels)
    summary = write_tables(folder, rows, curves)
    for line in summary_lines(summary):
        log(line)
    return dict(rows=rows, summary=summary, curves=curves)


def write_tables(folder: Path, rows: list[dict], curves: list[dict]) -> list[dict]:
    """What a study's rows and curves give, written into `folder`: table.csv, summary.csv (returned), curve.csv,
    curve.png (every problem) and <problem>_curve.png (one problem, every method's curves overlaid), scatter.png."""
    summary = summarise(rows)
    write_csv(folder / "table.csv", _same_keys(rows))
    write_csv(folder / "summary.csv", summary)
    if curves:
        write_csv(folder / "curve.csv", _same_keys(curves))
        _curve_figure(folder / "curve.png", curves)
        for problem in dict.fromkeys(c["problem"] for c in curves):
            _curve_figure(folder / f"{problem}_curve.png", [c for c in curves if c["problem"] == problem])
    if any("psnr_gt" in r for r in rows):
        figures.scatter(folder / "scatter.png", rows)
    return summary


def _describe(scores: dict[str, float], seconds: float) -> str:
    parts = [f"{key} {scores[key]:.2f}" for key in ("psnr_gt", "psnr_nb", "isnr") if key in scores]
    parts += [f"{key} {scores[key]:.3f}" for key in ("ssim", "error_ratio", "kernel_error") if key in scores]
    return ", ".join(parts + [f"{seconds:.1f} s"])


def _same_keys(rows: list[dict]) -> list[dict]:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    return [{k: r.get(k, "") for k in keys} for r in rows]


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
    return _same_keys(summary)


def score_keys(rows: list[dict]) -> list[str]:
    """The numeric columns of a table that are summarised, in their first order of appearance."""
    skip = {"problem", "variant", "seed", "shift_rows", "shift_columns"}
    return [key for key in dict.fromkeys(k for r in rows for k in r) if key not in skip]


def summary_lines(summary: list[dict]) -> list[str]:
    return [f"{e['variant']:>20}: PSNR-GT {e['psnr_gt_mean']:.2f} ± {e['psnr_gt_std']:.2f} dB over {e['runs']} run(s), "
            f"SSIM {e['ssim_mean']:.3f}" for e in summary if "psnr_gt_mean" in e]


def _caption(scores: dict[str, float]) -> str:
    if "psnr_gt" in scores:
        return f"{scores['psnr_gt']:.2f} dB / {scores['ssim']:.3f}"
    return f"NB {scores['psnr_nb']:.2f} dB"


def _problem_figures(folder: Path, problem: Problem, known, baseline_scores: dict[str, dict],
                     panels: dict[str, list]) -> None:
    has_truth = problem.truth is not None
    n_seeds = max(len(v) for v in panels.values())
    first = [(problem.blurred, _caption(baseline_scores["blurred input"]) if has_truth else "")]
    titles = ["blurred"]
    if known is not None:
        first.append((known, _caption(baseline_scores["known kernel"])))
        titles.append("known kernel (TV)")
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


def _value(key: str, text: str) -> Any:
    """A table.csv cell read back: the seed an int, scores floats, names strings."""
    try:
        return int(text) if key == "seed" else float(text)
    except ValueError:
        return text


def _read_rows(path: Path) -> list[dict]:
    with path.open(newline="") as file:
        return [{key: _value(key, text) for key, text in row.items() if text != ""} for row in csv.DictReader(file)]


def merge_runs(folders: list[Path], out: Path) -> list[dict]:
    """The rows of several runs' table.csv in one table, summary and scatter, and their curve.csv in one curve.csv
    drawn as curve.png and as one figure per problem (`<problem>_curve.png`, every method's PSNR curves overlaid);
    the baseline rows (blurred input, known kernel) of a problem are kept once. Returns the summary."""
    if (out / "table.csv").exists():
        raise RunError(f"{out} already holds a table.csv; choose another --out")
    rows, curves, seen = [], [], set()
    for folder in map(Path, folders):
        if not (folder / "table.csv").is_file():
            raise RunError(f"{folder} holds no table.csv (not a finished study run)")
        for row in _read_rows(folder / "table.csv"):
            key = (row["problem"], row["variant"], row.get("seed", ""))
            if row.get("seed", "") == "" and key in seen:
                continue
            seen.add(key)
            rows.append(row)
        if (folder / "curve.csv").is_file():
            curves += _read_rows(folder / "curve.csv")
    out.mkdir(parents=True, exist_ok=True)
    return write_tables(out, rows, curves)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Put finished study runs side by side: one table, summary, scatter "
                                     "and the PSNR curves of every method overlaid, per problem.")
    parser.add_argument("folders", nargs="+", type=Path, help="run folders holding table.csv")
    parser.add_argument("--out", type=Path, required=True, help="folder for the merged table.csv, summary.csv, "
                        "scatter.png, curve.csv, curve.png and <problem>_curve.png")
    arguments = parser.parse_args()
    run_main(lambda: print("\n".join(summary_lines(merge_runs(arguments.folders, arguments.out)))))
