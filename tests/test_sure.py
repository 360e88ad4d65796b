"""The SURE stopping rule (dipkit/stopping.py: Sure; dip_denoise.py --sure): Monte-Carlo SURE of the run's averaged
output, its divergence read off a twin run on y + εb. Checked against a closed form, against a separate run on
y + εb (the twin must be exactly that run, restores included), and against the run without it (the twin must
change nothing else)."""

import pytest
import torch

import dip_denoise
from dipkit import stopping
from dipkit.cli import make_config


def test_the_statistic_is_the_residual_less_sigma_squared_plus_the_divergence_term():
    """A twin whose average is the run's plus ε·a·b (the map's Jacobian a·I along b): the divergence estimate is
    a‖b‖², and SURE = ‖y − x̄‖²/n − σ² + 2σ²a‖b‖²/n."""
    generator = torch.Generator().manual_seed(0)
    noisy, average, probe = (torch.rand(1, 3, 8, 8, generator=generator) for _ in range(3))
    sigma, epsilon, a = 0.1, 0.01, 0.3
    twin_average = average + epsilon * a * probe
    rule = stopping.Sure(average, sigma, probe, epsilon, twin_average, patience=5)
    n = noisy.numel()
    expected = ((noisy - average) ** 2).sum() / n - sigma ** 2 + 2 * sigma ** 2 * a * (probe ** 2).sum() / n
    assert rule.value(0, average, average, noisy, average).item() == pytest.approx(expected.item(), rel=1e-5)


def synthetic(size=64):
    clean = torch.zeros(1, 3, size, size)
    clean[..., 16:48, 12:40] = 0.8
    clean[:, 1] += 0.3 * torch.linspace(0, 1, size)[None, :]
    return clean.clamp(0, 1)


def test_the_twin_is_the_run_on_y_plus_epsilon_b_and_changes_nothing_else(tiny_network, monkeypatch):
    """With the PSNR against every noisy image dropping by 20 dB at its 26th reading (each run goes back from
    iteration 30 to 20): the run with --sure restores once, its twin with it, and its SURE at the end equals the
    formula on its final average and that of a separate run on y + εb (which restores by itself at the same
    place); every other curve and choice equals the run without --sure, bit for bit."""
    real = stopping.psnr_on_device
    readings: dict[int, int] = {}

    def dropping(x, reference):
        value = real(x, reference)
        if reference.data_ptr() in noisy_pointers:
            count = readings[reference.data_ptr()] = readings.get(reference.data_ptr(), 0) + 1
            return value - 20 if count == 26 else value
        return value

    noisy_pointers: set[int] = set()
    original_start = dip_denoise.start

    def start(runs, config, device, twins=0):
        out = original_start(runs, config, device, twins)
        noisy_pointers.update(image.noisy.data_ptr() for image in out[3])
        readings.clear()
        return out

    monkeypatch.setattr(stopping, "psnr_on_device", dropping)
    monkeypatch.setattr(dip_denoise, "start", start)
    clean = synthetic()
    common = dict(quick=True, progress=False, iterations=60, checkpoint_every=10, stop_window=5, stop_patience=20,
                  noise_level=0.2)
    plain_config = make_config(dip_denoise.Config, **common)
    sure_config = make_config(dip_denoise.Config, **common, sure=True, sure_epsilon=0.5)
    noisy = dip_denoise.add_noise(clean, plain_config, 1)
    sigma = 0.2
    (with_sure,) = dip_denoise.denoise([dip_denoise.DIPRun(noisy, sure_config, clean, sigma)])
    (plain,) = dip_denoise.denoise([dip_denoise.DIPRun(noisy, plain_config, clean, sigma)])
    probe = dip_denoise.probe_of(noisy, sure_config)
    epsilon = 0.5 * sigma
    (separate,) = dip_denoise.denoise([dip_denoise.DIPRun(noisy + epsilon * probe, plain_config, clean, sigma)])
    assert with_sure.backtracks == plain.backtracks == separate.backtracks == 1
    assert with_sure.iterations_run == plain.iterations_run == 70
    for key, curve in plain.curves.items():
        torch.testing.assert_close(torch.tensor(with_sure.curves[key]), torch.tensor(curve), rtol=0, atol=0,
                                   equal_nan=True)
    for rule, choice in plain.choices.items():
        assert with_sure.choices[rule].iteration == choice.iteration
        assert torch.equal(with_sure.choices[rule].centred, choice.centred)
    assert torch.equal(with_sure.final_average, plain.final_average)
    average = plain.final_average.double()
    n = average.numel()
    divergence = (probe.double() * (separate.final_average.double() - average)).sum() / epsilon
    expected = ((noisy.double() - average) ** 2).sum() / n - sigma ** 2 + 2 * sigma ** 2 * divergence / n
    assert with_sure.curves["sure"][-1] == pytest.approx(expected.item(), rel=1e-4)
    assert with_sure.choices["sure"].iteration == min(range(60), key=lambda k: with_sure.curves["sure"][k])


def test_the_memory_estimate_counts_each_image_with_its_twin(monkeypatch):
    """images_of checks that one image fits before anything is written: with --sure, one image and its twin need
    what a batch of two images needs without it."""
    asked, batches = [], []
    monkeypatch.setattr(dip_denoise, "check_fits", lambda need, *rest: asked.append(need))
    monkeypatch.setattr(dip_denoise, "batch_that_fits", lambda need, *rest: batches.append(need(2)) or 2)
    sure = make_config(dip_denoise.Config, quick=True, progress=False, sure=True)
    dip_denoise.images_of(dip_denoise.check_config(sure), sure, torch.device("cpu"))
    pair = make_config(dip_denoise.Config, quick=True, progress=False, batch=2)
    dip_denoise.images_of(dip_denoise.check_config(pair), pair, torch.device("cpu"))
    assert asked[0] == pytest.approx(batches[0]) and asked[0] > asked[1]


def test_without_sigma_sure_is_refused_before_anything_runs():
    config = make_config(dip_denoise.Config, quick=True, progress=False, sure=True, sigma=None)
    noisy = torch.zeros(1, 3, 64, 64)  # a flat image: the σ estimate is 0
    with pytest.raises(dip_denoise.RunError, match="--sure needs σ"):
        dip_denoise.noise_sigma(noisy, config, "flat")
