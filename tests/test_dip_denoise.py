import csv
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

import dip_denoise
from dipkit.cli import make_config
from dipkit import dip_report, stopping
from dipkit.networks import SkipNetwork



def denoise(noisy, config, clean=None):
    """One image alone: the script's one loop with a batch of one."""
    (result,) = dip_denoise.denoise([dip_denoise.DIPRun(noisy, config, clean)])
    return result


def synthetic_clean(size=64):
    t = torch.linspace(0, 1, size)
    clean = torch.zeros(1, 3, size, size)
    clean[..., size // 4 : 3 * size // 4, size // 5 : 3 * size // 5] = 0.8
    clean[:, 1] += 0.3 * t[None, :]
    clean[:, 2] += 0.2 * t[:, None]
    return clean.clamp(0, 1)


def test_the_paper_network_has_2217831_parameters():
    assert sum(p.numel() for p in SkipNetwork(32, 3).parameters()) == 2_217_831


def test_the_network_keeps_the_size_and_takes_non_local_blocks():
    net = SkipNetwork(8, 1, (16,) * 5, (16,) * 5, (16,) * 5, (False, False, True, True, True))
    assert net(torch.rand(2, 8, 64, 96)).shape == (2, 1, 64, 96)
    out = SkipNetwork(32, 3)(torch.rand(1, 32, 70, 90))  # not a multiple of 32: the merges crop
    assert out.shape == (1, 3, 70, 90) and 0 < out.min() and out.max() < 1  # the sigmoid head


def test_the_loop_raises_psnr_on_a_synthetic_noisy_image():
    clean = synthetic_clean()
    config = make_config(dip_denoise.Config, quick=True, iterations=90, noise_level=0.2, progress=False)
    result = denoise(dip_denoise.add_noise(clean, config, 1), config, clean)
    m = result.metrics
    assert m["final_output"]["psnr"] > m["noisy"]["psnr"] + 3
    psnrs = result.curves["psnr_clean_average"]
    assert psnrs[-1] > psnrs[10] + 3
    assert result.oracle_iteration == max(range(90), key=lambda k: psnrs[k])
    assert m["oracle"]["psnr"] == pytest.approx(max(psnrs), abs=1e-3)


def test_backtracking_restores_parameters_batchnorm_adam_and_average():
    from dipkit.backtracking import RunState
    from dipkit.batch import StackedAdam, StackedNetworks

    torch.manual_seed(0)
    noisy = synthetic_clean()
    nets = StackedNetworks([SkipNetwork(8, 3, (8,) * 3, (8,) * 3, (4,) * 3, (False,) * 3) for _ in range(2)],
                           torch.device("cpu"), vectorise=False)
    adam = StackedAdam([(nets.parameters(), [0.01] * 2, [0.9] * 2)])
    z0 = torch.rand(2, 1, 8, 64, 64)
    state, other = RunState(nets, adam, 1, z0[1], noisy), RunState(nets, adam, 0, z0[0], noisy)

    def steps(k):
        for _ in range(k):
            adam.zero_grad()
            out = nets(z0 + 0.03 * torch.randn_like(z0))
            torch.nn.functional.mse_loss(out, noisy.expand_as(out)).backward()
            adam.step()
            state.average.mul_(0.9).add_(out[1].detach(), alpha=0.1)
            state.steps += 1

    steps(3)
    checkpoint = state.checkpoint()
    saved = nets.state_of(1)
    saved_adam = [adam.state[p][0][1].clone() for p in nets.parameters()]
    steps(4)
    others = nets.state_of(0)
    assert not torch.equal(nets.state_of(1)["head.weight"], saved["head.weight"])
    state.restore(checkpoint)
    for key, value in nets.state_of(1).items():  # parameters and BatchNorm running statistics
        assert torch.equal(value, saved[key]), key
    assert all(torch.equal(adam.state[p][0][1], b) for p, b in zip(nets.parameters(), saved_adam))
    assert torch.equal(state.average, checkpoint["average"]) and state.steps == 3 and adam.steps == [7, 3]
    assert all(torch.equal(v, others[k]) for k, v in nets.state_of(0).items())  # the other run untouched
    steps(2)  # training on after a restore must not alter the checkpoint it came from
    assert all(torch.equal(checkpoint["net"][k], saved[k]) for k in saved)
    assert all(torch.equal(c[0], b) for c, b in zip(checkpoint["optimiser"]["moments"], saved_adam))
    del other


def test_a_psnr_drop_triggers_a_restore(monkeypatch, tiny_network):
    """Force one drop of 20 dB in the logged PSNR: the run must restore the checkpoint once and finish."""
    real = stopping.psnr_on_device
    calls = {"n": 0}

    def dropping(x, reference):
        calls["n"] += 1
        value = real(x, reference)
        return value - 20 if calls["n"] == 70 else value

    monkeypatch.setattr(stopping, "psnr_on_device", dropping)
    config = make_config(dip_denoise.Config, quick=True, iterations=80, checkpoint_every=20, progress=False)
    result = denoise(synthetic_clean(), config)
    assert result.backtracks == 1 and result.iterations_run == 80 + 20


def test_the_stopping_rule_stops_without_a_clean_image():
    clean = synthetic_clean()
    config = make_config(dip_denoise.Config, quick=True, iterations=400, noise_level=0.2, stop_window=10,
                         stop_patience=30, checkpoint_every=10, progress=False, stop_rule="es_wmv")
    result = denoise(dip_denoise.add_noise(clean, config, 1), config)  # no clean image: stops early
    stop = result.stop
    assert stop.fired and result.iterations_run < 400 and stop is result.choices["es_wmv"]
    assert stop.fired_iteration - stop.iteration == 30  # P iterations without a new minimum
    variance = result.curves["variance"][: stop.fired_iteration + 1]  # the choice is frozen when it fires
    assert stop.iteration == min(range(len(variance)), key=lambda k: (variance[k] != variance[k], variance[k]))
    assert result.oracle_iteration is None and result.metrics == {}


def test_api_from_a_path_and_folder_mode(tmp_path, metrics_of):
    images = tmp_path / "photos"
    images.mkdir()
    for k, name in enumerate(("a.png", "b.jpg")):
        array = (synthetic_clean(80)[0].permute(1, 2, 0).numpy() * 255).astype("uint8")
        Image.fromarray(array).save(images / name)
    (images / "notes.txt").write_text("not an image")
    config = make_config(dip_denoise.Config, quick=True, iterations=12, size=64, folder=str(images),
                         results_dir=str(tmp_path / "out"), run_name="folder", progress=False)
    out = dip_denoise.run(config)
    assert [row["image"] for row in out["table"]] == ["a", "b"]
    folder = tmp_path / "out" / "dip_denoise" / "folder"
    for name in ("a/DIP.png", "a/curve.png", "a/curve.csv", "a/denoised.png", "b/DIP.png", "table.csv",
                 "config.json", "metrics.json"):
        assert (folder / name).stat().st_size > 0, name
    assert metrics_of(folder, "dip_denoise")["items"]["a"]["noisy"]["psnr"] > 0
    result = denoise(dip_denoise.load_image(str(images / "a.png"), channels=3),
                     make_config(dip_denoise.Config, quick=True, iterations=20, progress=False))
    assert result.denoised.shape == (1, 3, 80, 80) and result.device == "cpu" and result.seconds > 0


@pytest.mark.parametrize(
    "arguments, message",
    [(["--images", "missing.png"], "not found"), (["--size", "40"], "multiple of 32"),
     (["--crop", "80"], "crop must be 0 or a multiple of 32"),
     (["--images", "camera", "--crop", "544"], "is smaller than the crop of 544 x 544"),
     (["--folder", "no/such/folder"], "does not exist"), (["--max_restores", "-1"], "max_restores must be in"),
     (["--stop_rule", "sure_centred"], "needs --sure"), (["--sure", "--sure_epsilon", "0"], "sure_epsilon must be"),
     (["--sure", "--no-estimate_sigma"], "--sure needs σ"),
     (["--ema", "1"], "ema must be in"), (["--resume"], "resume needs the run_name"),
     (["--images", str(Path(__file__).resolve().parents[1] / "images")], "is a folder; give its images with --folder")],
)
def test_bad_input_exits_with_code_2_and_one_line(refused, arguments, message):
    refused("dip_denoise.py", arguments, message)


def test_a_batch_whose_every_image_fails_ends_with_one_error_and_no_partial_file(tiny_dip, tmp_path, monkeypatch):
    from dipkit.errors import Failed

    monkeypatch.setattr(dip_denoise, "denoise", lambda runs: [Failed("the DIP output became NaN")] * len(runs))
    with pytest.raises(dip_denoise.RunError, match=r"2 image\(s\) failed"):
        dip_denoise.run(tiny_dip(tmp_path, images=("astronaut", "coffee"), batch=2))
    folder = tmp_path / "out" / "dip_denoise" / "r"
    assert not list(folder.rglob("*.partial")) and not (folder / "metrics.json").exists()


def test_two_images_in_two_worker_processes_equal_the_images_here(tmp_path):
    """Each image in its own worker process (one thread each): the table of the run here with one thread."""
    common = dict(quick=True, progress=False, iterations=12, checkpoint_every=6, stop_window=4, stop_patience=4,
                  images=("astronaut", "coffee"), results_dir=str(tmp_path))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        here = dip_denoise.run(make_config(dip_denoise.Config, run_name="here", **common))
    finally:
        torch.set_num_threads(threads)
    there = dip_denoise.run(make_config(dip_denoise.Config, run_name="pool", workers=2, **common))
    strip = lambda rows: [{k: v for k, v in r.items() if "seconds" not in k} for r in rows]  # noqa: E731
    assert strip(there["table"]) == strip(here["table"])


def test_bf16_autocast_and_channels_last_run_and_denoise(monkeypatch):
    """A narrower network (bfloat16 is emulated on CPUs without it, and slow): the switches reach it and it still
    denoises."""
    monkeypatch.setattr(dip_denoise, "SkipNetwork", lambda depth, channels: SkipNetwork(
        depth, channels, (16,) * 3, (16,) * 3, (4,) * 3, (False,) * 3))
    clean = synthetic_clean()
    config = make_config(dip_denoise.Config, quick=True, iterations=40, noise_level=0.2, precision="bf16",
                         memory_format="channels_last", progress=False, learning_rate=0.02)
    result = denoise(dip_denoise.add_noise(clean, config, 1), config, clean)
    assert result.final_output.dtype == torch.float32
    assert result.metrics["final_output"]["psnr"] > result.metrics["noisy"]["psnr"]


# ---------------------------------------------------------------------------------------------------------------
# Stubs for fast bookkeeping tests: a one-layer network (conftest's tiny_network) and scripted PSNR / variance values


def scripted_variance(monkeypatch, window, value_at):
    """The window variance at iteration k is value_at(k) (for runs without restores: calls start at W - 1)."""
    calls = {"n": 0}

    def variance(ring):
        k = calls["n"] + window - 1
        calls["n"] += 1
        return torch.tensor(float(value_at(k)))

    monkeypatch.setattr(stopping, "window_variance", variance)


def tiny_config(**overrides):
    values = dict(quick=True, progress=False, stop_window=5, checkpoint_every=10, noise_level=0.2)
    return make_config(dip_denoise.Config, **dict(values, **overrides))


def test_the_es_wmv_choice_is_frozen_when_the_rule_fires(tiny_network, monkeypatch):
    """Variance falls to iteration 20, stays high, and dips lower at 70: with P = 30 the rule fires at 50, and
    its choice stays 20, whether the run stops there or goes on (where a lower minimum comes later)."""
    scripted_variance(monkeypatch, 5, lambda k: 1 - 0.01 * k if k <= 20 else (1e-3 if k == 70 else 2.0))
    clean = synthetic_clean()
    config = tiny_config(iterations=100, stop_patience=30, stop_rule="es_wmv_average")
    noisy = dip_denoise.add_noise(clean, config, 1)
    going_on = denoise(noisy, config, clean)
    assert going_on.curves["variance"][70] == pytest.approx(1e-3) and len(going_on.curves["variance"]) == 100
    choice = going_on.choices["es_wmv"]
    assert (choice.iteration, choice.fired, choice.fired_iteration) == (20, True, 50)
    rule = going_on.metrics["es_wmv"]  # the official code's: the output at the choice
    assert (rule["iteration"], rule["fired"], rule["fired_iteration"]) == (20, True, 50)
    assert rule["psnr"] == pytest.approx(going_on.curves["psnr_clean"][20], abs=1e-3)
    averaged = going_on.metrics["es_wmv_average"]  # the exponential average at the same iteration
    assert averaged["iteration"] == 20
    assert averaged["psnr"] == pytest.approx(going_on.curves["psnr_clean_average"][20], abs=1e-3)

    scripted_variance(monkeypatch, 5, lambda k: 1 - 0.01 * k if k <= 20 else (1e-3 if k == 70 else 2.0))
    stopping = denoise(noisy, make_config(dip_denoise.Config, **dict(vars(config), stop_early=True)),
                                   clean)
    assert stopping.iterations_run == 60  # the first checkpoint after the rule fired
    assert stopping.stop.iteration == 20 and torch.equal(stopping.denoised, going_on.denoised)
    assert torch.equal(stopping.image("es_wmv"), going_on.image("es_wmv"))


def test_a_run_that_ends_before_the_rule_fires_says_so(tiny_network, monkeypatch):
    scripted_variance(monkeypatch, 5, lambda k: 1 - 0.001 * k)  # always falling: never fires
    config = tiny_config(iterations=40, stop_patience=30)
    result = denoise(synthetic_clean(), config, synthetic_clean())
    choice = result.choices["es_wmv"]
    assert (choice.iteration, choice.fired, choice.fired_iteration) == (39, False, None)
    assert "did not fire in 40 iterations" in result.summary("es_wmv")


def test_a_restore_leaves_no_trace_of_the_discarded_iterations(tiny_network, monkeypatch):
    """Iteration 25 of the first pass drops 20 dB (a restore to 20) and carries a fake oracle PSNR of 100 dB
    and a fake variance of 0: after the restore, neither may survive, and the variance window must hold the
    outputs of the iterations kept, not those thrown away."""
    real_psnr, real_variance = stopping.psnr_on_device, stopping.window_variance
    psnr_calls, variance_calls = {"n": 0}, {"n": 0}

    def psnr_stub(x, reference):  # three calls per iteration: noisy, clean, average vs clean
        call, psnr_calls["n"] = psnr_calls["n"], psnr_calls["n"] + 1
        return real_psnr(x, reference) + {3 * 25: -20.0, 3 * 25 + 2: 100.0}.get(call, 0.0)

    def variance_stub(ring):  # first call at iteration W - 1 = 4
        call, variance_calls["n"] = variance_calls["n"], variance_calls["n"] + 1
        return real_variance(ring) * 0 if call == 25 - 4 else real_variance(ring)

    monkeypatch.setattr(stopping, "psnr_on_device", psnr_stub)
    monkeypatch.setattr(stopping, "window_variance", variance_stub)
    outputs = []

    class RecordingNetwork(tiny_network):
        def forward(self, x):
            out = super().forward(x)
            outputs.append(out.detach().clone())
            return out

    monkeypatch.setattr(dip_denoise, "SkipNetwork", RecordingNetwork)
    clean = synthetic_clean()
    config = tiny_config(iterations=40, stop_patience=1000)
    result = denoise(dip_denoise.add_noise(clean, config, 1), config, clean)
    assert result.backtracks == 1 and result.iterations_run == 50
    kept = outputs[:20] + outputs[30:50]  # iterations 0-19 of the first pass, 20-39 redone
    for k in range(4, 40):
        expected = torch.cat(kept[k - 4 : k + 1]).var(dim=0, unbiased=False).mean().item()
        assert result.curves["variance"][k] == pytest.approx(expected, rel=1e-4), k
    averages, variance = result.curves["psnr_clean_average"], result.curves["variance"]
    assert max(averages) < 100 and result.oracle_iteration == max(range(40), key=lambda k: averages[k])
    assert result.metrics["oracle"]["psnr"] == pytest.approx(max(averages), abs=1e-3)
    chosen = result.choices["es_wmv"].iteration
    assert min(variance[4:]) > 0 and chosen == min(range(4, 40), key=lambda k: variance[k])
    assert result.metrics["es_wmv_average"]["psnr"] == pytest.approx(averages[chosen], abs=1e-3)
    assert result.metrics["es_wmv"]["psnr"] == pytest.approx(result.curves["psnr_clean"][chosen], abs=1e-3)


def test_restores_are_capped(tiny_network, monkeypatch):
    """A drop every 20 iterations run: after max_restores restores the drops are accepted and the run ends."""
    real = stopping.psnr_on_device
    calls = {"n": 0}

    def dropping(x, reference):  # one call per iteration without a clean image
        calls["n"] += 1
        assert calls["n"] < 1000, "the run never ends"
        return real(x, reference) - (20 if calls["n"] % 20 == 16 else 0)

    monkeypatch.setattr(stopping, "psnr_on_device", dropping)
    result = denoise(synthetic_clean(), tiny_config(iterations=60, max_restores=3, stop_patience=1000))
    assert result.backtracks == 3 and result.restores_exhausted and result.iterations_run == 60 + 3 * 10
    assert len(result.curves["psnr_noisy"]) == 60
    none = denoise(synthetic_clean(), tiny_config(iterations=60, max_restores=0, stop_patience=1000))
    assert none.backtracks == 0 and none.iterations_run == 60


def test_image_files_keep_their_size_and_bundled_images_are_512(tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray((torch.rand(100, 135, 3) * 255).byte().numpy()).save(path)
    shape = lambda name, **options: tuple(  # noqa: E731
        dip_denoise.load_clean(name, make_config(dip_denoise.Config, **options)).shape[-2:])
    assert shape(str(path)) == (96, 128)  # centre-cropped to a multiple of 32, not resized
    assert shape("chelsea") == (512, 512)  # bundled: the paper-like size
    assert shape(str(path), size=64) == shape("chelsea", quick=True) == (64, 64)  # an explicit size: every image
    assert shape("chelsea", size=0) == (288, 448)
    crop = dip_denoise.load_clean(str(path), make_config(dip_denoise.Config))
    full = dip_denoise.load_image(str(path))
    assert torch.equal(crop, full[..., 2:98, 3:131])


def test_crop_takes_the_centre_at_the_images_own_resolution(tmp_path):
    """--crop N: the file's centre N x N pixels as they are (no resizing), whatever size says."""
    path = tmp_path / "photo.png"
    pixels = (torch.rand(100, 135, 3) * 255).byte()
    Image.fromarray(pixels.numpy()).save(path)
    crop = dip_denoise.load_clean(str(path), make_config(dip_denoise.Config, quick=True, crop=64))
    top, left = (100 - 64) // 2, (135 - 64) // 2
    assert torch.equal(crop[0], pixels[top : top + 64, left : left + 64].permute(2, 0, 1).float() / 255)


def test_one_iteration_numbering_in_metrics_csv_and_figures(tiny_network, monkeypatch, tmp_path):
    import csv

    drawn = {}
    monkeypatch.setattr(dip_report.figures, "curves", lambda path, panels, n_cols: drawn.update(curves=panels))
    monkeypatch.setattr(dip_report.figures, "image_grid",
                        lambda path, rows, titles, row_titles, **k: drawn.update(grid=rows, row_titles=row_titles))
    path = tmp_path / "a.png"
    Image.fromarray((synthetic_clean(64)[0].permute(1, 2, 0) * 255).byte().numpy()).save(path)
    config = tiny_config(images=(str(path),), iterations=30, stop_patience=8, results_dir=str(tmp_path / "out"),
                         run_name="n")
    dip_denoise.run(config)
    folder = tmp_path / "out" / "dip_denoise" / "n"
    facts = json.loads((folder / "metrics.json").read_text())
    assert facts["iterations_counted_from"] == 0
    image = facts["items"]["a"]
    rows = list(csv.DictReader((folder / "a" / "curve.csv").open()))
    iterations = [int(r["iteration"]) for r in rows]
    assert iterations == list(range(len(rows)))
    by_iteration = {int(r["iteration"]): r for r in rows}
    average = {k: float(r["psnr_clean_average"]) for k, r in by_iteration.items()}
    assert image["oracle_iteration"] == image["oracle"]["iteration"] == max(average, key=average.get)
    assert image["oracle"]["psnr"] == pytest.approx(average[image["oracle_iteration"]], abs=1e-3)
    last = image["es_wmv_fired_iteration"] if image["es_wmv_fired"] else iterations[-1]
    variance = {k: float(r["variance"]) for k, r in by_iteration.items() if 4 <= k <= last}
    assert image["es_wmv_iteration"] == min(variance, key=variance.get)
    table = list(csv.DictReader((folder / "table.csv").open()))[0]
    assert int(table["es_wmv_iteration"]) == image["es_wmv_iteration"]
    assert int(table["oracle_iteration"]) == image["oracle_iteration"]
    psnr_panel = drawn["curves"][0]
    assert list(psnr_panel["lines"][0][0]) == iterations
    marks = {label.split()[0]: x for x, label in psnr_panel["marks"]}
    assert marks["oracle"] == image["oracle_iteration"] and marks["ES-WMV"] == image["es_wmv_iteration"]
    assert {label.split()[0] for _, label in psnr_panel["marks"]} == {"oracle", "ES-WMV", "ES-EMV", "discrepancy",
                                                                     "whiteness"}
    es_wmv_panel = next(p for p in drawn["curves"] if p.get("title", "").startswith("ES-WMV"))
    assert list(es_wmv_panel["lines"][0][0]) == iterations and es_wmv_panel["marks"][0][0] == image["es_wmv_iteration"]
    assert drawn["row_titles"][1].startswith(f"ES-WMV\nit. {image['es_wmv_iteration']}")  # a row per rule
    assert [len(row) for row in drawn["grid"]] == [4, 3, 3, 2, 2]  # references; each rule's images


def test_unreadable_image_stops_before_a_run_folder_exists(tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a picture")
    with pytest.raises(dip_denoise.RunError, match="cannot read"):
        dip_denoise.run(make_config(dip_denoise.Config, images=(str(broken), "astronaut"), quick=True,
                                    results_dir=str(tmp_path / "out"), progress=False))
    assert not (tmp_path / "out").exists()


def test_unreadable_image_exits_with_code_2_and_no_folder(refused, tmp_path_factory):
    broken = tmp_path_factory.mktemp("inputs") / "broken.png"
    broken.write_bytes(b"not a picture")
    refused("dip_denoise.py", ["--images", str(broken)], "cannot read")


def test_resume_reads_the_finished_images_back_and_denoises_only_the_others(tiny_network, tmp_path, monkeypatch):
    from PIL import Image
    paths = []
    for name, size in (("a", 64), ("b", 96)):
        paths.append(tmp_path / f"{name}.png")
        Image.fromarray((synthetic_clean(size)[0].permute(1, 2, 0) * 255).byte().numpy()).save(paths[-1])
    common = dict(iterations=20, stop_patience=8, results_dir=str(tmp_path / "out"), run_name="r")
    first = dip_denoise.run(tiny_config(images=(str(paths[0]),), **common))
    denoised = []
    original = dip_denoise.denoise
    monkeypatch.setattr(dip_denoise, "denoise", lambda runs: denoised.append(len(runs)) or original(runs))
    second = dip_denoise.run(tiny_config(images=tuple(map(str, paths)), resume=True, **common))
    assert second["folder"] == first["folder"] and len(denoised) == 1  # only b was denoised
    assert second["table"][0] == json.loads(json.dumps(first["table"][0])) and second["table"][1]["image"] == "b"
    with (second["folder"] / "table.csv").open() as file:
        assert [row["image"] for row in csv.DictReader(file)] == ["a", "b"]


def test_resuming_after_images_are_reordered_recomputes_exactly_those_whose_noise_changed(tiny_dip, tmp_path,
                                                                                        monkeypatch, capsys):
    """The noise of the index-th image is seeded by its place: an image that moves is another noisy image."""
    paths = []
    for name, shift in (("a", 0), ("b", 8), ("c", 16)):
        paths.append(tmp_path / f"{name}.png")
        clean = synthetic_clean().roll(shift, -1)
        Image.fromarray((clean[0].permute(1, 2, 0) * 255).byte().numpy()).save(paths[-1])
    first = dip_denoise.run(tiny_dip(tmp_path, images=tuple(map(str, paths))))
    denoised = []
    original = dip_denoise.denoise
    monkeypatch.setattr(dip_denoise, "denoise", lambda runs: denoised.extend(runs) or original(runs))
    capsys.readouterr()
    again = dip_denoise.run(tiny_dip(tmp_path, images=(str(paths[0]), str(paths[2])), resume=True))  # b removed
    said = capsys.readouterr().out
    assert len(denoised) == 1 and "c: its input or settings changed since the earlier run" in said
    assert "resume: 1 unit(s) kept, 1 to compute (1 changed input or settings)" in said
    assert again["table"][0] == json.loads(json.dumps(first["table"][0]))  # a, kept
    noisy_c = dip_denoise.add_noise(dip_denoise.load_clean(str(paths[2]), denoised[0].config), denoised[0].config, 2)
    assert torch.equal(denoised[0].noisy, noisy_c)  # c's noise now seeded by its place: seed + 1 + 1


def glibc_allocated():
    """The bytes glibc's malloc has handed out and not taken back (mallinfo2: its arenas' and its mapped blocks'),
    where torch's CPU tensors live; None without glibc 2.33 or later."""
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                         "fsmblks", "uordblks", "fordblks", "keepcost")]
    try:
        mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return None
    mallinfo2.restype = MallInfo2
    return lambda: mallinfo2().uordblks + mallinfo2().hblkhd


@pytest.mark.skipif(glibc_allocated() is None, reason="reads glibc's allocation statistics")
def test_the_memory_estimate_covers_the_measured_peak_checkpoints_included(monkeypatch):
    """The estimate against what a run really holds at its peaks (after each forward pass, with the activations
    autograd keeps; after each checkpoint), measured by glibc's count of allocated bytes, a checkpoint at every
    step: the estimate covers the measured peak and is less than 1.6 times it (its margin: 1.25 on the activations).
    A long window (500 outputs, 150 MB at 160x160) makes the window and its checkpoint's copy half of it: an
    estimate that left out the copy (the window and two dozen images: 0.88 of the peak), or a loop that held two
    checkpoints at once, fails."""
    allocated, peak = glibc_allocated(), [0]
    sample = lambda: peak.__setitem__(0, max(peak[0], allocated()))  # noqa: E731
    mse, save = dip_denoise.F.mse_loss, dip_denoise.Backtracking.save
    monkeypatch.setattr(dip_denoise.F, "mse_loss", lambda *args: (sample(), mse(*args))[1])
    monkeypatch.setattr(dip_denoise.Backtracking, "save", lambda self, *args: (save(self, *args), sample())[0])
    config = make_config(dip_denoise.Config, quick=True, iterations=1, checkpoint_every=1, stop_window=500,
                         progress=False, device="cpu")
    clean = torch.rand(1, 3, 160, 160, generator=torch.Generator().manual_seed(0))
    run = dip_denoise.DIPRun((clean + 0.1 * torch.randn_like(clean)).clamp(0, 1), config, clean, 0.1)
    before = allocated()
    dip_denoise.denoise([run])
    measured = peak[0] - before
    footprint = dip_denoise.training_footprint(SkipNetwork(config.input_depth, 3), config.input_depth)
    estimated = footprint.bytes(160, 160) + dip_denoise.held_per_pixel(config, 3) * 160**2
    assert measured <= estimated <= 1.6 * measured, (measured / 2**20, estimated / 2**20)


@pytest.mark.parametrize("sure", [False, True])
def test_a_run_cut_goes_on_from_its_checkpoint_on_disk_and_equals_the_uncut_run(tiny_dip, tmp_path, monkeypatch,
                                                                                capsys, sure):
    """Cut after the checkpoint written at iteration 30 (of 60; checkpoints every 5, written every 10), --resume
    takes it up (network, Adam, average, every rule's state and curve, the input noise's stream; with --sure the
    twin's too) and ends where the uncut run ends, to the last bit on the CPU; the finished run leaves no
    checkpoint behind."""
    common = dict(iterations=60, checkpoint_every=5, save_every=10, stop_window=4, stop_patience=8, sure=sure)
    uncut = dip_denoise.run(tiny_dip(tmp_path, run_name="uncut", **common))
    original = dip_denoise.ImageRun.write

    def write_then_cut(self, config, seconds):
        original(self, config, seconds)
        if self.written_at == 30:
            raise KeyboardInterrupt

    monkeypatch.setattr(dip_denoise.ImageRun, "write", write_then_cut)
    with pytest.raises(KeyboardInterrupt):
        dip_denoise.run(tiny_dip(tmp_path, run_name="cut", **common))
    partial = tmp_path / "out" / "dip_denoise" / "cut" / "partial" / "astronaut.pt"
    assert torch.load(partial, weights_only=True)["steps"] == 30
    monkeypatch.setattr(dip_denoise.ImageRun, "write", original)
    capsys.readouterr()
    resumed = dip_denoise.run(tiny_dip(tmp_path, run_name="cut", resume=True, **common))
    assert "astronaut: going on from its checkpoint at iteration 30" in capsys.readouterr().out
    a, b = uncut["results"]["astronaut"], resumed["results"]["astronaut"]
    assert a.curves.keys() == b.curves.keys() and a.oracle_iteration == b.oracle_iteration
    assert ("sure" in a.curves) == sure
    for key, curve in a.curves.items():  # the same values, NaN where a statistic has none yet
        torch.testing.assert_close(torch.tensor(curve), torch.tensor(b.curves[key]), rtol=0, atol=0, equal_nan=True)
    assert a.iterations_run == b.iterations_run and b.metrics == a.metrics
    for name in ("final_output", "final_average", "oracle_image"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    for rule, choice in a.choices.items():
        assert choice.iteration == b.choices[rule].iteration and torch.equal(choice.centred, b.choices[rule].centred)
    assert not partial.parent.exists()  # nothing left behind


def test_a_checkpoint_on_disk_is_taken_up_only_whole_and_of_its_own_key(tmp_path):
    from dipkit.backtracking import read_checkpoint, write_whole

    path = tmp_path / "partial" / "a.pt"
    assert read_checkpoint(path, "k") is None  # none yet
    write_whole(path, dict(key="k", steps=500, saved=(dict(w=torch.ones(2)),)))
    assert read_checkpoint(path, "k")["steps"] == 500 and read_checkpoint(path, "other") is None
    assert not path.with_name("a.pt.writing").exists()
    path.write_bytes(path.read_bytes()[:40])  # cut while written (by something else than write_whole)
    assert read_checkpoint(path, "k") is None


def test_a_run_kept_before_the_sure_constants_existed_resumes_across_them(tiny_dip, tmp_path, capsys):
    """--sure and --sure_epsilon came after runs were kept: at their defaults they are not in the units' keys, and
    a config.json without them resumes (its images read back, not denoised again); --sure itself is refused."""
    from dipkit.runs import unit_settings

    config = tiny_dip(tmp_path)
    assert not {"sure", "sure_epsilon"} & set(unit_settings(config))
    assert "sure" in unit_settings(tiny_dip(tmp_path, sure=True))
    dip_denoise.run(config)
    record_file = tmp_path / "out" / "dip_denoise" / "r" / "config.json"
    record = json.loads(record_file.read_text())
    for key in ("sure", "sure_epsilon"):  # as the code before them wrote it
        del record["config"][key]
    record_file.write_text(json.dumps(record))
    capsys.readouterr()
    dip_denoise.run(tiny_dip(tmp_path, resume=True))
    assert "resume: 1 unit(s) kept, 0 to compute" in capsys.readouterr().out
    with pytest.raises(dip_denoise.RunError, match="made with other sure"):
        dip_denoise.run(tiny_dip(tmp_path, resume=True, sure=True))
