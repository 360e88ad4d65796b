import csv
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import selfdeblur  # the test of the two scripts' runs merged side by side
import vdip
from dipkit import blind
from dipkit.batch import StackedAdam
from dipkit.blind_loop import BlindRun, only_run
from dipkit.cli import RunError, make_config
from dipkit.metrics import psnr
from dipkit.tv import forward_differences


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


def test_data_term_is_shans_weighted_sum_and_the_codes_is_one_switch_per_doubled_term():
    torch.manual_seed(0)
    x, y, k = torch.rand(1, 3, 20, 22, dtype=torch.float64), torch.rand(1, 3, 16, 18, dtype=torch.float64), \
        torch.rand(5, 5, dtype=torch.float64)
    r = blind.blur_valid(x, k) - y
    a = r.numpy()
    sq = lambda d: (d**2).sum()  # noqa: E731
    dv, dh = np.diff(a, axis=2), np.diff(a, axis=3)
    dvv, dhh, dvh, dhv = np.diff(dv, axis=2), np.diff(dh, axis=3), np.diff(dv, axis=3), np.diff(dh, axis=2)
    assert np.allclose(dvh, dhv)  # ∂x∂y = ∂y∂x: the code's fourth pair is the third again
    # Shan et al.: Θ = {∂0, ∂x, ∂y, ∂xx, ∂xy, ∂yy}, weights ½ · 2^-order
    shan = 0.5 * sq(a) + 0.25 * (sq(dv) + sq(dh)) + 0.125 * (sq(dvv) + sq(dvh) + sq(dhh))
    n = 3 * 20 * 22
    assert vdip.data_term(r, n).item() == pytest.approx(shan / n, rel=1e-12)
    # the code, term by term: the four ordered second-order pairs, and ¼ Σ_d ‖k ⋆ ∂_d x − ∂_d y‖² added
    extra = sum((blind.blur_valid(dx, k) - dy).square().sum().item()
                for dx, dy in zip(forward_differences(x), forward_differences(y)))
    assert extra == pytest.approx(sq(dv) + sq(dh), rel=1e-12)  # = ¼ Σ_d ‖∂_d r‖² again
    code = 0.5 * sq(a) + 0.25 * (sq(dv) + sq(dh)) + 0.125 * (sq(dvv) + sq(dvh) + sq(dhh) + sq(dhv)) + 0.25 * extra
    both = vdip.data_term(r, n, first_order_twice=True, mixed_twice=True)
    assert both.item() == pytest.approx(code / n, rel=1e-12)
    assert vdip.data_term(r, n, mixed_twice=True).item() == pytest.approx((shan + 0.125 * sq(dvh)) / n, rel=1e-12)
    assert vdip.data_term(r, n, first_order_twice=True).item() == pytest.approx((shan + 0.25 * extra) / n, rel=1e-12)


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
    for d_mu, d_samples, var in zip(forward_differences(mu), forward_differences(samples),
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


def test_the_codes_std_of_the_square_has_1e_32_under_the_root_so_its_slope_at_sigma_0_is_0():
    # float32, as the code ran: 1e-32 is a normal float32 (the smallest is 1.2e-38), so √(Var + 1e-32) = 1e-16 at σ = 0
    mu = torch.tensor([0.3, 0.7, 0.0, 0.5, 0.9])
    sigma = torch.tensor([0.0, 0.0, 0.0, 0.1, 0.3], requires_grad=True)
    for bright, original_variance in ((False, False), (True, True), (True, False)):
        sigma.grad = None
        _, std = vdip.squared_moments(mu, sigma, bright, original_variance, stable=False)
        s = sigma.detach()
        if not bright:
            code = torch.sqrt(4 * mu.square() * s.square() + 2 * s.square() * s.square() + 1e-32)
        elif original_variance:  # the code's bright channel, word for word
            code = torch.sqrt(4 * s.square() + 4 * mu.square() * s.square() + 2 * s.square() * s.square() + 1e-32)
        else:
            code = torch.sqrt(4 * (1 - mu).square() * s.square() + 2 * s.square() * s.square() + 1e-32)
        assert torch.allclose(std.detach(), code, rtol=1e-6, atol=0)
        assert std[0].item() == pytest.approx(1e-16, rel=1e-6)
        std.sum().backward()
        assert torch.isfinite(sigma.grad).all() and (sigma.grad[:3] == 0).all()


def test_both_extreme_priors_have_finite_gradients_where_a_saturated_sigmoid_gives_sigma_0():
    mu = torch.rand(1, 3, 12, 12, requires_grad=True)
    sigma = torch.rand(1, 3, 12, 12)
    sigma[..., 4:8, 4:8] = 0  # a saturated sigmoid: σ is exactly 0 there
    sigma.requires_grad_()
    for bias, original in ((vdip.ORIGINAL_BIAS, True), (1e-6, False)):
        mu.grad = sigma.grad = None
        torch.manual_seed(5)
        vdip.extreme_prior(mu, sigma, 5, bias, original_numerics=original).backward()
        assert torch.isfinite(sigma.grad).all() and torch.isfinite(mu.grad).all()


def test_the_codes_bias_is_the_smallest_float32_and_overflows_the_gradient_of_a_channel_value_near_0():
    assert (torch.zeros(1) + vdip.ORIGINAL_BIAS).item() == pytest.approx(1.4013e-45, rel=1e-4)  # not 0
    channel = torch.tensor([0.0, 1e-30, -0.5, 0.25], requires_grad=True)
    (channel / (channel.detach() + vdip.ORIGINAL_BIAS)).sum().backward()
    assert torch.isinf(channel.grad[0]) and torch.isfinite(channel.grad[1:]).all()
    assert channel.grad[2] < 0  # a negative sample of x² flips the IRLS weight's sign


def test_with_the_nan_skip_bug_a_step_is_skipped_on_nan_only_as_the_codes_checknan():
    """Per run of a batch: whether its gradient holds a NaN (the code's checkNaN; an infinity does not count) and
    whether it is all finite."""
    weights, biases = torch.zeros(3, 2, 2, requires_grad=True), torch.zeros(3, 2, requires_grad=True)
    adam = StackedAdam([([weights, biases], [1e-3] * 3, [0.9] * 3)])
    weights.grad, biases.grad = torch.ones(3, 2, 2), torch.ones(3, 2)
    assert vdip.gradient_checks(adam, torch.tensor([0, 1, 2])) == ([False] * 3, [True] * 3)
    weights.grad[1, 0, 0] = float("inf")  # taken, as torch.isnan lets it through
    biases.grad[2, 1] = float("nan")
    assert vdip.gradient_checks(adam, torch.tensor([0, 1, 2])) == ([False, False, True], [True, False, False])
    assert vdip.gradient_checks(adam, torch.tensor([2])) == ([True], [False])


def test_the_orig_variants_are_the_code_and_the_others_name_what_they_change():
    everything = set(vdip.ORIGINAL_BUGS)
    code = {"sparse": {"first_order_twice", "mixed_twice"}, "extreme": everything}  # the Sparse scripts have no
    for name, overrides in vdip.VARIANTS.items():  # extreme channel and no checkNaN
        bugs = set(overrides.get("original_bugs", ()))
        if name.endswith("-orig"):
            assert bugs == code[overrides["prior"]], name
        else:
            assert len(bugs) <= 1, name  # corrected, or one of the code's behaviours named in the variant
    assert make_config(vdip.Config).original_bugs == ()  # the default run is the corrected VDIP


def test_the_lai_uniform_extreme_scripts_5_pretraining_steps_are_a_variant():
    lai = vdip.VARIANTS["VDIP-Extreme-lai-uniform-orig"]
    assert lai["pretrain_iterations"] == 5 and lai["prior"] == "extreme"
    assert set(lai["original_bugs"]) == set(vdip.ORIGINAL_BUGS)
    variants = vdip.check_config(make_config(vdip.Config, quick=True, variants=("VDIP-Extreme-lai-uniform-orig",
                                                                                 "VDIP-Extreme-pre5")))[1]
    assert [v.pretrain_iterations for v in variants.values()] == [5, 5]  # the quick preset's 100 does not apply
    assert variants["VDIP-Extreme-pre5"].original_bugs == ()


def test_prior_weight_schedule_and_variants():
    make = lambda **kw: make_config(vdip.Config, **kw)  # noqa: E731
    sparse, extreme = make(), make(prior="extreme")
    assert [vdip.prior_weight(sparse, s) for s in (0, 999, 1000, 1999)] == pytest.approx([0.1, 0.1, 0.01, 0.01])
    assert vdip.prior_weight(extreme, 0) == pytest.approx(1e-4) and vdip.prior_weight(extreme, 1500) == pytest.approx(1e-5)
    variants = vdip.check_config(make(quick=True, variants=("VDIP-Extreme", "VDIP-Sparse-orig"), channels=32,
                                      iterations=700))[1]
    assert variants["VDIP-Extreme"].prior == "extreme" and variants["VDIP-Sparse-orig"].prior == "sparse"
    assert all((v.channels, v.iterations) == (32, 700) for v in variants.values())  # this run's sizes and counts
    with pytest.raises(RunError, match="selfdeblur.py"):  # SelfDeblur's variants are selfdeblur.py's
        vdip.check_config(make(quick=True, variants=("SimplerSDB",)))


# --- runs -------------------------------------------------------------------------------------------------------

def deblur(problem, config, seed):
    """A run alone: the script's one loop with a batch of one."""
    return only_run(vdip.deblur([BlindRun(problem, config, seed)]))


def test_pretraining_fits_the_mean_to_y_sigma_to_zero_and_the_kernel_to_flat():
    problem = blind.synthetic_problems(("camera",), (9,), size=64)[0]
    config = dataclasses.replace(make_config(vdip.Config, quick=True, progress=False, pretrain_iterations=150,
                                             curve_every=0), iterations=0)
    estimate = deblur(problem, config, seed=0)  # the state at the end of the pretraining
    assert psnr(estimate.image, problem.blurred) > 30
    assert estimate.extra["std"].max() < 0.05 and estimate.extra["std"].min() >= 0
    assert estimate.kernel.max() < 1.05 / 81 and estimate.kernel.min() > 0.95 / 81


def test_a_seed_repeats_and_the_original_counts_its_skipped_steps():
    problem = blind.synthetic_problems(("camera",), (9,), size=64)[0]
    config = make_config(vdip.Config, quick=True, progress=False, pretrain_iterations=2, iterations=8, curve_every=0,
                         prior="extreme")
    first, again = (deblur(problem, config, seed=1) for _ in range(2))
    assert torch.equal(first.image, again.image) and torch.equal(first.kernel, again.kernel)
    assert first.kernel.min() >= 0 and first.kernel.sum().item() == pytest.approx(1.0, abs=1e-5)
    original = deblur(problem, dataclasses.replace(config, original_bugs=vdip.ORIGINAL_BUGS), seed=1)
    assert set(original.stats) == {"skipped_steps", "infinite_steps"} and first.stats == {}


def test_the_bug_path_skips_a_nan_step_in_the_main_loop_only(monkeypatch):
    problem = blind.synthetic_problems(("camera",), (9,), size=64)[0]
    config = make_config(vdip.Config, quick=True, progress=False, pretrain_iterations=2, iterations=3, curve_every=0,
                         prior="extreme", channels=8, original_bugs=("nan_skip",))
    asked = []
    monkeypatch.setattr(vdip, "gradient_checks", lambda adam, runs: asked.append(1) or ([True], [True]))
    estimate = deblur(problem, config, seed=0)
    assert len(asked) == 5 and estimate.stats == dict(skipped_steps=3, infinite_steps=0)  # 2 pretraining steps taken


def test_vdip_extreme_raises_psnr_above_the_blurred_input_and_writes_the_std_figure(tmp_path):
    config = make_config(vdip.Config, quick=True, progress=False, results_dir=str(tmp_path), prior="extreme",
                         channels=16, skip_channels=4, iterations=700)  # the quick run's first 700 steps with a
    # narrower G_x: +2.8 dB on the 2-core EPYC
    result = vdip.run(config)
    rows = {r["variant"]: r for r in result["rows"]}
    assert rows["VDIP-Extreme"]["psnr_gt"] > rows["blurred input"]["psnr_gt"] + 1.0
    folder = result["folder"]
    for name in ("camera_k9.png", "camera_k9_kernels.png", "camera_k9_std.png", "curve.csv", "scatter.png",
                 "table.csv", "summary.csv", "estimates/camera_k9__VDIP-Extreme__seed0_std.png"):
        assert (folder / name).is_file(), name


def test_selfdeblur_and_vdip_runs_on_the_same_data_merge_into_one_table_and_overlaid_curves(tmp_path):
    from dipkit.compare import compare

    common = dict(quick=True, progress=False, results_dir=str(tmp_path), iterations=4, curve_every=2, channels=8)
    first = selfdeblur.run(make_config(selfdeblur.Config, variants=("SimplerSDB",), **common))
    second = vdip.run(make_config(vdip.Config, pretrain_iterations=2, variants=("VDIP-Sparse", "VDIP-Extreme-orig"),
                                  **common))
    assert "skipped_steps" in second["rows"][-1] and len(second["curves"]) == 4
    compare([str(first["folder"]), str(second["folder"])], out=tmp_path / "both", log=lambda line: None)
    with (tmp_path / "both" / "summary.csv").open() as file:
        summary = list(csv.DictReader(file))
    assert [e["variant"] for e in summary] == ["blurred input", "known kernel", "SimplerSDB", "VDIP-Sparse",
                                               "VDIP-Extreme-orig"]
    assert summary[0]["runs"] == "1"  # the same problem's baselines, kept once
    with (tmp_path / "both" / "curve.csv").open() as file:
        variants = {row["variant"] for row in csv.DictReader(file)}
    assert variants == {"SimplerSDB", "VDIP-Sparse", "VDIP-Extreme-orig"}
    assert (tmp_path / "both" / "camera_k9_curve.png").is_file() and (tmp_path / "both" / "curve.png").is_file()


def test_runs_made_apart_merge_into_one_table_with_the_baselines_once(tmp_path):
    from dipkit.compare import compare
    from dipkit.runs import write_csv, write_json

    baselines = [dict(problem="p", variant="blurred input", seed="", psnr_gt=20.0, psnr_nb=30.0, ssim=0.5)]
    for name, script, variant, values in (("a", "selfdeblur", "SelfDeblur", (24.0, 26.0)),
                                          ("b", "vdip", "VDIP-Sparse", (25.0, 28.0))):
        (tmp_path / name).mkdir()
        write_json(tmp_path / name / "config.json", dict(config=dict(iterations=5000, seeds=[0, 1])))
        write_json(tmp_path / name / "metrics.json", dict(script=script, summary={}, items={}))
        runs = [dict(problem="p", variant=variant, seed=s, psnr_gt=v, psnr_nb=22.0, ssim=0.7, seconds=1.5)
                for s, v in enumerate(values)]
        write_csv(tmp_path / name / "table.csv", [{**r, "seconds": ""} for r in baselines] + runs)
    compare([str(tmp_path / "a"), str(tmp_path / "b")], out=tmp_path / "both", log=lambda line: None)
    with (tmp_path / "both" / "summary.csv").open() as file:
        summary = {e["variant"]: e for e in csv.DictReader(file)}
    assert summary["blurred input"]["runs"] == "1"
    assert float(summary["SelfDeblur"]["psnr_gt_mean"]) == 25.0
    assert float(summary["VDIP-Sparse"]["psnr_gt_best_of_seeds"]) == 28.0
    assert (tmp_path / "both" / "scatter.png").is_file()
    with pytest.raises(RunError, match="already holds"):
        compare([str(tmp_path / "a")], out=tmp_path / "both")


@pytest.mark.parametrize("arguments, message", [
    (["--variants", "VDIP-Fancy"], "unknown variant"),
    (["--original_bugs", "typo"], "unknown original_bugs"),
    (["--quick", "--prior", "extreme", "--extreme_window", "99"], "exceeds"),
    (["--blurred", "no/such/photo.png", "--kernel_size", "9"], "not found"),
    (["--quick", "--scales", "7"], "too small for 7 scales"),  # was found only inside the network, after the folder
    (["--quick", "--gamma", "0"], "gamma must be in (0, 1]"),
    (["--quick", "--prior", "extreme", "--extreme_bias", "0"], "extreme_bias must be in (0, inf)"),
    (["--quick", "--prior_weight", "-0.5"], "prior_weight must be in [0, inf)"),
])
def test_bad_input_exits_with_code_2_and_writes_nothing(refused, arguments, message):
    refused("vdip.py", arguments, message)
