import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from dipkit import kernels
from dipkit.blur import blur, blur_adjoint
from dipkit.metrics import psnr, ssim
from dipkit.tv import (SmoothedTV, anisotropic_tv, fista_tv_deconvolution, forward_differences,
                       forward_differences_adjoint)

rng = np.random.default_rng(0)


@pytest.mark.parametrize("channels", [1, 3])
def test_psnr_and_ssim_match_scikit_image(channels):
    ref = rng.random((40, 33, channels))
    est = np.clip(ref + 0.1 * rng.standard_normal(ref.shape), 0, 1)
    as_tensor = lambda a: torch.from_numpy(a).permute(2, 0, 1)[None]  # noqa: E731
    assert psnr(as_tensor(est), as_tensor(ref)) == pytest.approx(peak_signal_noise_ratio(ref, est, data_range=1))
    expected = structural_similarity(
        ref, est, channel_axis=2, data_range=1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    assert ssim(as_tensor(est), as_tensor(ref)) == pytest.approx(expected, abs=1e-10)


def test_psnr_clips_the_estimate():
    ref = torch.full((1, 1, 8, 8), 0.5)
    assert psnr(ref + 1.0, ref) == pytest.approx(psnr(torch.ones_like(ref), ref))


def test_difference_adjoint():
    x, p1, p2 = torch.rand(2, 3, 9, 7, dtype=torch.float64), torch.rand(2, 3, 8, 7, dtype=torch.float64), None
    p2 = torch.rand(2, 3, 9, 6, dtype=torch.float64)
    d1, d2 = forward_differences(x)
    assert torch.isclose((d1 * p1).sum() + (d2 * p2).sum(), (x * forward_differences_adjoint(p1, p2)).sum())


def test_tv_gradient_and_hessian_match_autograd():
    tv = SmoothedTV(0.05)
    x = torch.rand(1, 3, 10, 8, dtype=torch.float64, requires_grad=True)
    v = torch.randn(1, 3, 10, 8, dtype=torch.float64)
    (grad,) = torch.autograd.grad(tv.value(x), x, create_graph=True)
    (hv,) = torch.autograd.grad(grad, x, v)
    torch.testing.assert_close(tv.gradient(x.detach()), grad.detach())
    torch.testing.assert_close(tv.hessian_vector(x.detach(), v), hv)


def test_tv_lipschitz_bound_holds():
    tv = SmoothedTV(0.01)
    x = torch.full((1, 1, 12, 12), 0.3, dtype=torch.float64)  # flat: the curvature is largest there
    v = torch.randn_like(x)
    for _ in range(300):  # power method on the TV Hessian
        v = tv.hessian_vector(x, v)
        top = v.norm().item()
        v = v / top
    assert 0.9 * tv.lipschitz < top <= tv.lipschitz


def test_anisotropic_tv_sums_the_absolute_differences_of_each_image():
    x = torch.rand(3, 2, 6, 5, dtype=torch.float64)
    pixels = [(c, i, j) for c in range(2) for i in range(6) for j in range(5)]
    expected = [sum(abs(x[n, c, i + 1, j] - x[n, c, i, j]).item() for c, i, j in pixels if i < 5)
                + sum(abs(x[n, c, i, j + 1] - x[n, c, i, j]).item() for c, i, j in pixels if j < 4) for n in range(3)]
    torch.testing.assert_close(anisotropic_tv(x), torch.tensor(expected, dtype=torch.float64))


def test_fista_tv_deconvolution_solves_least_squares_without_tv_and_is_stationary_with_it():
    y = torch.rand(2, 1, 9, 8, dtype=torch.float64)
    twice = lambda x: 2 * x  # noqa: E731  (A = 2I: x* = y/2 without TV)
    x = fista_tv_deconvolution(y, twice, twice, 4.0, 0.0, 200, torch.zeros_like(y))
    torch.testing.assert_close(x, y / 2)
    kernel = kernels.gaussian(3, 0.8).double()
    forward, adjoint = (lambda x: blur(x, kernel)), (lambda r: blur_adjoint(r, kernel))  # noqa: E731
    weight, tv = 0.01, SmoothedTV(0.05)
    x = fista_tv_deconvolution(y, forward, adjoint, 1.0, weight, 3000, y.clone(), smoothing=0.05)
    x.requires_grad_(True)
    objective = 0.5 * (forward(x) - y).square().sum() + weight * tv.value(x)
    (gradient,) = torch.autograd.grad(objective, x)
    assert gradient.norm() < 1e-6  # ‖B_b‖ ≤ ‖b‖₁ = 1: the bound given is safe
    assert gradient.norm() < 1e-3 * (adjoint(forward(y) - y) + weight * tv.gradient(y)).norm()  # far from the start


def test_fista_tv_deconvolution_stops_at_the_tolerance():
    y = torch.rand(1, 1, 6, 6, dtype=torch.float64)
    identity = lambda x: x  # noqa: E731
    calls = []
    counting = lambda r: calls.append(1) or r  # noqa: E731
    fista_tv_deconvolution(y, identity, counting, 1.0, 0.1, 500, y.clone(), tolerance=1e-3)
    stopped = len(calls)
    calls.clear()
    fista_tv_deconvolution(y, identity, counting, 1.0, 0.1, 500, y.clone())
    assert stopped < len(calls) == 501
