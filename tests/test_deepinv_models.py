"""The methods as deepinv models (deepinv_models.py): deepinv's physics and noise models feed them, deepinv's
metrics read their outputs, and each is its script's loop (the same numbers on the same input and seed)."""

import pytest
import torch

deepinv = pytest.importorskip("deepinv")

import dip_denoise  # noqa: E402
import deepinv_models  # noqa: E402


def test_dip_on_deepinv_denoising_is_dip_denoise_on_the_same_image_seed_and_sigma(tiny_dip, tmp_path):
    """The script's run (its noise, its σ given) and the model on the script's noisy image with deepinv's
    Denoising(GaussianNoise(σ)): the same denoised image, curves and every rule's choice, bit for bit."""
    sigma = 0.1
    config = tiny_dip(tmp_path, iterations=40, images=("camera",), size=64, noise_level=sigma, sigma=sigma)
    script = dip_denoise.run(config)["results"]["camera"]
    clean = dip_denoise.load_clean("camera", config)
    noisy = dip_denoise.add_noise(clean, config, config.seed + 1)
    model = deepinv_models.DIP(quick=True, iterations=40, stop_window=4, stop_patience=4, checkpoint_every=6)
    physics = deepinv.physics.Denoising(deepinv.physics.GaussianNoise(sigma=sigma))
    x_hat = model(noisy, physics, x=clean)
    (result,) = model.history
    assert torch.equal(x_hat, script.denoised) and result.sigma == pytest.approx(sigma, rel=1e-7)  # deepinv: float32
    for key, curve in script.curves.items():
        torch.testing.assert_close(torch.tensor(result.curves[key]), torch.tensor(curve), rtol=0, atol=0,
                                   equal_nan=True)
    assert {rule: c.iteration for rule, c in result.choices.items()} == {
        rule: c.iteration for rule, c in script.choices.items()}
    assert result.oracle_iteration == script.oracle_iteration


def test_dip_inpaints_through_deepinv_physics_and_its_residual_rules_read_the_measurement(tiny_network):
    """Inpainting (half the pixels kept): the loss and the residual rules see A x̄ = mask ⊙ x̄ against y, the
    PSNR against y reads A(output); deepinv's PSNR reads the output, better than the masked image's."""
    generator = torch.Generator().manual_seed(0)
    clean = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8, generator=generator), size=64, mode="bilinear")
    physics = deepinv.physics.Inpainting(img_size=(3, 64, 64), mask=0.5, rng=torch.Generator().manual_seed(1))
    y = physics.A(clean)
    model = deepinv_models.DIP(quick=True, iterations=60, stop_window=4, stop_patience=10, checkpoint_every=10,
                               sigma=0.01)
    x_hat = model(y, physics, x=clean)
    (result,) = model.history
    psnr = deepinv.metric.PSNR()
    assert x_hat.shape == clean.shape and psnr(x_hat, clean).item() > psnr(y, clean).item()
    final = result.final_average
    residual = torch.nn.functional.mse_loss(physics.A(final), y).item()
    assert result.curves["residual"][-1] == pytest.approx(residual, rel=1e-5)
    assert result.curves["residual"][-1] < torch.nn.functional.mse_loss(final, y).item()  # masked pixels left out


def test_dip_super_resolves_to_the_image_size_of_the_physics(tiny_network):
    """×4 downsampling: y is 16×16, the image and the output 64×64; the residual rules read ‖y − A x̄‖²/m."""
    clean = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    physics = deepinv.physics.Downsampling(img_size=(3, 64, 64), filter="bicubic", factor=4)
    y = physics.A(clean)
    model = deepinv_models.DIP(quick=True, iterations=20, stop_window=4, stop_patience=10, checkpoint_every=10,
                               sigma=0.01)
    x_hat = model(y, physics)
    assert y.shape == (1, 3, 16, 16) and x_hat.shape == (1, 3, 64, 64)
    (result,) = model.history
    residual = torch.nn.functional.mse_loss(physics.A(result.final_average), y).item()
    assert result.curves["residual"][-1] == pytest.approx(residual, rel=1e-5)


def test_a_batch_of_three_images_gives_each_its_own_run_and_sigma_from_the_noise_model(tiny_network):
    clean = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    physics = deepinv.physics.Denoising(deepinv.physics.GaussianNoise(sigma=0.05,
                                                                      rng=torch.Generator().manual_seed(2)))
    y = physics(clean)
    model = deepinv_models.DIP(quick=True, iterations=12, stop_window=4, stop_patience=4, checkpoint_every=6)
    x_hat = model(y, physics, x=clean)
    assert x_hat.shape == clean.shape and len(model.history) == 3
    assert all(result.sigma == pytest.approx(0.05) for result in model.history)
    alone = dip_denoise.denoise([dip_denoise.DIPRun(y[1:2], model.config, clean[1:2], 0.05)])[0]
    assert torch.equal(alone.denoised, x_hat[1:2])


def test_importing_dipkit_and_the_scripts_does_not_import_deepinv():
    import subprocess
    import sys

    code = ("import sys, dipkit, dip_denoise, selfdeblur, vdip, ADP; "
            "print(any(m == 'deepinv' or m.startswith('deepinv.') for m in sys.modules))")
    from conftest import ROOT

    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
