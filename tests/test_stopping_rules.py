"""The stopping rules of dipkit.stopping, each against an independent statement of its idea: ES-EMV against the
official notebook's EWMVar written in NumPy, the discrepancy principle and the whiteness measure against their
definitions, the σ estimate against the noise it was given, and a restore that leaves no trace."""

import numpy as np
import pytest
import torch

import dip_denoise
from dipkit import stopping
from dipkit.cli import make_config

FLOAT32 = 1e-5  # relative precision of float32 sums over a few thousand values


def stream(n=60, shape=(1, 3, 8, 8), seed=0):
    """Outputs that settle towards an image and then wander off: a variance with a minimum in the middle."""
    generator = torch.Generator().manual_seed(seed)
    target = torch.rand(shape, generator=generator)
    outs = []
    for k in range(n):
        spread = 0.5 * abs(k - n / 2) / n + 0.01
        outs.append((target + spread * torch.randn(shape, generator=generator)).clamp(0, 1))
    return outs


class NotebookEWMVar:
    """sun-umn/Early_Stopping_for_DIP, ES_EMV.ipynb's EWMVar and its loop (check_stop after iteration `start`),
    in NumPy; ‖δ‖² there is a sum over every value."""

    def __init__(self, alpha, patience):
        self.alpha, self.patience = alpha, patience
        self.wait, self.best, self.best_epoch, self.stop, self.ema, self.emv = 0, float("inf"), 0, False, None, None

    def update(self, image, epoch):
        if epoch == 0:
            self.ema, self.emv = image, 0.0
        else:
            delta = image - self.ema
            self.ema = np.clip(self.ema + self.alpha * delta, 0, 1)
            self.emv = (1 - self.alpha) * (self.emv + self.alpha * np.linalg.norm(delta) ** 2)

    def check(self, epoch):
        if self.emv < self.best:
            self.best, self.best_epoch, self.wait = self.emv, epoch, 0
        else:
            self.wait += 1
            self.stop = self.wait >= self.patience


def test_the_stop_rule_choices_are_the_candidates_the_rules_give():
    import typing

    assert typing.get_args(typing.get_type_hints(dip_denoise.Config)["stop_rule"]) == stopping.CANDIDATES


def test_es_emv_follows_the_official_notebook():
    outs, start, patience = stream(), 10, 8
    rule = stopping.ExponentialVariance(outs[0], alpha=0.1, start=start, patience=patience)
    reference = NotebookEWMVar(0.1, patience)
    fired = None
    for i, out in enumerate(outs):
        value = rule.observe(i, out, out, out)
        reference.update(out.double().numpy().reshape(-1), i)
        if i > start:
            assert value.item() * out.numel() == pytest.approx(reference.emv, rel=FLOAT32)
            if not reference.stop:
                reference.check(i)
                fired = i if reference.stop else None
        else:
            assert value is None
        if i == reference.best_epoch and i > start:
            best_ema = reference.ema.copy()
    assert fired is not None  # the stream fires: the patience case is exercised
    assert rule.choice.item() == reference.best_epoch and rule.fired_at.item() == fired
    np.testing.assert_allclose(rule.image.numpy().reshape(-1), best_ema, rtol=0, atol=1e-6)


def test_the_discrepancy_principle_stops_at_the_first_residual_below_tau_sigma_squared():
    noisy = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    distances = [0.5, 0.3, 0.2, 0.11, 0.09, 0.3, 0.05]  # the average at k: noisy + distances[k]
    rule = stopping.Discrepancy(noisy, sigma=0.1, tau=1.0)
    for i, d in enumerate(distances):
        average = noisy + d
        assert rule.observe(i, average, average, noisy).item() == pytest.approx(d ** 2, rel=FLOAT32)
    assert rule.choice.item() == rule.fired_at.item() == 4  # 0.09² ≤ 0.1², first; the later 0.05 changes nothing
    assert torch.equal(rule.image, noisy + 0.09) and torch.equal(rule.average, noisy + 0.09)
    never = stopping.Discrepancy(noisy, sigma=0.1, tau=0.5)
    for i, d in enumerate(distances[:5]):
        never.observe(i, noisy + d, noisy + d, noisy)
    assert never.choice.item() == never.fired_at.item() == -1


def test_the_whiteness_measure_is_its_definition_and_tells_noise_from_structure():
    generator = torch.Generator().manual_seed(2)
    noise = torch.randn(1, 3, 64, 64, generator=generator, dtype=torch.float64)
    r = noise[0].numpy()
    expected = []
    for c in r:
        c = c - c.mean()
        across = (c[:, 1:] * c[:, :-1]).sum() / (c * c).sum()
        down = (c[1:, :] * c[:-1, :]).sum() / (c * c).sum()
        expected.append((across ** 2 + down ** 2) / 2)
    assert stopping.residual_correlation(noise).item() == pytest.approx(np.mean(expected), rel=1e-12)
    assert stopping.residual_correlation(noise).item() < 10 / 64 ** 2  # white: ρ ~ 1/√n
    smooth = torch.nn.functional.avg_pool2d(noise, 5, stride=1, padding=2)
    assert stopping.residual_correlation(smooth).item() > 0.5


@pytest.mark.parametrize("sigma", [10 / 255, 25 / 255])
def test_the_sigma_estimate_finds_the_noise_of_a_smooth_image(sigma):
    t = torch.linspace(0, 1, 128)
    clean = (0.3 + 0.4 * t[None, :] * t[:, None]).expand(1, 3, 128, 128)
    noisy = clean + sigma * torch.randn(clean.shape, generator=torch.Generator().manual_seed(3))
    assert stopping.estimate_sigma(noisy) == pytest.approx(sigma, rel=0.05)  # 3 × 4096 coefficients: ~2 % spread


def test_a_restore_leaves_every_rule_as_if_the_undone_iterations_never_came():
    outs, noisy = stream(40), stream(1, seed=5)[0]

    def rules():
        return stopping.make_rules(outs[0], window=5, patience=6, emv_alpha=0.1, sigma=0.2, tau=1.0, ema=0.75)

    def trackers():
        return stopping.Trackers(outs[0], rules(), 40)

    straight, detour = trackers(), trackers()
    for i in range(40):
        straight.observe(i, outs[i], outs[i], noisy, None)
    for i in range(20):
        detour.observe(i, outs[i], outs[i], noisy, None)
    saved = detour.checkpoint()
    for i in range(20, 30):  # iterations undone: other outputs
        detour.observe(i, 1 - outs[i], 1 - outs[i], noisy, None)
    detour.restore(saved)
    for i in range(20, 40):
        detour.observe(i, outs[i], outs[i], noisy, None)
    for key, curve in straight.curves.items():
        torch.testing.assert_close(detour.curves[key], curve, equal_nan=True)
    for name, rule in straight.rules.items():
        other = detour.rules[name]
        assert (other.choice.item(), other.fired_at.item()) == (rule.choice.item(), rule.fired_at.item()), name
        assert torch.equal(other.image, rule.image) and torch.equal(other.centred, rule.centred), name
        assert other.centred_for.item() == rule.centred_for.item() == rule.choice.item(), name  # lag 3 reached


def test_the_centred_average_is_the_average_a_mean_age_after_the_choice_and_follows_a_later_choice():
    assert stopping.average_lag(0.99) == 99 and stopping.average_lag(0.9) == 9 and stopping.average_lag(0.0) == 0
    noisy = torch.zeros(1, 1, 2, 2)
    values = [5, 4, 3, 4, 5, 6, 2, 3, 4, 5, 6, 7]  # minima at 2, then at 6 (patience 4: not fired before 6)
    rule = stopping.Whiteness(noisy, patience=4, lag=2)
    rule.value = lambda i, out, average, noisy, fit: torch.tensor(float(values[i]))
    averages = [torch.full((1, 1, 2, 2), float(k)) for k in range(len(values))]  # the average at k holds k
    for i, average in enumerate(averages[:8]):
        rule.observe(i, average, average, noisy)
    assert rule.choice.item() == 6 and rule.centred_for.item() == 2  # taken at 4 for the first choice; 8 not yet
    unreached = rule.chosen(7, averages[7], averages[7])
    assert unreached.iteration == 6 and unreached.centred_iteration == 7 and unreached.centred.mean().item() == 7
    for i in range(8, len(values)):
        rule.observe(i, averages[i], averages[i], noisy)
    choice = rule.chosen(len(values) - 1, averages[-1], averages[-1])
    assert (choice.iteration, choice.fired_iteration, choice.centred_iteration) == (6, 10, 8)
    assert choice.average.mean().item() == 6 and choice.centred.mean().item() == 8


@pytest.mark.parametrize("candidate", ["discrepancy", "discrepancy_centred"])
def test_the_stop_rule_gives_denoised_png_and_stops_the_run(tiny_network, candidate):
    clean = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    config = make_config(dip_denoise.Config, quick=True, progress=False, iterations=200, checkpoint_every=10,
                         stop_window=5, stop_patience=20, stop_rule=candidate, sigma=0.2936, learning_rate=0.05,
                         ema=0.9)
    noisy = dip_denoise.add_noise(clean, config, 1)
    (result,) = dip_denoise.denoise([dip_denoise.DIPRun(noisy, config, None, sigma=0.2936)])  # τσ² 0.0862: it. ~90
    choice = result.choices["discrepancy"]
    assert result.stop is choice and choice.fired
    if candidate == "discrepancy":
        assert torch.equal(result.denoised, choice.average)
        assert result.iterations_run == (choice.fired_iteration // 10 + 1) * 10  # the first checkpoint after it fired
    else:  # the run goes on to the average centred on the choice (9 iterations later) and stops after it
        assert torch.equal(result.denoised, choice.centred) and choice.centred_iteration == choice.iteration + 9
        assert result.iterations_run == ((choice.iteration + 9) // 10 + 1) * 10
    residual = result.curves["residual"]
    assert residual[choice.iteration] <= 0.2936 ** 2 < min(residual[: choice.iteration])


def test_a_photo_without_a_clean_image_stops_at_its_rule_and_writes_every_file(tiny_dip, tmp_path):
    """No clean image (--no-add_noise): the run ends once the stop rule's centred average is reached, and the
    figures (whose first row is shorter than the rules' rows) and tables are written. (The one-layer network never
    brings the residual down to σ², so the rule here is the whiteness's, which fires.)"""
    from PIL import Image

    photo = tmp_path / "photo.png"
    noisy = dip_denoise.add_noise(torch.full((1, 3, 64, 64), 0.5), make_config(dip_denoise.Config), 1)
    Image.fromarray((noisy[0].permute(1, 2, 0).numpy() * 255).round().astype("uint8")).save(photo)
    out = dip_denoise.run(tiny_dip(tmp_path, images=(str(photo),), add_noise=False, iterations=400, ema=0.9,
                                   checkpoint_every=10, stop_rule="whiteness_centred"))
    (row,) = out["table"]
    assert row["whiteness_fired"] and "psnr_oracle" not in row
    assert row["whiteness_centred_iteration"] == row["whiteness_iteration"] + 9
    assert row["iterations_run"] == (row["whiteness_centred_iteration"] // 10 + 1) * 10 < 400
    assert row["sigma"] == row["sigma_estimate"] and row["sigma_true"] is None
    for name in ("photo/DIP.png", "photo/curve.png", "photo/curve.csv", "photo/denoised.png", "table.csv"):
        assert (out["folder"] / name).stat().st_size > 0, name


@pytest.mark.parametrize(
    "arguments, message",
    [(["--sigma", "0"], "sigma must be in"), (["--sigma", "-0.1"], "sigma must be in"),
     (["--stop_rule", "oracle"], "stop_rule"),
     (["--stop_rule", "discrepancy", "--no-estimate_sigma"], "stop_rule discrepancy needs σ"),
     (["--no-estimate_sigma"], "stop_rule discrepancy_centred needs σ")],  # the default rule
)
def test_bad_stopping_input_exits_with_code_2_and_one_line(refused, arguments, message):
    refused("dip_denoise.py", ["--quick", *arguments], message)
