"""dipkit.blur: every forward model against deepinv's, and every adjoint by ⟨A x, r⟩ = ⟨x, Aᵀ r⟩."""

import pytest
import torch
import torch.nn.functional as F
from deepinv.physics import BlurFFT
from deepinv.physics.functional import conv2d, conv_transpose2d, filter_fft

from dipkit import kernels
from dipkit.blur import (blur, blur_adjoint, blur_valid, blur_valid_adjoint, circular_blur, circular_blur_adjoint,
                         kernel_spectrum, operator_norm_squared, valid_blur_by_fft)

torch.manual_seed(0)
SHAPES = [((5, 5), 3, 3), ((5, 5), 3, 1), ((4, 6), 3, 3), ((3, 3), 1, 1), ((1, 1), 3, 3)]
KERNEL_SIZES = [(5, 5), (4, 6), (28, 28), (1, 1)]


def inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum()


# --- the replicate-padded convolution ---------------------------------------------------------------------------

@pytest.mark.parametrize("size, channels, kernel_channels", SHAPES)
def test_blur_adjoint_is_exact(size, channels, kernel_channels):
    x = torch.rand(2, channels, 17, 13, dtype=torch.float64)
    r = torch.rand_like(x)
    b = torch.rand(kernel_channels, *size, dtype=torch.float64)
    assert torch.isclose(inner(blur(x, b), r), inner(x, blur_adjoint(r, b)), rtol=1e-12)


@pytest.mark.parametrize("size, channels, kernel_channels", [s for s in SHAPES if s[0] != (1, 1)])
def test_blur_matches_deepinv(size, channels, kernel_channels):
    x = torch.rand(2, channels, 17, 13, dtype=torch.float64)
    b = torch.rand(kernel_channels, *size, dtype=torch.float64)
    torch.testing.assert_close(blur(x, b), conv2d(x, b[None], padding="replicate"))
    torch.testing.assert_close(blur_adjoint(x, b), conv_transpose2d(x, b[None], padding="replicate"))


def test_blur_is_a_convolution_not_a_correlation():
    x = torch.zeros(1, 1, 9, 9, dtype=torch.float64)
    x[0, 0, 4, 4] = 1
    b = torch.zeros(3, 3, dtype=torch.float64)
    b[0, 2] = 1  # the impulse response of a convolution is the kernel itself
    assert blur(x, b)[0, 0, 3:6, 3:6].equal(b)


def test_operator_norm_matches_the_matrix():
    shape, b = (1, 1, 7, 6), kernels.diagonal_motion(3).double()
    basis = torch.eye(42, dtype=torch.float64).reshape(42, 1, 7, 6)
    matrix = blur(basis, b).reshape(42, 42)
    exact = torch.linalg.matrix_norm(matrix, ord=2).item() ** 2
    assert operator_norm_squared(b, shape, iterations=300) == pytest.approx(exact, rel=1e-6)


# --- the 'valid' cross-correlation ------------------------------------------------------------------------------

@pytest.mark.parametrize("size", KERNEL_SIZES)
def test_valid_blur_matches_deepinv_and_its_adjoint_is_exact(size):
    x = torch.rand(2, 3, 40, 37, dtype=torch.float64)
    k = torch.rand(*size, dtype=torch.float64)
    y = blur_valid(x, k)
    assert y.shape == (2, 3, 40 - size[0] + 1, 37 - size[1] + 1)
    torch.testing.assert_close(y, conv2d(x, k[None, None], padding="valid", correlation=True))
    r = torch.rand_like(y)
    torch.testing.assert_close(blur_valid_adjoint(r, k), conv_transpose2d(r, k[None, None], padding="valid",
                                                                          correlation=True))
    assert torch.isclose(inner(y, r), inner(x, blur_valid_adjoint(r, k)), rtol=1e-12)


def test_valid_blur_is_selfdeblurs_conv2d_bit_for_bit():
    x, k = torch.rand(1, 3, 30, 28), torch.rand(7, 5)
    assert torch.equal(blur_valid(x, k), F.conv2d(x, k.view(1, 1, 7, 5).expand(3, 1, -1, -1), groups=3))


def test_valid_blur_is_a_correlation():
    x = torch.zeros(1, 1, 7, 7, dtype=torch.float64)
    x[0, 0, 3, 3] = 1
    k = torch.zeros(3, 3, dtype=torch.float64)
    k[0, 2] = 1  # a correlation's impulse response is the kernel rotated by 180°
    assert blur_valid(x, k)[0, 0, 1:4, 1:4].equal(k.flip(-2, -1))


@pytest.mark.parametrize("size", KERNEL_SIZES)
def test_valid_blur_by_fft_is_the_same_pair(size):
    x = torch.rand(2, 1, 45, 41, dtype=torch.float64)
    k = torch.rand(1, 1, *size, dtype=torch.float64)
    forward, adjoint = valid_blur_by_fft(k, x.shape[-2:])
    torch.testing.assert_close(forward(x), blur_valid(x, k))
    r = torch.rand_like(forward(x))
    torch.testing.assert_close(adjoint(r), blur_valid_adjoint(r, k))


# --- the circular convolution -----------------------------------------------------------------------------------

def test_circular_blur_is_the_centred_circular_convolution():
    x, kernel = torch.rand(2, 1, 12, 10, dtype=torch.float64), torch.rand(2, 1, 5, 4, dtype=torch.float64)
    expected = torch.zeros_like(x)
    for a in range(5):
        for b in range(4):  # y(i, j) = Σ k(a, b) x(i − (a − 2), j − (b − 2)), indices mod the image size
            expected += kernel[:, :, a : a + 1, b : b + 1] * torch.roll(x, (a - 2, b - 2), (-2, -1))
    assert torch.allclose(circular_blur(x, kernel), expected)
    delta = torch.zeros(5, 4, dtype=torch.float64)
    delta[2, 2] = 1
    assert torch.allclose(circular_blur(x, delta), x)


@pytest.mark.parametrize("size", KERNEL_SIZES)
@pytest.mark.parametrize("batch_kernels", [False, True])
def test_circular_blur_matches_deepinvs_blur_fft_and_its_adjoint_is_exact(size, batch_kernels):
    x = torch.rand(2, 3, 32, 30, dtype=torch.float64)
    k = torch.rand(2 if batch_kernels else 1, 1, *size, dtype=torch.float64)
    physics = BlurFFT((3, 32, 30), filter=k)
    torch.testing.assert_close(circular_blur(x, k), physics.A(x))
    if size != (1, 1):  # deepinv warns that a 1x1 kernel needs no padding
        torch.testing.assert_close(circular_blur(x, k), conv2d(x, k, padding="circular"))
    r = torch.rand_like(x)
    torch.testing.assert_close(circular_blur_adjoint(r, k), physics.A_adjoint(r))
    assert torch.isclose(inner(circular_blur(x, k), r), inner(x, circular_blur_adjoint(r, k)), rtol=1e-12)
    torch.testing.assert_close(kernel_spectrum(k, (32, 30)), filter_fft(k, (32, 30), dims=(-2, -1)))


def test_circular_blur_is_the_old_formula_bit_for_bit_values_and_gradients():
    """generative.py's circular blur before it moved here, rfft2 without `s`; the same numbers, forward and back."""
    x = torch.rand(3, 1, 32, 32, requires_grad=True)
    k = torch.rand(3, 1, 28, 28, requires_grad=True)
    old = torch.fft.irfft2(torch.fft.rfft2(x) * kernel_spectrum(k, (32, 32)), s=(32, 32))
    new = circular_blur(x, k)
    assert torch.equal(old, new)
    weights = torch.rand_like(old)
    assert all(torch.equal(a, b) for a, b in zip(torch.autograd.grad(old, (x, k), weights),
                                                 torch.autograd.grad(new, (x, k), weights)))
