"""The stopping rules of dip_denoise.py side by side, against the oracle, over the runs of a study.

    python bench/stopping_study.py Results/docs_results/dip_denoise --out Results/stopping_study

Reads every dip_denoise run folder under the given folders (table.csv, config.json and each image's curve.csv)
and writes to --out:
  runs.csv   one row per image and run: size, σ (true, estimated), the oracle's PSNR (the best averaged output, read
             off the clean image) and each rule's PSNR, gap to the oracle and whether it fired;
  rules.csv  per size and noise level (per size over its levels, and over every run): each rule's mean and worst
             gap to the oracle, the share of runs more than 0.5 dB below it, its mean PSNR and how often it
             fired within the budget;
  rules.md   the same as a markdown table.
Beside the no-reference rules, two reference rows: the discrepancy principle told the true σ (what the σ estimate
costs; read off the recorded residual curve) and the run's end (the final average: no rule at all).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dipkit.cli import run_main  # noqa: E402
from dipkit.errors import RunError  # noqa: E402
from dipkit.runs import read_csv, write_csv  # noqa: E402
from dipkit.stopping import CANDIDATES, rule_of  # noqa: E402

TRUE_SIGMA = "discrepancy, true σ"
END = "end of run"


def study_rows(folders: list[Path]) -> list[dict]:
    """One row per image of every dip_denoise run found under the folders."""
    rows = []
    runs = sorted({table.parent for folder in folders for table in folder.rglob("table.csv")
                   if (table.parent / "metrics.json").is_file() and (table.parent / "config.json").is_file()})
    for run in runs:
        if json.loads((run / "metrics.json").read_text()).get("script") != "dip_denoise":
            continue
        config = json.loads((run / "config.json").read_text())
        constants = config["config"]
        tau = constants.get("discrepancy_tau", 1.0)
        for image in read_csv(run / "table.csv"):
            if "psnr_oracle" not in image:
                continue
            row = dict(run=run.name, image=image["image"], size=int(image["height"]), sigma_true=image["sigma_true"],
                       sigma=image["sigma"], seed=constants["seed"], iterations=constants["iterations"],
                       oracle=image["psnr_oracle"], oracle_iteration=image["oracle_iteration"])
            for candidate in CANDIDATES:
                if f"psnr_{candidate}" in image:
                    row[candidate] = image[f"psnr_{candidate}"]
                    row[f"{candidate}_fired"] = image[f"{rule_of(candidate)}_fired"] in (True, "True")
            row[END], row[f"{END}_fired"] = image["psnr_final_average"], False
            curve_file = run / str(image["image"]) / "curve.csv"
            if curve_file.is_file():  # the discrepancy principle with the true σ, off the recorded residual
                curve = read_csv(curve_file)
                threshold = tau * image["sigma_true"] ** 2
                hit = next((r for r in curve if isinstance(r.get("residual"), float) and r["residual"] <= threshold),
                           None)
                row[TRUE_SIGMA] = (hit or curve[-1])["psnr_clean_average"]
                row[f"{TRUE_SIGMA}_fired"] = hit is not None
            rows.append(row)
    if not rows:
        raise RunError(f"no dip_denoise run with a clean image under {', '.join(map(str, folders))}")
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Per (size, σ), per size over every σ and over every run ("all"): each rule's mean and worst gap to the
    oracle, the share of its runs more than 0.5 dB below it, and how often it fired."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        level = round(row["sigma_true"] * 255)
        groups[(row["size"], str(level))].append(row)
        groups[(row["size"], "both")].append(row)
        if len({r["size"] for r in rows}) > 1:
            groups[("all", "both")].append(row)
    out = []
    for (size, level), members in sorted(groups.items(), key=lambda item: (
            item[0][0] == "all", item[0][0] if item[0][0] != "all" else 0, item[0][1] == "both", item[0][1])):
        for rule in (*CANDIDATES, TRUE_SIGMA, END):
            scored = [r for r in members if rule in r]
            if not scored:
                continue
            gaps = [r["oracle"] - r[rule] for r in scored]
            out.append(dict(size=size, sigma=level, rule=rule, runs=len(scored), mean_gap=statistics.fmean(gaps),
                            worst_gap=max(gaps), over_half_db=sum(g > 0.5 for g in gaps) / len(gaps),
                            mean_psnr=statistics.fmean(r[rule] for r in scored),
                            oracle_psnr=statistics.fmean(r["oracle"] for r in scored),
                            fired=sum(r[f"{rule}_fired"] for r in scored) / len(scored)))
    return out


def markdown(summary: list[dict]) -> str:
    """Per size, one table: a row per rule, its mean (worst) gap to the oracle at each noise level and over both,
    how often it fired, and its mean PSNR beside the oracle's."""
    out = []
    for size in dict.fromkeys(r["size"] for r in summary):
        rows = [r for r in summary if r["size"] == size]
        levels = sorted({r["sigma"] for r in rows if r["sigma"] != "both"}, key=int)
        runs = {level: next(r["runs"] for r in rows if r["sigma"] == level) for level in levels + ["both"]}
        head = ["rule"] + [f"σ = {level}/255: mean (worst) gap" for level in levels] + [
            "all: mean gap", "worst gap", "over 0.5 dB", "fired", "mean PSNR (oracle)"]
        title = (f"every size, {runs['both']} runs:" if size == "all" else
                 f"{size}×{size}, {' + '.join(f'{runs[level]} runs at σ = {level}/255' for level in levels)}:")
        out += [title, "", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
        for rule in dict.fromkeys(r["rule"] for r in rows):
            cells = {r["sigma"]: r for r in rows if r["rule"] == rule}
            both = cells["both"]
            fired = "" if rule == END else f"{100 * both['fired']:.0f} %"
            out.append("| " + " | ".join(
                [rule] + [f"{cells[level]['mean_gap']:.2f} ({cells[level]['worst_gap']:.2f})" if level in cells
                          else "" for level in levels]
                + [f"{both['mean_gap']:.2f}", f"{both['worst_gap']:.2f}", f"{100 * both['over_half_db']:.0f} %", fired,
                   f"{both['mean_psnr']:.2f} ({both['oracle_psnr']:.2f})"]) + " |")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", help="folders holding dip_denoise run folders")
    parser.add_argument("--out", required=True, help="the folder to write runs.csv, rules.csv and rules.md to")
    args = parser.parse_args(argv)
    folders = [Path(f) for f in args.folders]
    for folder in folders:
        if not folder.is_dir():
            raise RunError(f"{folder} is not a folder")
    rows = study_rows(folders)
    summary = summarise(rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "runs.csv", rows)
    write_csv(out / "rules.csv", summary)
    (out / "rules.md").write_text(markdown(summary))
    print(markdown(summary))
    best = {size: min((r for r in summary if r["size"] == size and r["sigma"] == "both" and r["rule"] in CANDIDATES),
                      key=lambda r: r["mean_gap"]) for size in sorted({r["size"] for r in summary})}
    for size, r in best.items():
        print(f"{size}²: smallest mean gap {r['rule']} ({r['mean_gap']:.2f} dB over {r['runs']} runs)")


if __name__ == "__main__":
    run_main(main)
