"""The code has no undefined names and no unused imports (pyflakes' rules, as ruff checks them): a name used but
never imported fails here, not in a user's run. Without ruff the test is skipped on a user's machine, but fails in
CI (the CI environment variable set, as CI services set it: CI=true), which installs ruff from
requirements-test.txt: a lint check that silently did not run is not a pass."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def ruff_installed() -> bool:
    return shutil.which("ruff") is not None or subprocess.run(
        [sys.executable, "-m", "ruff", "--version"], capture_output=True).returncode == 0


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require_ruff() -> None:
    """Return if ruff is installed; else fail in CI, skip elsewhere."""
    if ruff_installed():
        return
    message = "ruff is not installed (requirements-test.txt installs it)"
    if in_ci():
        pytest.fail(f"{message}, and CI must run the lint test", pytrace=False)
    pytest.skip(message)


def test_ruff_finds_no_undefined_names_or_unused_imports():
    require_ruff()
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--select", "F", "--output-format", "concise",
                           "--exclude", ".venv", str(ROOT)], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("ci,outcome", [("true", pytest.fail.Exception), ("1", pytest.fail.Exception),
                                        (None, pytest.skip.Exception), ("false", pytest.skip.Exception)])
def test_without_ruff_the_lint_test_fails_in_ci_and_is_skipped_elsewhere(ci, outcome, monkeypatch):
    monkeypatch.setitem(globals(), "ruff_installed", lambda: False)
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="ruff is not installed"):
        require_ruff()
