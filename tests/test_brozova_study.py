"""bench/brozova_study.py: the modes, the per-problem figures and verdicts of her conclusions worked by hand, the
curves' end slopes, and the study regenerated end to end from tiny runs through bench/docs_results.py (figures into
docs/figures)."""

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


def rows_of(variants: dict[str, list[list[float]]], psnr_nb: float = 25.0) -> list[dict]:
    """Rows of a study: variants -> ISNR per problem (p0, p1, ...) and seed, a list of seeds' values per problem."""
    study = load_study()
    rows = [dict(problem=f"p{p}", variant=v, seed=s, isnr=float(value), psnr_nb=psnr_nb, psnr_gt=25.0 + value,
                 ssim=0.8)
            for v, isnr in variants.items() for p, seeds in enumerate(isnr) for s, value in enumerate(seeds)]
    for row in rows:
        row["mode"] = study.mode(row)
    return rows


def test_the_modes_follow_her_two_undesired_solutions():
    study = load_study()
    assert study.mode(dict(isnr=1.0, psnr_nb=40.0)) == "gain"
    assert study.mode(dict(isnr=0.99, psnr_nb=30.0)) == "no-blur"  # close to the blurred input
    assert study.mode(dict(isnr=-3.0, psnr_nb=21.0)) == "artefact"


def test_the_seed_spread_is_its_definition():
    study = load_study()
    rng = np.random.default_rng(0)
    a = rng.normal(3, 1, (3, 3))
    rows = rows_of({"A": a.tolist()})
    assert study.seed_spread(rows) == pytest.approx(np.mean(np.std(a, axis=1, ddof=1)), rel=1e-12)


# three problems, two seeds each, worked by hand below
A = [[1.0, 3.0], [2.0, 2.0], [0.0, 4.0]]
B = [[2.0, 5.0], [1.0, 2.0], [4.0, 4.0]]


def test_the_per_problem_figures_worked_by_hand():
    """Means over the seeds 2, 2, 2 (A) and 3.5, 1.5, 4 (B); b − a per problem (1 + 2) / 2, (−1 + 0) / 2,
    (4 + 0) / 2; stds over the seeds √2, 0, 2√2."""
    study = load_study()
    rows = rows_of({"A": A, "B": B})
    assert study.problem_means(rows, "A") == {"p0": 2.0, "p1": 2.0, "p2": 2.0}
    assert study.problem_means(rows, "B") == {"p0": 3.5, "p1": 1.5, "p2": 4.0}
    assert study.problem_differences(rows, "A", "B") == {"p0": 1.5, "p1": -0.5, "p2": 2.0}
    spreads = study.problem_spreads(rows, "A")
    assert spreads == pytest.approx({"p0": math.sqrt(2), "p1": 0.0, "p2": 2 * math.sqrt(2)}, rel=1e-12)
    # a seed B lacks pairs with nothing: p0's difference is then seed 0's alone
    partial = [r for r in rows if not (r["variant"] == "B" and r["problem"] == "p0" and r["seed"] == 1)]
    assert study.problem_differences(partial, "A", "B")["p0"] == 1.0


@pytest.mark.parametrize("differences, side, expected", [
    ({"p0": 1.5, "p1": -0.5, "p2": 2.0}, 1, "not shown at this scale (her side on 2 of 3 problems)"),
    ({"p0": 1.5, "p1": -0.5, "p2": 2.0}, -1, "not shown at this scale (her side on 1 of 3 problems)"),
    ({"p0": 1.5, "p1": 0.5, "p2": 2.0}, 1, "holds on 3 of 3 problems"),
    ({"p0": 1.5, "p1": 0.5, "p2": 2.0}, -1, "the opposite on 3 of 3 problems"),
    ({"p0": 0.2}, 1, "not shown at this scale (one problem, on her side)"),
    ({}, 1, "not measured")])
def test_a_claim_is_counted_problem_by_problem(differences, side, expected):
    assert load_study().count_verdict(differences, side) == expected


def test_more_stable_needs_a_factor_of_two_that_survives_leaving_out_any_one_problem():
    """Seeds (0, x) have the std x/√2, so the ratios are those of the x: loose 1, 1, 6 (mean 8/3). Stable 0.2 each:
    0.2 / (8/3) = 0.075, 0.2 with p2 left out, 0.2 / 3.5 with p0 or p1: holds. Stable 0.6 each: 0.225 in all, but
    0.6 with p2 left out: it rests on p2."""
    study = load_study()
    loose = [[0.0, 1.0], [0.0, 1.0], [0.0, 6.0]]
    firm = study.stability(rows_of({"S": [[0.0, 0.2]] * 3, "L": loose}), "S", "L")
    assert firm["ratio"] == pytest.approx(0.075, rel=1e-12)
    assert firm["left_out"] == pytest.approx({"p0": 0.2 / 3.5, "p1": 0.2 / 3.5, "p2": 0.2}, rel=1e-12)
    assert (firm["verdict"], firm["below"], firm["above"]) == ("holds", 3, 0)
    shaky = study.stability(rows_of({"S": [[0.0, 0.6]] * 3, "L": loose}), "S", "L")
    assert shaky["ratio"] == pytest.approx(0.225, rel=1e-12)
    assert shaky["left_out"]["p2"] == pytest.approx(0.6, rel=1e-12)
    assert (shaky["verdict"], shaky["below"]) == ("rests on p2", 1)
    wide = study.stability(rows_of({"S": [[0.0, 6.0]] * 3, "L": [[0.0, 1.0]] * 3}), "S", "L")
    assert wide["verdict"] == "the opposite" and wide["above"] == 3
    level = study.stability(rows_of({"S": loose, "L": loose}), "S", "L")
    assert level["verdict"] == "no factor of 2"


def test_the_stability_claim_reads_the_per_problem_spreads():
    study = load_study()
    rows = rows_of({"SelfDeblur": [[0.0, 1.0], [0.0, 1.0], [0.0, 6.0]], "VDIP-Sparse": [[0.0, 0.6]] * 3})
    line = next(line for line in study.claims(rows, study.variant_table(rows), [], {}) if "more stable" in line)
    assert "VDIP-Sparse against SelfDeblur: below half on 1 of 3 problems" in line
    assert "0.17–0.60 with one problem left out (rests on p2)" in line
    assert line.endswith("**not shown at this scale**.")
    assert "a std from 2 seeds is known to about ±71%" in line  # 1/√(2 (n − 1)), n = 2


def test_the_end_slope_and_the_iterations_to_catch_up_worked_by_hand():
    """The last 20 % of 0..100 is 80, 90, 100 with 5, 6, 8 dB: slope Σ(x − x̄)(y − ȳ) / Σ(x − x̄)² = 30 / 200 dB
    per iteration, 15 per 100. A gap of 2 dB closed at 0.04 dB per 100 iterations: 5000 iterations."""
    study = load_study()
    assert study.end_slope([(0, 0.0), (50, 3.0), (80, 5.0), (90, 6.0), (100, 8.0)]) == pytest.approx(15.0)
    assert math.isnan(study.end_slope([(0, 0.0), (100, 8.0)])) and math.isnan(study.end_slope([]))
    needed = study.catch_up({"p0": -2.0, "p1": 1.0, "p2": -1.0}, {"p0": 0.01, "p1": 0.0, "p2": 0.05},
                            {"p0": 0.05, "p1": 0.0, "p2": 0.03})
    assert needed["p0"] == pytest.approx(5000.0) and needed["p1"] == 0.0 and math.isinf(needed["p2"])


def test_avoiding_a_mode_no_baseline_run_fell_into_is_not_tested():
    """No SimplerSDB run is no-blur: β1 0.99 has nothing to avoid, whatever its ISNR. Where SimplerSDB falls into
    it on two problems and β1 0.99 on neither, it holds on 2 of 2; its ISNR differences are counted per problem."""
    study = load_study()
    rows = rows_of({"SimplerSDB": A, "SimplerSDB-b0.99": B})
    lines = study.claims(rows, study.variant_table(rows), [], {})
    beta = next(line for line in lines if "β1 avoids" in line)
    assert "**not tested at this scale (no SimplerSDB run fell into the no-blur mode)**" in beta
    assert "p0 +1.50, p1 -0.50, p2 +2.00" in beta and "higher on 2 and lower on 1 of 3 problems" in beta
    no_blur = [dict(row, psnr_nb=35.0, isnr=0.1, mode="no-blur") if row["variant"] == "SimplerSDB" and
               row["problem"] != "p1" else row for row in rows]
    lines = study.claims(no_blur, study.variant_table(no_blur), [], {})
    beta = next(line for line in lines if "β1 avoids" in line)
    assert "p0 2 against 0, p1 0 against 0, p2 2 against 0" in beta
    assert "**holds on 2 of 2 problems where SimplerSDB fell into it**" in beta


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
    assert claims.startswith("ISNR per problem") and "The unit of evidence is the problem" in claims
    variants = {r["variant"]: r for r in read_csv(kept / "variants.csv")}
    assert variants["SelfDeblur"]["runs"] == 3 and variants["SimplerSDB-b0.99"]["seeds"] == 3
    runs = read_csv(kept / "runs.csv")
    assert all(r["last_iteration"] > 0 for r in runs)  # each run's curve.csv read (too short for an end slope)


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
