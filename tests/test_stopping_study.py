"""bench/stopping_study.py's summary: each rule's mean and worst gap to the oracle and its share of runs more than
0.5 dB below it, per (size, σ), per size and over every run, against sums done by hand."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import stopping_study  # noqa: E402


def row(size, level, oracle, rule_psnr):
    return dict(size=size, sigma_true=level / 255, oracle=oracle, discrepancy_centred=rule_psnr,
                discrepancy_centred_fired=True)


def test_the_gaps_and_the_share_over_half_a_decibel_follow_the_runs():
    rows = [row(64, 10, 30.0, 29.9), row(64, 10, 30.0, 29.0), row(64, 25, 25.0, 24.4), row(128, 15, 28.0, 28.0)]
    summary = {(r["size"], r["sigma"]): r for r in stopping_study.summarise(rows)
               if r["rule"] == "discrepancy_centred"}
    assert summary[64, "10"]["mean_gap"] == pytest.approx(0.55) and summary[64, "10"]["worst_gap"] == pytest.approx(1.0)
    assert summary[64, "10"]["over_half_db"] == 0.5
    assert summary[64, "both"]["mean_gap"] == pytest.approx((0.1 + 1.0 + 0.6) / 3)
    assert summary[64, "both"]["over_half_db"] == pytest.approx(2 / 3)
    everything = summary["all", "both"]
    assert everything["runs"] == 4 and everything["mean_gap"] == pytest.approx(1.7 / 4)
    assert everything["over_half_db"] == 0.5 and everything["worst_gap"] == pytest.approx(1.0)
    table = stopping_study.markdown(stopping_study.summarise(rows))
    assert "every size, 4 runs:" in table
    last = [line for line in table.splitlines() if line.startswith("| discrepancy_centred")][-1]
    assert [cell.strip() for cell in last.strip("|").split("|")][1:4] == ["0.43", "1.00", "50 %"]


def curve_of(residuals, psnrs):
    return [dict(iteration=k, residual=r, psnr_clean_average=p) for k, (r, p) in enumerate(zip(residuals, psnrs))]


def test_the_discrepancy_principle_read_off_a_curve_takes_the_first_hit_and_the_average_lag_iterations_later():
    curve = curve_of([0.5, 0.4, 0.3, 0.2, 0.1, 0.3, 0.05], [20, 21, 22, 23, 24, 25, 26])
    assert stopping_study.discrepancy_from_curve(curve, 0.3, 2) == (22, 24, True)  # first at or below 0.3: 2
    assert stopping_study.discrepancy_from_curve(curve, 0.3, 10) == (22, 26, True)  # centred beyond the end: the end
    assert stopping_study.discrepancy_from_curve(curve, 0.01, 2) == (26, 26, False)  # never: the run's end
    nan_first = curve_of(["", 0.2], [20, 21])  # an empty cell (no statistic there) is not a hit
    assert stopping_study.discrepancy_from_curve(nan_first, 0.3, 0) == (21, 21, True)


def test_the_rule_read_off_the_records_equals_the_rule_during_the_run(tiny_dip, tmp_path):
    """dip_denoise's discrepancy rule (on the device, during the run) and the one read off curve.csv afterwards
    (bench/stopping_study.py) are two codes: with σ set so that τσ² lies just above the residual at iteration 40,
    both choose iteration 40 and the same centred average; the τ sweep at τ = 1 and the true σ is that rule."""
    import csv

    import dip_denoise
    from dipkit.runs import read_csv

    common = dict(iterations=80, ema=0.9, noise_level=0.1, images=("camera",), size=64)
    dip_denoise.run(tiny_dip(tmp_path, **common))
    curve = read_csv(tmp_path / "out" / "dip_denoise" / "r" / "camera" / "curve.csv")
    residuals = [r["residual"] for r in curve]
    target = next(k for k in range(40, 80) if residuals[k] < min(residuals[:k]))  # a new lowest residual
    sigma = (residuals[target] * (1 + 1e-6)) ** 0.5
    dip_denoise.run(tiny_dip(tmp_path, **common, sigma=sigma, run_name="with_sigma"))
    folder = tmp_path / "out" / "dip_denoise" / "with_sigma"
    table = next(csv.DictReader((folder / "table.csv").open()))
    assert int(table["discrepancy_iteration"]) == target
    (row,) = stopping_study.study_rows([folder])
    own, centred, fired = stopping_study.discrepancy_from_curve(read_csv(folder / "camera" / "curve.csv"),
                                                                sigma ** 2, 9)
    assert fired and own == pytest.approx(float(table["psnr_discrepancy"]), abs=1e-4)
    assert centred == pytest.approx(float(table["psnr_discrepancy_centred"]), abs=1e-4)
    assert row[stopping_study.tau_key(1.0, "estimated")] == pytest.approx(centred)


def test_the_protocol_chooses_the_smallest_mean_gap_breaks_ties_by_the_share_and_leaves_later_rules_out():
    def rows_for(rule, gaps):
        return [dict(size=64, sigma_true=25 / 255, oracle=30.0, **{rule: 30.0 - g, f"{rule}_fired": True})
                for g in gaps]

    runs = [{**a, **b, **c} for a, b, c in zip(rows_for("whiteness_centred", [0.25, 0.25, 0.75, -0.25]),
                                                 rows_for("discrepancy_centred", [0.25, 0.25, 0.25, 0.25]),
                                                 rows_for("sure", [0.0, 0.0, 0.0, 0.0]))]
    decision = stopping_study.protocol_decision(stopping_study.summarise(runs))
    assert decision.startswith("Decision over 4 runs: discrepancy_centred, mean gap 0.25 dB, 0 % of runs")
    assert "it passes" in decision  # 0.25 ties whiteness_centred's mean; its share 25 % loses; SURE is not chosen
    failing = [dict(r, discrepancy_centred=29.5) for r in runs]
    verdict = stopping_study.protocol_decision(stopping_study.summarise(failing))
    assert "whiteness_centred" in verdict and "does not pass: 0.00 dB over the mean gap allowed, 15 points" in verdict


def test_the_minimum_with_patience_freezes_as_the_rules_do():
    assert stopping_study.minimum_with_patience([3.0, 2.0, "", 2.5, 2.2, 1.0], 2) == (1, True)  # fires at 4
    assert stopping_study.minimum_with_patience([3.0, 2.0, 2.5, 1.0], 5) == (3, False)
    assert stopping_study.minimum_with_patience(["", ""], 1) == (-1, False)


def test_sure_read_off_the_records_equals_the_rule_during_the_run_and_rescales_with_sigma(tiny_dip, tmp_path):
    """A --sure run's SURE choice, recomputed from curve.csv with the run's own σ, is the rule's choice during the
    run; with another σ, the recomputed curve is residual − σ² + σ²·(divergence term), checked by hand."""
    import csv

    import dip_denoise
    from dipkit.runs import read_csv

    dip_denoise.run(tiny_dip(tmp_path, iterations=60, stop_patience=15, sure=True, noise_level=0.1,
                             images=("camera",), size=64))
    folder = tmp_path / "out" / "dip_denoise" / "r"
    table = next(csv.DictReader((folder / "table.csv").open()))
    curve = read_csv(folder / "camera" / "curve.csv")
    sigma = float(table["sigma"])
    own = stopping_study.sure_with_sigma(curve, sigma, sigma)
    assert own[-1] == pytest.approx(curve[-1]["sure"], rel=1e-5)
    choice, fired = stopping_study.minimum_with_patience(own, 15)
    assert choice == int(table["sure_iteration"]) and fired == (table["sure_fired"] == "True")
    r = curve[-1]
    divergence_term = (r["sure"] - r["residual"] + sigma ** 2) / sigma ** 2
    assert stopping_study.sure_with_sigma(curve, sigma, 0.2)[-1] == pytest.approx(
        r["residual"] - 0.04 + 0.04 * divergence_term)
    (row,) = stopping_study.study_rows([folder])
    assert stopping_study.SURE_TRUE_SIGMA in row and "sure_centred" in row


def test_the_tau_sweep_averages_the_gaps_of_each_tau_and_sigma():
    rows = [dict(size=64, sigma_true=10 / 255, oracle=30.0, **{stopping_study.tau_key(1.0, "estimated"): psnr,
                                                              stopping_study.tau_key(1.0, "true"): 30.0})
            for psnr in (29.5, 28.5)]
    sweep = {(r["sigma_level"], r["sigma"], r["tau"]): r for r in stopping_study.tau_sweep(rows)}
    assert sweep["10", "estimated", 1.0]["mean_gap"] == 1.0 and sweep["10", "estimated", 1.0]["over_half_db"] == 0.5
    assert sweep["10", "true", 1.0]["worst_gap"] == 0.0
    table = stopping_study.tau_markdown(stopping_study.tau_sweep(rows))
    assert "| 64 | 10 | estimated | 2 |" in table and "| 64 | all |" not in table  # one level: no row over levels
