"""Levin's sparse deconvolution (dipkit.sparse.deconv_sps): its pieces against direct formulas, and what it must
do: recover a noiselessly blurred piecewise-constant image."""

import math

import torch
import torch.nn.functional as F

from dipkit.blur import centre_of, pad_to_latent
from dipkit.blur import blur_valid, fast_fft_size
from dipkit.levin import error_ratio_curve
from dipkit.sparse import DERIVATIVES, correlate, correlate_adjoint, deconv_sps, irls_weights


def blocks(size=48):
    """A piecewise-constant image: three rectangles on a grey ground."""
    image = torch.full((1, 1, size, size), 0.3, dtype=torch.float64)
    image[..., 6:20, 8:30] = 0.9
    image[..., 24:40, 18:44] = 0.1
    image[..., 30:44, 4:12] = 0.6
    return image


def test_the_derivatives_are_conv2d_correlations_and_their_adjoints():
    x = torch.rand(1, 1, 9, 11, dtype=torch.float64)
    for taps, _ in DERIVATIVES:
        f = torch.tensor(taps, dtype=torch.float64)[None, None]
        d = correlate(x, taps)
        torch.testing.assert_close(d, F.conv2d(x, f))
        r = torch.rand_like(d)
        torch.testing.assert_close(correlate_adjoint(r, taps), F.conv_transpose2d(r, f))
        assert math.isclose((d * r).sum().item(), (x * correlate_adjoint(r, taps)).sum().item(), rel_tol=1e-12)


def test_the_irls_weights_are_the_closed_form():
    x = torch.tensor([[0.0, 0.5, 0.505], [0.2, 0.2, 1.0]], dtype=torch.float64)[None, None]
    dx, dy, dxx, dyy, dxy = irls_weights(x)
    w = lambda d, s: s * 0.1 * max(abs(d), 0.01) ** -1.2  # noqa: E731
    torch.testing.assert_close(dx[0, 0], torch.tensor([[w(-0.5, 1), w(-0.005, 1)], [w(0.0, 1), w(-0.8, 1)]],
                                                      dtype=torch.float64))
    torch.testing.assert_close(dy[0, 0], torch.tensor([[w(-0.2, 1), w(0.3, 1), w(-0.495, 1)]], dtype=torch.float64))
    torch.testing.assert_close(dxx[0, 0], torch.tensor([[w(0.495, 0.25)], [w(-0.8, 0.25)]], dtype=torch.float64))
    assert dyy.shape[-2] == 0  # two rows: no second difference along a column
    torch.testing.assert_close(dxy[0, 0], torch.tensor([[w(-0.0 + 0.5 + 0.2 - 0.2, 0.25),
                                                          w(-0.5 + 0.505 + 0.2 - 1.0, 0.25)]], dtype=torch.float64))
    assert dx[0, 0, 1, 0].item() == 0.1 * 0.01**-1.2  # |d| below 0.01 is held at 0.01


def test_a_noiseless_blur_of_a_piecewise_constant_image_is_recovered():
    kernel = torch.zeros(7, 7, dtype=torch.float64)
    kernel[3, :] = 1.0
    kernel[2:5, 5] += 1.0
    kernel /= kernel.sum()
    truth = blocks()
    blurred = blur_valid(pad_to_latent(truth, (7, 7)), kernel)
    x = deconv_sps(blurred, kernel)
    psnr = lambda z: -10 * math.log10((z - truth)[..., 4:-4, 4:-4].pow(2).mean().item())  # noqa: E731
    assert x.shape == truth.shape and psnr(x) > 32 and psnr(x) > psnr(blurred) + 12


def test_the_first_solve_is_the_gaussian_prior_least_squares_solution():
    """No reweighting and enough CG steps: the normal equations (AᵀA + we Σ D_fᵀD_f) x = Aᵀy solved exactly."""
    kernel = torch.tensor([[0.2, 0.5, 0.3]], dtype=torch.float64)
    truth = blocks(12)
    blurred = blur_valid(pad_to_latent(truth, (1, 3)), kernel) + 0.01 * torch.randn(1, 1, 12, 12,
                                                                                     dtype=torch.float64,
                                                                                     generator=torch.Generator()
                                                                                     .manual_seed(0))
    x = deconv_sps(blurred, kernel, weight=0.05, iterations=250, reweightings=0)
    n = 12 * 14
    eye = torch.eye(n, dtype=torch.float64).reshape(n, 1, 12, 14)
    a = blur_valid(eye, kernel).reshape(n, -1).T  # the 'valid' correlation as a matrix
    prior = sum((lambda d: d.T @ d)(correlate(eye, taps).reshape(n, -1).T) for taps, _ in DERIVATIVES)
    exact = torch.linalg.solve(a.T @ a + 0.05 * prior, a.T @ blurred.reshape(-1)).reshape(1, 1, 12, 14)
    torch.testing.assert_close(x, centre_of(exact, (1, 3)), atol=1e-8, rtol=0)


def test_fast_fft_sizes_have_no_prime_factor_above_five():
    assert [fast_fft_size(n) for n in (1, 7, 269, 281, 255, 256)] == [1, 8, 270, 288, 256, 256]


def test_the_cumulative_error_ratio_counts_the_runs_at_most_r():
    assert error_ratio_curve([1.0, 1.5, 2.2, 5.0], (1.0, 1.5, 2.0, 3.0, 4.0)) == [0.25, 0.5, 0.5, 0.75, 0.75]
    assert error_ratio_curve([]) == []
