"""Compare any runs of the six scripts, and merge runs made apart: curves overlaid, a table of final and best values,
and one merged table of every run's rows.

    python -m dipkit.compare Results/selfdeblur/seed0 Results/selfdeblur/seed1 Results/vdip/quick
    python -m dipkit.compare Results/ADP                         # every run of a script
    python -m dipkit.compare 'Results/dip_denoise/*' --metric psnr_clean_average --x seconds

A RUN is a run folder (holding config.json and metrics.json), a script's results folder (all its runs) or a glob.
Each run gives one line per method (a variant, a solver, ...), its points averaged over the run's items (images,
problems) and seeds at each iteration; the lines are labelled by what differs between the runs: the constants
that differ in their config.json (`lr_image=0.005, seed=1`), the script where scripts differ, the run's name
where nothing else does. The table gives, per label and method, the metric's final and best values, as mean ± std
over the run's items and seeds, and how many there are. `psnr` is each script's PSNR against the truth
(selfdeblur/vdip: psnr_gt; dip_denoise: psnr_clean; ADP: psnr), so runs of different scripts on the same image
compare side by side; any other curve column the runs share can be named with --metric. A run without curves
(generative_prior, a blind study made with --curve_every 0) enters the table with its final values.

Writes to --out (default Results/compare/<time stamp>/): compare.png, compare.csv (the curve points, with their run,
label and method), compare.md (the table), and the merged table.csv: every run's rows with its run. Where every
run is a blind study (selfdeblur.py, vdip.py), the merge is that of the studies (dipkit.report): table.csv,
summary.csv, scatter.png, curve.csv, curve.png and <problem>_curve.png over all of them, a variant's runs pooled
where they were made with the same constants and hold different runs (problem, seed), kept apart as
"<variant> (<run>)" otherwise (said): nothing is counted twice.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import RunError
from .runs import RESUMABLE, read_config, read_csv, same_keys, write_csv

# what may differ between runs without changing what they compute: never a label, and no reason to keep apart
NOT_A_LABEL = (RESUMABLE - {"seeds", "variants", "quick"}) | {"run_name", "results_dir", "progress", "no_figures"}
NOT_A_CONSTANT = RESUMABLE | {"run_name", "results_dir"}
HIGHER_IS_BETTER = ("psnr", "ssim", "isnr", "ncc")  # metrics whose best is the maximum (others: the minimum)
X_AXES = ("iteration", "seconds")
BLIND = ("selfdeblur", "vdip")  # the blind studies, whose runs merge into one study


@dataclass
class Run:
    """One run folder read back: its points (curve rows: method, item, seed, iteration, seconds and metrics) or,
    without curves, its final values (method, item, seed and metrics), and its table.csv and curve.csv rows."""

    folder: Path
    script: str
    constants: dict[str, Any]
    points: list[dict[str, Any]] = field(default_factory=list)
    finals: list[dict[str, Any]] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    curve_rows: list[dict[str, Any]] = field(default_factory=list)
    label: str = ""

    @property
    def metrics(self) -> set[str]:
        """What its curves share, and what its final rows share (a value without a curve, such as the PSNR at a
        stopping rule's choice)."""
        keys = set()
        for rows in (self.points, self.finals):
            keys |= set.intersection(*(set(r) for r in rows)) if rows else set()
        return {k for k in keys if k not in ("method", "item", "seed", "iteration", "seconds")}

    def rows_of(self, metric: str) -> tuple[list[dict[str, Any]], bool]:
        """The points that hold the metric: the curves' where they do (True), else the final rows (False)."""
        return (self.points, True) if any(metric in p for p in self.points) else (self.finals, False)


def _finite(row: dict[str, Any]) -> dict[str, Any]:
    """A point's numeric values that are finite (a NaN is a value not computed there)."""
    return {k: v for k, v in row.items() if not isinstance(v, float) or math.isfinite(v)}


def _numbers(row: dict[str, Any], *not_metrics: str) -> dict[str, float]:
    return {k: v for k, v in row.items() if isinstance(v, float) and k not in not_metrics}


def _blind(run: Run) -> None:
    """selfdeblur.py and vdip.py: curve.csv (problem, variant, seed, iteration, psnr_gt, psnr_nb, ...); runs made
    before the curves kept their time get it from the run's seconds, spread evenly over its iterations; a run
    without curves (curve_every 0) gives its final scores from table.csv."""
    seconds = {(r["problem"], r["variant"], r.get("seed")): r["seconds"] for r in run.rows if "seconds" in r}
    for row in run.curve_rows:
        row = dict(row)
        key = (row.pop("problem"), row.pop("variant"), row.get("seed"))
        point = dict(method=key[1], item=key[0], seed=int(row.pop("seed", 0)), **row)
        if "seconds" not in point and key in seconds:
            point["seconds"] = seconds[key] * point["iteration"] / max(run.constants.get("iterations", 1), 1)
        if "psnr_gt" in point:
            point["psnr"] = point["psnr_gt"]
        run.points.append(point)
    if not run.points:
        run.finals = [dict(method=r["variant"], item=r["problem"], seed=r["seed"], **_numbers(r, "seconds"),
                           **({"psnr": r["psnr_gt"]} if "psnr_gt" in r else {}))
                      for r in run.rows if isinstance(r.get("seed"), int)]


def _dip(run: Run) -> None:
    """dip_denoise.py: <image>/curve.csv (iteration, psnr_noisy, psnr_clean, ...), its time from table.csv (the
    image's seconds per iteration)."""
    per_iteration = {r["image"]: r.get("seconds_per_iteration") for r in run.rows if "image" in r}
    run.finals = [dict(method="DIP", item=str(r["image"]), seed=int(run.constants.get("seed", 0)),
                       **_numbers(r, "seconds", "seconds_per_iteration")) for r in run.rows if "image" in r]
    for item in sorted(p.parent for p in run.folder.glob("*/curve.csv")):
        for row in read_csv(item / "curve.csv"):
            point = dict(method="DIP", item=item.name, seed=int(run.constants.get("seed", 0)), **_finite(row))
            if per_iteration.get(item.name) is not None:
                point["seconds"] = per_iteration[item.name] * (point["iteration"] + 1)
            if "psnr_clean" in point:
                point["psnr"] = point["psnr_clean"]
            run.points.append(point)


def _adp(run: Run) -> None:
    """ADP.py: curve.csv, MAID's log (one row per line-search attempt; an upper iteration's point is its last
    attempt), per image (`image`; one image in runs that did not write it)."""
    images = run.constants.get("images") or ["image"]
    last: dict[tuple, dict] = {}
    method = "paper's ADP" if run.constants.get("original_code") else "ADP-β-MAID"
    for row in run.curve_rows:
        item = row.get("image", images[0] if len(images) == 1 else "image")
        last[(item, row["iteration"])] = dict(method=method, item=Path(str(item)).stem,
                                              seed=int(run.constants.get("seed", 0)), **_numbers(row))
    run.points = list(last.values())


def _adp_1d(run: Run) -> None:
    """adp_1d.py: curve.csv (solver, seconds, lower_iterations, linear_work, loss); a point's iteration is its
    upper iteration, counted per solver."""
    count: dict[str, int] = defaultdict(int)
    for row in run.curve_rows:
        row = dict(row)
        solver = row.pop("solver")
        run.points.append(dict(method=solver, item=run.constants.get("signal", "signal"),
                               seed=int(run.constants.get("seed", 0)), iteration=float(count[solver]), **row))
        count[solver] += 1


def _generative(run: Run) -> None:
    """generative_prior.py: no curves; table.csv's final values (image, method, psnr, ssim, kernel_ncc)."""
    run.finals = [dict(method=r["method"], item=str(r.get("image", "")), seed=int(run.constants.get("seed", 0)),
                       **_numbers(r, "image", "digit", "label")) for r in run.rows]


READERS: dict[str, Callable[[Run], None]] = {
    "selfdeblur": _blind, "vdip": _blind, "dip_denoise": _dip, "ADP": _adp, "adp_1d": _adp_1d,
    "generative_prior": _generative}


def is_run(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / "metrics.json").is_file()


def find_runs(arguments: list[str]) -> list[Path]:
    """Run folders from the command line's RUNs: a run folder, a folder of runs (a script's results folder), or a
    glob of either; each once, in the order given."""
    folders: list[Path] = []
    for argument in arguments:
        matches = [Path(p) for p in sorted(glob.glob(argument))] if glob.has_magic(argument) else [Path(argument)]
        if not matches:
            raise RunError(f"{argument} matches nothing")
        for path in matches:
            if not path.is_dir():
                raise RunError(f"{path} is not a folder")
            found = [path] if is_run(path) else sorted(p for p in path.iterdir() if p.is_dir() and is_run(p))
            if not found:
                raise RunError(f"{path} is not a run (no config.json and metrics.json) and holds no runs")
            folders += [f for f in found if f.resolve() not in {g.resolve() for g in folders}]
    return folders


def read_run(folder: Path) -> Run:
    """A run folder read back; a RunError naming the file where one is damaged."""
    try:
        metrics = json.loads((folder / "metrics.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RunError(f"{folder / 'metrics.json'} is damaged ({error})") from None
    script = metrics.get("script") if isinstance(metrics, dict) else None
    script = script if script in READERS else folder.parent.name
    if script not in READERS:
        raise RunError(f"{folder}: which script made it is not known (metrics.json names {script!r}; known: "
                       f"{', '.join(READERS)})")
    run = Run(folder, script, read_config(folder / "config.json")["config"])
    run.rows = read_csv(folder / "table.csv") if (folder / "table.csv").is_file() else []
    run.curve_rows = read_csv(folder / "curve.csv") if (folder / "curve.csv").is_file() else []
    try:
        READERS[script](run)
    except (KeyError, TypeError, ValueError) as error:
        raise RunError(f"{folder} holds files this script does not write ({type(error).__name__}: {error})") from None
    if not run.points and not run.finals:
        raise RunError(f"{folder} holds no curve and no table to compare")
    return run


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    return f"{value:g}" if isinstance(value, float) else str(value)


def label_runs(runs: list[Run]) -> None:
    """Each run's label: the script where scripts differ, then the constants that differ between the runs (of
    the same script), else its folder's name; folders' names are added where labels would still coincide."""
    scripts = {r.script for r in runs}
    for run in runs:
        same = [r for r in runs if r.script == run.script]
        keys = sorted({k for r in same for k in r.constants} - NOT_A_LABEL)
        differ = [k for k in keys if len({json.dumps(r.constants.get(k), sort_keys=True) for r in same}) > 1]
        parts = ([run.script] if len(scripts) > 1 else []) + [f"{k}={_shown(run.constants.get(k))}" for k in differ]
        run.label = ", ".join(parts) if differ or len(scripts) > 1 else run.folder.name
    labels = [r.label for r in runs]
    for run in runs:
        if labels.count(run.label) > 1:
            run.label = f"{run.label} ({run.folder.name})" if run.label != run.folder.name else \
                f"{run.folder.parent.name}/{run.folder.name}"


def choose_metric(runs: list[Run], metric: str) -> str:
    shared = set.intersection(*(r.metrics for r in runs))
    if not shared:
        listing = "; ".join(f"{r.folder.name}: {', '.join(sorted(r.metrics))}" for r in runs)
        raise RunError(f"these runs share no metric ({listing})")
    if metric not in shared:
        raise RunError(f"unknown metric {metric!r} for these runs; the ones they share: {', '.join(sorted(shared))}")
    return metric


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def table(runs: list[Run], metric: str) -> list[dict[str, Any]]:
    """Per (label, method): final and best of the metric per item and seed, as mean ± std, and their number."""
    best_of = max if any(word in metric for word in HIGHER_IS_BETTER) else min
    rows = []
    for run in runs:
        series: dict[tuple, list[dict]] = defaultdict(list)
        source, curves = run.rows_of(metric)
        for point in source:
            if metric in point:
                series[(point["method"], point["item"], point["seed"])].append(point)
        for method in dict.fromkeys(key[0] for key in series):
            finals, bests = [], []
            for key, points in series.items():
                if key[0] == method:
                    finals.append(points[-1][metric])
                    bests.append(best_of(p[metric] for p in points))
            final, final_std = _mean_std(finals)
            best, best_std = _mean_std(bests)
            rows.append(dict(label=run.label, method=method, script=run.script, run=str(run.folder), runs=len(finals),
                             final=final, final_std=final_std, best=best if curves else math.nan,
                             best_std=best_std if curves else math.nan))
    return rows


def lines(runs: list[Run], metric: str, x: str) -> list[tuple[list[float], list[float], str]]:
    """One line per run and method: the metric averaged over the run's items and seeds at each x (iterations
    shared by all of them; for seconds, the mean time of the points at each iteration)."""
    out = []
    for run in runs:
        by_method: dict[str, dict[float, list[dict]]] = defaultdict(lambda: defaultdict(list))
        for point in run.points:
            if metric in point and x in point:
                by_method[point["method"]][point["iteration"]].append(point)
        for method, at in by_method.items():
            count = max(len(points) for points in at.values())
            steps = [k for k in sorted(at) if len(at[k]) == count]
            xs = [statistics.fmean(p[x] for p in at[k]) for k in steps]
            ys = [statistics.fmean(p[metric] for p in at[k]) for k in steps]
            out.append((xs, ys, f"{run.label}: {method}"))
    return out


def markdown(rows: list[dict], metric: str) -> str:
    def cell(mean: float, std: float, n: int) -> str:
        if not math.isfinite(mean):
            return ""
        return f"{mean:.4g} ± {std:.2g}" if n > 1 else f"{mean:.4g}"

    head = f"| run | method | {metric}, final | {metric}, best | items × seeds |\n| --- | --- | --- | --- | --- |\n"
    return head + "".join(f"| {r['label']} | {r['method']} | {cell(r['final'], r['final_std'], r['runs'])} | "
                          f"{cell(r['best'], r['best_std'], r['runs'])} | {r['runs']} |\n" for r in rows)


# ---------------------------------------------------------------------------------------------------------------
# Merging: every run's rows in one table; blind studies merged into one study


def run_names(runs: list[Run]) -> list[str]:
    """Each run's name in a merged table: its folder's name, with its parent's where two share one."""
    names = [r.folder.name for r in runs]
    return [n if names.count(n) == 1 else f"{r.folder.parent.name}/{n}" for r, n in zip(runs, names)]


def merged_rows(runs: list[Run]) -> list[dict]:
    """Every run's table.csv rows, each with its run, label and script."""
    return same_keys([dict(run=name, label=run.label, script=run.script, **{k: v for k, v in row.items()
                                                                           if k not in ("run", "label", "script")})
                      for run, name in zip(runs, run_names(runs)) for row in run.rows])


def merge_studies(runs: list[Run], log: Callable[[str], None]) -> tuple[list[dict], list[dict]]:
    """The rows and curves of blind studies as one study's: every row keeps its run (the `run` column); a
    variant's runs are pooled where they were made with the same constants (seeds, devices, engines and batches
    may differ) and hold different runs (problem, seed); otherwise they are kept apart as "<variant> (<run>)",
    which is said in one line, so that nothing is counted twice. The baseline rows of a problem are kept once
    where they agree. Runs on different problems are said: each variant's summary averages over its own runs'
    problems."""
    names = run_names(runs)
    constants = [{k: v for k, v in r.constants.items() if k not in NOT_A_CONSTANT} for r in runs]
    problems = [sorted({row["problem"] for row in r.rows}) for r in runs]
    if len({tuple(p) for p in problems}) > 1:
        log("these runs hold different problems (" + "; ".join(f"{n}: {', '.join(p)}" for n, p in
            zip(names, problems)) + "): each variant's summary averages over its own runs' problems")
    renamed = _keep_apart(runs, names, constants, log)
    owner: dict[tuple, str] = {}  # (problem, variant, seed) -> the run that holds it
    for run, name in zip(runs, names):
        for variant in dict.fromkeys(r["variant"] for r in run.rows if r.get("seed", "") != ""):
            pooled = renamed.get((name, variant), variant)
            keys = {(r["problem"], pooled, r["seed"]) for r in run.rows if r["variant"] == variant
                    and r.get("seed", "") != ""}
            twice = sorted(owner[key] for key in keys if key in owner)
            if twice:
                log(f"{pooled}: {name} holds runs (problem, seed) that {twice[0]} holds too; kept apart as "
                    f"'{pooled} ({name})'")
                pooled = renamed[(name, variant)] = f"{pooled} ({name})"
            owner.update({(problem, pooled, seed): name for problem, _, seed in keys})
    rows, curves, seen = [], [], {}
    for run, name in zip(runs, names):
        for row in run.rows:
            row = dict(row, run=name, variant=renamed.get((name, row["variant"]), row["variant"]))
            key = (row["problem"], row["variant"], row.get("seed", ""))
            if key in seen:  # a baseline row of a problem already there
                if _same_scores(seen[key], row):
                    continue
                row["variant"] = f"{row['variant']} ({name})"
            seen[key] = row
            rows.append(row)
        for curve in run.curve_rows:
            curves.append(dict(curve, run=name, variant=renamed.get((name, curve["variant"]), curve["variant"])))
    return rows, curves


def _keep_apart(runs: list[Run], names: list[str], constants: list[dict],
                log: Callable[[str], None]) -> dict[tuple[str, str], str]:
    """(run, variant) -> the name its rows take: the variant's own name where every run of it was made with the
    same constants (pooled), else "<variant> (<runs>)" per group of runs with the same constants."""
    renamed = {}
    variants = dict.fromkeys(r["variant"] for run in runs for r in run.rows if r.get("seed", "") != "")
    for variant in variants:
        groups: list[tuple[dict, list[str]]] = []
        for run, name, kept in zip(runs, names, constants):
            if any(r["variant"] == variant for r in run.rows):
                group = next((g for g in groups if g[0] == kept), None)
                if group is None:
                    groups.append((kept, [name]))
                else:
                    group[1].append(name)
        if len(groups) < 2:
            continue
        (a, a_names), (b, b_names) = groups[:2]
        differ = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        shown = ", ".join(f"{k} {a.get(k)} vs {b.get(k)}" for k in differ[:3]) + (", ..." if len(differ) > 3 else "")
        log(f"{variant}: {'+'.join(a_names)} and {'+'.join(b_names)} were made with other constants ({shown}); "
            "kept apart")
        for _, group_names in groups:
            renamed.update({(name, variant): f"{variant} ({'+'.join(group_names)})" for name in group_names})
    return renamed


def _same_scores(a: dict, b: dict) -> bool:
    return {k: v for k, v in a.items() if k != "run"} == {k: v for k, v in b.items() if k != "run"}


# ---------------------------------------------------------------------------------------------------------------
# The command


def compare(arguments: list[str], metric: str = "psnr", x: str = "iteration", out: Path | None = None,
            log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Read the runs, write compare.png/.csv/.md and the merged tables into `out` (a fresh time-stamped folder
    under Results/compare/ by default), print the table; returns its rows. Everything is read and checked before
    `out` is made: bad input writes nothing."""
    if x not in X_AXES:
        raise RunError(f"--x must be one of {', '.join(X_AXES)}")
    runs = [read_run(folder) for folder in find_runs(arguments)]
    label_runs(runs)
    metric = choose_metric(runs, metric)
    rows, curves = table(runs, metric), lines(runs, metric, x)
    study = merge_studies(runs, log) if all(r.script in BLIND for r in runs) else None
    if out is None:
        out = Path("Results") / "compare" / time.strftime("%Y%m%d-%H%M%S")
        while out.exists():
            out = out.with_name(out.name + "-")
    if (out / "compare.md").exists() or (out / "table.csv").exists():
        raise RunError(f"{out} already holds a comparison; choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunError(f"cannot make {out}: {error.strerror or error}") from None
    from . import figures  # matplotlib only where a figure is drawn
    from .report import summary_lines, write_tables

    if curves:
        figures.curves(out / "compare.png", [dict(lines=curves, xlabel="iteration" if x == "iteration" else
                                                  "wall time (s)", ylabel=metric, title=f"{metric}, {len(runs)} runs")],
                       n_cols=1, panel_size=(8.0, 5.0))
    else:
        log("no run holds curves of this metric: the table only")
    points = [{**p, "run": str(r.folder), "label": r.label, "script": r.script} for r in runs
              for p in r.rows_of(metric)[0] if metric in p]
    write_csv(out / "compare.csv", same_keys(points))
    if study is not None:  # blind studies: one study's table.csv, summary.csv, scatter and curves
        for line in summary_lines(write_tables(out, *study)):
            log(line)
    else:
        write_csv(out / "table.csv", merged_rows(runs))
    text = markdown(rows, metric)
    (out / "compare.md").write_text(text)
    log(text.rstrip())
    log(f"wrote {out}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run folders, scripts' results folders, or globs")
    parser.add_argument("--metric", default="psnr", help="a curve column the runs share (default psnr: PSNR "
                        "against the truth)")
    parser.add_argument("--x", default="iteration", choices=X_AXES, help="the curves' x axis")
    parser.add_argument("--out", type=Path, default=None, help="folder for compare.png/.csv/.md and the merged "
                        "tables (default Results/compare/<time stamp>/)")
    arguments = parser.parse_args()
    compare(arguments.runs, arguments.metric, arguments.x, arguments.out)


if __name__ == "__main__":
    from .cli import run_main

    run_main(main)
