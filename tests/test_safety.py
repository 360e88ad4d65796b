"""Nothing lost, nothing written where it should not be: run names, same-named inputs, damaged saved state, the
file system, devices, memory, Ray, merging, two processes on one run, Ctrl-C. Every refusal is one line on stderr,
exit code 2 and nothing written; every resume redoes what it cannot trust."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_STUDY
import torch
from PIL import Image

import ADP
import dip_denoise
import selfdeblur
from dipkit import blind, memory
from dipkit.cli import RunError, make_config, run_main
from dipkit.device import choose_device
from dipkit.networks import SkipNetwork
from dipkit.runs import new_run_folder, read_kept, start_run
from dipkit.sources import item_names
from dipkit.engine import make_runner

ROOT = Path(__file__).resolve().parents[1]


def refused_in_process(main, argv, message, capsys, results: Path) -> None:
    """main(argv) under run_main: exit code 2, one line on stderr holding `message`, nothing under `results`."""
    with pytest.raises(SystemExit) as stop:
        run_main(lambda: main([*argv, "--no-progress", "--results_dir", str(results)]))
    assert stop.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert not results.exists() or not any(results.rglob("*")), list(results.rglob("*"))


def save_picture(path: Path, size: int = 64, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, size)[None, :, None] * np.ones((size, 1, 3))
    Image.fromarray(np.clip(base + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)).save(path)
    return path


def tiny_study(tmp_path, **overrides):
    settings = dict(TINY_STUDY, results_dir=str(tmp_path), run_name="study")
    return make_config(selfdeblur.Config, **{**settings, **overrides})


# ---------------------------------------------------------------------------------------------------------------
# 1. Run names: one plain folder name


@pytest.mark.parametrize("name", ["../../../tmp/x", "/tmp/x", "a/b", "..", ".hidden", "a\\b", "tab\there", "x" * 201])
def test_a_run_name_with_a_path_or_too_long_is_refused_and_nothing_is_written(name, capsys, tmp_path):
    refused_in_process(ADP.main, ["--quick", "--run_name", name], "run_name", capsys, tmp_path / "results")
    assert not Path("/tmp/x").exists() or Path("/tmp/x").stat().st_mtime < time.time() - 60


def test_start_run_refuses_a_path_as_run_name_even_from_python(tmp_path):
    config = ADP.Config(results_dir=str(tmp_path / "results"), run_name="../escaped")
    with pytest.raises(RunError, match="one plain folder name"):
        start_run(config, "ADP", torch.device("cpu"))
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "results").exists()


def test_plain_run_names_are_taken():
    for name in ("lr_0.01", "SelfDeblur+pre,seed=1", "Brožová-2024", "a@b"):
        assert make_config(ADP.Config, run_name=name).run_name == name


# ---------------------------------------------------------------------------------------------------------------
# 2. Inputs with the same name get unique item names; the same input twice is refused


def test_item_names_tell_same_stem_files_apart_and_refuse_one_file_twice(tmp_path):
    a, b = save_picture(tmp_path / "a" / "rgb.png"), save_picture(tmp_path / "b" / "rgb.png")
    png, jpg = save_picture(tmp_path / "photo.png"), tmp_path / "photo.jpg"
    Image.open(png).save(jpg)
    assert item_names([a, b, png, jpg]) == ["a-rgb", "b-rgb", "photo-png", "photo-jpg"]
    assert item_names([a, png]) == ["rgb", "photo"]
    deeper = save_picture(tmp_path / "x" / "same" / "rgb.png")
    other = save_picture(tmp_path / "y" / "same" / "rgb.png")
    assert item_names([deeper, other]) == ["x-same-rgb", "y-same-rgb"]
    with pytest.raises(RunError, match="given twice"):
        item_names([a, tmp_path / "a" / ".." / "a" / "rgb.png"])


def test_dip_denoise_keeps_both_same_named_images_with_their_sources(tiny_dip, tmp_path, metrics_of):
    a, b = save_picture(tmp_path / "a" / "rgb.png", seed=1), save_picture(tmp_path / "b" / "rgb.png", seed=2)
    out = dip_denoise.run(tiny_dip(tmp_path, images=(str(a), str(b))))
    assert [row["image"] for row in out["table"]] == ["a-rgb", "b-rgb"]
    items = metrics_of(out["folder"], "dip_denoise")["items"]
    assert set(items) == {"a-rgb", "b-rgb"} and items["a-rgb"]["source"] == str(a.resolve())
    assert (out["folder"] / "a-rgb" / "denoised.png").is_file() and (out["folder"] / "b-rgb" / "denoised.png").is_file()


def test_a_folder_with_photo_png_and_photo_jpg_gives_two_items(tiny_dip, tmp_path):
    photos = tmp_path / "photos"
    Image.open(save_picture(photos / "photo.png")).save(photos / "photo.jpg")
    out = dip_denoise.run(tiny_dip(tmp_path, folder=str(photos)))
    assert sorted(row["image"] for row in out["table"]) == ["photo-jpg", "photo-png"]


def test_selfdeblur_photos_of_the_same_name_are_two_problems(tmp_path):
    a, b = save_picture(tmp_path / "a" / "rgb.png", seed=1), save_picture(tmp_path / "b" / "rgb.png", seed=2)
    problems = blind.problems_of(blurred=(str(a), str(b)), kernel_size=5)
    assert [p.name for p in problems] == ["a-rgb", "b-rgb"] and problems[0].source == str(a.resolve())


@pytest.mark.parametrize("argv, message", [
    (["--images", "camera", "camera"], "images lists 'camera' twice"),
    (["--seeds", "0", "0"], "seeds lists 0 twice"),
    (["--variants", "SelfDeblur", "SelfDeblur"], "variants lists 'SelfDeblur' twice"),
    (["--images", "camera", str(ROOT / "images" / "camera.png")], "given twice"),
])
def test_the_same_image_seed_or_variant_twice_is_refused(argv, message, capsys, tmp_path):
    refused_in_process(selfdeblur.main, ["--quick", *argv], message, capsys, tmp_path / "results")


def test_adp_keeps_every_same_named_image_in_metrics(tmp_path, metrics_of):
    a, b = save_picture(tmp_path / "a" / "rgb.png", 48, 1), save_picture(tmp_path / "b" / "rgb.png", 48, 2)
    config = make_config(ADP.Config, quick=True, height=24, width=20, upper_iterations=2, oracle_factors=(1.0,),
                         images=(str(a), str(b)), results_dir=str(tmp_path / "out"), progress=False)
    folder = ADP.run(config)["folder"]
    items = metrics_of(folder, "ADP")["items"]
    assert set(items) == {"a-rgb", "b-rgb"} and items["b-rgb"]["source"] == str(b.resolve())
    with (folder / "table.csv").open() as file:
        assert {row["image"] for row in csv.DictReader(file)} == {"a-rgb", "b-rgb"}


# ---------------------------------------------------------------------------------------------------------------
# 3. A resumed item must come from the same file


def test_dip_resume_redoes_an_image_whose_file_changed(tiny_dip, tmp_path, capsys):
    photo = save_picture(tmp_path / "in" / "camera.png", seed=1)
    first = dip_denoise.run(tiny_dip(tmp_path, images=(str(photo),)))
    save_picture(photo, seed=2)  # another picture under the same name
    again = dip_denoise.run(tiny_dip(tmp_path, images=(str(photo),), resume=True))
    out = capsys.readouterr().out
    assert "its input or settings changed since the earlier run" in out and "kept from the earlier run" not in out
    assert again["folder"] == first["folder"] and again["table"][0]["psnr_noisy"] != first["table"][0]["psnr_noisy"]
    unchanged = dip_denoise.run(tiny_dip(tmp_path, images=(str(photo),), resume=True))
    assert "kept from the earlier run" in capsys.readouterr().out
    assert unchanged["table"][0]["psnr_noisy"] == again["table"][0]["psnr_noisy"]


# ---------------------------------------------------------------------------------------------------------------
# 4. File-system problems where the run folder is made: one line, no hang


def test_a_results_path_through_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(RunError, match="cannot create the results folder .*Not a directory"):
        new_run_folder(tmp_path / "file" / "results", "ADP", "x")


def test_a_too_long_results_folder_is_refused(tmp_path):
    with pytest.raises(RunError, match="cannot create the results folder .*too long"):
        new_run_folder(tmp_path / ("x" * 300), "ADP", "x")


def test_a_broken_symbolic_link_in_the_results_path_is_refused_at_once(tmp_path):
    (tmp_path / "Results").symlink_to(tmp_path / "gone")
    start = time.perf_counter()
    with pytest.raises(RunError, match="broken symbolic link"):
        new_run_folder(tmp_path / "Results", "ADP", "x")
    assert time.perf_counter() - start < 5


def test_a_read_only_results_folder_is_one_line(tmp_path, monkeypatch, capsys):
    def read_only(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)  # as a chmod 555 folder behaves for a user who is not root
    with pytest.raises(SystemExit) as stop:
        run_main(lambda: ADP.main(["--quick", "--results_dir", str(tmp_path / "ro"), "--upper_iterations", "1"]))
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: cannot create the results folder")


# ---------------------------------------------------------------------------------------------------------------
# 5. Devices: only those the scripts run on


@pytest.mark.parametrize("device", ["meta", "xpu", "cuda:x", "cpu:0", "gpu"])
def test_unsupported_devices_are_refused_before_anything_is_written(device, capsys, tmp_path):
    refused_in_process(dip_denoise.main, ["--quick", "--device", device], "unknown device", capsys, tmp_path / "r")
    with pytest.raises(RunError, match="unknown device"):
        choose_device(device)


# ---------------------------------------------------------------------------------------------------------------
# 6. Empty image lists


@pytest.mark.parametrize("main", [ADP.main, dip_denoise.main])
def test_no_images_is_refused(main, capsys, tmp_path):
    refused_in_process(main, ["--quick", "--images"], "give at least one", capsys, tmp_path / "results")


# ---------------------------------------------------------------------------------------------------------------
# 7. Memory and size


def test_the_memory_estimate_covers_what_autograd_keeps_and_scales_with_the_pixels():
    net = SkipNetwork(8, 3, (16,) * 5, (16,) * 5, (4,) * 5)
    estimate = memory.training_footprint(net, 8)
    storages = {}

    def pack(tensor):
        storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = net(torch.rand(1, 8, 128, 160))
    saved = sum(storages.values())
    parameters = 4 * sum(p.numel() * p.element_size() for p in net.parameters())
    assert estimate.weights == parameters and saved <= estimate.bytes(128, 160) - parameters <= 2 * saved
    assert estimate.bytes(256, 320) - parameters == pytest.approx(4 * (estimate.bytes(128, 160) - parameters), rel=1e-6)
    # a batch of three: three runs' weights; their activations once in turn, three times under vmap
    activations = estimate.bytes(128, 160) - parameters
    assert estimate.bytes(128, 160, runs=3) == pytest.approx(3 * parameters + activations, rel=1e-6)
    assert estimate.bytes(128, 160, runs=3, at_once=3) == pytest.approx(3 * (parameters + activations), rel=1e-6)
    del out


def test_a_run_that_does_not_fit_is_refused_before_anything_is_written(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(memory, "available_bytes", lambda device: 8 * 2**20)
    refused_in_process(dip_denoise.main, ["--quick"], "needs about", capsys, tmp_path / "dip")
    refused_in_process(selfdeblur.main, ["--quick"], "needs about", capsys, tmp_path / "sdb")
    photo = save_picture(tmp_path / "photo.png", 128)
    refused_in_process(selfdeblur.main, ["--blurred", str(photo), "--kernel_size", "9"], "needs about", capsys,
                       tmp_path / "photo")


def test_an_image_far_smaller_than_the_size_asked_for_is_refused(capsys, tmp_path):
    tiny = tmp_path / "tiny.png"
    Image.fromarray(np.full((1, 1, 3), 128, np.uint8)).save(tiny)
    refused_in_process(ADP.main, ["--quick", "--images", str(tiny)], "too small", capsys, tmp_path / "results")


# ---------------------------------------------------------------------------------------------------------------
# 8. Damaged saved state


def test_a_damaged_config_json_stops_a_resume_with_one_line(tmp_path):
    folder = selfdeblur.run(tiny_study(tmp_path))["folder"]
    (folder / "config.json").write_text('{"config": {"iterations": 6')
    with pytest.raises(RunError, match="config.json is damaged"):
        selfdeblur.run(tiny_study(tmp_path, resume=True))
    (folder / "config.json").write_text('{"command": []}')
    with pytest.raises(RunError, match="config.json is damaged"):
        selfdeblur.run(tiny_study(tmp_path, resume=True))


def test_a_truncated_run_is_redone_and_said(tmp_path, capsys):
    first = selfdeblur.run(tiny_study(tmp_path))
    (kept,) = (first["folder"] / "units").glob("*.pt")
    kept.write_bytes(kept.read_bytes()[:100])
    again = selfdeblur.run(tiny_study(tmp_path, resume=True))
    assert "is damaged" in capsys.readouterr().out
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(again["rows"]) == strip(first["rows"])
    assert torch.load(kept, weights_only=True)["record"]["scores"]  # the redone run replaced the damaged file


def test_a_damaged_unit_of_dip_denoise_is_redone(tiny_dip, tmp_path, capsys):
    photo = save_picture(tmp_path / "in" / "a.png")
    first = dip_denoise.run(tiny_dip(tmp_path, images=(str(photo),)))
    (first["folder"] / "units" / "a.pt").write_bytes(b"PK\x03\x04 truncated")
    again = dip_denoise.run(tiny_dip(tmp_path, images=(str(photo),), resume=True))
    assert "a.pt is damaged" in capsys.readouterr().out
    assert again["table"][0]["image"] == "a" and torch.load(first["folder"] / "units" / "a.pt")["record"]["row"]


def test_a_truncated_noise_level_is_redone_not_kept(tmp_path, capsys):
    from dipkit.engine import Unit, run_units

    level = [Unit("noise_0.01", 0.01, "inputs")]
    (tmp_path / "units").mkdir()
    (tmp_path / "units" / "noise_0.01.pt").write_bytes(b"PK\x03\x04 truncated")
    computed = run_units(tmp_path, level, lambda tasks: [dict(results={"m": dict(psnr=[1.0])})], lambda u, r: r,
                         resume=True, expects=("results",))
    out = capsys.readouterr().out
    assert "is damaged" in out and "kept from" not in out and computed.records["noise_0.01"]["results"]["m"]["psnr"] == [1.0]
    kept = run_units(tmp_path, level, lambda tasks: pytest.fail("recomputed"), lambda u, r: r, resume=True,
                     expects=("results",))
    assert kept.records == computed.records and "kept from the earlier run" in capsys.readouterr().out


def test_read_kept_says_what_is_damaged(tmp_path):
    said = []
    (tmp_path / "x.json").write_text("{")
    assert read_kept(tmp_path / "x.json", lambda p: json.loads(p.read_text()), "item", said.append) is None
    assert read_kept(tmp_path / "none.json", json.loads, "item", said.append) is None
    assert len(said) == 1 and "x.json is damaged" in said[0]


# ---------------------------------------------------------------------------------------------------------------
# 9. Ray: an unreachable cluster is one line before anything is written


def test_an_unreachable_ray_cluster_is_refused_before_the_run_folder(capsys, tmp_path):
    pytest.importorskip("ray")
    with pytest.raises(RunError, match="cannot reach the Ray cluster"):
        make_runner(make_config(selfdeblur.Config, engine="ray", ray_address="127.0.0.1:9"))
    refused_in_process(selfdeblur.main, ["--quick", "--engine", "ray", "--ray_address", "127.0.0.1:9"],
                       "cannot reach the Ray cluster", capsys, tmp_path / "results")


# ---------------------------------------------------------------------------------------------------------------
# 10. Merging runs: nothing counted twice, nothing pooled that differs


def test_merging_keeps_the_run_and_keeps_apart_what_differs_or_repeats(tmp_path):
    from dipkit.compare import compare

    a = selfdeblur.run(tiny_study(tmp_path, run_name="a", seeds=(0,)))["folder"]
    b = selfdeblur.run(tiny_study(tmp_path, run_name="b", seeds=(1,)))["folder"]
    c = selfdeblur.run(tiny_study(tmp_path, run_name="c", seeds=(2,), iterations=9))["folder"]
    compare([str(a), str(b)], out=tmp_path / "m1", log=lambda line: None)
    with (tmp_path / "m1" / "summary.csv").open() as file:
        assert {row["variant"]: row["runs"] for row in csv.DictReader(file)}["SelfDeblur"] == "2"
    with (tmp_path / "m1" / "table.csv").open() as file:
        assert {row["run"] for row in csv.DictReader(file) if row["seed"]} == {"a", "b"}
    said = []
    compare([str(a), str(b), str(c)], out=tmp_path / "m2", log=said.append)
    with (tmp_path / "m2" / "summary.csv").open() as file:
        runs = {row["variant"]: row["runs"] for row in csv.DictReader(file) if "SelfDeblur" in row["variant"]}
    assert runs == {"SelfDeblur (a+b)": "2", "SelfDeblur (c)": "1"}
    assert sum("iterations 6 vs 9" in line for line in said) == 1
    again = selfdeblur.run(tiny_study(tmp_path, run_name="a2", seeds=(0,)))["folder"]
    said = []
    compare([str(a), str(again)], out=tmp_path / "m3", log=said.append)  # seed 0 twice: kept apart, said
    with (tmp_path / "m3" / "summary.csv").open() as file:
        assert {row["variant"] for row in csv.DictReader(file)} >= {"SelfDeblur", "SelfDeblur (a2)"}
    assert any("a2 holds runs (problem, seed) that a holds too" in line for line in said)
    with pytest.raises(RunError, match="already holds a comparison"):
        compare([str(a)], out=tmp_path / "m1")


# ---------------------------------------------------------------------------------------------------------------
# 11. Two processes on one run: the second is refused


def test_a_run_folder_in_use_by_another_process_is_refused(tmp_path):
    first = selfdeblur.run(tiny_study(tmp_path))["folder"]
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time; f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX); "
        "f.seek(0); f.truncate(); f.write(str(os.getpid())); f.flush(); print('held', flush=True); time.sleep(60)"),
        str(first / ".lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = (first / "config.json").read_text()
        with pytest.raises(RunError, match=f"in use by another process \\(pid {holder.pid}\\)"):
            selfdeblur.run(tiny_study(tmp_path, resume=True, seeds=(0, 1)))
        assert (first / "config.json").read_text() == before
    finally:
        holder.kill()
        holder.wait()
    assert selfdeblur.run(tiny_study(tmp_path, resume=True))["folder"] == first  # free again once it ends


# ---------------------------------------------------------------------------------------------------------------
# 12. Ctrl-C: one line saying what was kept and how to go on, exit code 130


@pytest.mark.parametrize("workers", [1, 2])
def test_ctrl_c_is_one_line_and_exit_code_130(workers, tmp_path):
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "selfdeblur.py"), "--quick", "--iterations", "100000", "--no-progress",
         "--seeds", "0", "1", "--workers", str(workers), "--results_dir", str(tmp_path), "--run_name", "cut"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        # a terminal's Ctrl-C: the run sees SIGINT even where the tests were started with it ignored (`... &`)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        config = tmp_path / "selfdeblur" / "cut" / "config.json"
        deadline = time.time() + 120
        while not config.exists() and time.time() < deadline and process.poll() is None:
            time.sleep(0.2)
        time.sleep(0.5)
        while workers > 1 and len(children_of(process.pid)) < workers + 1 and time.time() < deadline:
            time.sleep(0.2)  # the workers (and the pool's resource tracker) have started
        children = children_of(process.pid)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:  # a run that did not stop is not left running
        if process.poll() is None:
            for pid in children_of(process.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            process.kill()
            process.communicate()
    assert process.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "interrupted" in lines[0] and "--resume --run_name cut" in lines[0], lines
    alive = lambda: [pid for pid in children if Path(f"/proc/{pid}").exists()]  # noqa: E731
    deadline = time.time() + 15
    while alive() and time.time() < deadline:
        time.sleep(0.2)
    assert not alive(), [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in alive()]  # no worker left behind


def children_of(pid: int) -> list[int]:
    """The processes whose parent is `pid` (Linux's /proc; none elsewhere)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    return found
