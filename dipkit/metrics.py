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


def ssim(estimate: torch.Tensor, reference: torch.Tensor, max_value: float = 1.0) -> float:
    """Mean structural similarity of images of shape (N, C, H, W), H and W at least 11."""
    x = estimate.detach().clamp(0, max_value).double().flatten(0, 1)[:, None]
    y = reference.detach().double().flatten(0, 1)[:, None]
    g = _gaussian_window().to(x.device)

    def local_mean(z: torch.Tensor) -> torch.Tensor:  # separable 'valid' Gaussian filter
        return F.conv2d(F.conv2d(z, g.view(1, 1, -1, 1)), g.view(1, 1, 1, -1))

    mx, my = local_mean(x), local_mean(y)
    vx, vy, cxy = local_mean(x * x) - mx**2, local_mean(y * y) - my**2, local_mean(x * y) - mx * my
    c1, c2 = (0.01 * max_value) ** 2, (0.03 * max_value) ** 2
    ssim_map = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return ssim_map.mean().item()
