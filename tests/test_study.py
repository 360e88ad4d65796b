"""Studies that lose nothing: each finished run kept at once, --resume, and runs in worker processes."""

import csv
import json

import pytest
import torch

import selfdeblur
from dipkit.cli import RunError, make_config
from dipkit.engines import pool_runner
from dipkit.study import Scoring, run_study
from dipkit import blind


def tiny(tmp_path, **overrides):
    settings = dict(quick=True, progress=False, results_dir=str(tmp_path), iterations=6, curve_every=3, channels=8,
                    run_name="study")
    return make_config(selfdeblur.Config, **{**settings, **overrides})


def rows_of(folder):
    with (folder / "table.csv").open() as file:
        return list(csv.DictReader(file))


def test_resume_keeps_the_finished_run_and_adds_the_missing_one(tmp_path, monkeypatch):
    first = selfdeblur.run(tiny(tmp_path, seeds=(0,)))
    seed0 = [r for r in rows_of(first["folder"]) if r["seed"] == "0"]
    calls = []
    original = selfdeblur.deblur
    monkeypatch.setattr(selfdeblur, "deblur", lambda p, c, seed, s: calls.append(seed) or original(p, c, seed, s))
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


def test_a_killed_study_keeps_every_finished_run_and_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    whole = selfdeblur.run(tiny(tmp_path / "whole", seeds=(0, 1)))
    original, count = selfdeblur.deblur, []

    def dies_on_the_second_run(problem, config, seed, scorer):
        if count:
            raise KeyboardInterrupt  # the process is stopped while the second run is in flight
        count.append(seed)
        return original(problem, config, seed, scorer)

    monkeypatch.setattr(selfdeblur, "deblur", dies_on_the_second_run)
    with pytest.raises(KeyboardInterrupt):
        selfdeblur.run(tiny(tmp_path / "cut", seeds=(0, 1)))
    folder = tmp_path / "cut" / "selfdeblur" / "study"
    assert [r["seed"] for r in rows_of(folder) if r["seed"]] == ["0"]  # the finished run's row is on disk
    assert not list((folder / "runs").glob("*.partial"))
    monkeypatch.setattr(selfdeblur, "deblur", original)
    resumed = selfdeblur.run(tiny(tmp_path / "cut", seeds=(0, 1), resume=True))
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(rows_of(resumed["folder"])) == strip(rows_of(whole["folder"]))


def test_runs_in_two_worker_processes_equal_the_runs_here_with_the_same_threads(tmp_path):
    problems = blind.synthetic_problems(("camera",), (9,), size=64)
    config = tiny(tmp_path)
    variants = {"SelfDeblur": config}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        here = run_study(problems, variants, (0, 1), selfdeblur.deblur, _folder(tmp_path, "here"), Scoring(8, 4),
                         log=lambda line: None)
    finally:
        torch.set_num_threads(threads)
    there = run_study(problems, variants, (0, 1), selfdeblur.deblur, _folder(tmp_path, "pool"), Scoring(8, 4),
                      log=lambda line: None, runner=pool_runner(2, threads=1))
    for a, b in zip(here["rows"], there["rows"]):
        assert (a["variant"], a["seed"]) == (b["variant"], b["seed"])
        assert a["psnr_gt"] == pytest.approx(b["psnr_gt"], abs=1e-6)


def _folder(tmp_path, name):
    folder = tmp_path / name
    folder.mkdir()
    return folder


def test_runs_on_a_local_ray_with_two_workers_equal_the_runs_here_and_resume_across_engines(tmp_path):
    pytest.importorskip("ray")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a Ray task with one CPU
    try:
        here = selfdeblur.run(tiny(tmp_path / "here", seeds=(0, 1)))
    finally:
        torch.set_num_threads(threads)
    first = selfdeblur.run(tiny(tmp_path / "ray", seeds=(0,), engine="ray", workers=2))
    both = selfdeblur.run(tiny(tmp_path / "ray", seeds=(0, 1), engine="ray", workers=2, resume=True))
    assert both["folder"] == first["folder"]
    for a, b in zip(here["rows"], both["rows"]):
        assert (a["variant"], a["seed"]) == (b["variant"], b["seed"])
        assert a["psnr_gt"] == pytest.approx(b["psnr_gt"], abs=1e-6)


@pytest.mark.parametrize("script", ["selfdeblur", "vdip"])
def test_the_speed_switches_run_and_keep_the_result(script, tmp_path):
    module = __import__(script)
    problem = blind.synthetic_problems(("camera",), (9,), size=64)[0]
    base = make_config(module.Config, quick=True, progress=False, iterations=8, curve_every=0, channels=8,
                       **({"pretrain_iterations": 2} if script == "vdip" else {}))
    reference = module.deblur(problem, base, seed=0)
    import dataclasses
    from dipkit.metrics import psnr
    truth = problem.truth
    for switches, tolerance in ((dict(channels_last=True), 0.1), (dict(bf16=True), 1.0)):  # dB after 8 steps; the
        # benches hold the switches to 0.1 dB after a full budget
        fast = module.deblur(problem, dataclasses.replace(base, **switches), seed=0)
        assert fast.image.dtype == torch.float32 and torch.isfinite(fast.image).all()
        assert psnr(fast.image, truth) == pytest.approx(psnr(reference.image, truth), abs=tolerance), switches


def test_the_packing_benchmark_runs_every_packed_run_and_reports_its_times(tmp_path, monkeypatch):
    from pathlib import Path
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent / "bench"))
    from common import packing_row
    problem = blind.synthetic_problems(("camera",), (9,), size=64)[0]
    row = packing_row(selfdeblur.deblur, problem, tiny(tmp_path, curve_every=0), runs=2, iterations=3, device="cpu")
    assert row["runs"] == 2 and row["iterations"] == 3
    assert 0 < row["alone_run_seconds"] < row["alone_wall_seconds"]  # the run's own time inside the process's
    assert 0 < row["packed_run_seconds"] < row["packed_wall_seconds"]
    assert row["wall_ratio"] == pytest.approx(row["packed_wall_seconds"] / row["alone_wall_seconds"])
    assert row["throughput_gain"] == pytest.approx(2 / row["wall_ratio"])


def test_the_constants_selfdeblur_and_vdip_share_keep_one_default_and_range():
    """Each script keeps its whole constants block at its top; what the two share must not drift apart."""
    import dataclasses

    import vdip
    from dipkit.cli import field_comments
    from dipkit.study import SHARED_CONSTANTS, StudyConstants

    fields = [{f.name: f for f in dataclasses.fields(c)} for c in (selfdeblur.Config, vdip.Config)]
    comments = [field_comments(c) for c in (selfdeblur.Config, vdip.Config)]
    for name in SHARED_CONSTANTS:
        a, b = (f[name] for f in fields)
        assert (a.type, a.default, a.default_factory) == (b.type, b.default, b.default_factory), name
        assert selfdeblur.Config.LIMITS.get(name) == vdip.Config.LIMITS.get(name), name
        assert selfdeblur.Config.QUICK.get(name) == vdip.Config.QUICK.get(name), name
        assert comments[0][name] and comments[1][name], name  # each documented where it is set
    assert set(StudyConstants.__annotations__) <= set(SHARED_CONSTANTS) | {"resume"}  # what dipkit reads is shared


def test_a_bad_input_error_in_a_ray_task_is_not_retried(monkeypatch):
    """Ray retries a task that raises; a RunError (bad input) comes back as the task's result instead, once."""
    import types

    from dipkit import engines

    class EagerRay:  # runs each task at once; its "object reference" is the result
        def remote(self, **options):
            self.options = options
            return lambda function: types.SimpleNamespace(remote=lambda *arguments: function(*arguments))

        def wait(self, pending, num_returns):
            return pending[:1], pending[1:]

        def get(self, reference):
            return reference

    calls = []

    def refuses(problem, config, seed, scorer):
        calls.append(seed)
        raise RunError("the kernel is larger than the image")

    ray = EagerRay()
    monkeypatch.setattr(engines, "connect_ray", lambda workers, address: (ray, False))
    problem = blind.synthetic_problems(("camera",), (9,), size=64)[0]
    runner = engines.ray_runner(workers=1, retries=3)
    with pytest.raises(RunError, match="^the kernel is larger than the image$"):
        list(runner([engines.Job(problem, "SelfDeblur", None, 0)], refuses, {problem.name: None}))
    assert calls == [0] and ray.options["max_retries"] == 3  # a crashed worker is still retried by Ray
