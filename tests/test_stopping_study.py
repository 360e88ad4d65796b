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
