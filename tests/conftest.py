import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent

# a blind study (selfdeblur.py, vdip.py) of a few milliseconds' loop: the quick preset, 6 iterations, a narrow G_x,
# and a known-kernel row of 20 CG steps (the tests that use it compare runs with each other, not with the paper)
TINY_STUDY = dict(quick=True, progress=False, iterations=6, curve_every=3, channels=8, known_kernel_iterations=20)


@pytest.fixture
def refused(tmp_path, monkeypatch, capsys):
    """`python <script> <arguments> --results_dir <tmp>`, run in this process from <tmp> (its main() under run_main,
    as the script's command line runs it; tests/test_every_script.py runs the scripts as processes): it must refuse
    with exit code 2, exactly one line on stderr containing `message`, and nothing written."""
    import importlib

    from dipkit.cli import run_main

    def check(script: str, arguments: list[str], message: str) -> None:
        module = importlib.import_module(script.removesuffix(".py"))
        monkeypatch.chdir(tmp_path)
        monkeypatch.setattr(sys, "argv", [script, *arguments])
        capsys.readouterr()
        with pytest.raises(SystemExit) as stop:
            run_main(lambda: module.main([*arguments, "--results_dir", str(tmp_path)]))
        err = capsys.readouterr().err
        assert stop.value.code == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], lines
        assert list(tmp_path.iterdir()) == []

    return check


@pytest.fixture
def metrics_of():
    """metrics.json of a run folder, checked to have the one shape every script writes."""

    def read(folder: Path, script: str) -> dict:
        import json

        metrics = json.loads((Path(folder) / "metrics.json").read_text())
        assert {"script", "summary", "items", "seconds", "device"} <= set(metrics) and metrics["script"] == script
        return metrics

    return read


class TinyNetwork(torch.nn.Sequential):
    """A one-layer stand-in for DIP's skip network: the bookkeeping tests' runs take milliseconds."""

    def __init__(self, input_depth, channels):
        super().__init__(torch.nn.Conv2d(input_depth, channels, 3, padding=1), torch.nn.Sigmoid())


@pytest.fixture
def tiny_network(monkeypatch):
    """dip_denoise.py with TinyNetwork for its network; the class is returned (to be subclassed)."""
    import dip_denoise

    monkeypatch.setattr(dip_denoise, "SkipNetwork", TinyNetwork)
    return TinyNetwork


@pytest.fixture
def tiny_dip(tiny_network):
    """A dip_denoise.py config of a few milliseconds' run (TinyNetwork), writing under <tmp_path>/out."""
    import dip_denoise
    from dipkit.cli import make_config

    return lambda tmp_path, **overrides: make_config(dip_denoise.Config, **{
        **dict(quick=True, progress=False, iterations=12, stop_window=4, stop_patience=4, checkpoint_every=6,
               results_dir=str(tmp_path / "out"), run_name="r"), **overrides})
