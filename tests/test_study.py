"""Studies that lose nothing: each finished run kept at once by the engine, --resume, and runs in worker processes
or on Ray."""

import csv
import json
import os
import signal

import pytest
from conftest import TINY_STUDY
import torch

import selfdeblur
import vdip
from dipkit.cli import RunError, class_dicts, make_config
from dipkit.errors import Failed


def tiny(tmp_path, **overrides):
    settings = dict(TINY_STUDY, results_dir=str(tmp_path), run_name="study")
    return make_config(selfdeblur.Config, **{**settings, **overrides})


def rows_of(folder):
    with (folder / "table.csv").open() as file:
        return list(csv.DictReader(file))


def counting(monkeypatch, calls):
    original = selfdeblur.deblur
    monkeypatch.setattr(selfdeblur, "deblur", lambda runs: calls.extend(r.seed for r in runs) or original(runs))


def test_resume_keeps_the_finished_run_and_adds_the_missing_one(tmp_path, monkeypatch):
    first = selfdeblur.run(tiny(tmp_path, seeds=(0,)))
    seed0 = [r for r in rows_of(first["folder"]) if r["seed"] == "0"]
    calls = []
    counting(monkeypatch, calls)
    again = selfdeblur.run(tiny(tmp_path, seeds=(0, 1), resume=True))
    assert again["folder"] == first["folder"] and calls == [1]  # seed 0 read back, not run again
    rows = rows_of(again["folder"])
    assert [r["seed"] for r in rows if r["seed"]] == ["0", "1"]
    assert [r for r in rows if r["seed"] == "0"] == seed0  # unchanged
    record = json.loads((again["folder"] / "config.json").read_text())
    assert record["config"]["seeds"] == [0, 1] and record["earlier"][0]["config"]["seeds"] == [0]


def test_resuming_with_other_constants_is_refused_and_writes_nothing(tmp_path):
    first = selfdeblur.run(tiny(tmp_path, seeds=(0,)))
    before = (first["folder"] / "config.json").read_text()
    with pytest.raises(RunError, match="other iterations"):
        selfdeblur.run(tiny(tmp_path, seeds=(0, 1), resume=True, iterations=7))
    assert (first["folder"] / "config.json").read_text() == before


def test_resuming_a_run_that_does_not_exist_says_so_and_starts_it(tmp_path, capsys):
    result = selfdeblur.run(tiny(tmp_path, run_name="typo", resume=True))
    assert "there is no run" in capsys.readouterr().out and result["folder"].name == "typo"


def test_a_killed_study_keeps_every_finished_run_and_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    whole = selfdeblur.run(tiny(tmp_path / "whole", seeds=(0, 1)))
    original, count = selfdeblur.deblur, []

    def dies_on_the_second_run(runs):
        if count:
            raise KeyboardInterrupt  # the process is stopped while the second run is in flight
        count.append(runs[0].seed)
        return original(runs)

    monkeypatch.setattr(selfdeblur, "deblur", dies_on_the_second_run)
    with pytest.raises(KeyboardInterrupt):
        selfdeblur.run(tiny(tmp_path / "cut", seeds=(0, 1)))
    folder = tmp_path / "cut" / "selfdeblur" / "study"
    assert [r["seed"] for r in rows_of(folder) if r["seed"]] == ["0"]  # the finished run's row is on disk
    assert not list((folder / "units").glob("*.partial"))
    monkeypatch.setattr(selfdeblur, "deblur", original)
    resumed = selfdeblur.run(tiny(tmp_path / "cut", seeds=(0, 1), resume=True))
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(rows_of(resumed["folder"])) == strip(rows_of(whole["folder"]))


def test_a_run_alone_that_fails_is_named_and_the_others_go_on(tmp_path, monkeypatch):
    original = selfdeblur.deblur
    monkeypatch.setattr(selfdeblur, "deblur", lambda runs: [Failed("the loss became nan at iteration 3")]
                        if runs[0].seed == 0 else original(runs))
    with pytest.raises(RunError, match=r"1 run\(s\) failed.*seed0: the loss became nan"):
        selfdeblur.run(tiny(tmp_path, seeds=(0, 1)))
    assert [r["seed"] for r in rows_of(tmp_path / "selfdeblur" / "study") if r["seed"]] == ["1"]


def test_runs_on_a_local_ray_with_two_workers_equal_the_runs_here_and_resume_across_engines(tmp_path):
    pytest.importorskip("ray")
    threads = torch.get_num_threads()
    first = selfdeblur.run(tiny(tmp_path / "ray", seeds=(0, 1), engine="ray", workers=2))
    torch.set_num_threads(1)
    try:  # the same run resumed here, with a seed more: Ray's runs read back, the new one made here
        both = selfdeblur.run(tiny(tmp_path / "ray", seeds=(0, 1, 2), resume=True))
        assert both["folder"] == first["folder"]
        here = selfdeblur.run(tiny(tmp_path / "here", seeds=(0, 1, 2)))
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(here["rows"], both["rows"]):
        assert (a["variant"], a["seed"]) == (b["variant"], b["seed"])
        assert a["psnr_gt"] == pytest.approx(b["psnr_gt"], abs=1e-6)


def test_the_shared_constants_are_defined_once_and_reach_both_scripts():
    """selfdeblur.py's and vdip.py's data, scoring, engine and speed constants are dipkit.study's StudyConstants:
    the same fields, defaults, ranges and quick preset in both; each script's own LIMITS cover its own constants."""
    import dataclasses

    from dipkit.study import StudyConstants

    shared = {f.name: f for f in dataclasses.fields(StudyConstants)}
    for module in (selfdeblur, vdip):
        fields = {f.name: f for f in dataclasses.fields(module.Config)}
        assert all(fields[name] == field for name, field in shared.items())
        limits, quick = class_dicts(module.Config, "LIMITS"), class_dicts(module.Config, "QUICK")
        assert {k: v for k, v in limits.items() if k in shared} == class_dicts(StudyConstants, "LIMITS")
        assert quick["size"] == 64 and quick["iterations"] == 1000  # the shared preset and the script's own
        assert not set(vars(module.Config)["LIMITS"]) & set(shared)  # nothing of the shared ones set again


def test_a_bad_input_error_in_a_ray_task_comes_back_as_its_failure_and_is_not_retried(monkeypatch):
    """Ray retries a task that raises; a unit's RunError comes back as its Failed outcome instead, once."""
    import types

    from dipkit import engine

    class Reference:  # Ray's object reference: hashable, holding the result
        def __init__(self, value):
            self.value = value

    class EagerRay:  # runs each task at once
        def remote(self, **options):
            self.options = options
            return lambda function: types.SimpleNamespace(options=lambda **more: types.SimpleNamespace(
                remote=lambda *arguments: Reference(function(*arguments))))

        def wait(self, pending, num_returns):
            return pending[:1], pending[1:]

        def get(self, reference):
            return reference.value

    calls = []

    def refuses(tasks):
        calls.extend(tasks)
        raise RunError("the kernel is larger than the image")

    ray = EagerRay()
    monkeypatch.setattr(engine, "connect_ray", lambda workers, address: (ray, False))
    runner = engine.ray_runner(workers=1, retries=3)
    ((unit, outcome),) = list(runner([[engine.Unit("a", task=0)]], refuses))
    assert outcome == Failed("the kernel is larger than the image") and calls == [0]
    assert ray.options["max_retries"] == 3  # a crashed worker is still retried by Ray


def test_the_schedule_scale_multiplies_every_step_count_of_every_variant_and_nothing_else():
    """A study at a fraction of the paper's budget: iterations, milestones, pretraining, the loss switch (and VDIP's
    prior decay) times schedule_scale, a named variant's own step counts too; a None switch stays None."""
    from dipkit.study import named_variants

    config = make_config(selfdeblur.Config, schedule_scale=0.4, variants=("SelfDeblur", "SelfDeblur+pre-SSIM2000"))
    plain, pre_ssim = named_variants(config, selfdeblur.VARIANTS, "SelfDeblur").values()
    assert (plain.iterations, plain.milestones, plain.pretrain_iterations, plain.loss_switch) == (
        2000, (800, 1200, 1600), 0, None)
    assert (pre_ssim.pretrain_iterations, pre_ssim.loss_switch, pre_ssim.lr_image, pre_ssim.beta1_image) == (
        200, 800, config.lr_image, config.beta1_image)
    repo = named_variants(make_config(selfdeblur.Config, schedule_scale=0.4, setting="repo"), {}, "SelfDeblur")
    assert selfdeblur.loss_switch(repo["SelfDeblur"]) == 400  # the repository's SSIM at 1000, scaled
    ([extreme],) = [named_variants(make_config(vdip.Config, schedule_scale=0.4), vdip.VARIANTS, "x").values()]
    assert (extreme.iterations, extreme.pretrain_iterations, extreme.loss_switch, extreme.prior_decay_every,
            extreme.milestones) == (2000, 200, 800, 400, (800, 1200, 1600))
    tiny = make_config(selfdeblur.Config, schedule_scale=1e-4)
    assert named_variants(tiny, {}, "x")["x"].iterations == 1  # a step count stays at least one step
    same = make_config(selfdeblur.Config)
    assert named_variants(same, {}, "x")["x"] is same


def test_a_scaled_run_is_the_run_with_its_scaled_constants_written_out(tmp_path):
    """--schedule_scale 0.5 gives the table of the same run with the halved step counts given explicitly."""
    common = dict(TINY_STUDY, iterations=8, curve_every=2, pretrain_iterations=4, loss_switch=4,
                  results_dir=str(tmp_path))
    scaled = selfdeblur.run(make_config(selfdeblur.Config, **common, schedule_scale=0.5, milestones=(6,),
                                        run_name="scaled"))
    written = selfdeblur.run(make_config(selfdeblur.Config, **{**common, "iterations": 4, "pretrain_iterations": 2,
                                                               "loss_switch": 2}, milestones=(3,), run_name="written"))
    for a, b in zip(scaled["rows"], written["rows"], strict=True):
        assert a["psnr_gt"] == b["psnr_gt"] and a["psnr_nb"] == b["psnr_nb"]


def test_a_schedule_scale_that_is_not_positive_is_one_line_and_no_run_folder(tmp_path, capsys):
    from dipkit.cli import run_main

    with pytest.raises(SystemExit) as stop:
        run_main(lambda: selfdeblur.main(["--quick", "--schedule_scale", "0", "--results_dir", str(tmp_path)]))
    assert stop.value.code == 2 and "schedule_scale" in capsys.readouterr().err and not any(tmp_path.iterdir())


def test_editing_a_variants_settings_recomputes_exactly_its_runs_and_config_json_records_what_it_meant(
        tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(selfdeblur.VARIANTS, "SimplerSDB", dict(simpler=True))
    first = selfdeblur.run(tiny(tmp_path, variants=("SelfDeblur", "SimplerSDB")))
    record = json.loads((first["folder"] / "config.json").read_text())
    assert record["variants"] == dict(SelfDeblur={}, SimplerSDB=dict(simpler=True))  # as they differ from the constants
    monkeypatch.setitem(selfdeblur.VARIANTS, "SimplerSDB", dict(simpler=True, lr_image=0.02))  # the script edited
    calls = []
    original = selfdeblur.deblur
    monkeypatch.setattr(selfdeblur, "deblur", lambda runs: calls.extend(r.config.simpler for r in runs) or original(runs))
    capsys.readouterr()
    again = selfdeblur.run(tiny(tmp_path, variants=("SelfDeblur", "SimplerSDB"), resume=True))
    said = capsys.readouterr().out
    assert calls == [True] and "resume: 1 unit(s) kept, 1 to compute (1 changed input or settings)" in said
    assert [r for r in rows_of(again["folder"]) if r["variant"] == "SelfDeblur"] == \
        [r for r in rows_of(first["folder"]) if r["variant"] == "SelfDeblur"]
    record = json.loads((again["folder"] / "config.json").read_text())
    assert record["variants"]["SimplerSDB"] == dict(simpler=True, lr_image=0.02)
    assert record["earlier"][0]["variants"]["SimplerSDB"] == dict(simpler=True)


def deblur_or_die(runs):
    """SelfDeblur, except that the worker given seed 1 is killed (SIGKILL, as the out-of-memory killer does), every
    time: in a spawned worker, this module's function is what runs."""
    if any(run.seed == 1 for run in runs):
        os.kill(os.getpid(), signal.SIGKILL)
    return selfdeblur.deblur(runs)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="kills a worker with SIGKILL")
def test_a_worker_killed_mid_study_costs_only_its_run_and_a_resume_computes_it_alone(tmp_path, monkeypatch):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each of two workers of a 2-core machine: the same numbers here and there
    try:
        whole = selfdeblur.run(tiny(tmp_path / "whole", seeds=(0, 1, 2)))
        original = selfdeblur.deblur
        monkeypatch.setattr(selfdeblur, "deblur", deblur_or_die)
        with pytest.raises(RunError, match=r"1 run\(s\) failed.*seed1: the worker died \(killed by SIGKILL"):
            selfdeblur.run(tiny(tmp_path / "cut", seeds=(0, 1, 2), workers=2))
        folder = tmp_path / "cut" / "selfdeblur" / "study"
        assert [r["seed"] for r in rows_of(folder) if r["seed"]] == ["0", "2"]  # the others kept
        monkeypatch.setattr(selfdeblur, "deblur", original)
        calls = []
        counting(monkeypatch, calls)
        resumed = selfdeblur.run(tiny(tmp_path / "cut", seeds=(0, 1, 2), resume=True))
    finally:
        torch.set_num_threads(threads)
    assert calls == [1]
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(rows_of(resumed["folder"])) == strip(rows_of(whole["folder"]))
