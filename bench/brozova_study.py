"""Brožová's study of SelfDeblur and VDIP regenerated from runs of selfdeblur.py and vdip.py: her figures, and each
of her conclusions held against the numbers.

    python bench/brozova_study.py Results/selfdeblur/RUN Results/vdip/RUN --repeats Results/selfdeblur/REPEAT \\
        --out Results/brozova_study

A. Brožová, "Blind image deconvolution based on deep image prior" (CTU 2023; Brožová & Šmídl, ICPRAM 2024). The
study's folders are run folders of selfdeblur.py and vdip.py (or a folder of `python -m dipkit.compare` that merged
them); --repeats are runs made again of some of the same (problem, variant, seed), with or without --deterministic, on
this machine or another (as their config.json records it).
Writes to --out:
  runs.csv          one row per run: problem, variant, seed, PSNR-GT, PSNR-NB, ISNR, SSIM and its mode (below)
  variants.csv      per variant: runs, mean ± std of ISNR, PSNR-GT, PSNR-NB and SSIM, the seed-to-seed spread (the
                    std of ISNR over the seeds of one problem, averaged over the problems) and the runs in each mode
  stochasticity.csv each repeated run beside the study's run of the same problem, variant and seed
  claims.md         each conclusion of hers, its numbers and whether it holds here
  scatter.png       PSNR-NB against ISNR, a point per run, a colour per variant: one panel per comparison she makes
  beta1.png         the sensitivity to G_x's Adam β1 (PSNR-NB and ISNR against β1), a point per run
The modes are hers, with bounds fixed before any run was made: a run *gains* when its ISNR is at least 1 dB; below
that it is *no-blur* when its estimate is within 30 dB PSNR of the blurred input (PSNR-NB ≥ 30: x ≈ y, k ≈ δ), an
*artefact* solution otherwise.
A claim about two variants compares them run by run on the same (problem, seed): the mean paired difference of ISNR
and its standard error (std/√n); it *holds* when the difference lies more than two standard errors on her side, *does
not hold* when more than two on the other side, and *cannot be told apart from the seed-to-seed spread* otherwise.
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


def seed_spread(rows: list[dict], metric: str = "isnr") -> float:
    """The std of `metric` over the seeds of one problem, averaged over the problems with two seeds or more."""
    by_problem = defaultdict(list)
    for row in rows:
        by_problem[row["problem"]].append(row[metric])
    spreads = [statistics.stdev(values) for values in by_problem.values() if len(values) > 1]
    return statistics.fmean(spreads) if spreads else math.nan


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
        out.append(line)
    return out


def paired(rows: list[dict], a: str, b: str, metric: str = "isnr") -> dict:
    """b − a run by run on the same (problem, seed): mean, std, standard error and the number of pairs."""
    of_a = {(r["problem"], r["seed"]): r[metric] for r in rows if r["variant"] == a}
    diffs = [r[metric] - of_a[(r["problem"], r["seed"])] for r in rows
             if r["variant"] == b and (r["problem"], r["seed"]) in of_a]
    if not diffs:
        return dict(mean=math.nan, std=math.nan, se=math.nan, n=0)
    mean, std = _mean_std(diffs)
    return dict(mean=mean, std=std, se=std / math.sqrt(len(diffs)), n=len(diffs))


def verdict(difference: dict, her_side: int = 1) -> str:
    """Whether a paired difference (b − a, her claim: of sign `her_side`) holds, is reversed, or is within noise."""
    if difference["n"] < 2:
        return "not measured"
    signed = her_side * difference["mean"]
    if signed > 2 * difference["se"]:
        return "holds"
    if signed < -2 * difference["se"]:
        return "does not hold (the opposite)"
    return "cannot be told apart from the seed-to-seed spread"


def _cell(value: float, std: float | None = None) -> str:
    return f"{value:.2f}" if std is None else f"{value:.2f} ± {std:.2f}"


def claims(rows: list[dict], table: list[dict], repeats: list[dict], reference: dict[str, float]) -> list[str]:
    """Her conclusions, one line each, with their numbers and verdicts."""
    by = {line["variant"]: line for line in table}
    out = []

    def compare(claim: str, a: str, b: str, her_side: int = 1) -> None:
        if a not in by or b not in by:
            out.append(f"- **{claim}**: not measured ({a if a not in by else b} has no runs).")
            return
        d = paired(rows, a, b)
        out.append(f"- **{claim}**: {b} − {a}, ISNR {d['mean']:+.2f} ± {d['se']:.2f} dB (mean ± standard error of "
                   f"{d['n']} paired runs; std of the differences {d['std']:.2f}); ISNR {a} "
                   f"{_cell(by[a]['isnr_mean'], by[a]['isnr_std'])}, {b} {_cell(by[b]['isnr_mean'], by[b]['isnr_std'])}"
                   f"; no-blur runs {by[a]['no-blur_runs']}/{by[a]['runs']} against {by[b]['no-blur_runs']}/"
                   f"{by[b]['runs']}, artefact runs {by[a]['artefact_runs']} against {by[b]['artefact_runs']}: "
                   f"**{verdict(d, her_side)}**.")

    # 1. VDIP is more stable: the spread over seeds, VDIP's against SelfDeblur's and SimplerSDB's
    stable = [v for v in ("VDIP-Sparse", "VDIP-Extreme") if v in by]
    loose = [v for v in ("SelfDeblur", "SimplerSDB") if v in by]
    if stable and loose:
        ratios = [by[s]["isnr_seed_spread"] / by[u]["isnr_seed_spread"] for s in stable for u in loose]
        answer = ("holds" if max(ratios) < 0.5 else "does not hold (the opposite)" if min(ratios) > 2 else
                  "cannot be told apart from the seed-to-seed spread" if all(0.5 <= r <= 2 for r in ratios) else
                  "holds for some pairs only")
        spreads = ", ".join(f"{v} {by[v]['isnr_seed_spread']:.2f} (ISNR std over all runs {by[v]['isnr_std']:.2f}, "
                            f"{by[v]['runs']} runs)" for v in loose + stable)
        out.append(f"- **VDIP is more stable**: the spread of ISNR over the seeds of one problem (dB): {spreads}; "
                   f"VDIP's over the others' {min(ratios):.2f}–{max(ratios):.2f} (a std from {by[loose[0]]['seeds']} "
                   f"seeds of {by[loose[0]]['problems']} problem(s) is known to about ±30 %, so only a factor of 2 "
                   f"tells): **{answer}**.")
    # 2. no-blur is avoided by a sharp image prior (VDIP) or by the optimiser's hyper-parameters (β1 0.99)
    for prior in stable:
        compare(f"a sharp image prior avoids the no-blur solution ({prior})", "SelfDeblur", prior)
    compare("the optimiser's β1 avoids the no-blur solution (G_x's Adam β1 0.99)", "SimplerSDB", "SimplerSDB-b0.99")
    compare("β1 0.95, the sweep's middle", "SimplerSDB", "SimplerSDB-b0.95")
    # 3. pretraining, and SSIM after 2000 with it (her most successful against the artefacts)
    compare("pretraining towards the no-blur image helps", "SelfDeblur", "SelfDeblur+pre")
    compare("switching from MSE to SSIM (with pretraining) mitigates the artefacts", "SelfDeblur+pre",
            "SelfDeblur+pre-SSIM2000")
    compare("... and against SelfDeblur as published", "SelfDeblur", "SelfDeblur+pre-SSIM2000")
    if by:
        best = max(table, key=lambda line: line["isnr_mean"])
        out.append(f"- **the best variant here**: {best['variant']} (ISNR "
                   f"{_cell(best['isnr_mean'], best['isnr_std'])} dB over {best['runs']} runs).")
    # 4. DIP in blind deconvolution improves the average PSNR (over the blurred input)
    gains = [f"{v} {_cell(line['isnr_mean'], line['isnr_std'] / math.sqrt(line['runs']))}" for v, line in by.items()]
    above = all(line["isnr_mean"] > 2 * line["isnr_std"] / math.sqrt(line["runs"]) for line in by.values())
    blurred = (f"; the blurred input's PSNR-GT {reference['blurred input']:.2f} dB" if "blurred input" in reference
               else "")
    known = f", the known kernel's {reference['known kernel']:.2f} dB" if "known kernel" in reference else ""
    out.append(f"- **DIP in blind deconvolution improves the average PSNR**: mean ISNR ± standard error (dB): "
               f"{', '.join(gains)}{blurred}{known}: **{'holds' if above else 'not for every variant'}** (ISNR > 0 by "
               f"two standard errors{' for every variant' if above else ''}).")
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
    repeats = repeat_rows(repeat_folders, rows, folders)
    table = variant_table(rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "runs.csv", rows)
    write_csv(out / "variants.csv", table)
    write_csv(out / "stochasticity.csv", repeats)
    lines = claims(rows, table, repeats, reference)
    (out / "claims.md").write_text("\n".join(lines) + "\n")
    draw(out, rows)
    print("\n".join(lines))


if __name__ == "__main__":
    run_main(main)
