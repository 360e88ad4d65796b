"""Blur kernels, as (size, size) float tensors that sum to one: the named ones (diagonal motion, Gaussian, disc),
random camera shakes drawn by deepinv's Gaussian-process paths (`random_motion`, and `motion_kernel`, the synthetic
blind benchmark's), and Boracchi and Foi's camera-shake trajectories (`camera_shake_kernels`, the generative
priors' training and test kernels)."""

from __future__ import annotations

import math

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


def motion_kernel(size: int, seed: int) -> torch.Tensor:
    """A seeded random camera-shake kernel whose path spans about two thirds of the frame, like Levin's: the
    synthetic blind-deblurring benchmark's (random_motion with σ 0.5)."""
    return random_motion(size, seed, length_scale=0.3, sigma=0.5)


# ---------------------------------------------------------------------------------------------------------------
# Boracchi & Foi's camera-shake kernels


def shake_trajectories(n: int, max_length: torch.Tensor, anxiety: float = 0.01, steps: int = 100,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """n random camera-shake trajectories (complex, (n, steps)), after Boracchi & Foi (2012), createTrajectory.

    A particle moves at constant speed L/(steps − 1); at each step its velocity gets a Gaussian kick (strength
    g ~ U(0, 10)) and a pull towards the origin (c ~ U(0, 0.7)), both times anxiety·L/(steps − 1), and with
    probability f·anxiety (f ~ U(0, 0.2)) an abrupt shake that roughly reverses it; then it is renormalised."""
    u = lambda *shape: torch.rand(*shape, generator=generator, dtype=torch.float64)  # noqa: E731
    g = lambda *shape: torch.randn(*shape, generator=generator, dtype=torch.float64)  # noqa: E731
    length = max_length.to(torch.float64)
    speed = length / (steps - 1)
    centripetal, gaussian_term, big_shakes = 0.7 * u(n), 10 * u(n), 0.2 * u(n)
    v = torch.polar(torch.ones(n, dtype=torch.float64), 2 * math.pi * u(n)) * speed
    x = torch.zeros(n, steps, dtype=torch.complex128)
    for t in range(steps - 1):
        shake = u(n) < big_shakes * anxiety
        reverse = 2 * v * torch.polar(torch.ones(n, dtype=torch.float64), math.pi + (u(n) - 0.5))
        dv = torch.where(shake, reverse, torch.zeros_like(v))
        dv = dv + anxiety * (gaussian_term * torch.complex(g(n), g(n)) - centripetal * x[:, t]) * speed
        v = v + dv
        v = v / v.abs().clamp(min=1e-12) * speed
        x[:, t + 1] = x[:, t] + v
    return x


def splat(trajectories: torch.Tensor, size: int) -> torch.Tensor:
    """PSFs from trajectories, as createPSFs with do_center: each path is moved so that its barycentre is the
    frame's centre ((size − 1)/2), and every sample is spread bilinearly over its four pixels (clamped to the frame),
    divided by the number of samples: (n, size, size), each summing to one."""
    n, steps = trajectories.shape
    points = trajectories - trajectories.mean(dim=1, keepdim=True) + complex((size - 1) / 2, (size - 1) / 2)
    cols, rows = points.real.clamp(0, size - 1), points.imag.clamp(0, size - 1)
    psf = torch.zeros(n, size * size, dtype=torch.float64)
    r0, c0 = rows.floor().clamp(max=size - 2), cols.floor().clamp(max=size - 2)
    fr, fc = rows - r0, cols - c0
    r0, c0 = r0.long(), c0.long()
    for dr, wr in ((0, 1 - fr), (1, fr)):
        for dc, wc in ((0, 1 - fc), (1, fc)):
            psf.scatter_add_(1, (r0 + dr) * size + (c0 + dc), wr * wc)
    return (psf / steps).view(n, size, size)


def camera_shake_kernels(n: int, size: int = 28, seed: int = 0, lengths: tuple[int, int] = (5, 28),
                         anxiety: float = 0.01, steps: int = 100) -> torch.Tensor:
    """n seeded camera-shake PSFs of size x size (float32, non-negative, sum one, barycentre at the centre), with
    the authors' settings: trajectory length L uniform over the integers lengths[0]..lengths[1], anxiety 0.01,
    100 samples."""
    generator = torch.Generator().manual_seed(seed)
    max_length = torch.randint(lengths[0], lengths[1] + 1, (n,), generator=generator)
    return splat(shake_trajectories(n, max_length, anxiety, steps, generator), size).float()
