"""The forward models: per-channel blurs of images x (N, C, H, W) by a kernel b, each with its exact adjoint.

    blur, blur_adjoint                   B_b x, a true convolution with replicate padding (Neumann boundary), the
                                         output the size of x: deepinv's conv2d(x, b, padding="replicate") and
                                         conv_transpose2d (ADP)
    blur_valid, blur_valid_adjoint       b ⋆ x, the 'valid' cross-correlation (PyTorch's conv2d), the output smaller
                                         than x by the kernel size minus one, so nothing depends on a boundary rule:
                                         deepinv's conv2d(x, b, padding="valid", correlation=True) (SelfDeblur, VDIP)
    valid_blur_by_fft                    the same pair computed by FFTs, for large kernels in float64
    circular_blur, circular_blur_adjoint x ⊛ b, the circular convolution with the kernel centred at (h//2, w//2),
                                         multiplied in Fourier: deepinv's BlurFFT (the generative priors)

The replicate-padded pair is written on `torch.nn.functional.conv2d` alone because PyTorch's `conv_transpose2d`
is about four times slower in float64 on a CPU. Every operator is differentiable with respect to the kernel as
well as the image. The tests check each against deepinv and each adjoint by ⟨A x, r⟩ = ⟨x, Aᵀ r⟩.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

Operator = Callable[[torch.Tensor], torch.Tensor]


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


# ---------------------------------------------------------------------------------------------------------------
# The 'valid' cross-correlation


def blur_valid(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """(b ⋆ x)(i, j) = Σ_{a,c} b(a, c) x(i + a, j + c) for x (N, C, H + K_h − 1, W + K_w − 1): SelfDeblur's forward
    model, an (N, C, H, W) image; one kernel (K_h, K_w) for every channel."""
    return F.conv2d(x, kernel.view(1, 1, *kernel.shape[-2:]).expand(x.shape[1], 1, -1, -1), groups=x.shape[1])


def blur_valid_adjoint(r: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """(b ⋆ ·)ᵀ r, the full convolution of r (N, C, H, W) with b: an (N, C, H + K_h − 1, W + K_w − 1) image."""
    return F.conv_transpose2d(r, kernel.view(1, 1, *kernel.shape[-2:]).expand(r.shape[1], 1, -1, -1),
                              groups=r.shape[1])


def valid_blur_by_fft(kernel: torch.Tensor, latent_shape: tuple[int, int]) -> tuple[Operator, Operator]:
    """(x ↦ b ⋆ x, r ↦ (b ⋆ ·)ᵀ r) for latent images of `latent_shape`, by FFTs on a grid at least the latent's
    size (the next with factors 2, 3 and 5 only): b ⋆ x is the top-left (H − K_h + 1) x (W − K_w + 1) of the
    circular correlation there (nothing wraps), its adjoint the latent-sized corner of the circular convolution of
    the zero-padded r (nothing wraps into it)."""
    h, w = latent_shape[0] - kernel.shape[-2] + 1, latent_shape[1] - kernel.shape[-1] + 1
    grid = (fast_fft_size(latent_shape[0]), fast_fft_size(latent_shape[1]))  # any grid this large wraps nothing
    spectrum = torch.fft.rfft2(kernel.reshape(1, 1, *kernel.shape[-2:]), s=grid)  # b at the origin
    correlation = spectrum.conj()

    def forward(x: torch.Tensor) -> torch.Tensor:
        return fourier_multiply(x, correlation, grid)[..., :h, :w]

    def adjoint(r: torch.Tensor) -> torch.Tensor:
        return fourier_multiply(r, spectrum, grid)[..., : latent_shape[0], : latent_shape[1]]

    return forward, adjoint


def fast_fft_size(n: int) -> int:
    """The least m ≥ n with no prime factor above 5: an FFT of a prime length (Levin's latent images are 269 and
    281 pixels wide) is several times slower."""
    m = n
    while True:
        rest = m
        for p in (2, 3, 5):
            while rest % p == 0:
                rest //= p
        if rest == 1:
            return m
        m += 1


# ---------------------------------------------------------------------------------------------------------------
# The circular convolution


def fourier_multiply(x: torch.Tensor, transfer: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """irfft2(rfft2(x) · transfer) on a `shape` grid, x zero-padded to it: the circular convolution with the filter
    whose rfft2 is `transfer` (its correlation for transfer.conj())."""
    return torch.fft.irfft2(torch.fft.rfft2(x, s=shape) * transfer, s=shape)


def kernel_spectrum(kernel: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """rfft2 of kernels (B, 1, h, w) or one (h, w), zero-padded to `shape` with the centre pixel (h // 2, w // 2)
    at the origin: the transfer function of the circular blur (deepinv's filter_fft)."""
    h, w = kernel.shape[-2:]
    padded = F.pad(kernel.reshape(-1, 1, h, w), (0, shape[1] - w, 0, shape[0] - h))
    return torch.fft.rfft2(torch.roll(padded, shifts=(-(h // 2), -(w // 2)), dims=(-2, -1)))


def circular_blur(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """(x ⊛ b)(i, j) = Σ_{a,c} b(a, c) x(i − a + h//2, j − c + w//2), indices modulo the image size: each channel of
    x (B, C, H, W) with its batch's kernel (B, 1, h, w), or one kernel (h, w) for all."""
    shape = x.shape[-2:]
    return fourier_multiply(x, kernel_spectrum(kernel, shape), shape)


def circular_blur_adjoint(r: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """(· ⊛ b)ᵀ r: the circular correlation with b, the conjugate transfer function."""
    shape = r.shape[-2:]
    return fourier_multiply(r, kernel_spectrum(kernel, shape).conj(), shape)


def centre_of(latent: torch.Tensor, kernel_size: tuple[int, int]) -> torch.Tensor:
    """The H x W centre of a latent image of (H + K_h − 1) x (W + K_w − 1): where y sees it."""
    (kh, kw), (h, w) = kernel_size, latent.shape[-2:]
    top, left = (kh - 1) // 2, (kw - 1) // 2
    return latent[..., top : top + h - kh + 1, left : left + w - kw + 1]


def pad_to_latent(image: torch.Tensor, kernel_size: tuple[int, int]) -> torch.Tensor:
    """An H x W image replicate-padded to the latent's (H + K_h − 1) x (W + K_w − 1), centred as `centre_of`."""
    kh, kw = kernel_size
    return F.pad(image, ((kw - 1) // 2, kw // 2, (kh - 1) // 2, kh // 2), mode="replicate")
