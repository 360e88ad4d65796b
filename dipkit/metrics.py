"""Image quality: PSNR and SSIM, estimates clipped to [0, max_value] first.

`ssim` is the Gaussian-window SSIM of Wang et al. (2004): an 11x11 window of standard deviation 1.5,
K1 = 0.01, K2 = 0.03, averaged over the pixels at least 5 from the border and over channels. It equals
scikit-image's `structural_similarity(..., gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
data_range=max_value)`, which the tests check.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def psnr(estimate: torch.Tensor, reference: torch.Tensor, max_value: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB of `estimate` (clipped to the valid range) against `reference`."""
    error = estimate.detach().clamp(0, max_value).double() - reference.detach().double()
    return (10 * torch.log10(max_value**2 / error.pow(2).mean())).item()


def _gaussian_window(sigma: float = 1.5, radius: int = 5) -> torch.Tensor:
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    g = torch.exp(-(t**2) / (2 * sigma**2))
    return g / g.sum()


def _ssim_map(x: torch.Tensor, y: torch.Tensor, max_value: float, padding: int) -> torch.Tensor:
    """The SSIM map of (N, C, H, W) images with the 11x11 Gaussian window (σ = 1.5), zero padding `padding`."""
    x, y = x.flatten(0, 1)[:, None], y.flatten(0, 1)[:, None]
    g = _gaussian_window().to(x)

    def local_mean(z: torch.Tensor) -> torch.Tensor:  # separable Gaussian filter
        return F.conv2d(F.conv2d(z, g.view(1, 1, -1, 1), padding=(padding, 0)), g.view(1, 1, 1, -1),
                        padding=(0, padding))

    mx, my = local_mean(x), local_mean(y)
    vx, vy, cxy = local_mean(x * x) - mx**2, local_mean(y * y) - my**2, local_mean(x * y) - mx * my
    c1, c2 = (0.01 * max_value) ** 2, (0.03 * max_value) ** 2
    return ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))


def ssim(estimate: torch.Tensor, reference: torch.Tensor, max_value: float = 1.0) -> float:
    """Mean structural similarity of images of shape (N, C, H, W), H and W at least 11."""
    x = estimate.detach().clamp(0, max_value).double()
    return _ssim_map(x, reference.detach().double(), max_value, padding=0).mean().item()


def ssim_loss(estimate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """1 − SSIM as SelfDeblur and VDIP train with it (their SSIM.py): the same window, data range 1, but zero
    padding of 5 so that every pixel has a value, averaged over all of them. Differentiable; no clipping."""
    return 1 - _ssim_map(estimate, reference, 1.0, padding=5).mean()
