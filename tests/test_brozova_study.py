"""bench/brozova_study.py: the modes, the seed-to-seed spread, the paired verdicts of her conclusions, and the
study regenerated end to end from tiny runs through bench/docs_results.py (figures into docs/figures)."""

import importlib.util
import json
import math
import sys

import numpy as np
import pytest
from conftest import ROOT
from test_docs_results import load_docs_results

from dipkit.runs import read_csv


def load_study():
    spec = importlib.util.spec_from_file_location("brozova_study", ROOT / "bench" / "brozova_study.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["brozova_study"] = module
    spec.loader.exec_module(module)
    return module


def rows_of(variants: dict[str, np.ndarray]) -> list[dict]:
    """Rows of a study: variants -> ISNR per (problem, seed) as an array problems x seeds."""
    return [dict(problem=f"p{p}", variant=v, seed=s, isnr=float(isnr[p, s]), psnr_nb=25.0, psnr_gt=25.0 + isnr[p, s],
                 ssim=0.8) for v, isnr in variants.items() for p in range(isnr.shape[0]) for s in range(isnr.shape[1])]


def test_the_modes_follow_her_two_undesired_solutions():
    study = load_study()
    assert study.mode(dict(isnr=1.0, psnr_nb=40.0)) == "gain"
    assert study.mode(dict(isnr=0.99, psnr_nb=30.0)) == "no-blur"  # close to the blurred input
    assert study.mode(dict(isnr=-3.0, psnr_nb=21.0)) == "artefact"


def test_the_seed_spread_and_the_paired_difference_are_their_definitions():
    study = load_study()
    rng = np.random.default_rng(0)
    a = rng.normal(3, 1, (3, 3))
    b = a + rng.normal(0.5, 0.3, (3, 3))
    rows = rows_of({"A": a, "B": b})
    assert study.seed_spread([r for r in rows if r["variant"] == "A"]) == pytest.approx(
        np.mean(np.std(a, axis=1, ddof=1)), rel=1e-12)
    d = study.paired(rows, "A", "B")
    diffs = (b - a).ravel()
    assert d["n"] == 9 and d["mean"] == pytest.approx(diffs.mean(), rel=1e-12)
    assert d["se"] == pytest.approx(diffs.std(ddof=1) / 3, rel=1e-12)


@pytest.mark.parametrize("shift, side, expected", [
    (1.0, 1, "holds"), (-1.0, 1, "does not hold (the opposite)"), (1.0, -1, "does not hold (the opposite)"),
    (0.0, 1, "cannot be told apart from the seed-to-seed spread")])
def test_a_claim_holds_only_beyond_two_standard_errors_on_her_side(shift, side, expected):
    study = load_study()
    rng = np.random.default_rng(1)
    a = rng.normal(3, 2, (3, 3))
    noise = rng.normal(0, 0.1, (3, 3))
    rows = rows_of({"A": a, "B": a + shift + noise - noise.mean()})  # the mean difference is `shift` exactly
    assert study.verdict(study.paired(rows, "A", "B"), side) == expected
    assert study.verdict(dict(mean=math.nan, std=math.nan, se=math.nan, n=0)) == "not measured"


def test_the_study_regenerated_from_tiny_runs_writes_her_figures_and_a_line_per_conclusion(tmp_path, monkeypatch):
    """Tiny runs of two variants and three seeds, one run made again as run and with --deterministic: on the CPU
    the repeats equal the study's runs to the last digit; the figures reach docs/figures."""
    docs_results = load_docs_results()
    for name, value in (("DOCS_RESULTS", tmp_path / "docs"), ("SCRATCH", tmp_path / "scratch"),
                        ("FIGURES", tmp_path / "figures")):
        monkeypatch.setattr(docs_results, name, value)
    tiny = ("--quick", "--schedule_scale", "0.006", "--channels", "8", "--curve_every", "2",
            "--known_kernel_iterations", "20")
    entries = {
        "selfdeblur/brozova": ("selfdeblur.py", *tiny, "--seeds", "0", "1", "2", "--variants", "SelfDeblur",
                               "SimplerSDB-b0.99"),
        "selfdeblur/brozova_repeat": ("selfdeblur.py", *tiny, "--seeds", "0", "--variants", "SelfDeblur"),
        "selfdeblur/brozova_repeat_deterministic": ("selfdeblur.py", *tiny, "--seeds", "0", "--variants",
                                                    "SelfDeblur", "--deterministic"),
    }
    for name, command in entries.items():
        docs_results.run_entry(name, docs_results.Entry(command), "", "", force=False)
    study = docs_results.ENTRIES["selfdeblur/brozova_study"]
    study = docs_results.Entry(tuple(w for w in study.command if "vdip-brozova" not in w), produces=study.produces,
                               figures=study.figures)
    docs_results.run_entry("selfdeblur/brozova_study", study, "", "", force=False)
    kept = tmp_path / "docs" / "selfdeblur" / "brozova_study"
    assert {p.name for p in kept.iterdir()} == {"runs.csv", "variants.csv", "stochasticity.csv", "claims.md",
                                                "config.json"}
    assert {p.name for p in (tmp_path / "figures").iterdir()} == {"brozova_scatter.png", "brozova_beta1.png"}
    claims = (kept / "claims.md").read_text()
    assert "repeated as it was run**: 1 run(s) made again with the same seed: 1 identical" in claims
    assert "repeated with --deterministic**: 1 run(s) made again with the same seed: 1 identical" in claims
    assert "not measured (SimplerSDB has no runs)" in claims and "DIP in blind deconvolution improves" in claims
    variants = {r["variant"]: r for r in read_csv(kept / "variants.csv")}
    assert variants["SelfDeblur"]["runs"] == 3 and variants["SimplerSDB-b0.99"]["seeds"] == 3


def test_a_folder_without_a_study_is_one_line_and_exit_2(tmp_path, capsys):
    study = load_study()
    from dipkit.cli import run_main

    with pytest.raises(SystemExit) as stop:
        run_main(lambda: study.main([str(tmp_path), "--out", str(tmp_path / "out")]))
    assert stop.value.code == 2 and "no table.csv" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_a_repeat_made_on_another_machine_is_labelled_by_its_recorded_environment(tmp_path):
    """The same run's rows in a folder whose config.json records another platform count as a repeat on another
    machine (mean and largest |ΔPSNR-GT|), one from the study's machine as a repeat as it was run."""
    study_module = load_study()

    def folder(name: str, platform: str, psnr_gt: float):
        path = tmp_path / name
        path.mkdir()
        (path / "table.csv").write_text("problem,variant,seed,psnr_gt,psnr_nb,isnr,ssim\n"
                                        f"p,SelfDeblur,0,{psnr_gt},24.0,{psnr_gt - 22.0},0.7\n")
        record = dict(config=dict(deterministic=False),
                      environment=dict(platform=platform, processor="AMD EPYC", device="cpu"))
        (path / "config.json").write_text(json.dumps(record))
        return path

    study, here, there = folder("study", "vm-1", 26.0), folder("here", "vm-1", 26.0), folder("there", "vm-2", 25.0)
    rows, _ = study_module.study_rows([study])
    repeats = study_module.repeat_rows([here, there], rows, [study])
    assert [(r["repeat"], r["identical"], r["psnr_gt_difference"]) for r in repeats] == [
        ("repeated as it was run", True, 0.0), ("made again on another machine", False, -1.0)]
    lines = study_module.claims(rows, study_module.variant_table(rows), repeats, {})
    assert any("another machine**: 1 run(s)" in line and "1 dB on average, at most 1" in line for line in lines)
