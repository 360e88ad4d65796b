"""One loop per network script: a batch of runs against the same runs alone (each a batch of one), SelfDeblur,
VDIP and DIP, step by step, with each speed switch, with a run that fails inside a batch, and a batched study cut
and resumed.

Tolerances follow from the precision of what is compared. On the CPU a batch's networks run in turn ("loop"):
each run computes exactly what it computes alone, the same float32 operations in the same order, so the tests ask
for equality up to float32's last bits (1e-6). The vectorised networks (vmap: grouped convolutions) sum in another
order; Adam's first steps, which move a parameter by about its learning rate whatever the size of its gradient,
amplify those last-bit differences within a few steps, so vmap is run in float64, where the same 20 steps agree to
1e-9; what a run keeps in float32 whatever the default precision (DIP's images and curves) is compared at float32's
1e-6."""

import csv
import dataclasses
import math

import pytest
from conftest import TINY_STUDY
import torch

import selfdeblur
import vdip
from dipkit import blind
from dipkit.batch import StackedNetworks
from dipkit.blind_loop import BlindRun
from dipkit.cli import RunError, make_config
from dipkit.errors import Failed

MODES = [("loop", torch.float32, 1e-6), ("vmap", torch.float64, 1e-9)]
FLOAT32 = 1e-6  # what is stored in float32, whatever the precision it was computed in


@pytest.fixture
def precision(request):
    """Sets torch's default dtype for the test (float64 for the vectorised runs), and back."""
    before = torch.get_default_dtype()
    yield lambda dtype: torch.set_default_dtype(dtype)
    torch.set_default_dtype(before)


def checksum(image, full=False):
    """A 'scorer' that reads each iteration's estimate: its sum, in double precision."""
    return dict(checksum=float(image.double().sum()))


def problem_in(dtype, size=64, kernel=9):
    problem = blind.synthetic_problems(("camera",), (kernel,), size=size)[0]
    return dataclasses.replace(problem, blurred=problem.blurred.to(dtype))


def alone(module, problem, config, seed):
    """A run alone: the script's one loop with a batch of one."""
    (estimate,) = module.deblur([BlindRun(problem, config, seed, checksum)])
    return estimate


def assert_same_run(alone, batched, rtol):
    """Every step's loss and estimate (checksum) and the final image and kernel of two runs agree to rtol."""
    assert len(alone.curve) == len(batched.curve) > 0
    for a, b in zip(alone.curve, batched.curve):
        assert a["iteration"] == b["iteration"]
        for key in ("loss", "checksum"):
            assert math.isclose(a[key], b[key], rel_tol=rtol, abs_tol=1e-12), (key, a, b)
    torch.testing.assert_close(batched.image, alone.image, rtol=rtol, atol=rtol)
    torch.testing.assert_close(batched.kernel, alone.kernel, rtol=rtol, atol=rtol)


def quick_selfdeblur(**overrides):
    return make_config(selfdeblur.Config, **{**dict(quick=True, progress=False, device="cpu", channels=16), **overrides})


@pytest.mark.parametrize("mode,dtype,rtol", MODES)
def test_selfdeblur_batch_of_three_seeds_equals_the_seeds_alone(mode, dtype, rtol, precision):
    precision(dtype)
    config = quick_selfdeblur(iterations=20, curve_every=1, batch_mode=mode)
    problem = problem_in(dtype)
    batched = selfdeblur.deblur([BlindRun(problem, config, seed, checksum) for seed in (0, 1, 2)])
    for seed, b in zip((0, 1, 2), batched):
        assert_same_run(alone(selfdeblur, problem, config, seed), b, rtol)
        assert b.stats["batch_size"] == 3


def test_selfdeblur_variants_differing_in_numbers_share_a_batch_and_keep_their_own():
    """Learning rates, β1, schedule, loss switch, pretraining weight and perturbation differ per run."""
    base = quick_selfdeblur(iterations=16, curve_every=1, pretrain_iterations=3)
    configs = [base, dataclasses.replace(base, lr_image=3e-3, beta1_image=0.99, milestones=(5, 9), gamma=0.3),
               dataclasses.replace(base, loss_switch=6, pretrain_alpha=0.5, reg_noise=0.01, lr_kernel=1e-3)]
    problem = problem_in(torch.float32)
    assert len({selfdeblur.batch_key(problem, c) for c in configs}) == 1
    batched = selfdeblur.deblur([BlindRun(problem, c, s, checksum) for c, s in zip(configs, [0, 0, 1])])
    for config, seed, b in zip(configs, [0, 0, 1], batched):
        assert_same_run(alone(selfdeblur, problem, config, seed), b, FLOAT32)


REFERENCE = dict(precision="float32", memory_format="contiguous")


@pytest.mark.parametrize("switch", [dict(memory_format="channels_last"), dict(precision="bf16")])
def test_each_speed_switch_means_the_same_alone_and_batched(switch):
    """A switch reaches the image network of a run alone and of each run of a batch alike (the runs in turn: the
    same operations as alone), and changes the run (so it did reach it); G_k runs without it either way."""
    problem = problem_in(torch.float32)
    config = quick_selfdeblur(iterations=8, curve_every=1, channels=8, **{**REFERENCE, **switch})
    batched = selfdeblur.deblur([BlindRun(problem, config, seed, checksum) for seed in (0, 1)])
    for seed, b in zip((0, 1), batched):
        assert_same_run(alone(selfdeblur, problem, config, seed), b, FLOAT32)
    plain = alone(selfdeblur, problem, dataclasses.replace(config, **REFERENCE), 0)
    if "precision" in switch:  # bfloat16 moves the run; channels-last is a layout and may not
        assert not torch.equal(plain.image, batched[0].image)


def test_the_switches_reach_the_image_network_only():
    problem = problem_in(torch.float32)
    runs = [BlindRun(problem, quick_selfdeblur(precision="bf16", memory_format="channels_last", channels=8), 0)]
    from dipkit.blind_loop import BlindRuns

    batch = BlindRuns(runs, selfdeblur.networks, torch.device("cpu"))
    assert batch.image_nets.bf16 and batch.image_nets.memory_format == torch.channels_last
    assert not batch.kernel_nets.bf16 and batch.kernel_nets.memory_format == torch.contiguous_format
    assert batch.kernel_nets(batch.z_k).dtype == torch.float32


@pytest.mark.parametrize("mode,dtype,rtol", MODES)
def test_vdip_batch_equals_the_runs_alone_with_skipped_nan_steps_per_run(mode, dtype, rtol, precision):
    """VDIP-Extreme as published (its NaN-gradient steps skipped, per run) beside the corrected VDIP-Sparse: 4
    pretraining steps, 10 ELBO steps, 6 steps of 1 − SSIM."""
    precision(dtype)
    base = make_config(vdip.Config, quick=True, progress=False, iterations=16, pretrain_iterations=4, loss_switch=10,
                       curve_every=1, device="cpu", batch_mode=mode, channels=16)
    configs = [dataclasses.replace(base, **vdip.VARIANTS[v]) for v in ("VDIP-Extreme-orig", "VDIP-Extreme-orig",
                                                                       "VDIP-Sparse")]
    problem = problem_in(dtype)
    batched = vdip.deblur([BlindRun(problem, c, s, checksum) for c, s in zip(configs, [0, 1, 0])])
    for config, seed, b in zip(configs, [0, 1, 0], batched):
        one = alone(vdip, problem, config, seed)
        assert_same_run(one, b, rtol)
        torch.testing.assert_close(b.extra["std"], one.extra["std"], rtol=rtol, atol=rtol)
        assert {k: v for k, v in b.stats.items() if k != "batch_size"} == one.stats


@pytest.mark.parametrize("mode,dtype,rtol", MODES)
def test_a_run_that_turns_nan_fails_alone_and_the_others_are_untouched(mode, dtype, rtol, precision):
    precision(dtype)
    config = quick_selfdeblur(iterations=12, curve_every=4, batch_mode=mode)
    good = problem_in(dtype)
    broken = good.blurred.clone()
    broken[..., 10, 10] = float("nan")
    bad = dataclasses.replace(good, name="broken", blurred=broken)
    batched = selfdeblur.deblur([BlindRun(p, config, s, checksum) for p, s in ((good, 0), (bad, 1), (good, 2))])
    assert isinstance(batched[1], Failed) and "loss became nan" in batched[1].message
    for seed, b in zip((0, 2), (batched[0], batched[2])):
        assert_same_run(alone(selfdeblur, good, config, seed), b, rtol)
    assert isinstance(selfdeblur.deblur([BlindRun(bad, config, 1)])[0], Failed)  # alone: the same failure


def rows_of(folder):
    with (folder / "table.csv").open() as file:
        return list(csv.DictReader(file))


def scores(rows):
    return [{k: v for k, v in r.items() if k not in ("seconds", "batch_size")} for r in rows]


def tiny(tmp_path, **overrides):
    settings = dict(TINY_STUDY, results_dir=str(tmp_path), run_name="study", seeds=(0, 1, 2))
    return make_config(selfdeblur.Config, **{**settings, **overrides})


def test_a_batched_study_gives_the_table_of_runs_alone_and_resumes_after_a_cut(tmp_path, monkeypatch):
    alone_rows = rows_of(selfdeblur.run(tiny(tmp_path / "alone"))["folder"])
    whole = selfdeblur.run(tiny(tmp_path / "whole", batch=2))
    assert scores(rows_of(whole["folder"])) == scores(alone_rows)
    assert [r["batch_size"] for r in rows_of(whole["folder"]) if r["seed"]] == ["2", "2", ""]  # seed 2 ran alone
    original, calls = selfdeblur.deblur, []

    def cut(runs):  # the process is stopped once the first batch is kept
        calls.append([run.seed for run in runs])
        if len(calls) > 1:
            raise KeyboardInterrupt
        return original(runs)

    monkeypatch.setattr(selfdeblur, "deblur", cut)
    with pytest.raises(KeyboardInterrupt):
        selfdeblur.run(tiny(tmp_path / "cut", batch=2))
    folder = tmp_path / "cut" / "selfdeblur" / "study"
    assert calls == [[0, 1], [2]] and sorted(p.name for p in (folder / "units").glob("*.pt")) == [
        "camera_k9__SelfDeblur__seed0.pt", "camera_k9__SelfDeblur__seed1.pt"]
    monkeypatch.setattr(selfdeblur, "deblur", original)
    resumed = selfdeblur.run(tiny(tmp_path / "cut", batch=3, resume=True))  # another batch size: the same runs
    assert scores(rows_of(resumed["folder"])) == scores(rows_of(whole["folder"]))


def test_a_failed_run_of_a_batched_study_is_named_and_the_others_are_kept(tmp_path, monkeypatch):
    original = selfdeblur.deblur

    def second_fails(runs):
        return [Failed("the loss became nan at iteration 3") if run.seed == 1 else outcome
                for run, outcome in zip(runs, original(runs))]

    monkeypatch.setattr(selfdeblur, "deblur", second_fails)
    with pytest.raises(RunError, match=r"1 run\(s\) failed.*seed1: the loss became nan"):
        selfdeblur.run(tiny(tmp_path, batch=3))
    folder = tmp_path / "selfdeblur" / "study"
    assert [r["seed"] for r in rows_of(folder) if r["seed"]] == ["0", "2"]
    assert not (folder / "units" / "camera_k9__SelfDeblur__seed1.pt").exists()
    assert (folder / "camera_k9.png").is_file() and not (folder / "metrics.json").exists()


def test_a_study_whose_every_run_fails_ends_with_one_error_and_keeps_its_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(selfdeblur, "deblur", lambda runs: [Failed("the loss became nan at iteration 3")] * len(runs))
    with pytest.raises(RunError, match=r"3 run\(s\) failed"):
        selfdeblur.run(tiny(tmp_path, batch=3))
    assert [r["seed"] for r in rows_of(tmp_path / "selfdeblur" / "study") if r["seed"]] == []


def test_a_batch_too_large_for_the_memory_is_split_with_one_line(tmp_path, monkeypatch, capsys):
    import dipkit.memory
    import dipkit.study

    footprint, h, w = selfdeblur.footprint(blind.synthetic_problems(("camera",), (9,), size=64)[0], tiny(tmp_path))
    one = footprint.bytes(h, w) + 64 * 64 * 64 * 4  # a run, and the scoring's images
    monkeypatch.setattr(dipkit.memory, "available_bytes", lambda device: int(one + 1.5 * footprint.weights))
    monkeypatch.setattr(dipkit.study, "check_fits", lambda *args: None)
    result = selfdeblur.run(tiny(tmp_path, batch=3))
    assert "batches of 2 instead" in capsys.readouterr().out  # the runs in turn: a second run adds its weights only
    assert [r.get("batch_size", "") for r in result["rows"] if r["seed"] != ""] == [2, 2, ""]


def test_the_vectorised_networks_follow_the_speed_switches():
    """bf16 runs the stacked networks in bfloat16 (both ways) and hands back the inputs' precision; channels-last
    gives the runs in turn their reference result."""
    torch.manual_seed(0)
    net = selfdeblur.networks(make_config(selfdeblur.Config, quick=True), (9, 9))[0]
    z = torch.rand(1, 1, 8, 64, 64)
    for vectorise in (False, True):
        plain = StackedNetworks([net], torch.device("cpu"), vectorise)(z)
        bf16 = StackedNetworks([net], torch.device("cpu"), vectorise, bf16=True)(z)
        assert bf16.dtype == torch.float32 and 0 < (bf16 - plain).abs().max() < 0.05
    last = StackedNetworks([net], torch.device("cpu"), False, channels_last=True)(z)
    torch.testing.assert_close(last, plain, rtol=1e-4, atol=1e-5)


def small_skip_network(input_depth, channels):
    from dipkit.networks import SkipNetwork

    return SkipNetwork(input_depth, channels, (16,) * 3, (16,) * 3, (4,) * 3, (False,) * 3)


@pytest.mark.parametrize("mode,dtype", [(mode, dtype) for mode, dtype, _ in MODES])
def test_dip_batch_of_three_images_equals_each_alone_with_its_own_backtracking(mode, dtype, precision, monkeypatch):
    """Three images, 20 steps; any PSNR drop restores the checkpoint (at most twice), so the runs go back to their
    checkpoints at their own times while the others go on; each run's curves, rule, restores and images are its
    run's alone. The images and curves are float32 whatever the network's precision: compared at FLOAT32."""
    import dip_denoise
    from dipkit.stopping import candidates

    precision(dtype)
    monkeypatch.setattr(dip_denoise, "SkipNetwork", small_skip_network)
    config = make_config(dip_denoise.Config, quick=True, progress=False, iterations=20, input_depth=8,
                         checkpoint_every=5, stop_window=4, stop_patience=6, backtrack_drop=1e-6, max_restores=2,
                         learning_rate=0.05, device="cpu", batch_mode=mode)
    cleans = [dip_denoise.load_clean(name, config).to(dtype) for name in ("astronaut", "coffee", "chelsea")]
    runs = [dip_denoise.DIPRun(dip_denoise.add_noise(c, config, i), config, c) for i, c in enumerate(cleans)]
    batched = dip_denoise.denoise(runs)
    restores = []
    for run, b in zip(runs, batched):
        (a,) = dip_denoise.denoise([run])
        for key, curve in a.curves.items():
            torch.testing.assert_close(torch.tensor(b.curves[key]), torch.tensor(curve), rtol=FLOAT32, atol=FLOAT32,
                                       equal_nan=True)
        for name in ("denoised", "final_output", "final_average"):
            torch.testing.assert_close(getattr(b, name), getattr(a, name), rtol=FLOAT32, atol=FLOAT32)
        for candidate in candidates(list(a.choices)):
            torch.testing.assert_close(b.image(candidate), a.image(candidate), rtol=FLOAT32, atol=FLOAT32)
        assert {rule: (c.iteration, c.fired_iteration) for rule, c in b.choices.items()} == {
            rule: (c.iteration, c.fired_iteration) for rule, c in a.choices.items()}
        assert (b.backtracks, b.iterations_run) == (a.backtracks, a.iterations_run)
        restores.append(a.backtracks)
    assert any(restores)  # the backtracking was exercised


def test_dip_denoise_batched_run_writes_the_table_of_runs_alone(tmp_path, tiny_dip):
    import dip_denoise

    images = ("astronaut", "coffee", "chelsea")
    alone_run = dip_denoise.run(tiny_dip(tmp_path / "alone", images=images))
    batched = dip_denoise.run(tiny_dip(tmp_path / "batched", images=images, batch=2))
    strip = lambda rows: [{k: v for k, v in r.items() if "seconds" not in k} for r in rows]  # noqa: E731
    assert strip(batched["table"]) == strip(alone_run["table"])
    assert sorted(p.name for p in (batched["folder"] / "units").glob("*.pt")) == [f"{i}.pt" for i in sorted(images)]


def test_a_dip_image_that_stops_early_in_a_batch_books_only_its_own_time(tmp_path, tiny_dip, monkeypatch):
    """The runs' seconds add up to the batch's time; a run that stops early (its rule fired, no clean image) is
    charged less than one that goes on."""
    import dip_denoise

    config = tiny_dip(tmp_path, iterations=400, checkpoint_every=10, stop_window=4, stop_patience=4,
                      stop_rule="es_wmv_average")
    noisy = dip_denoise.load_clean("astronaut", config)
    runs = [dip_denoise.DIPRun(noisy, config), dip_denoise.DIPRun(noisy, config, noisy)]  # the first: no clean image
    first, second = dip_denoise.denoise(runs)
    assert first.iterations_run < second.iterations_run == 400
    assert 0 < first.seconds < second.seconds


LEVIN = __import__("pathlib").Path(__file__).resolve().parents[2] / "shared" / "data" / "levin"


@pytest.mark.skipif(not (LEVIN / "gt").is_dir(), reason="Levin's benchmark is not at ../shared/data/levin")
def test_levins_images_batch_by_kernel_size(tmp_path):
    """Levin's images of one kernel (one size) share a batch; kernels 7 and 8 (both 21x21) too; others apart."""
    config = tiny(tmp_path, levin_dir=str(LEVIN), only=("im1_kernel1", "im2_kernel1", "im1_kernel7", "im1_kernel8",
                                                           "im1_kernel2"), seeds=(0,), iterations=2, batch=8,
                  known_kernel_iterations=5)  # a quicker known-kernel row: batching is what counts
    rows = [r for r in selfdeblur.run(config)["rows"] if r["seed"] != ""]
    assert {r["problem"]: r.get("batch_size", 1) for r in rows} == dict(
        im1_kernel1=2, im2_kernel1=2, im1_kernel7=2, im1_kernel8=2, im1_kernel2=1)
