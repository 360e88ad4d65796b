"""Blur operators: B_b x, a per-channel convolution with kernel b and replicate padding (Neumann boundary).

The convolution is a true convolution (not PyTorch's cross-correlation), the same as deepinv's
`conv2d(x, b, padding="replicate")`, and `blur_adjoint` is its exact adjoint, the same as deepinv's
`conv_transpose2d`; the tests check both. Both are written on `torch.nn.functional.conv2d` alone because PyTorch's
`conv_transpose2d` is about four times slower in float64 on a CPU. Both are differentiable with respect to the
kernel as well as the image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def as_filter(kernel: torch.Tensor) -> torch.Tensor:
    """(k, k) -> (1, 1, k, k), one kernel for every channel; (C, k, k) -> (1, C, k, k), one per channel."""
    if kernel.dim() == 2:
        return kernel[None, None]
    if kernel.dim() == 3:
        return kernel[None]
    return kernel


def _grouped_weight(kernel: torch.Tensor, channels: int) -> torch.Tensor:
    """(C or 1, k, k) kernels as the (C, 1, k, k) weight of a grouped conv2d."""
    return as_filter(kernel)[0].expand(channels, -1, -1)[:, None]


def _padding(kernel: torch.Tensor) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) padding that keeps the size and the kernel centre at (h//2, w//2)."""
    h, w = kernel.shape[-2:]
    return (w // 2 - (w - 1) % 2, w // 2, h // 2 - (h - 1) % 2, h // 2)


def blur(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """B_b x for x of shape (N, C, H, W)."""
    weight = _grouped_weight(kernel, x.shape[1]).flip(-2, -1)  # conv2d correlates: flip for a convolution
    return F.conv2d(F.pad(x, _padding(kernel), mode="replicate"), weight, groups=x.shape[1])


def blur_adjoint(r: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """B_bᵀ r: the full correlation with b, then the replicate padding folded back onto the border pixels."""
    h, w = kernel.shape[-2:]
    weight = _grouped_weight(kernel, r.shape[1])
    padded = F.conv2d(F.pad(r, (w - 1, w - 1, h - 1, h - 1)), weight, groups=r.shape[1])
    left, right, top, bottom = _padding(kernel)
    padded = _fold(padded, top, bottom, dim=-2)
    return _fold(padded, left, right, dim=-1)


def _fold(z: torch.Tensor, before: int, after: int, dim: int) -> torch.Tensor:
    """Adjoint of replicate padding along one axis: add the padded slices onto the first and last pixels."""
    n = z.shape[dim] - before - after
    inner = z.narrow(dim, before, n).clone()
    if before:
        inner.narrow(dim, 0, 1).add_(z.narrow(dim, 0, before).sum(dim, keepdim=True))
    if after:
        inner.narrow(dim, n - 1, 1).add_(z.narrow(dim, before + n, after).sum(dim, keepdim=True))
    return inner


def operator_norm_squared(kernel: torch.Tensor, shape: tuple[int, ...], iterations: int = 50, seed: int = 0) -> float:
    """‖B_b‖² (largest eigenvalue of B_bᵀB_b on images of `shape`) by the power method."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    v = torch.rand(shape, generator=generator, dtype=kernel.dtype).to(kernel.device)
    value = 0.0
    for _ in range(iterations):
        w = blur_adjoint(blur(v, kernel), kernel)
        value = torch.linalg.vector_norm(w).item() / torch.linalg.vector_norm(v).item()
        v = w / torch.linalg.vector_norm(w)
    return value
