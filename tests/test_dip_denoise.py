import json

import pytest
import torch
from PIL import Image

import dip_denoise
from dipkit.cli import make_config
from dipkit.networks import SkipNetwork, parameter_count



def synthetic_clean(size=64):
    t = torch.linspace(0, 1, size)
    clean = torch.zeros(1, 3, size, size)
    clean[..., size // 4 : 3 * size // 4, size // 5 : 3 * size // 5] = 0.8
    clean[:, 1] += 0.3 * t[None, :]
    clean[:, 2] += 0.2 * t[:, None]
    return clean.clamp(0, 1)


def test_the_paper_network_has_2217831_parameters():
    assert parameter_count(SkipNetwork(32, 3)) == 2_217_831


def test_the_network_keeps_the_size_and_takes_non_local_blocks():
    net = SkipNetwork(8, 1, (16,) * 5, (16,) * 5, (16,) * 5, (False, False, True, True, True))
    assert net(torch.rand(2, 8, 64, 96)).shape == (2, 1, 64, 96)
    out = SkipNetwork(32, 3)(torch.rand(1, 32, 70, 90))  # not a multiple of 32: the merges crop
    assert out.shape == (1, 3, 70, 90) and 0 < out.min() and out.max() < 1  # the sigmoid head


def test_the_loop_raises_psnr_on_a_synthetic_noisy_image():
    clean = synthetic_clean()
    config = make_config(dip_denoise.Config, quick=True, iterations=150, noise_level=0.2, progress=False)
    result = dip_denoise.denoise(dip_denoise.add_noise(clean, config, 1), config, clean)
    m = result.metrics
    assert m["final_output"]["psnr"] > m["noisy"]["psnr"] + 3
    psnrs = result.curves["psnr_clean_average"]
    assert psnrs[-1] > psnrs[10] + 3
    assert result.oracle_iteration == max(range(150), key=lambda k: psnrs[k])
    assert m["oracle"]["psnr"] == pytest.approx(max(psnrs), abs=1e-3)


def test_backtracking_restores_parameters_batchnorm_adam_and_average():
    config = make_config(dip_denoise.Config, quick=True)
    noisy = synthetic_clean()
    state = dip_denoise.DIPState(noisy, config, torch.Generator().manual_seed(0))

    def steps(k):
        for _ in range(k):
            out = state.net(state.z0 + 0.03 * torch.randn_like(state.z0))
            loss = torch.nn.functional.mse_loss(out, noisy)
            state.optimiser.zero_grad()
            loss.backward()
            state.optimiser.step()
            state.average.mul_(0.9).add_(out.detach(), alpha=0.1)
            state.steps += 1

    steps(3)
    checkpoint = state.checkpoint()
    saved = {k: v.clone() for k, v in state.net.state_dict().items()}
    saved_adam = [s["exp_avg"].clone() for s in state.optimiser.state.values()]
    steps(4)
    assert not torch.equal(state.net.state_dict()["head.weight"], saved["head.weight"])
    state.restore(checkpoint)
    for key, value in state.net.state_dict().items():  # parameters and BatchNorm running statistics
        assert torch.equal(value, saved[key]), key
    for now, before in zip((s["exp_avg"] for s in state.optimiser.state.values()), saved_adam):
        assert torch.equal(now, before)
    assert torch.equal(state.average, checkpoint["average"]) and state.steps == 3
    steps(2)  # training on after a restore must not alter the checkpoint it came from
    assert all(torch.equal(checkpoint["net"][k], saved[k]) for k in saved)
    assert all(torch.equal(c["exp_avg"], b) for c, b in zip(checkpoint["optimiser"]["state"].values(), saved_adam))


def test_a_psnr_drop_triggers_a_restore(monkeypatch):
    """Force one drop of 20 dB in the logged PSNR: the run must restore the checkpoint once and finish."""
    real = dip_denoise._psnr_device
    calls = {"n": 0}

    def dropping(x, reference):
        calls["n"] += 1
        value = real(x, reference)
        return value - 20 if calls["n"] == 70 else value

    monkeypatch.setattr(dip_denoise, "_psnr_device", dropping)
    config = make_config(dip_denoise.Config, quick=True, iterations=80, checkpoint_every=20, progress=False)
    result = dip_denoise.denoise(synthetic_clean(), config)
    assert result.backtracks == 1 and result.iterations_run == 80 + 20


def test_the_stopping_rule_stops_without_a_clean_image():
    clean = synthetic_clean()
    config = make_config(dip_denoise.Config, quick=True, iterations=400, noise_level=0.2, stop_window=10,
                         stop_patience=30, checkpoint_every=10, progress=False)
    result = dip_denoise.denoise(dip_denoise.add_noise(clean, config, 1), config)  # no clean image: stops early
    assert result.stop_fired and result.iterations_run < 400
    variance = result.curves["variance"]
    assert result.stop_iteration == min(range(len(variance)), key=lambda k: (variance[k] != variance[k], variance[k]))
    assert result.oracle_iteration is None and result.metrics == {}


def test_api_from_a_path_and_folder_mode(tmp_path):
    images = tmp_path / "photos"
    images.mkdir()
    for k, name in enumerate(("a.png", "b.jpg")):
        array = (synthetic_clean(80)[0].permute(1, 2, 0).numpy() * 255).astype("uint8")
        Image.fromarray(array).save(images / name)
    (images / "notes.txt").write_text("not an image")
    config = make_config(dip_denoise.Config, quick=True, iterations=30, size=64, folder=str(images),
                         results_dir=str(tmp_path / "out"), run_name="folder", progress=False)
    out = dip_denoise.run(config)
    assert [row["image"] for row in out["table"]] == ["a", "b"]
    folder = tmp_path / "out" / "dip_denoise" / "folder"
    for name in ("a/DIP.png", "a/curve.png", "a/curve.csv", "a/denoised.png", "b/DIP.png", "table.csv",
                 "config.json", "metrics.json"):
        assert (folder / name).stat().st_size > 0, name
    assert json.loads((folder / "metrics.json").read_text())["images"]["a"]["noisy"]["psnr"] > 0
    result = dip_denoise.denoise(str(images / "a.png"), make_config(dip_denoise.Config, quick=True, iterations=20,
                                                                    progress=False))
    assert result.denoised.shape == (1, 3, 80, 80) and result.device == "cpu" and result.seconds > 0


@pytest.mark.parametrize(
    "arguments, message",
    [(["--images", "missing.png"], "not found"), (["--size", "40"], "multiple of 32"),
     (["--folder", "no/such/folder"], "does not exist")],
)
def test_bad_input_exits_with_code_2_and_one_line(refused, arguments, message):
    refused("dip_denoise.py", arguments, message)


def test_bf16_autocast_and_channels_last_run_and_denoise():
    clean = synthetic_clean()
    config = make_config(dip_denoise.Config, quick=True, iterations=40, noise_level=0.2, bf16=True,
                         channels_last=True, progress=False)
    result = dip_denoise.denoise(dip_denoise.add_noise(clean, config, 1), config, clean)
    assert result.final_output.dtype == torch.float32
    assert result.metrics["final_output"]["psnr"] > result.metrics["noisy"]["psnr"]
