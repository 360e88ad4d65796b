"""What every script promises: --help works, every numeric constant has a range that is enforced, and bad input
stops with one line and exit code 2 before a run folder exists."""

import importlib
import math
import subprocess
import sys
from pathlib import Path

import pytest

from dipkit.cli import RunError, _INTERVAL, in_interval, make_config, numeric_fields

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ["ADP", "adp_1d", "selfdeblur", "vdip", "dip_denoise", "generative_prior"]


def run_script(script: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / f"{script}.py"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_exits_zero(script):
    done = run_script(script, "--help")
    assert done.returncode == 0, done.stderr
    assert "--quick" in done.stdout and "--results_dir" in done.stdout


def outside(interval: str, integer: bool) -> list[float]:
    """Values just outside an interval (and NaN for a real one)."""
    opening, low, high, closing = _INTERVAL.match(interval).groups()
    low, high = float(low), float(high)
    values = []
    if math.isfinite(low):
        values.append(low - 1 if integer or opening == "[" else low)
    if math.isfinite(high):
        values.append(high + 1 if integer or closing == "]" else high)
    if not integer:
        values.append(math.nan)
    return [int(v) if integer else v for v in values]


def test_interval_reading():
    assert in_interval(0, "[0, 1)") and not in_interval(1, "[0, 1)") and not in_interval(0, "(0, inf)")
    assert in_interval(1e9, "(0, inf)") and in_interval(-3, "(-inf, inf)") and not in_interval(math.nan, "[0, 1]")
    with pytest.raises(ValueError):
        in_interval(0, "0 to 1")


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_numeric_constant_has_an_enforced_range(script):
    cls = importlib.import_module(script).Config
    assert set(cls.LIMITS) == set(numeric_fields(cls)), "LIMITS must name exactly the numeric constants"
    make_config(cls)  # the defaults lie within the limits
    make_config(cls, quick=True)  # and so does the quick preset
    for name, interval in cls.LIMITS.items():
        default = getattr(make_config(cls), name)
        integer = isinstance(default[0] if isinstance(default, tuple) and default else default, int)
        for value in outside(interval, integer):
            bad = (value,) if isinstance(default, tuple) else value
            with pytest.raises(RunError, match=name):
                make_config(cls, **{name: bad})


def test_a_bad_constant_stops_before_a_run_folder_exists(tmp_path):
    done = run_script("ADP", "--noise_level", "-1", "--results_dir", str(tmp_path), "--run_name", "bad")
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0
    assert "noise_level must be in" in done.stderr
    assert not (tmp_path / "ADP").exists()


def test_an_unreadable_image_stops_adp_before_a_run_folder_exists(tmp_path):
    import ADP

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a picture")
    with pytest.raises(RunError):
        ADP.run(make_config(ADP.Config, images=(str(broken),), results_dir=str(tmp_path / "out"), progress=False))
    assert not (tmp_path / "out").exists()
