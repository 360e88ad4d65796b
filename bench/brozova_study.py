"""Brožová's study of SelfDeblur and VDIP regenerated from runs of selfdeblur.py and vdip.py: her figures, and each
of her conclusions held against the numbers.

    python bench/brozova_study.py Results/selfdeblur/RUN Results/vdip/RUN --repeats Results/selfdeblur/REPEAT \\
        --out Results/brozova_study

A. Brožová, "Blind image deconvolution based on deep image prior" (CTU 2023; Brožová & Šmídl, ICPRAM 2024). The
study's folders are run folders of selfdeblur.py and vdip.py (or a folder of `python -m dipkit.compare` that merged
them); --repeats are runs made again of some of the same (problem, variant, seed), with or without --deterministic, on
this machine or another (as their config.json records it).
Writes to --out:
  runs.csv          one row per run: problem, variant, seed, PSNR-GT, PSNR-NB, ISNR, SSIM, its mode (below) and, where
                    its folder holds curve.csv, its curve's last iteration and the slope of its PSNR-GT curve there
                    (dB per 100 iterations, fitted over the last 20 % of its iterations)
  variants.csv      per variant: runs, mean ± std of ISNR, PSNR-GT, PSNR-NB and SSIM, the seed-to-seed spread (the
                    std of ISNR over the seeds of one problem, averaged over the problems), the runs in each mode and
                    the mean slope at the end
  stochasticity.csv each repeated run beside the study's run of the same problem, variant and seed
  claims.md         the mean ± std of ISNR over the seeds of each problem, then each conclusion of hers, its numbers
                    per problem and what they show (for the β1 sweep also where the curves are at the cut)
  scatter.png       PSNR-NB against ISNR, a point per run, a colour per variant: one panel per comparison she makes
  beta1.png         the sensitivity to G_x's Adam β1 (PSNR-NB and ISNR against β1), a point per run
The modes are hers, with bounds fixed before any run was made: a run *gains* when its ISNR is at least 1 dB; below
that it is *no-blur* when its estimate is within 30 dB PSNR of the blurred input (PSNR-NB ≥ 30: x ≈ y, k ≈ δ), an
*artefact* solution otherwise.
The unit of evidence is the problem (an image and its kernel), not the run: the seeds of one problem share its
image and kernel and are not independent samples of the images her claims are about. A claim about two variants
takes the paired difference b − a on each (problem, seed), averages it over the seeds of each problem, and counts
the problems on her side: it *holds on k of k problems* when every problem is on her side, is *the opposite on k
of k* when every problem is on the other side, and is *not shown at this scale* when the problems disagree or
there is one problem. A claim that a variant avoids a mode (no-blur, artefact) is *not tested at this scale* where
no run of the variant it is held against fell into that mode. "VDIP is more stable" compares the std of ISNR over
the seeds of each problem; it holds only when VDIP's mean spread is below half the other's and stays so with any
one problem left out.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dipkit import figures  # noqa: E402
from dipkit.cli import run_main  # noqa: E402
from dipkit.errors import RunError  # noqa: E402
from dipkit.runs import read_config, read_csv, write_csv  # noqa: E402

GAIN_ISNR = 1.0  # dB: a run below this gained nothing worth the name
NO_BLUR_PSNR_NB = 30.0  # dB: an estimate this close to the blurred input is the no-blur solution
SPREAD_FACTOR = 2.0  # a std over 3 seeds is known to about ±50 %: only a factor of 2 between two of them tells
LAST_PART = 0.2  # the share of a run's iterations its end slope is fitted over: the schedule's last learning-rate
# stage (from the last milestone, 4000 of 5000 iterations, at any --schedule_scale)
REFERENCE = ("blurred input", "known kernel")  # a study's reference rows, not runs
BETA1 = {"SimplerSDB": 0.9, "SimplerSDB-b0.95": 0.95, "SimplerSDB-b0.99": 0.99}  # the β1 sweep (SimplerSDB's)
# her comparisons, one panel each: (title, variants)
PANELS = (
    ("the four algorithms", ("SelfDeblur", "SimplerSDB", "VDIP-Sparse", "VDIP-Extreme")),
    ("pretraining (500 scaled)", ("SelfDeblur", "SelfDeblur+pre")),
    ("SSIM after 2000 (scaled), with pretraining", ("SelfDeblur", "SelfDeblur+pre", "SelfDeblur+pre-SSIM2000")),
    ("optimiser: G_x's Adam β1", ("SimplerSDB", "SimplerSDB-b0.95", "SimplerSDB-b0.99", "VDIP-Sparse")),
)


def mode(row: dict) -> str:
    if row["isnr"] >= GAIN_ISNR:
        return "gain"
    return "no-blur" if row["psnr_nb"] >= NO_BLUR_PSNR_NB else "artefact"


def study_rows(folders: list[Path]) -> tuple[list[dict], dict[str, float]]:
    """One row per run of the studies' table.csv files (a run counted once where a merge holds it again), and the
    reference rows' mean PSNR-GT (the blurred input, the known kernel)."""
    rows, seen, reference = [], set(), defaultdict(list)
    for folder in folders:
        table = folder / "table.csv"
        if not table.is_file():
            raise RunError(f"{folder} holds no table.csv: not a run of selfdeblur.py or vdip.py, nor a merge of them")
        for row in read_csv(table):
            if row.get("variant") in REFERENCE:
                if "psnr_gt" in row and (row["problem"], row["variant"]) not in seen:
                    seen.add((row["problem"], row["variant"]))
                    reference[row["variant"]].append(row["psnr_gt"])
                continue
            if not all(key in row for key in ("psnr_gt", "psnr_nb", "isnr")):
                continue  # a run without a truth, or one that failed
            key = (row["problem"], row["variant"], row["seed"])
            if key in seen:
                continue
            seen.add(key)
            rows.append(dict(problem=row["problem"], variant=row["variant"], seed=row["seed"], psnr_gt=row["psnr_gt"],
                             psnr_nb=row["psnr_nb"], isnr=row["isnr"], ssim=row.get("ssim", math.nan)))
    if not rows:
        raise RunError(f"no scored run in {', '.join(map(str, folders))}")
    for row in rows:
        row["mode"] = mode(row)
    return rows, {name: statistics.fmean(values) for name, values in reference.items()}


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _ratio(x: float, y: float) -> float:
    return x / y if y else math.inf if x else math.nan


def seed_spread(rows: list[dict], metric: str = "isnr") -> float:
    """The std of `metric` over the seeds of one problem, averaged over the problems with two seeds or more."""
    by_problem = defaultdict(list)
    for row in rows:
        by_problem[row["problem"]].append(row[metric])
    spreads = [statistics.stdev(values) for values in by_problem.values() if len(values) > 1]
    return statistics.fmean(spreads) if spreads else math.nan


def study_curves(folders: list[Path]) -> dict[tuple, list[tuple[float, float]]]:
    """Each run's PSNR-GT curve, (iteration, PSNR-GT) in order, from the folders' curve.csv where they hold one (a
    run counted once where a merge holds it again)."""
    curves = {}
    for folder in folders:
        path = folder / "curve.csv"
        if not path.is_file():
            continue
        mine = defaultdict(list)
        for row in read_csv(path):
            if "iteration" in row and "psnr_gt" in row:
                mine[(row["problem"], row["variant"], row["seed"])].append((row["iteration"], row["psnr_gt"]))
        for key, points in mine.items():
            curves.setdefault(key, sorted(points))
    return curves


def end_slope(points: list[tuple[float, float]], part: float = LAST_PART) -> float:
    """The least-squares slope of a PSNR-GT curve over the last `part` of its iterations, in dB per 100 iterations
    (NaN with fewer than two points there)."""
    if not points:
        return math.nan
    tail = [(i, v) for i, v in points if i >= (1 - part) * points[-1][0]]
    if len(tail) < 2:
        return math.nan
    return 100 * statistics.linear_regression([i for i, _ in tail], [v for _, v in tail]).slope


def with_curves(rows: list[dict], curves: dict[tuple, list[tuple[float, float]]]) -> list[dict]:
    """Each run's row with its curve's last iteration and its end slope (NaN where it has no curve)."""
    for row in rows:
        points = curves.get((row["problem"], row["variant"], row["seed"]), [])
        row["last_iteration"] = points[-1][0] if points else math.nan
        row["psnr_gt_slope_end"] = end_slope(points)
    return rows


def by_problem(rows: list[dict], variant: str, metric: str = "isnr") -> dict[str, list[float]]:
    """A variant's values of `metric`, one list per problem (its seeds; NaN left out)."""
    out = defaultdict(list)
    for row in rows:
        if row["variant"] == variant and not math.isnan(row.get(metric, math.nan)):
            out[row["problem"]].append(row[metric])
    return dict(out)


def problem_means(rows: list[dict], variant: str, metric: str = "isnr") -> dict[str, float]:
    return {p: statistics.fmean(values) for p, values in by_problem(rows, variant, metric).items()}


def problem_spreads(rows: list[dict], variant: str, metric: str = "isnr") -> dict[str, float]:
    """The std of `metric` over the seeds of each problem with two seeds or more."""
    return {p: statistics.stdev(values) for p, values in by_problem(rows, variant, metric).items() if len(values) > 1}


def problem_differences(rows: list[dict], a: str, b: str, metric: str = "isnr") -> dict[str, float]:
    """b − a per problem: the paired difference on each seed both variants ran, averaged over the seeds."""
    of_a = {(r["problem"], r["seed"]): r[metric] for r in rows if r["variant"] == a}
    diffs = defaultdict(list)
    for row in rows:
        if row["variant"] == b and (row["problem"], row["seed"]) in of_a:
            diffs[row["problem"]].append(row[metric] - of_a[(row["problem"], row["seed"])])
    return {p: statistics.fmean(values) for p, values in diffs.items()}


def catch_up(differences: dict[str, float], slope_a: dict[str, float], slope_b: dict[str, float]) -> dict[str, float]:
    """The further iterations b needs to close its gap to a (`differences` b − a, dB) at the slopes of their curves'
    ends (dB per 100 iterations), per problem: 0 where b is not behind, infinite where it is not rising faster."""
    out = {}
    for p, difference in differences.items():
        faster = slope_b[p] - slope_a[p]
        out[p] = 0.0 if difference >= 0 else 100 * -difference / faster if faster > 0 else math.inf
    return out


def mode_counts(rows: list[dict], variant: str, name: str) -> dict[str, int]:
    """The runs of a variant in mode `name`, per problem (every problem it ran, zeros too)."""
    out = {}
    for row in rows:
        if row["variant"] == variant:
            out[row["problem"]] = out.get(row["problem"], 0) + (row["mode"] == name)
    return out


def count_verdict(differences: dict[str, float], her_side: int = 1, where: str = "") -> str:
    """Her claim judged problem by problem: `differences` b − a per problem, her claim of sign `her_side`."""
    signs = [(her_side * d > 0) - (her_side * d < 0) for d in differences.values()]
    k, on, against = len(signs), signs.count(1), signs.count(-1)
    if k == 0:
        return "not measured"
    if k == 1:
        side = "on her side" if on else "against her" if against else "no difference"
        return f"not shown at this scale (one problem{where}, {side})"
    if on == k:
        return f"holds on {k} of {k} problems{where}"
    if against == k:
        return f"the opposite on {k} of {k} problems{where}"
    return f"not shown at this scale (her side on {on} of {k} problems{where})"


def stability(rows: list[dict], stable: str, loose: str) -> dict:
    """`stable`'s std of ISNR over the seeds of each problem against `loose`'s: the ratio of their means over the
    problems, the same with each problem left out, the problems where it is below half (above twice), and whether
    "stable is more stable" holds: a ratio below 1/SPREAD_FACTOR that stays so with any one problem left out."""
    s, u = problem_spreads(rows, stable), problem_spreads(rows, loose)
    problems = [p for p in s if p in u]

    def ratio(left_out: str | None = None) -> float:
        kept = [p for p in problems if p != left_out]
        return _ratio(statistics.fmean(s[p] for p in kept), statistics.fmean(u[p] for p in kept)) if kept else math.nan

    whole = ratio()
    left_out = {p: ratio(p) for p in problems} if len(problems) > 1 else {}
    low, high = 1 / SPREAD_FACTOR, SPREAD_FACTOR
    if not problems:
        answer = "not measured"
    elif len(problems) == 1:
        answer = "not shown at this scale (one problem)"
    elif whole < low and all(r < low for r in left_out.values()):
        answer = "holds"
    elif whole > high and all(r > high for r in left_out.values()):
        answer = "the opposite"
    elif whole < low or whole > high:
        answer = "rests on " + ", ".join(p for p, r in left_out.items() if not (r < low if whole < low else r > high))
    else:
        answer = f"no factor of {SPREAD_FACTOR:g}"
    return dict(stable=s, loose=u, problems=problems, ratio=whole, left_out=left_out, verdict=answer,
                below=sum(s[p] < low * u[p] for p in problems), above=sum(s[p] > high * u[p] for p in problems))


def variant_table(rows: list[dict]) -> list[dict]:
    out = []
    for variant in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == variant]
        line = dict(variant=variant, runs=len(mine), problems=len({r["problem"] for r in mine}),
                    seeds=len({r["seed"] for r in mine}))
        for metric in ("isnr", "psnr_gt", "psnr_nb", "ssim"):
            line[f"{metric}_mean"], line[f"{metric}_std"] = _mean_std([r[metric] for r in mine])
        line["isnr_seed_spread"] = seed_spread(mine)
        for name in ("gain", "no-blur", "artefact"):
            line[f"{name}_runs"] = sum(r["mode"] == name for r in mine)
        slopes = [r["psnr_gt_slope_end"] for r in mine if not math.isnan(r.get("psnr_gt_slope_end", math.nan))]
        line["psnr_gt_slope_end"] = statistics.fmean(slopes) if slopes else math.nan
        out.append(line)
    return out


def _cell(value: float, std: float | None = None) -> str:
    return f"{value:.2f}" if std is None else f"{value:.2f} ± {std:.2f}"


def _listed(values: dict[str, float], form: str = "+.2f") -> str:
    return ", ".join(f"{p} {v:{form}}" for p, v in values.items())


def _iterations(n: float) -> str:
    return f"{float(f'{n:.2g}'):.0f}"  # two significant digits: a rate's extrapolation is no more


def problem_table(rows: list[dict]) -> list[str]:
    """ISNR per problem and variant, mean ± std over the seeds, as a markdown table."""
    problems = list(dict.fromkeys(r["problem"] for r in rows))
    out = ["ISNR per problem (dB; mean ± std over the seeds, their number in brackets):", "",
           "| variant | " + " | ".join(problems) + " |", "| --- |" + " --- |" * len(problems)]
    for variant in dict.fromkeys(r["variant"] for r in rows):
        values = by_problem(rows, variant)
        cells = [f"{_cell(*_mean_std(values[p]))} ({len(values[p])})" if p in values else "" for p in problems]
        out.append(f"| {variant} | " + " | ".join(cells) + " |")
    return out


def claims(rows: list[dict], table: list[dict], repeats: list[dict], reference: dict[str, float],
           schedule_scale: float = 1.0) -> list[str]:
    """Her conclusions, one line each, with their numbers per problem and verdicts."""
    by = {line["variant"]: line for line in table}
    problems = list(dict.fromkeys(r["problem"] for r in rows))
    k = len(problems)
    chance = 2 ** (k - 1)  # every one of k problems on the same side, either side, by a coin's toss each
    out = [f"The unit of evidence is the problem: {k} problem(s), each the mean over its seeds." + (
        f" With no effect at all, every problem falls on one side (either) one time in {chance}." if k > 1 else ""),
        ""]

    def rising(a: str, b: str, differences: dict[str, float]) -> str:
        """Where b's PSNR-GT curve is at the cut against a's: its end slope per problem, and how far b's gap is
        from closing at these rates."""
        sa, sb = problem_means(rows, a, "psnr_gt_slope_end"), problem_means(rows, b, "psnr_gt_slope_end")
        both = [p for p in sa if p in sb and p in differences]
        if not both:
            return ""
        cut = max((r["last_iteration"] for r in rows if r["variant"] in (a, b) and r["problem"] in both
                   and not math.isnan(r.get("last_iteration", math.nan))), default=math.nan)
        faster = {p: sb[p] - sa[p] for p in both}
        needed = catch_up({p: differences[p] for p in both}, sa, sb)
        closing = ", ".join(f"{p} {'ahead' if n == 0 else 'never' if math.isinf(n) else _iterations(n)}"
                            for p, n in needed.items())
        full = (f"; the runs are cut at {schedule_scale:g} of the full schedule: whether {b} catches up by its end is "
                f"not shown" if schedule_scale < 1 else "")
        return (f"; PSNR-GT's slope at the cut (iteration {cut:.0f}; over its last {LAST_PART:.0%} of iterations, dB "
                f"per 100 iterations, mean over the seeds): {a} {_listed({p: sa[p] for p in both}, '.3f')}, {b} "
                f"{_listed({p: sb[p] for p in both}, '.3f')}, faster with {b} on "
                f"{sum(faster[p] > 0 for p in both)} of {len(both)} problems; the further iterations {b} needs to "
                f"close its gap at these rates: {closing}{full}")

    def compare(claim: str, a: str, b: str, her_side: int = 1, avoids: str | None = None,
                curves: bool = False) -> None:
        if a not in by or b not in by:
            out.append(f"- **{claim}**: not measured ({a if a not in by else b} has no runs).")
            return
        d = problem_differences(rows, a, b)
        mean, std = _mean_std(list(d.values()))
        isnr = (f"ISNR {b} − {a} per problem (mean over the seeds, dB): {_listed(d)}; mean over the {len(d)} "
                f"problems {mean:+.2f} (std {std:.2f})")
        runs = (f"over the runs ISNR {a} {_cell(by[a]['isnr_mean'], by[a]['isnr_std'])}, {b} "
                f"{_cell(by[b]['isnr_mean'], by[b]['isnr_std'])} ({by[a]['runs']} and {by[b]['runs']} runs)")
        trend = rising(a, b, d) if curves else ""
        modes = (f"no-blur runs {by[a]['no-blur_runs']}/{by[a]['runs']} against {by[b]['no-blur_runs']}/"
                 f"{by[b]['runs']}, artefact runs {by[a]['artefact_runs']} against {by[b]['artefact_runs']}")
        if avoids is None:
            out.append(f"- **{claim}**: {isnr}; {runs}; {modes}{trend}: **{count_verdict(d, her_side)}**.")
            return
        ca, cb = mode_counts(rows, a, avoids), mode_counts(rows, b, avoids)
        per = ", ".join(f"{p} {ca[p]} against {cb.get(p, 0)}" for p in ca)
        if not any(ca.values()):
            answer = f"not tested at this scale (no {a} run fell into the {avoids} mode)"
        else:
            fewer = {p: ca[p] - cb.get(p, 0) for p in ca if ca[p]}
            answer = count_verdict(fewer, 1, f" where {a} fell into it")
        higher, lower = sum(v > 0 for v in d.values()), sum(v < 0 for v in d.values())
        out.append(f"- **{claim}**: {avoids} runs per problem, {a} against {b}: {per}: **{answer}**. {isnr}: "
                   f"{b} higher on {higher} and lower on {lower} of {len(d)} problems; {runs}; {modes}{trend}.")

    # 1. VDIP is more stable: the spread over seeds of each problem, VDIP's against SelfDeblur's and SimplerSDB's
    stable = [v for v in ("VDIP-Sparse", "VDIP-Extreme") if v in by]
    loose = [v for v in ("SelfDeblur", "SimplerSDB") if v in by]
    if stable and loose:
        seeds = by[loose[0]]["seeds"]
        spreads = "; ".join(f"{v} {_listed(problem_spreads(rows, v), '.2f')} (mean {by[v]['isnr_seed_spread']:.2f})"
                            for v in loose + stable)
        pairs, verdicts = [], {}
        for s in stable:
            for u in loose:
                st = stability(rows, s, u)
                verdicts[f"{s} against {u}"] = st["verdict"]
                span = (f", {min(st['left_out'].values()):.2f}–{max(st['left_out'].values()):.2f} with one problem "
                        "left out" if st["left_out"] else "")
                pairs.append(f"{s} against {u}: below half on {st['below']} of {len(st['problems'])} problems, above "
                             f"twice on {st['above']}, the ratio of the mean spreads {st['ratio']:.2f}{span} "
                             f"({st['verdict']})")
        held = [pair for pair, v in verdicts.items() if v == "holds"]
        answer = ("holds" if len(held) == len(verdicts) else f"holds for {', '.join(held)} only" if held else
                  "the opposite" if all(v == "the opposite" for v in verdicts.values()) else
                  "not shown at this scale")
        precision = 1 / math.sqrt(2 * max(seeds - 1, 1))  # the relative standard error of a std from `seeds`
        out.append(f"- **VDIP is more stable**: the std of ISNR over the seeds of each problem (dB): {spreads}; a std "
                   f"from {seeds} seeds is known to about ±{precision:.0%}, so only a factor of {SPREAD_FACTOR:g} "
                   f"tells. {'; '.join(pairs)}: **{answer}**.")
    # 2. no-blur is avoided by a sharp image prior (VDIP) or by the optimiser's hyper-parameters (β1 0.99)
    for prior in stable:
        compare(f"a sharp image prior avoids the no-blur solution ({prior})", "SelfDeblur", prior, avoids="no-blur")
    compare("the optimiser's β1 avoids the no-blur solution (G_x's Adam β1 0.99)", "SimplerSDB", "SimplerSDB-b0.99",
            avoids="no-blur", curves=True)
    compare("β1 0.95, the sweep's middle", "SimplerSDB", "SimplerSDB-b0.95", avoids="no-blur", curves=True)
    # 3. pretraining, and SSIM after 2000 with it (her most successful against the artefacts)
    compare("pretraining towards the no-blur image helps", "SelfDeblur", "SelfDeblur+pre")
    compare("switching from MSE to SSIM (with pretraining) mitigates the artefacts", "SelfDeblur+pre",
            "SelfDeblur+pre-SSIM2000", avoids="artefact")
    compare("... and against SelfDeblur as published", "SelfDeblur", "SelfDeblur+pre-SSIM2000", avoids="artefact")
    means = {v: problem_means(rows, v) for v in by}
    if by:
        best = max(table, key=lambda line: line["isnr_mean"])
        per = ", ".join(f"{p} {max((m[p], v) for v, m in means.items() if p in m)[1]} "
                        f"({max(m[p] for m in means.values() if p in m):.2f})" for p in problems)
        out.append(f"- **the best variant here**: {best['variant']} by the mean over the runs (ISNR "
                   f"{_cell(best['isnr_mean'], best['isnr_std'])} dB over {best['runs']} runs); the best per problem "
                   f"(mean ISNR over the seeds, dB): {per}.")
    # 4. DIP in blind deconvolution improves the average PSNR (over the blurred input)
    gained = {v: [p for p, m in means[v].items() if m >= GAIN_ISNR] for v in by}
    counts = ", ".join(f"{v} {len(gained[v])} of {len(means[v])}" + (
        f" (not {', '.join(f'{p}: {means[v][p]:.2f}' for p in means[v] if p not in gained[v])})"
        if len(gained[v]) < len(means[v]) else "") for v in by)
    every = [v for v in by if len(gained[v]) == len(means[v])]
    answer = ("holds on every problem for every variant" if len(every) == len(by) else
              f"holds on every problem for {', '.join(every)} only" if every else "not shown for any variant")
    blurred = (f"; the blurred input's PSNR-GT {reference['blurred input']:.2f} dB" if "blurred input" in reference
               else "")
    known = f", the known kernel's {reference['known kernel']:.2f} dB" if "known kernel" in reference else ""
    out.append(f"- **DIP in blind deconvolution improves the average PSNR**: the problems whose mean ISNR over the "
               f"seeds is a gain (at least {GAIN_ISNR:g} dB): {counts}{blurred}{known}: **{answer}**.")
    # 5. stochasticity: the spread over seeds against the spread over repeated runs of one seed
    if repeats:
        for label in dict.fromkeys(r["repeat"] for r in repeats):
            mine = [r for r in repeats if r["repeat"] == label]
            largest = max(abs(r["psnr_gt_difference"]) for r in mine)
            mean = statistics.fmean(abs(r["psnr_gt_difference"]) for r in mine)
            identical = sum(r["identical"] for r in mine)
            spread = ", ".join(f"{v} {by[v]['isnr_seed_spread']:.2f} dB"
                               for v in dict.fromkeys(r["variant"] for r in mine) if v in by)
            out.append(f"- **stochasticity, {label}**: {len(mine)} run(s) made again with the same seed: "
                       f"{identical} identical to the study's (PSNR-GT, PSNR-NB and SSIM to the last digit), the "
                       f"PSNR-GT difference {mean:.2g} dB on average, at most {largest:.2g}; against the seed-to-seed "
                       f"spread of ISNR {spread}.")
    return out


def recorded(folder: Path) -> dict:
    """A run folder's config.json (read and checked by dipkit.runs.read_config), or nothing where it has none."""
    record = folder / "config.json"
    return read_config(record) if record.is_file() else {}


def machine(record: dict) -> tuple:
    """The machine a run was made on, as its record names it (platform, processor, device)."""
    environment = record.get("environment", {})
    return tuple(environment.get(key) for key in ("platform", "processor", "device"))


def repeat_rows(folders: list[Path], rows: list[dict], study_folders: list[Path] = ()) -> list[dict]:
    """Each run of the repeat folders beside the study's run of the same (problem, variant, seed); a repeat made on
    a machine other than the study's (its recorded platform, processor or device differ) is labelled so."""
    study = {(r["problem"], r["variant"], r["seed"]): r for r in rows}
    machines = {machine(recorded(folder)) for folder in study_folders}
    out = []
    for folder in folders:
        record = recorded(folder)
        deterministic = record.get("config", {}).get("deterministic")
        label = "repeated with --deterministic" if deterministic else "repeated as it was run"
        if machines and machine(record) not in machines:
            label = "made again on another machine" + (" with --deterministic" if deterministic else "")
        again, _ = study_rows([folder])
        for row in again:
            first = study.get((row["problem"], row["variant"], row["seed"]))
            if first is None:
                continue
            out.append(dict(repeat=label, folder=folder.name, problem=row["problem"], variant=row["variant"],
                            seed=row["seed"], psnr_gt=row["psnr_gt"], psnr_gt_study=first["psnr_gt"],
                            psnr_gt_difference=row["psnr_gt"] - first["psnr_gt"],
                            identical=all(row[k] == first[k] for k in ("psnr_gt", "psnr_nb", "ssim"))))
    return out


def draw(out: Path, rows: list[dict]) -> None:
    colours = {v: f"C{i}" for i, v in enumerate(dict.fromkeys(r["variant"] for r in rows))}  # one per variant
    panels = []
    for title, variants in PANELS:
        points = [([r["psnr_nb"] for r in rows if r["variant"] == v], [r["isnr"] for r in rows if r["variant"] == v],
                   v) for v in variants if any(r["variant"] == v for r in rows)]
        if points:
            panels.append(dict(points=points, colours=colours, levels=[(0.0, "the blurred input (ISNR 0)")],
                               title=title, xlabel="PSNR-NB (dB): estimate against the blurred input",
                               ylabel="ISNR (dB)"))
    if panels:
        figures.curves(out / "scatter.png", panels, n_cols=2, panel_size=(5.2, 4.0))
    swept = [r for r in rows if r["variant"] in BETA1]
    if swept:
        problems = list(dict.fromkeys(r["problem"] for r in swept))
        panels = []
        for metric, name in (("psnr_nb", "PSNR-NB (dB)"), ("isnr", "ISNR (dB)")):
            points = [([BETA1[r["variant"]] + 0.003 * (i - (len(problems) - 1) / 2)  # side by side per problem
                        for r in swept if r["problem"] == p], [r[metric] for r in swept if r["problem"] == p], p)
                      for i, p in enumerate(problems)]
            betas = sorted({BETA1[r["variant"]] for r in swept})
            mean = [statistics.fmean(r[metric] for r in swept if BETA1[r["variant"]] == b) for b in betas]
            panels.append(dict(points=points, colours={p: f"C{i + 1}" for i, p in enumerate(problems)},
                               lines=[(betas, mean, "mean over the runs")], xlabel="Adam β1 of G_x",
                               ylabel=name, title=f"SimplerSDB: {name.split(' ')[0]} against β1"))
        figures.curves(out / "beta1.png", panels, n_cols=2, panel_size=(5.2, 4.0))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", help="run folders of selfdeblur.py and vdip.py, or their merge")
    parser.add_argument("--repeats", nargs="*", default=[], help="run folders repeating some of the study's runs")
    parser.add_argument("--out", required=True, help="the folder to write the tables, claims and figures to")
    args = parser.parse_args(argv)
    folders, repeat_folders = [Path(f) for f in args.folders], [Path(f) for f in args.repeats]
    for folder in folders + repeat_folders:
        if not folder.is_dir():
            raise RunError(f"{folder} is not a folder")
    rows, reference = study_rows(folders)
    rows = with_curves(rows, study_curves(folders))
    repeats = repeat_rows(repeat_folders, rows, folders)
    scales = [recorded(folder).get("config", {}).get("schedule_scale") for folder in folders]
    schedule_scale = min((s for s in scales if isinstance(s, (int, float))), default=1.0)
    table = variant_table(rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "runs.csv", rows)
    write_csv(out / "variants.csv", table)
    write_csv(out / "stochasticity.csv", repeats)
    lines = claims(rows, table, repeats, reference, schedule_scale)
    (out / "claims.md").write_text("\n".join(problem_table(rows) + [""] + lines) + "\n")
    draw(out, rows)
    print("\n".join(lines))


if __name__ == "__main__":
    run_main(main)
