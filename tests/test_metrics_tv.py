import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from dipkit.metrics import psnr, ssim
from dipkit.tv import SmoothedTV, forward_differences, forward_differences_adjoint

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
