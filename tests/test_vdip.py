import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import selfdeblur
import vdip
from dipkit import blind
from dipkit.cli import RunError, make_config
from dipkit.metrics import psnr


def moments_by_sampling(mu: float, sigma: float, bright: bool, n: int = 2_000_000):
    g = torch.Generator().manual_seed(0)
    x = mu + sigma * torch.randn(n, generator=g, dtype=torch.float64)
    values = (1 - x) ** 2 if bright else x**2
    return values.mean().item(), values.std().item()


# --- the variational objective ----------------------------------------------------------------------------------

@pytest.mark.parametrize("mu, sigma", [(0.2, 0.1), (0.8, 0.2), (0.5, 0.05)])
def test_extreme_channel_moments_match_monte_carlo_and_the_original_bright_variance_does_not(mu, sigma):
    t = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    for bright in (False, True):
        mean, std = vdip.squared_moments(t(mu), t(sigma), bright)
        mc_mean, mc_std = moments_by_sampling(mu, sigma, bright)
        assert mean.item() == pytest.approx(mc_mean, rel=2e-3)
        assert std.item() == pytest.approx(mc_std, rel=5e-3)
    _, original = vdip.squared_moments(t(mu), t(sigma), bright=True, original_variance=True)
    _, mc_std = moments_by_sampling(mu, sigma, bright=True)
    assert abs(original.item() - mc_std) > 0.1 * mc_std  # the code's 4σ² + 4μ²σ² + 2σ⁴ misses −8μσ²


def test_data_term_is_shans_weighted_sum_and_the_codes_extra_term_is_the_first_order_term_again():
    torch.manual_seed(0)
    x, y, k = torch.rand(1, 3, 20, 22, dtype=torch.float64), torch.rand(1, 3, 16, 18, dtype=torch.float64), \
        torch.rand(5, 5, dtype=torch.float64)
    r = blind.blur_valid(x, k) - y
    a = r.numpy()
    first = [np.diff(a, axis=2), np.diff(a, axis=3)]
    second = [np.diff(d, axis=ax) for d in first for ax in (2, 3)]
    expected = 0.5 * (a**2).sum() + 0.25 * sum((d**2).sum() for d in first) + 0.125 * sum((d**2).sum() for d in second)
    assert vdip.data_term(r, 3 * 20 * 22).item() == pytest.approx(expected / (3 * 20 * 22), rel=1e-12)
    # the original adds ¼ Σ_d ‖k ⋆ ∂_d x − ∂_d y‖²: the same as ¼ Σ_d ‖∂_d r‖², so its weight is doubled
    extra = sum((blind.blur_valid(dx, k) - dy).square().sum()
                for dx, dy in zip(vdip.differences(x), vdip.differences(y)))
    assert torch.allclose(extra, sum(d.square().sum() for d in vdip.differences(r)))
    doubled = vdip.data_term(r, 3 * 20 * 22, first_order_twice=True)
    assert doubled.item() == pytest.approx((expected + 0.25 * extra.item()) / (3 * 20 * 22), rel=1e-12)


def test_sparse_prior_has_the_gradient_of_a_log_prior_on_the_second_moments_of_the_gradients():
    torch.manual_seed(1)
    mu = torch.rand(1, 3, 9, 10, dtype=torch.float64, requires_grad=True)
    sigma = (0.1 * torch.rand(1, 3, 9, 10, dtype=torch.float64)).requires_grad_()
    vdip.sparse_prior(mu, sigma).backward()
    irls = mu.grad.clone(), sigma.grad.clone()
    mu.grad = sigma.grad = None
    # E[(x_i − x_j)²] by the formula, checked against sampling, then ¼ Σ log(E + 1e-6)
    g = torch.Generator().manual_seed(2)
    samples = mu.detach() + sigma.detach() * torch.randn(20000, 3, 9, 10, generator=g, dtype=torch.float64)
    log_prior = 0
    for d_mu, d_samples, var in zip(vdip.differences(mu), vdip.differences(samples),
                                    (sigma[..., 1:, :] ** 2 + sigma[..., :-1, :] ** 2,
                                     sigma[..., :, 1:] ** 2 + sigma[..., :, :-1] ** 2)):
        moment = d_mu**2 + var
        assert torch.allclose(moment[0], d_samples.square().mean(0), rtol=0.05, atol=1e-4)
        log_prior = log_prior + (moment + 1e-6).log().sum()
    (log_prior / (4 * 3 * 8 * 9)).backward()
    assert torch.allclose(irls[0], mu.grad) and torch.allclose(irls[1], sigma.grad)


def test_extreme_channel_is_the_codes_3d_min_pool_and_the_prior_is_a_log_prior_in_irls_form():
    torch.manual_seed(3)
    v = torch.rand(1, 3, 20, 23, dtype=torch.float64)
    direct = -F.max_pool3d(-v[:, None], (3, 7, 7), stride=1)[:, 0]
    assert torch.equal(vdip.extreme_channel(v, 7), direct)
    mu = torch.rand(1, 3, 20, 23, dtype=torch.float64, requires_grad=True)
    sigma = (0.1 * torch.rand(1, 3, 20, 23, dtype=torch.float64)).requires_grad_()
    torch.manual_seed(4)
    vdip.extreme_prior(mu, sigma, 7, 1e-6).backward()
    irls = mu.grad.clone()
    mu.grad = None
    torch.manual_seed(4)  # the same samples
    log_prior = 0
    for bright in (False, True):
        mean, std = vdip.squared_moments(mu, sigma, bright)
        channel = vdip.extreme_channel((mean + std * torch.randn_like(mean)).clamp(min=0), 7)
        log_prior = log_prior + (channel + 1e-6).log().sum()
    (log_prior / (4 * 14 * 17)).backward()
    assert torch.allclose(irls, mu.grad)


def test_the_fixed_extreme_prior_has_finite_gradients_where_the_original_had_none():
    mu = torch.rand(1, 3, 12, 12, requires_grad=True)
    sigma = torch.rand(1, 3, 12, 12)
    sigma[..., 4:8, 4:8] = 0  # a saturated sigmoid: σ is exactly 0 there
    sigma.requires_grad_()
    for bias, original in ((1e-45, True), (1e-6, False)):
        mu.grad = sigma.grad = None
        torch.manual_seed(5)
        vdip.extreme_prior(mu, sigma, 5, bias, original_numerics=original).backward()
        assert bool(torch.isfinite(sigma.grad).all()) == (not original)


def test_prior_weight_schedule_and_variants():
    make = lambda **kw: make_config(vdip.Config, **kw)  # noqa: E731
    sparse, extreme = make(), make(prior="extreme")
    assert [vdip.prior_weight(sparse, s) for s in (0, 999, 1000, 1999)] == pytest.approx([0.1, 0.1, 0.01, 0.01])
    assert vdip.prior_weight(extreme, 0) == pytest.approx(1e-4) and vdip.prior_weight(extreme, 1500) == pytest.approx(1e-5)
    variants = vdip.variant_configs(make(variants=("VDIP-Extreme", "SimplerSDB"), channels=32, iterations=700))
    assert variants["VDIP-Extreme"].prior == "extreme"
    simpler = variants["SimplerSDB"]
    assert isinstance(simpler, selfdeblur.Config) and simpler.simpler
    assert (simpler.channels, simpler.iterations) == (32, 700)  # this run's sizes and counts
    assert simpler.input_channels == 8 and simpler.pretrain_iterations == 0  # SelfDeblur's own


# --- runs -------------------------------------------------------------------------------------------------------

def test_pretraining_fits_the_mean_to_y_sigma_to_zero_and_the_kernel_to_flat():
    problem = blind.synthetic_problems(("camera",), (9,), size=64)[0]
    config = make_config(vdip.Config, quick=True, progress=False, pretrain_iterations=150, iterations=0,
                         curve_every=0)
    estimate = vdip.deblur(problem, config, seed=0)  # the state at the end of the pretraining
    assert psnr(estimate.image, problem.blurred) > 30
    assert estimate.extra["std"].max() < 0.05 and estimate.extra["std"].min() >= 0
    assert estimate.kernel.max() < 1.05 / 81 and estimate.kernel.min() > 0.95 / 81


def test_a_seed_repeats_and_the_original_counts_its_skipped_steps():
    problem = blind.synthetic_problems(("camera",), (9,), size=64)[0]
    config = make_config(vdip.Config, quick=True, progress=False, pretrain_iterations=2, iterations=8, curve_every=0,
                         prior="extreme")
    first, again = (vdip.deblur(problem, config, seed=1) for _ in range(2))
    assert torch.equal(first.image, again.image) and torch.equal(first.kernel, again.kernel)
    assert first.kernel.min() >= 0 and first.kernel.sum().item() == pytest.approx(1.0, abs=1e-5)
    original = vdip.deblur(problem, dataclasses.replace(config, original_bugs=vdip.ORIGINAL_BUGS), seed=1)
    assert set(original.stats) == {"skipped_steps"} and first.stats == {}


def test_vdip_extreme_raises_psnr_above_the_blurred_input_and_writes_the_std_figure(tmp_path):
    config = make_config(vdip.Config, quick=True, progress=False, results_dir=str(tmp_path), prior="extreme")
    result = vdip.run(config)
    rows = {r["variant"]: r for r in result["rows"]}
    assert rows["VDIP-Extreme"]["psnr_gt"] > rows["blurred input"]["psnr_gt"] + 1.0
    folder = result["folder"]
    for name in ("camera_k9.png", "camera_k9_kernels.png", "camera_k9_std.png", "curve.csv", "scatter.png",
                 "table.csv", "summary.csv", "estimates/camera_k9__VDIP-Extreme__seed0_std.png"):
        assert (folder / name).is_file(), name


def test_selfdeblur_and_vdip_variants_run_side_by_side(tmp_path):
    config = make_config(vdip.Config, quick=True, progress=False, results_dir=str(tmp_path), pretrain_iterations=2,
                         iterations=4, curve_every=2, variants=("SimplerSDB", "VDIP-Sparse", "VDIP-Extreme-orig"))
    result = vdip.run(config)
    assert [r["variant"] for r in result["rows"]] == ["blurred input", "known kernel", "SimplerSDB", "VDIP-Sparse",
                                                      "VDIP-Extreme-orig"]
    assert "skipped_steps" in result["rows"][-1]
    assert len(result["curves"]) == 6


def test_runs_made_apart_merge_into_one_table_with_the_baselines_once(tmp_path):
    from dipkit.runs import write_csv
    from dipkit.study import merge_runs
    baselines = [dict(problem="p", variant="blurred input", seed="", psnr_gt=20.0, psnr_nb=30.0, ssim=0.5)]
    for name, variant, values in (("a", "SelfDeblur", (24.0, 26.0)), ("b", "VDIP-Sparse", (25.0, 28.0))):
        (tmp_path / name).mkdir()
        runs = [dict(problem="p", variant=variant, seed=s, psnr_gt=v, psnr_nb=22.0, ssim=0.7, seconds=1.5)
                for s, v in enumerate(values)]
        write_csv(tmp_path / name / "table.csv", [{**r, "seconds": ""} for r in baselines] + runs)
    summary = {e["variant"]: e for e in merge_runs([tmp_path / "a", tmp_path / "b"], tmp_path / "both")}
    assert summary["blurred input"]["runs"] == 1
    assert summary["SelfDeblur"]["psnr_gt_mean"] == 25.0 and summary["VDIP-Sparse"]["psnr_gt_best_of_seeds"] == 28.0
    assert (tmp_path / "both" / "scatter.png").is_file()
    with pytest.raises(RunError, match="already holds"):
        merge_runs([tmp_path / "a"], tmp_path / "both")


@pytest.mark.parametrize("arguments, message", [
    (["--variants", "VDIP-Fancy"], "unknown variant"),
    (["--original_bugs", "typo"], "unknown original_bugs"),
    (["--quick", "--prior", "extreme", "--extreme_window", "99"], "exceeds"),
    (["--blurred", "no/such/photo.png", "--kernel_size", "9"], "not found"),
])
def test_bad_input_exits_with_code_2_and_writes_nothing(refused, arguments, message):
    refused("vdip.py", arguments, message)
