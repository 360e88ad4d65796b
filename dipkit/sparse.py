"""Levin's sparse deconvolution (deconvSps: Levin, Fergus, Durand, Freeman, "Image and depth from a conventional
camera with a coded aperture", SIGGRAPH 2007): the known-kernel deconvolution that Levin's blind-deconvolution
benchmark, and SelfDeblur's error ratio after it, divides by.

With the kernel k known, the sharp image is fitted under a sparse prior on its derivatives,

    x = argmin_x ‖k ⋆ x − y‖² + we·Σ_f Σ_p ρ_f((D_f x)(p)),   ρ_f(d) ∝ s_f·|d|^0.8

over the latent grid of (H + K_h − 1) x (W + K_w − 1) pixels, so the data term ('valid' correlation, as the blind
scripts' y = k ⋆ x) needs no boundary rule and the border pixels are held only by the prior. The derivative
filters are dx = [1 −1], dy = [1; −1], dxx = [−1 2 −1], dyy = [−1; 2; −1] and dxy = [−1 1; 1 −1], each 'valid'
on the latent grid, with s_f = 1 for the first derivatives and 1/4 for the second. The |d|^0.8 prior is
minimised by iteratively reweighted least squares, as the MATLAB code does:

    1. every weight 1 (a Gaussian prior on the five derivatives): solve
           (AᵀA + we·Σ_f D_fᵀ W_f D_f) x = Aᵀy
       by exactly `iterations` steps of plain conjugate gradients from y replicate-padded to the latent grid;
    2. `reweightings` times (2): W_f = s_f·0.1·max(|D_f x|, 0.01)^(0.8 − 2) at the last x, then the same solve,
       again from the padded y.

The result is the centre of x, the size of y, unclipped. we = 0.003 with 200 iterations (the defaults) is the
setting that reproduces SelfDeblur's "known k" row on Levin's 32 images; Levin's own evaluation scripts call
deconvSps with we = 0.0068 and 70 iterations.
"""

from __future__ import annotations

import torch

from .blur import centre_of, pad_to_latent
from .blur import valid_blur_by_fft
from .solvers import conjugate_gradient

# (filter as correlated by conv2d, its weight s_f): the first derivatives, then the second
DERIVATIVES = (([[1.0, -1.0]], 1.0), ([[1.0], [-1.0]], 1.0), ([[-1.0, 2.0, -1.0]], 0.25),
               ([[-1.0], [2.0], [-1.0]], 0.25), ([[-1.0, 1.0], [1.0, -1.0]], 0.25))


def correlate(x: torch.Tensor, taps: list[list[float]]) -> torch.Tensor:
    """The 'valid' correlation of x with a small filter, as a sum of shifted slices (conv2d is slow in float64)."""
    th, tw = len(taps), len(taps[0])
    h, w = x.shape[-2] - th + 1, x.shape[-1] - tw + 1
    return sum(c * x[..., a : a + h, b : b + w] for a, row in enumerate(taps) for b, c in enumerate(row) if c)


def correlate_adjoint(r: torch.Tensor, taps: list[list[float]]) -> torch.Tensor:
    """The adjoint of `correlate`: each tap's slice of r added back where it came from (a 'full' convolution)."""
    th, tw = len(taps), len(taps[0])
    h, w = r.shape[-2], r.shape[-1]
    out = r.new_zeros(*r.shape[:-2], h + th - 1, w + tw - 1)
    for a, row in enumerate(taps):
        for b, c in enumerate(row):
            if c:
                out[..., a : a + h, b : b + w] += c * r
    return out


def irls_weights(x: torch.Tensor, exponent: float = 0.8, floor: float = 0.01, scale: float = 0.1) -> list[torch.Tensor]:
    """The reweighting of |d|^exponent at x: W_f = s_f·scale·max(|D_f x|, floor)^(exponent − 2), one map per filter
    (each the size of D_f x)."""
    return [s * scale * correlate(x, taps).abs().clamp(min=floor) ** (exponent - 2) for taps, s in DERIVATIVES]


def deconv_sps(blurred: torch.Tensor, kernel: torch.Tensor, weight: float = 3e-3, iterations: int = 200,
               reweightings: int = 2, exponent: float = 0.8) -> torch.Tensor:
    """Levin's deconvSps of y (1, 1, H, W) with the kernel k (K_h, K_w), y = k ⋆ x + n ('valid' correlation):
    the sharp image, (1, 1, H, W), in y's dtype (see the module's docstring)."""
    y = blurred.detach().double()
    k = kernel.detach().double().reshape(1, 1, *kernel.shape[-2:])
    start = pad_to_latent(y, k.shape[-2:])
    forward, adjoint = valid_blur_by_fft(k, start.shape[-2:])
    rhs = adjoint(y)
    weights = [torch.ones_like(correlate(start, taps)) for taps, _ in DERIVATIVES]
    x = start
    for _ in range(1 + reweightings):
        def normal(v: torch.Tensor, weights=weights) -> torch.Tensor:
            prior = sum(correlate_adjoint(w * correlate(v, taps), taps) for (taps, _), w in zip(DERIVATIVES, weights))
            return adjoint(forward(v)) + weight * prior

        x = conjugate_gradient(normal, rhs, 0.0, iterations, x0=start).x
        weights = irls_weights(x, exponent)
    return centre_of(x, k.shape[-2:]).to(blurred.dtype)
