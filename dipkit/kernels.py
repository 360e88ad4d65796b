"""Blur kernels, as (size, size) float tensors that sum to one."""

from __future__ import annotations

import torch


def diagonal_motion(size: int = 5) -> torch.Tensor:
    """Linear motion along the main diagonal: 1/size on the diagonal (0.2 for size 5, as in the ADP paper)."""
    return torch.eye(size) / size


def gaussian(size: int, sigma: float) -> torch.Tensor:
    """Isotropic Gaussian centred on the middle pixel, normalised to sum to one."""
    t = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(t**2) / (2 * sigma**2))
    kernel = torch.outer(g, g)
    return (kernel / kernel.sum()).float()


def disc(size: int) -> torch.Tensor:
    """Uniform disc of radius size // 2 (13 pixels of 1/13 for size 5)."""
    t = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    inside = (t[:, None] ** 2 + t[None, :] ** 2) <= (size // 2) ** 2
    return (inside / inside.sum()).float()


def random_motion(size: int, seed: int, length_scale: float = 0.3, sigma: float = 0.25) -> torch.Tensor:
    """A random camera-shake trajectory (deepinv's MotionBlurGenerator, Gaussian-process paths), seeded."""
    from deepinv.physics.generator import MotionBlurGenerator

    generator = MotionBlurGenerator((size, size), l=length_scale, sigma=sigma)
    return generator.step(1, seed=seed)["filter"][0, 0].float()
