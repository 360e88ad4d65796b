"""The precision and memory format a network script's runs take: `auto` resolved per device and run shape
(dipkit.speed), what a run records and says of it, and its place in a unit's key."""

import json

import pytest
import torch

import dip_denoise
import selfdeblur
import vdip
from dipkit import device as devices
from dipkit import speed
from dipkit.cli import make_config
from dipkit.networks import SkipNetwork

CPU = torch.device("cpu")
NATIVE = {"avx2", "fma", "avx512f", "avx512_bf16"}
EMULATED = {"avx2", "fma"}


@pytest.fixture
def flags(monkeypatch):
    """Pretend the CPU lists these flags (native bfloat16 or not)."""
    return lambda listed: monkeypatch.setattr(devices, "cpu_flags", lambda: set(listed))


def resolved(config, height, width, channels, device=CPU):
    config, said = speed.resolve(config, device, height, width, channels)
    return config.precision, config.memory_format, said


def test_auto_takes_bf16_only_on_a_native_cpu_and_a_step_at_least_that_of_dip_at_256(flags):
    dip, blind = make_config(dip_denoise.Config), make_config(selfdeblur.Config)
    flags(NATIVE)
    assert resolved(dip, 512, 512, 128)[:2] == ("bf16", "contiguous")  # DIP's network measured faster contiguous
    assert resolved(dip, 256, 256, 128)[:2] == ("bf16", "contiguous")  # the threshold itself
    assert resolved(dip, 255, 256, 128)[:2] == ("float32", "contiguous")  # one row below it
    assert "too small" in resolved(dip, 128, 128, 128)[2]
    for script in (selfdeblur, vdip):  # bf16 moved the blind quick study beyond its seeds' noise: float32 kept
        precision, memory_format, said = resolved(make_config(script.Config), 281, 281, 128)
        assert (precision, memory_format) == ("float32", "contiguous") and "not shown" in said
    assert resolved(blind, 72, 72, 32)[:2] == ("float32", "contiguous")
    flags(EMULATED)  # AVX2 alone: bfloat16 emulated, many times slower
    precision, memory_format, said = resolved(dip, 512, 512, 128)
    assert (precision, memory_format) == ("float32", "contiguous") and "no native bfloat16" in said


def test_what_is_asked_is_kept_and_a_gpu_keeps_float32_until_measured(flags):
    flags(NATIVE)
    config = make_config(dip_denoise.Config, precision="float32")
    assert resolved(config, 512, 512, 128) == ("float32", "contiguous", "float32, contiguous")
    config = make_config(dip_denoise.Config, memory_format="channels_last")
    assert resolved(config, 512, 512, 128)[:2] == ("bf16", "channels_last")
    config = make_config(selfdeblur.Config, precision="bf16")  # asked for: it runs, in its measured layout
    assert resolved(config, 281, 281, 128)[:2] == ("bf16", "channels_last")
    flags(EMULATED)
    assert resolved(config, 72, 72, 32)[:2] == ("bf16", "channels_last")  # emulated: announce warns
    auto = make_config(dip_denoise.Config)
    assert resolved(auto, 512, 512, 128, torch.device("cuda"))[:2] == ("float32", "contiguous")
    assert resolved(auto, 512, 512, 128, torch.device("mps"))[:2] == ("float32", "contiguous")
    with pytest.raises(ValueError, match="resolve"):
        speed.switches(auto)


@pytest.mark.parametrize("flags_listed", [NATIVE, EMULATED])
def test_every_quick_preset_runs_in_float32_on_any_cpu(flags, flags_listed):
    """The tests compare float32 runs to the last bit: the quick shapes stay float32 even where bf16 is native."""
    flags(flags_listed)
    dip = make_config(dip_denoise.Config, quick=True)
    assert resolved(dip, dip.size, dip.size, speed.widest(SkipNetwork(dip.input_depth, 3)))[:2] == (
        "float32", "contiguous")
    for script in (selfdeblur, vdip):
        config = make_config(script.Config, quick=True)
        grid = config.size + max(config.kernel_sizes) - 1
        assert resolved(config, grid, grid, config.channels)[:2] == ("float32", "contiguous")


def test_widest_reads_the_network():
    assert speed.widest(SkipNetwork(32, 3)) == 128
    assert speed.widest(SkipNetwork(8, 1, (16,) * 3, (24,) * 3, (4,) * 3, (False,) * 3)) == 24


def test_the_announcement_is_one_line_and_warns_where_bf16_is_emulated(flags, capsys):
    flags(NATIVE)
    speed.announce({"a": "bf16, contiguous (auto: x)", "b": "bf16, contiguous (auto: x)"}, CPU)
    captured = capsys.readouterr()
    assert captured.out == "networks in bf16, contiguous (auto: x)\n" and captured.err == ""
    flags(EMULATED)
    speed.announce({"a": "bf16, contiguous", "b": "float32, contiguous"}, CPU)
    captured = capsys.readouterr()
    assert captured.out.splitlines() == ["networks in bf16, contiguous: a", "networks in float32, contiguous: b"]
    assert captured.err.count("\n") == 1 and "emulated" in captured.err


def test_a_run_records_its_choice_and_a_resume_where_auto_chooses_otherwise_computes_again(
        tiny_dip, tmp_path, monkeypatch, capsys):
    first = dip_denoise.run(tiny_dip(tmp_path))
    said = capsys.readouterr().out
    assert said.count("networks in float32, contiguous (auto: ") == 1
    record = json.loads((first["folder"] / "config.json").read_text())
    assert record["config"]["precision"] == "auto" and record["config"]["memory_format"] == "auto"
    assert list(record["networks"].values())[0].startswith("float32, contiguous (auto: ")
    monkeypatch.setattr(speed, "auto_precision", lambda *shape: ("bf16", "pretended native"))
    again = dip_denoise.run(tiny_dip(tmp_path, resume=True))  # the same constants, another machine's auto
    said = capsys.readouterr().out
    assert "resume: 0 unit(s) kept, 1 to compute (1 changed input or settings)" in said
    assert "networks in bf16, contiguous (auto: pretended native)" in said
    assert again["table"][0]["psnr_final"] != first["table"][0]["psnr_final"]  # bf16 moved it


def test_auto_keeps_float32_for_the_sure_twin_even_where_bf16_would_be_taken(flags):
    flags(NATIVE)
    precision, _, said = resolved(make_config(dip_denoise.Config, sure=True), 512, 512, 128)
    assert precision == "float32" and "SURE" in said
    assert resolved(make_config(dip_denoise.Config, sure=True, precision="bf16"), 512, 512, 128)[0] == "bf16"
