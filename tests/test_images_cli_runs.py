import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from dipkit.cli import RunError, make_config, parse_config
from dipkit.images import bundled_images, load_image
from dipkit.runs import code_revision, new_run_folder, start_run, write_json, write_metrics

import ADP


@pytest.fixture
def picture():
    rng = np.random.default_rng(0)
    return (rng.random((30, 20, 3)) * 255).astype(np.uint8)


def test_bundled_images_load_at_the_requested_size():
    assert {"astronaut", "coffee", "rocket", "chelsea"} <= set(bundled_images())
    image = load_image("coffee", (40, 30))
    assert image.shape == (1, 3, 40, 30) and 0 <= image.min() and image.max() <= 1


def test_grey_rgba_palette_and_16_bit_files(tmp_path, picture):
    Image.fromarray(picture[..., 0]).save(tmp_path / "grey.png")
    Image.fromarray(np.dstack([picture, np.full((30, 20), 7, np.uint8)]), "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(picture).convert("P").save(tmp_path / "palette.png")
    Image.fromarray(picture[..., 0].astype(np.uint16) * 257).save(tmp_path / "deep.png")
    grey = load_image(str(tmp_path / "grey.png"), channels=1)
    torch.testing.assert_close(grey[0, 0], torch.from_numpy(picture[..., 0] / 255).float())
    assert torch.equal(load_image(str(tmp_path / "grey.png"), channels=3)[0, 1], grey[0, 0])
    rgba = load_image(str(tmp_path / "rgba.png"))
    torch.testing.assert_close(rgba[0].permute(1, 2, 0), torch.from_numpy(picture / 255).float())
    assert load_image(str(tmp_path / "palette.png")).shape == (1, 3, 30, 20)
    torch.testing.assert_close(load_image(str(tmp_path / "deep.png"), channels=1), grey)


def test_exif_rotated_jpeg_is_turned_upright(tmp_path, picture):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    Image.fromarray(picture).save(tmp_path / "photo.jpg", exif=exif, quality=95)
    assert load_image(str(tmp_path / "photo.jpg")).shape == (1, 3, 20, 30)


def test_missing_and_unreadable_images_are_run_errors(tmp_path):
    with pytest.raises(RunError, match="not found"):
        load_image("no-such-image")
    (tmp_path / "broken.png").write_text("not an image")
    with pytest.raises(RunError, match="cannot read"):
        load_image(str(tmp_path / "broken.png"))


def field_comments(cls: type) -> dict[str, str]:
    """Each dataclass field's `# comment`, from the source of the class that defines it (the script's Config, or
    the shared constants it is made from)."""
    import inspect
    import io
    import textwrap
    import tokenize

    comments: dict[str, str] = {}
    for base in reversed(cls.__mro__[:-1]):
        first_name, comment = {}, {}
        source = textwrap.dedent(inspect.getsource(base))
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            row = token.start[0]
            if token.type == tokenize.NAME and row not in first_name:
                first_name[row] = token.string
            elif token.type == tokenize.COMMENT:
                comment[row] = token.string.lstrip("#").strip()
        own = set(getattr(base, "__annotations__", {}))
        comments.update({first_name[row]: text for row, text in comment.items() if first_name.get(row) in own})
    return {f.name: comments[f.name] for f in dataclasses.fields(cls) if f.name in comments}


@pytest.mark.parametrize("script", ["ADP", "selfdeblur"])
def test_every_field_has_a_comment_and_an_option(script, capsys):
    cls = __import__(script).Config
    comments = field_comments(cls)
    assert set(comments) == {f.name for f in dataclasses.fields(cls)}
    with pytest.raises(SystemExit):
        parse_config(cls, ["--help"])
    help_text = capsys.readouterr().out
    for name, comment in comments.items():
        assert f"--{name}" in help_text and comment.split()[0] in help_text


def test_explicit_options_win_over_the_quick_preset():
    config = parse_config(ADP.Config, ["--quick", "--height", "50", "--images", "coffee", "rocket", "--no-progress"])
    assert config.height == 50 and config.width == ADP.Config.QUICK["width"]
    assert config.images == ("coffee", "rocket") and config.progress is False
    assert make_config(ADP.Config).height == 400


def test_run_folders_never_overwrite(tmp_path):
    first = new_run_folder(tmp_path, "X", "run")
    (first / "kept.txt").write_text("earlier result")
    second = new_run_folder(tmp_path, "X", "run")
    assert second.name == "run-2" and (first / "kept.txt").read_text() == "earlier result"


def test_config_json_records_the_git_revision_the_dirty_flag_and_the_command_line(tmp_path, monkeypatch):
    import subprocess
    monkeypatch.setattr("sys.argv", ["ADP.py", "--quick", "--run_name", "x"])
    folder = start_run(make_config(ADP.Config, results_dir=str(tmp_path), run_name="x"), "ADP", torch.device("cpu"))
    record = json.loads((folder / "config.json").read_text())
    assert record["command"] == ["ADP.py", "--quick", "--run_name", "x"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    if head:  # a checkout (CI's and a developer's); an exported copy has no revision to record
        assert record["code"]["revision"] == head and isinstance(record["code"]["dirty"], bool)
    assert record["config"]["run_name"] == "x" and "torch" in record["environment"]


def test_code_revision_is_none_outside_a_repository(tmp_path, monkeypatch):
    import dipkit.runs
    monkeypatch.setattr(dipkit.runs, "__file__", str(tmp_path / "dipkit" / "runs.py"))
    assert code_revision() == dict(revision=None, dirty=None)


def test_metrics_json_has_one_shape(tmp_path):
    write_metrics(tmp_path, "X", {"psnr": 30.0}, [{"image": "a"}], 1.5, "cpu", extra=1)
    assert json.loads((tmp_path / "metrics.json").read_text()) == dict(
        script="X", summary={"psnr": 30.0}, items=[{"image": "a"}], seconds=1.5, device="cpu", extra=1)


def test_json_holds_tensors_and_non_finite_numbers(tmp_path):
    write_json(tmp_path / "m.json", {"t": torch.tensor([1.0, 2.0]), "nan": math.nan, "a": np.float32(0.5)})
    assert json.loads((tmp_path / "m.json").read_text()) == {"t": [1.0, 2.0], "nan": None, "a": 0.5}


def test_a_percent_sign_in_a_constant_comment_does_not_break_help(capsys):
    """argparse formats help strings with %; the comments are the user's text and are escaped."""
    with pytest.raises(SystemExit) as stop:
        parse_config(PercentConfig, ["--help"])
    assert stop.value.code == 0 and "within 1% of the best" in capsys.readouterr().out


@dataclasses.dataclass
class PercentConfig:
    target: float = 0.01  # stop within 1% of the best loss ("quoted" too)


def test_bf16_is_native_only_where_the_cpu_lists_it_and_asking_for_it_elsewhere_warns_once(monkeypatch, capsys):
    import torch

    from dipkit import device as devices
    from dipkit.runs import environment

    cpu = torch.device("cpu")
    monkeypatch.setattr(devices, "cpu_flags", lambda: {"avx2", "fma", "avx512f", "avx512_bf16"})
    assert devices.native_bf16(cpu)
    devices.warn_if_emulated_bf16(True, cpu)
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(devices, "cpu_flags", lambda: {"avx2", "fma", "avx512f"})  # AVX-512 without its bf16
    assert not devices.native_bf16(cpu) and not devices.native_bf16(torch.device("mps"))
    devices.warn_if_emulated_bf16(False, cpu)
    assert capsys.readouterr().err == ""  # float32: nothing to say
    devices.warn_if_emulated_bf16(True, cpu)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "emulated, and slower than float32" in err
    record = environment(cpu)
    assert record["cpu_capability"] == torch.backends.cpu.get_cpu_capability() and "native_bf16" in record
