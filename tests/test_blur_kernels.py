import pytest
import torch
from deepinv.physics.functional import conv2d, conv_transpose2d

from dipkit import kernels
from dipkit.blur import blur, blur_adjoint, operator_norm_squared

torch.manual_seed(0)
SHAPES = [((5, 5), 3, 3), ((5, 5), 3, 1), ((4, 6), 3, 3), ((3, 3), 1, 1), ((1, 1), 3, 3)]


@pytest.mark.parametrize("size, channels, kernel_channels", SHAPES)
def test_blur_adjoint_is_exact(size, channels, kernel_channels):
    x = torch.rand(2, channels, 17, 13, dtype=torch.float64)
    r = torch.rand_like(x)
    b = torch.rand(kernel_channels, *size, dtype=torch.float64)
    lhs = (blur(x, b) * r).sum()
    rhs = (x * blur_adjoint(r, b)).sum()
    assert torch.isclose(lhs, rhs, rtol=1e-12)


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


def test_named_kernels():
    motion = kernels.diagonal_motion(5)
    assert torch.equal(motion.diagonal(), torch.full((5,), 0.2)) and motion.sum() == pytest.approx(1)
    disc = kernels.disc(5)
    assert (disc > 0).sum() == 13 and disc.sum() == pytest.approx(1)
    g = kernels.gaussian(5, 0.5)
    assert g.sum() == pytest.approx(1) and g.argmax() == 12 and torch.allclose(g, g.T) and torch.allclose(g, g.flip(0))


def test_random_motion_is_a_seeded_normalised_kernel():
    a, b, c = kernels.random_motion(15, seed=1), kernels.random_motion(15, seed=1), kernels.random_motion(15, seed=2)
    assert a.shape == (15, 15) and a.min() >= 0 and a.sum() == pytest.approx(1, abs=1e-5)
    assert torch.equal(a, b) and not torch.equal(a, c)
