"""Smoothed anisotropic total variation, with its exact gradient and Hessian-vector product.

    TV_ε(x) = Σ_pixels Σ_{i=1,2} ( √((D_i x)² + ε²) − ε )

D₁, D₂ are forward differences along rows and columns with a Neumann (replicate) boundary, so the difference
across the last row or column is zero. Each term φ(d) = √(d² + ε²) has φ'(d) = d/√(d² + ε²) and
φ''(d) = ε²/(d² + ε²)^{3/2} ≤ 1/ε, and ‖D₁‖², ‖D₂‖² ≤ 4, so ∇TV_ε is (8/ε)-Lipschitz.

The ADP paper's code pads the image by one replicated row and column before differencing, so the differences
along the last row (D₂) and along the last column (D₁) are counted twice: `double_last_edges=True` reproduces
that (its Lipschitz bound is then 16/ε).

Also here: the plain anisotropic TV Σ |D₁x| + |D₂x| (`anisotropic_tv`), and the known-operator TV deconvolution
argmin_x ½‖A x − y‖² + λ·TV_ε(x) by FISTA (`fista_tv_deconvolution`, for any blur A given with its adjoint;
`tv_deconvolution`, for a kernel under the 'valid' or the circular blur model).
"""

from __future__ import annotations

from typing import Callable, Literal

import torch

from .blur import centre_of, fourier_multiply, kernel_spectrum, pad_to_latent, valid_blur_by_fft
from .solvers import fista


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


def anisotropic_tv(x: torch.Tensor) -> torch.Tensor:
    """TV(x) = Σ |D₁x| + Σ |D₂x| for each image of x (N, C, H, W), unsmoothed: tf.image.total_variation."""
    d1, d2 = forward_differences(x)
    return d1.abs().sum(dim=(1, 2, 3)) + d2.abs().sum(dim=(1, 2, 3))


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


def fista_tv_deconvolution(
    blurred: torch.Tensor,
    forward: Callable[[torch.Tensor], torch.Tensor],
    adjoint: Callable[[torch.Tensor], torch.Tensor],
    data_lipschitz: float,
    weight: float,
    iterations: int,
    start: torch.Tensor,
    smoothing: float = 1e-2,
    tolerance: float = 0.0,
) -> torch.Tensor:
    """argmin_x ½‖A x − y‖² + weight·TV_ε(x) by FISTA from `start` (solvers.fista, at most `iterations` steps, or
    until ‖∇‖ ≤ tolerance), A = forward, Aᵀ = adjoint, y = blurred, ‖A‖² ≤ data_lipschitz. The gradient
    Aᵀ(A x − y) + weight·∇TV_ε(x) is (data_lipschitz + weight·8/ε)-Lipschitz."""
    tv = SmoothedTV(smoothing)

    def gradient(x: torch.Tensor) -> torch.Tensor:
        return adjoint(forward(x) - blurred) + weight * tv.gradient(x)

    return fista(gradient, start, data_lipschitz + weight * tv.lipschitz, tolerance, iterations).x


def tv_deconvolution(blurred: torch.Tensor, kernel: torch.Tensor, weight: float,
                     boundary: Literal["valid", "circular"] = "valid", iterations: int = 300, smoothing: float = 1e-2,
                     tolerance: float = 0.0) -> torch.Tensor:
    """A known-kernel TV deconvolution, argmin_x ½‖k ∗ x − y‖² + weight·TV_ε(x), by FISTA in float64 (at most
    `iterations` steps, or until ‖∇‖ ≤ tolerance), under the blur model `boundary`:
      valid     k ⋆ x the 'valid' cross-correlation of a latent image larger than y by the kernel size less one
                (SelfDeblur's model), x started from the replicate-padded y, its centre (the size of y) returned;
                the step from ‖x ↦ k ⋆ x‖ ≤ ‖k‖₁;
      circular  k ⊛ x the periodic convolution (by FFT), x and y of one size, x started from y; `kernel` is
                (N, 1, h, w), one per image; the step from ‖x ↦ k ⊛ x‖² = max |k̂|², exact."""
    y = blurred.detach().double()
    if boundary == "valid":
        k = kernel.detach().double().view(1, 1, *kernel.shape[-2:])
        start = pad_to_latent(y, k.shape[-2:])
        forward, adjoint = valid_blur_by_fft(k, start.shape[-2:])
        x = fista_tv_deconvolution(y, forward, adjoint, k.abs().sum().item() ** 2, weight, iterations, start,
                                   smoothing, tolerance)
        return centre_of(x, k.shape[-2:])
    shape = y.shape[-2:]
    spectrum = kernel_spectrum(kernel.detach().double(), shape)  # once, not at every step
    return fista_tv_deconvolution(y, lambda x: fourier_multiply(x, spectrum, shape),
                                  lambda r: fourier_multiply(r, spectrum.conj(), shape),
                                  spectrum.abs().square().max().item(), weight, iterations, y.clone(), smoothing,
                                  tolerance)
