"""The data of the 1-D analytic-deep-prior experiments (Dittmer, Kluth, Maass, Otero Baguer, JMIV 2020; Arndt,
Inverse Problems 2022; Salehi, Bubba, Korolev, SSVM 2025): the grid on [−1, 1], the three ground-truth signals
and the two forward operators, made by code as the original experiments make them."""

from __future__ import annotations

import math

import torch


def grid(points: int) -> torch.Tensor:
    """The cell centres of `points` equal cells of [−1, 1] (spacing 2/points), float64."""
    h = 2.0 / points
    return -1 + h / 2 + h * torch.arange(points, dtype=torch.float64)


def test_signal(name: str, t: torch.Tensor) -> torch.Tensor:
    """The three ground truths of the original ADP experiments: piecewise_constant, gaussians, piecewise_linear."""
    s = lambda a: (t > a).double()  # noqa: E731  (a step at a)
    if name == "piecewise_constant":
        return s(-0.6) - 0.7 * s(-0.5) - 0.3 * s(0) + 0.7 * s(0.2) - 0.7 * s(0.5)
    if name == "gaussians":
        return 0.8 * torch.exp(-32 * (t + 0.3) ** 2) + 0.4 * torch.exp(-16 * (t - 0.1) ** 2)
    return ((t + 0.7) * s(-0.7) - (2 * t + 1) * s(-0.5) + (t + 0.3) * s(-0.3) + (0.9 - t) * s(-0.1)
            + (t - 0.2) * s(0.2) - 0.7 * s(0.4) + (3 * t - 1.8) * s(0.6) - (3 * t - 1.8) * s(0.8))


def forward_operator(name: str, points: int) -> torch.Tensor:
    """Gaussian convolution A_ij = exp(−(i − j)²/50)/(5√(2π)) or integration A_ij = h for j ≤ i."""
    i = torch.arange(points, dtype=torch.float64)
    if name == "gaussian":
        return torch.exp(-((i[:, None] - i[None, :]) ** 2) / 50) / (5 * math.sqrt(2 * math.pi))
    return torch.tril(torch.full((points, points), 2.0 / points, dtype=torch.float64))
