"""dipkit.kernels: every kernel source. (The blur operators are tested in test_forward_models.py.)"""

import pytest
import torch
from deepinv.physics.generator import MotionBlurGenerator

from dipkit import kernels


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


def extent(kernel: torch.Tensor) -> float:
    """The side of the kernel's support (values above 1e-3 of its peak) over the frame's."""
    support = torch.nonzero(kernel > 1e-3 * kernel.max())
    return max((support.max(0).values - support.min(0).values + 1).tolist()) / kernel.shape[-1]


def test_the_synthetic_benchmarks_motion_kernel_is_deepinvs_with_sigma_half_spanning_two_thirds_of_the_frame():
    for seed in (0, 3):
        expected = MotionBlurGenerator((15, 15), l=0.3, sigma=0.5).step(1, seed=seed)["filter"][0, 0].float()
        assert torch.equal(kernels.motion_kernel(15, seed), expected)
    spans = [extent(kernels.motion_kernel(15, seed)) for seed in range(20)]
    assert 0.55 < sum(spans) / 20 < 0.8  # Levin's kernels span about two thirds of their frame
    assert sum(spans) > 1.4 * sum(extent(kernels.random_motion(15, seed)) for seed in range(20))


def test_camera_shake_kernels_are_non_negative_sum_to_one_are_centred_and_repeat():
    shakes = kernels.camera_shake_kernels(500, seed=3)
    assert shakes.shape == (500, 28, 28) and shakes.min() >= 0
    assert torch.allclose(shakes.sum(dim=(-2, -1)), torch.ones(500), atol=1e-5)
    t = torch.arange(28.0)
    rows, cols = (shakes * t[:, None]).sum(dim=(-2, -1)), (shakes * t).sum(dim=(-2, -1))
    inside = (shakes[:, [0, -1], :].sum(dim=(-2, -1)) + shakes[:, :, [0, -1]].sum(dim=(-2, -1))) == 0
    assert inside.float().mean() > 0.9  # paths rarely reach the frame's border, where they are clamped
    assert torch.allclose(rows[inside], torch.full_like(rows[inside], 13.5), atol=1e-3)  # barycentre at the centre
    assert torch.allclose(cols[inside], torch.full_like(cols[inside], 13.5), atol=1e-3)
    assert torch.equal(shakes, kernels.camera_shake_kernels(500, seed=3))
    short, long = (kernels.camera_shake_kernels(300, seed=4, lengths=(n, n)) for n in (5, 25))
    support = lambda k: (k > 0).sum(dim=(-2, -1)).float().mean()  # noqa: E731
    assert support(long) > 2 * support(short)


def test_splat_centres_each_path_and_spreads_each_sample_bilinearly():
    still = kernels.splat(torch.full((1, 10), 3 - 2j, dtype=torch.complex128), 5)
    assert still[0, 2, 2] == 1 and still.sum() == 1  # a still camera: all on the centre pixel
    assert torch.allclose(kernels.splat(torch.zeros(1, 4, dtype=torch.complex128), 4)[0, 1:3, 1:3],
                          torch.full((2, 2), 0.25, dtype=torch.float64))  # an even frame's centre is between four
    sideways = kernels.splat(torch.tensor([[0.0, 1.0]], dtype=torch.complex128), 5)[0]  # columns 1.5 and 2.5
    assert torch.allclose(sideways[2, 1:4], torch.tensor([0.25, 0.5, 0.25], dtype=torch.float64))
    assert sideways.sum() == pytest.approx(1) and sideways[[0, 1, 3, 4]].sum() == 0


def test_shake_trajectories_move_at_constant_speed_length_over_steps():
    paths = kernels.shake_trajectories(6, torch.tensor([5, 8, 12, 20, 28, 28]), steps=50,
                                       generator=torch.Generator().manual_seed(0))
    speeds = (paths[:, 1:] - paths[:, :-1]).abs()
    assert torch.allclose(speeds, torch.tensor([5.0, 8, 12, 20, 28, 28], dtype=torch.float64)[:, None] / 49)


@pytest.mark.parametrize("size, seed, support, row_mean, column_mean, energy", [
    (13, 0, 19, 6.150327, 6.202615, 0.12785682), (27, 3, 35, 12.987421, 13.0, 0.04750603)])
def test_the_synthetic_benchmarks_motion_kernels_are_those_it_was_measured_with(size, seed, support, row_mean,
                                                                                column_mean, energy):
    """The synthetic benchmark's kernels come from deepinv's random motion: a deepinv release that drew them
    otherwise would change every synthetic result silently. These values are deepinv 0.5's."""
    from dipkit.kernels import motion_kernel

    k = motion_kernel(size, seed).double()
    index = torch.arange(size, dtype=torch.float64)
    assert k.sum().item() == pytest.approx(1.0, abs=1e-6) and int((k > 0).sum()) == support
    assert (k.sum(1) * index).sum().item() == pytest.approx(row_mean, abs=1e-5)
    assert (k.sum(0) * index).sum().item() == pytest.approx(column_mean, abs=1e-5)
    assert k.square().sum().item() == pytest.approx(energy, abs=1e-7)
