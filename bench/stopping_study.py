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
Beside the no-reference rules, reference rows: the discrepancy principle told the true σ, its own image and its
centred average (what the σ estimate costs), SURE told the true σ where the runs have it (--sure), and the run's
end (the final average: no rule at all). Read off each
image's recorded residual curve, also the discrepancy principle's centred average at τ = 0.8 ... 1.2 with the
estimated and with the true σ (tau.csv, and a table in rules.md): how much the choice of τ and of σ matters.
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
from dipkit.stopping import CANDIDATES, average_lag, rule_of  # noqa: E402

TRUE_SIGMA = "discrepancy, true σ"
TRUE_SIGMA_CENTRED = "discrepancy_centred, true σ"
SURE_TRUE_SIGMA = "sure, true σ"
SURE_TRUE_SIGMA_CENTRED = "sure_centred, true σ"
END = "end of run"
TAUS = (0.8, 0.9, 1.0, 1.1, 1.2)
ADDED_AFTER = ("sure", "sure_centred", SURE_TRUE_SIGMA, SURE_TRUE_SIGMA_CENTRED)  # added after the held-out
# protocol: reported beside the others, never chosen by it
SIGMAS = ("estimated", "true")  # the σ the τ sweep uses: the run's estimate (table.csv's sigma) or the true one


def discrepancy_from_curve(curve: list[dict], threshold: float, lag: int) -> tuple[float, float, bool]:
    """The discrepancy principle read off a recorded curve, as the rule does it during the run: the first iteration
    whose residual ‖y − x̄‖²/n is at most `threshold` (τσ²); the PSNR of the average there and of the average `lag`
    iterations later (centred), and whether it fired. Where it did not fire, both are the run's end, and a centred
    average the run did not reach is the final one."""
    last = curve[-1]["psnr_clean_average"]
    hit = next((k for k, r in enumerate(curve) if isinstance(r.get("residual"), float) and r["residual"] <= threshold),
               None)
    if hit is None:
        return last, last, False
    return curve[hit]["psnr_clean_average"], (curve[hit + lag]["psnr_clean_average"] if hit + lag < len(curve)
                                              else last), True


def minimum_with_patience(values: list, patience: int) -> tuple[int, bool]:
    """A patience rule read off its recorded statistic, as the rule does it during the run: its minimum, frozen
    once `patience` iterations (with a value) bring no new one; (its iteration, -1 if none, and whether it fired)."""
    best, choice, wait = float("inf"), -1, 0
    for i, value in enumerate(values):
        if not isinstance(value, float):
            continue
        best, choice, wait = (value, i, 0) if value < best else (best, choice, wait + 1)
        if wait >= patience:
            return choice, True
    return choice, False


def sure_with_sigma(curve: list[dict], sigma_run: float, sigma: float) -> list:
    """The SURE curve a run recorded with σ_run, recomputed with another σ: its divergence term is
    (SURE − residual + σ_run²)/σ_run², so SURE(σ) = residual − σ² + σ²/σ_run²·(SURE − residual + σ_run²)."""
    return [r["residual"] - sigma ** 2 + sigma ** 2 / sigma_run ** 2 * (r["sure"] - r["residual"] + sigma_run ** 2)
            if isinstance(r.get("sure"), float) and isinstance(r.get("residual"), float) else None for r in curve]


def tau_key(tau: float, sigma: str) -> str:
    return f"discrepancy_centred τ={tau:g} ({sigma} σ)"


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
        tau, lag = constants.get("discrepancy_tau", 1.0), average_lag(constants.get("ema", 0.99))
        patience = constants.get("stop_patience", 1000)
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
            curve = read_csv(curve_file) if curve_file.is_file() else []
            if curve and "residual" in curve[0]:  # the discrepancy principle, true σ and τ sweep, off the residual
                own, centred, fired = discrepancy_from_curve(curve, tau * image["sigma_true"] ** 2, lag)
                row.update({TRUE_SIGMA: own, f"{TRUE_SIGMA}_fired": fired, TRUE_SIGMA_CENTRED: centred,
                            f"{TRUE_SIGMA_CENTRED}_fired": fired})
                if "sure" in curve[0] and isinstance(image["sigma"], float):  # SURE told the true σ
                    choice, fired = minimum_with_patience(
                        sure_with_sigma(curve, image["sigma"], image["sigma_true"]), patience)
                    at = choice if choice >= 0 else len(curve) - 1
                    centred = at + lag if choice >= 0 and at + lag < len(curve) else len(curve) - 1
                    row.update({SURE_TRUE_SIGMA: curve[at]["psnr_clean_average"], f"{SURE_TRUE_SIGMA}_fired": fired,
                                SURE_TRUE_SIGMA_CENTRED: curve[centred]["psnr_clean_average"],
                                f"{SURE_TRUE_SIGMA_CENTRED}_fired": fired})
                for sigma in SIGMAS if isinstance(image["sigma"], float) else ("true",):
                    level = image["sigma"] if sigma == "estimated" else image["sigma_true"]
                    for t in TAUS:
                        row[tau_key(t, sigma)] = discrepancy_from_curve(curve, t * level ** 2, lag)[1]
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
        for rule in (*CANDIDATES, TRUE_SIGMA, TRUE_SIGMA_CENTRED, SURE_TRUE_SIGMA, SURE_TRUE_SIGMA_CENTRED, END):
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


MEAN_GAP, SHARE_OVER_HALF_DB = 0.3, 0.10  # the held-out protocol's deciding numbers


def protocol_decision(summary: list[dict]) -> str:
    """The held-out protocol's decision over every run (every size together): the candidate needing no clean image
    (rules added after the protocol left out) with the smallest mean gap to the oracle, ties broken by the smaller
    share over 0.5 dB; whether it passes (mean gap ≤ 0.3 dB and ≤ 10 % of runs over 0.5 dB), or how far it is."""
    group = "all" if any(r["size"] == "all" for r in summary) else next(iter(r["size"] for r in summary))
    pool = [r for r in summary if r["size"] == group and r["sigma"] == "both" and r["rule"] in CANDIDATES
            and r["rule"] not in ADDED_AFTER]
    pool = [r for r in pool if r["runs"] == max(r["runs"] for r in pool)]  # scored on every run (σ or not)
    best = min(pool, key=lambda r: (r["mean_gap"], r["over_half_db"]))
    passes = best["mean_gap"] <= MEAN_GAP and best["over_half_db"] <= SHARE_OVER_HALF_DB
    verdict = "passes" if passes else (
        f"does not pass: {max(0.0, best['mean_gap'] - MEAN_GAP):.2f} dB over the mean gap allowed, "
        f"{100 * max(0.0, best['over_half_db'] - SHARE_OVER_HALF_DB):.0f} points over the share allowed")
    return (f"Decision over {best['runs']} runs: {best['rule']}, mean gap {best['mean_gap']:.2f} dB, "
            f"{100 * best['over_half_db']:.0f} % of runs over 0.5 dB; it {verdict} "
            f"(at most {MEAN_GAP} dB and {100 * SHARE_OVER_HALF_DB:.0f} %).")


def tau_sweep(rows: list[dict]) -> list[dict]:
    """Per (size, σ) and per size over its levels: the discrepancy principle's centred average at each τ, with the
    estimated and the true σ: mean gap to the oracle and share of runs more than 0.5 dB below it."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[(row["size"], str(round(row["sigma_true"] * 255)))].append(row)
        groups[(row["size"], "both")].append(row)
    out = []
    for (size, level), members in sorted(groups.items(), key=lambda item: (item[0][0], item[0][1] == "both",
                                                                            item[0][1].zfill(4))):
        for sigma in SIGMAS:
            for t in TAUS:
                gaps = [r["oracle"] - r[tau_key(t, sigma)] for r in members if tau_key(t, sigma) in r]
                if gaps:
                    out.append(dict(size=size, sigma_level=level, sigma=sigma, tau=t, runs=len(gaps),
                                    mean_gap=statistics.fmean(gaps), worst_gap=max(gaps),
                                    over_half_db=sum(g > 0.5 for g in gaps) / len(gaps)))
    return out


def tau_markdown(sweep: list[dict]) -> str:
    """One table: a row per size, noise level and σ, the mean gap (share over 0.5 dB) at each τ."""
    if not sweep:
        return ""
    out = ["The discrepancy principle's centred average at each τ (mean gap to the oracle, in dB, and the share of "
           "runs more than 0.5 dB below it), read off the recorded residual curves:", "",
           "| size | σ (/255) | σ used | runs | " + " | ".join(f"τ = {t:g}" for t in TAUS) + " |",
           "|" + " --- |" * (4 + len(TAUS))]
    cells = defaultdict(dict)
    levels = defaultdict(set)
    for r in sweep:
        levels[r["size"]].add(r["sigma_level"])
    for r in sweep:  # a size's row over its levels only where it has more than one
        if r["sigma_level"] != "both" or len(levels[r["size"]]) > 2:
            cells[(r["size"], r["sigma_level"], r["sigma"])][r["tau"]] = r
    for (size, level, sigma), by_tau in cells.items():
        runs = next(iter(by_tau.values()))["runs"]
        out.append(f"| {size} | {'all' if level == 'both' else level} | {sigma} | {runs} | " + " | ".join(
            f"{by_tau[t]['mean_gap']:.2f} ({100 * by_tau[t]['over_half_db']:.0f} %)" if t in by_tau else ""
            for t in TAUS) + " |")
    return "\n".join(out + [""])


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
                [rule + (" †" if rule in ADDED_AFTER else "")] + [f"{cells[level]['mean_gap']:.2f} ({cells[level]['worst_gap']:.2f})" if level in cells
                          else "" for level in levels]
                + [f"{both['mean_gap']:.2f}", f"{both['worst_gap']:.2f}", f"{100 * both['over_half_db']:.0f} %", fired,
                   f"{both['mean_psnr']:.2f} ({both['oracle_psnr']:.2f})"]) + " |")
        out.append("")
    if any(r["rule"] in ADDED_AFTER for r in summary):
        out += ["† added after the held-out protocol: reported beside the others, never chosen by it.", ""]
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
    sweep = tau_sweep(rows)
    if sweep:
        write_csv(out / "tau.csv", sweep)
    print(markdown(summary) + "\n" + tau_markdown(sweep))
    decision = protocol_decision(summary)
    (out / "rules.md").write_text(markdown(summary) + "\n" + tau_markdown(sweep) + "\n" + decision + "\n")
    print(decision)


if __name__ == "__main__":
    run_main(main)
