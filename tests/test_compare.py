"""python -m dipkit.compare: runs of any script read back, labelled by what differs, curves and tables."""

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY_STUDY

import ADP
import dip_denoise
import selfdeblur
import vdip
from dipkit import compare
from dipkit.cli import make_config
from dipkit.errors import RunError

ROOT = compare.Path(__file__).resolve().parent.parent


def blind(script, tmp_path, name, **overrides):
    settings = dict(TINY_STUDY, results_dir=str(tmp_path), run_name=name)
    module = selfdeblur if script == "selfdeblur" else vdip
    if script == "vdip":
        settings["pretrain_iterations"] = 2
    return module.run(make_config(module.Config, **{**settings, **overrides}))["folder"]


def table_of(out):
    return (out / "compare.md").read_text()


def test_two_selfdeblur_seeds_and_a_vdip_run_give_three_labelled_curves_and_a_table(tmp_path):
    runs = [blind("selfdeblur", tmp_path, "s0", seeds=(0,)), blind("selfdeblur", tmp_path, "s1", seeds=(1,)),
            blind("vdip", tmp_path, "v", seeds=(0,))]
    rows = compare.compare([str(r) for r in runs], out=tmp_path / "cmp", log=lambda line: None)
    assert [(r["label"], r["method"]) for r in rows] == [
        ("selfdeblur, seeds=[0]", "SelfDeblur"), ("selfdeblur, seeds=[1]", "SelfDeblur"), ("vdip", "VDIP-Sparse")]
    assert (tmp_path / "cmp" / "compare.png").stat().st_size > 0
    with (tmp_path / "cmp" / "compare.csv").open() as file:
        points = list(csv.DictReader(file))
    assert {p["label"] for p in points} == {r["label"] for r in rows}
    assert all(float(p["seconds"]) > 0 for p in points)  # the blind runs' curves keep their time
    finals = {}
    for run in runs:  # the table's final value is the run's last scored PSNR-GT
        with (run / "curve.csv").open() as file:
            finals[run.name] = float(list(csv.DictReader(file))[-1]["psnr_gt"])
    assert [r["final"] for r in rows] == pytest.approx([finals["s0"], finals["s1"], finals["v"]])
    assert all(r["best"] >= r["final"] for r in rows)
    assert "| selfdeblur, seeds=[0] | SelfDeblur |" in table_of(tmp_path / "cmp")


def test_several_seeds_of_one_run_give_mean_and_spread_over_them(tmp_path):
    run = blind("selfdeblur", tmp_path, "two", seeds=(0, 1))
    (row,) = compare.compare([str(run)], out=tmp_path / "cmp", log=lambda line: None)
    with (run / "curve.csv").open() as file:
        points = list(csv.DictReader(file))
    last = [float(p["psnr_gt"]) for p in points if p["iteration"] == "6"]
    assert row["runs"] == 2 and row["final"] == pytest.approx(sum(last) / 2)
    assert row["final_std"] == pytest.approx(abs(last[0] - last[1]) / 2 ** 0.5)


def test_two_adp_runs_are_labelled_by_their_seeds(tmp_path):
    for seed in (0, 1):
        ADP.run(make_config(ADP.Config, quick=True, height=24, width=20, upper_iterations=3, results_dir=str(tmp_path),
                            run_name=f"seed{seed}", seed=seed, progress=False))
    rows = compare.compare([str(tmp_path / "ADP")], out=tmp_path / "cmp", log=lambda line: None)
    assert [r["label"] for r in rows] == ["seed=0", "seed=1"]
    assert all(r["method"] == "ADP-β-MAID" and r["runs"] == 1 for r in rows)
    for row, seed in zip(rows, (0, 1)):
        with (tmp_path / "ADP" / f"seed{seed}" / "curve.csv").open() as file:
            assert row["final"] == pytest.approx(float(list(csv.DictReader(file))[-1]["psnr"]))


def test_two_dip_runs_compare_against_time(tiny_dip, tmp_path):
    for rate in (0.01, 0.02):
        dip_denoise.run(tiny_dip(tmp_path, images=("camera",), learning_rate=rate, run_name=f"lr{rate}"))
    out = tmp_path / "cmp"
    rows = compare.compare([str(tmp_path / "out" / "dip_denoise" / "*")], x="seconds", out=out, log=lambda line: None)
    assert [r["label"] for r in rows] == ["learning_rate=0.01", "learning_rate=0.02"]
    assert (out / "compare.png").is_file()
    rows = compare.compare([str(tmp_path / "out" / "dip_denoise")], metric="psnr_clean_average", out=tmp_path / "c2",
                           log=lambda line: None)
    assert len(rows) == 2
    rows = compare.compare([str(tmp_path / "out" / "dip_denoise")], metric="psnr_discrepancy", out=tmp_path / "c3",
                           log=lambda line: None)  # a stopping rule's value: a column of table.csv, no curve
    for row in rows:
        with (Path(row["run"]) / "table.csv").open() as file:
            (image,) = list(csv.DictReader(file))
        assert row["final"] == pytest.approx(float(image["psnr_discrepancy"])) and math.isnan(row["best"])


def fake_run(folder, script, constants, curve=None, metrics=True):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(dict(config=constants)))
    if metrics:
        (folder / "metrics.json").write_text(json.dumps(dict(script=script, summary={}, items={})))
    if curve:
        with (folder / "curve.csv").open("w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=list(curve[0]))
            writer.writeheader()
            writer.writerows(curve)
    return folder


def test_identical_constants_fall_back_to_the_run_names_and_loss_is_best_at_its_minimum(tmp_path):
    curve = [dict(solver="MAID", seconds=s, lower_iterations=10 * s, linear_work=s, loss=v)
             for s, v in ((0, 3.0), (1, 1.0), (2, 1.5))]
    a = fake_run(tmp_path / "a", "adp_1d", dict(signal="piecewise_constant"), curve)
    b = fake_run(tmp_path / "b", "adp_1d", dict(signal="piecewise_constant"), curve)
    rows = compare.compare([str(a), str(b)], metric="loss", out=tmp_path / "cmp", log=lambda line: None)
    assert [r["label"] for r in rows] == ["a", "b"]
    assert rows[0]["final"] == 1.5 and rows[0]["best"] == 1.0


def test_bad_input_is_one_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunError, match="not a run"):
        compare.compare([str(tmp_path / "empty")], out=tmp_path / "cmp")
    with pytest.raises(RunError, match="matches nothing"):
        compare.compare([str(tmp_path / "nothing*")], out=tmp_path / "cmp")
    one = fake_run(tmp_path / "one", "adp_1d", dict(signal="s"),
                   [dict(solver="MAID", seconds=0, lower_iterations=0, linear_work=0, loss=1.0)])
    with pytest.raises(RunError, match="the ones they share: .*loss"):
        compare.compare([str(one)], out=tmp_path / "cmp")  # adp_1d has no PSNR
    other = fake_run(tmp_path / "gen", "generative_prior", dict(seed=0))
    with (other / "table.csv").open("w") as file:
        file.write("image,label,method,psnr,ssim\n0,7,Alg. 1,20.0,0.8\n")
    with pytest.raises(RunError, match="share no metric"):
        compare.compare([str(one), str(other)], out=tmp_path / "cmp")
    assert not (tmp_path / "cmp").exists()


def test_the_command_line_refuses_with_one_line_and_exit_code_2(tmp_path):
    (tmp_path / "empty").mkdir()
    done = subprocess.run([sys.executable, "-m", "dipkit.compare", str(tmp_path / "empty")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 and "not a run" in done.stderr


def test_a_batched_run_compares_like_its_runs_alone(tmp_path):
    """The same seeds alone and batched: the same final and best values; labelled by the batch constant."""
    alone = blind("selfdeblur", tmp_path, "alone", seeds=(0, 1))
    batched = blind("selfdeblur", tmp_path, "batched", seeds=(0, 1), batch=2)
    rows = compare.compare([str(alone), str(batched)], out=tmp_path / "cmp", log=lambda line: None)
    assert [r["label"] for r in rows] == ["alone", "batched"]  # a batch changes no result: not a label
    assert rows[0]["final"] == pytest.approx(rows[1]["final"]) and rows[0]["best"] == pytest.approx(rows[1]["best"])


def test_a_run_without_curves_enters_the_table_with_its_final_scores(tmp_path):
    """A study made with --curve_every 0 writes no curve.csv: its table's PSNR-GT are its final values."""
    flat = blind("selfdeblur", tmp_path, "flat", seeds=(0, 1), curve_every=0)
    (row,) = compare.compare([str(flat)], out=tmp_path / "cmp", log=lambda line: None)
    with (flat / "table.csv").open() as file:
        finals = [float(r["psnr_gt"]) for r in csv.DictReader(file) if r["seed"]]
    assert row["runs"] == 2 and row["final"] == pytest.approx(sum(finals) / 2)


def test_damaged_files_are_one_clear_error_and_write_nothing(tmp_path):
    run = blind("selfdeblur", tmp_path, "cut", seeds=(0,))
    text = (run / "curve.csv").read_text()
    (run / "curve.csv").write_text(text[: len(text) - 30])  # cut in the middle of its last row
    with pytest.raises(RunError, match="curve.csv is damaged"):
        compare.compare([str(run)], out=tmp_path / "c1")
    (run / "curve.csv").write_text(text)
    (run / "config.json").write_text((run / "config.json").read_text()[:50])
    with pytest.raises(RunError, match=r"config.json is damaged"):
        compare.compare([str(run)], out=tmp_path / "c2")
    assert not (tmp_path / "c1").exists() and not (tmp_path / "c2").exists()


def test_generative_prior_runs_compare_by_their_final_values(tmp_path):
    for name, table_text in (("old", "image,label,method,psnr,ssim\n0,7,Alg. 1,20.0,0.8\n1,3,Alg. 1,22.0,0.9\n"),
                             ("new", "image,digit,method,psnr,ssim\n0,7,Alg. 1,21.0,0.8\n1,3,Alg. 1,23.0,0.9\n")):
        folder = fake_run(tmp_path / name, "generative_prior", dict(seed=0, restarts=len(name)))
        (folder / "table.csv").write_text(table_text)  # a digit's class is no metric, under either name
    rows = compare.compare([str(tmp_path / "old"), str(tmp_path / "new")], out=tmp_path / "cmp",
                           log=lambda line: None)
    assert [(r["final"], r["runs"]) for r in rows] == [(21.0, 2), (22.0, 2)]
    with (tmp_path / "cmp" / "table.csv").open() as file:
        assert [row["run"] for row in csv.DictReader(file)] == ["old", "old", "new", "new"]


def test_runs_of_different_scripts_merge_into_one_table_and_different_problems_are_said(tmp_path, tiny_dip):
    sdb = blind("selfdeblur", tmp_path, "s", seeds=(0,))
    dip = dip_denoise.run(tiny_dip(tmp_path, images=("camera",), run_name="d"))["folder"]
    compare.compare([str(sdb), str(dip)], out=tmp_path / "mixed", log=lambda line: None)
    with (tmp_path / "mixed" / "table.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert {r["script"] for r in rows} == {"selfdeblur", "dip_denoise"} and not (tmp_path / "mixed" / "summary.csv").exists()
    other = blind("vdip", tmp_path, "v", seeds=(0,), images=("coffee",))
    said = []
    compare.compare([str(sdb), str(other)], out=tmp_path / "studies", log=said.append)
    assert any("these runs hold different problems (s: camera_k9; v: coffee_k9)" in line for line in said)
    assert (tmp_path / "studies" / "summary.csv").is_file() and (tmp_path / "studies" / "scatter.png").is_file()
