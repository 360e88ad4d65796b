"""What every script promises: --help works, every numeric constant has a range that is enforced, and bad input
stops with one line and exit code 2 before a run folder exists."""

import dataclasses
import importlib
import math
import subprocess
import sys
import types
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import pytest

from dipkit.cli import RunError, _INTERVAL, class_dicts, in_interval, make_config

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ["ADP", "adp_1d", "selfdeblur", "vdip", "dip_denoise", "generative_prior"]


def run_script(script: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / f"{script}.py"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_exits_zero(script, capsys):
    """`--help` (in this process; the command line as a process is tested below)."""
    with pytest.raises(SystemExit) as stop:
        importlib.import_module(script).main(["--help"])
    out = capsys.readouterr().out
    assert stop.value.code == 0 and "--quick" in out and "--results_dir" in out and "--resume" in out


def test_a_script_runs_as_a_process_and_prints_its_help():
    done = run_script("selfdeblur", "--help")
    assert done.returncode == 0 and "--batch" in done.stdout, done.stderr


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


def numeric_fields(cls: type) -> list[str]:
    """The constants that are numbers, optional numbers or tuples of numbers (booleans are not): those LIMITS must
    cover."""
    def numeric(hint: Any) -> bool:
        if get_origin(hint) is tuple:
            return numeric(get_args(hint)[0])
        if get_origin(hint) in (Union, types.UnionType):  # Optional[int], int | None
            return any(numeric(h) for h in get_args(hint) if h is not type(None))
        return hint in (int, float)

    hints = get_type_hints(cls)
    return [f.name for f in dataclasses.fields(cls) if numeric(hints[f.name])]


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_numeric_constant_has_an_enforced_range(script):
    cls = importlib.import_module(script).Config
    limits = class_dicts(cls, "LIMITS")  # the script's own and those of the constants it shares
    assert set(limits) == set(numeric_fields(cls)), "LIMITS must name exactly the numeric constants"
    make_config(cls)  # the defaults lie within the limits
    make_config(cls, quick=True)  # and so does the quick preset
    for name, interval in limits.items():
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
