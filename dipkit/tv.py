"""Smoothed anisotropic total variation, with its exact gradient and Hessian-vector product.

    TV_ε(x) = Σ_pixels Σ_{i=1,2} ( √((D_i x)² + ε²) − ε )

D₁, D₂ are forward differences along rows and columns with a Neumann (replicate) boundary, so the difference
across the last row or column is zero. Each term φ(d) = √(d² + ε²) has φ'(d) = d/√(d² + ε²) and
φ''(d) = ε²/(d² + ε²)^{3/2} ≤ 1/ε, and ‖D₁‖², ‖D₂‖² ≤ 4, so ∇TV_ε is (8/ε)-Lipschitz.

The ADP paper's code pads the image by one replicated row and column before differencing, so the differences
along the last row (D₂) and along the last column (D₁) are counted twice: `double_last_edges=True` reproduces
that (its Lipschitz bound is then 16/ε).
"""

from __future__ import annotations

import torch


def forward_differences(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(D₁x, D₂x) for x of shape (..., H, W): shapes (..., H−1, W) and (..., H, W−1)."""
    return x[..., 1:, :] - x[..., :-1, :], x[..., :, 1:] - x[..., :, :-1]


def forward_differences_adjoint(p1: torch.Tensor, p2: torch.Tensor) -> torch.Tensor:
    """D₁ᵀp₁ + D₂ᵀp₂ (a negative divergence), written into one new tensor."""
    out = torch.zeros(p2.shape[:-1] + (p2.shape[-1] + 1,), dtype=p1.dtype, device=p1.device)
    out[..., :-1, :] -= p1
    out[..., 1:, :] += p1
    out[..., :, :-1] -= p2
    out[..., :, 1:] += p2
    return out


class SmoothedTV:
    """TV_ε with smoothing ε (the ADP paper's code uses ε² = 1e-4)."""

    def __init__(self, smoothing: float, double_last_edges: bool = False):
        self.smoothing = smoothing
        self.double_last_edges = double_last_edges

    def _edge_weights(self, d1: torch.Tensor, d2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-difference weights: 1, or 2 on the last column of D₁x and the last row of D₂x."""
        if not self.double_last_edges:
            return d1, d2
        d1, d2 = d1.clone(), d2.clone()
        d1[..., -1] *= 2
        d2[..., -1, :] *= 2
        return d1, d2

    def value(self, x: torch.Tensor) -> torch.Tensor:
        eps = self.smoothing
        terms = [torch.sqrt(d * d + eps**2) - eps for d in forward_differences(x)]
        return sum(t.sum() for t in self._edge_weights(*terms))

    def gradient(self, x: torch.Tensor) -> torch.Tensor:
        eps2 = self.smoothing**2
        d1, d2 = forward_differences(x)
        return forward_differences_adjoint(
            *self._edge_weights(d1 * torch.rsqrt(d1 * d1 + eps2), d2 * torch.rsqrt(d2 * d2 + eps2))
        )

    def value_and_gradient(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(TV_ε(x), ∇TV_ε(x)) sharing the square roots."""
        eps = self.smoothing
        d1, d2 = forward_differences(x)
        r1, r2 = torch.sqrt(d1 * d1 + eps**2), torch.sqrt(d2 * d2 + eps**2)
        value = sum(t.sum() for t in self._edge_weights(r1 - eps, r2 - eps))
        return value, forward_differences_adjoint(*self._edge_weights(d1 / r1, d2 / r2))

    def hessian_vector(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        eps2 = self.smoothing**2
        (d1, d2), (v1, v2) = forward_differences(x), forward_differences(v)
        w1 = eps2 * torch.rsqrt(d1 * d1 + eps2) ** 3
        w2 = eps2 * torch.rsqrt(d2 * d2 + eps2) ** 3
        return forward_differences_adjoint(*self._edge_weights(w1 * v1, w2 * v2))

    @property
    def lipschitz(self) -> float:
        """A Lipschitz constant of the gradient."""
        return (16.0 if self.double_last_edges else 8.0) / self.smoothing
