"""bench/bench_adp_vs_original.py without running the original: what it accepts as a checkout, that a folder which
is not one is refused with one line and exit code 2, and that its patch table applies cleanly to the original's
real sources (read from a checkout named by ADP_ORIGINAL_CHECKOUT, or from the git mirror beside this project;
skipped where neither is present). No network; a few seconds."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import bench_adp_vs_original as bench  # noqa: E402
import ADP  # noqa: E402
from dipkit.cli import RunError, make_config  # noqa: E402

MIRROR = ROOT.parent / ".mirror" / "MohammadSadeghSalehi+Analytical-Deep-Priors" / "repo"


def every_patch(seed: int = 0) -> list:
    """Every patch the bench can apply: the fixed ones, every constant changed, both options."""
    config = make_config(ADP.Config, quick=True, eps0=0.5, eps_threshold=1e-5, sobolev_weight=10.0)
    return bench.patches_for(config, same_random_vectors=True, no_figures=True, seed=seed)


def fake_checkout(folder: Path, repeat: str = "") -> Path:
    """The original's file names, holding exactly the texts the patches look for (once each; `repeat` twice)."""
    texts = {name: "" for name in bench.SOURCES}
    for patch in every_patch():
        texts[patch.file] += patch.old + "\n"
    texts["ADP.py"] += repeat + "\n" if repeat else ""
    for name, text in texts.items():
        (folder / name).write_text(text)
    return folder


def real_sources(folder: Path) -> Path:
    """The original's sources in `folder`: from ADP_ORIGINAL_CHECKOUT, or from the mirror's HEAD; else skip."""
    checkout = os.environ.get("ADP_ORIGINAL_CHECKOUT")
    if checkout:
        return Path(checkout)
    if not MIRROR.is_dir():
        pytest.skip("no checkout of the original (set ADP_ORIGINAL_CHECKOUT) and no mirror at " + str(MIRROR))
    for name in bench.SOURCES:
        shown = subprocess.run(["git", "-C", str(MIRROR), "show", f"HEAD:{name}"], capture_output=True, text=True)
        if shown.returncode != 0:
            pytest.skip(f"the mirror has no {name}")
        (folder / name).write_text(shown.stdout)
    return folder


def test_a_folder_that_is_not_a_checkout_is_refused_with_one_line_and_exit_code_2(tmp_path, monkeypatch, capsys):
    empty, out = tmp_path / "empty", tmp_path / "out"
    empty.mkdir()
    for path in (empty, tmp_path / "missing"):
        monkeypatch.setattr(sys, "argv", ["bench_adp_vs_original.py", str(path), "--quick", "--out", str(out)])
        with pytest.raises(SystemExit) as stop:
            bench.run_main(bench.main)
        lines = capsys.readouterr().err.strip().splitlines()
        assert stop.value.code == 2
        assert len(lines) == 1 and "Analytical-Deep-Priors" in lines[0], lines
        assert not out.exists()


def test_a_checkout_with_the_patched_texts_is_accepted_and_other_code_refused(tmp_path):
    for folder in ("ok", "twice", "other"):
        (tmp_path / folder).mkdir()
    bench.check_checkout(fake_checkout(tmp_path / "ok"))
    with pytest.raises(RunError, match="2 copies of 'upper_iter = 41'"):
        bench.check_checkout(fake_checkout(tmp_path / "twice", repeat="upper_iter = 41"))
    for name in bench.SOURCES:
        (tmp_path / "other" / name).write_text("print('another project')\n")
    with pytest.raises(RunError, match="not the .* code this bench patches"):
        bench.check_checkout(tmp_path / "other")


def test_only_the_constants_that_differ_from_the_originals_are_patched():
    default = bench.patches_for(make_config(ADP.Config), False, False, 0)
    assert default == list(bench.PATCHES)
    quick = bench.patches_for(make_config(ADP.Config, quick=True), False, False, 0)
    assert [p.new for p in quick[len(bench.PATCHES):]] == ["upper_iter = 15", "alpha = 1e-05"]
    with pytest.raises(RunError, match="tv_weight"):
        bench.check_config(make_config(ADP.Config, tv_weight=0.01))


def test_the_patch_table_applies_cleanly_to_the_original_sources(tmp_path):
    checkout = real_sources(tmp_path)
    bench.check_checkout(checkout)
    texts = bench.patched(checkout, every_patch(seed=3))
    for name, text in texts.items():
        compile(text, name, "exec")  # still Python
    adp = texts["ADP.py"]
    assert 'device = torch.device("cpu")' in adp and "torch.backends.mps" not in adp
    assert "kernel_original.to(device).clone()" in adp
    assert f'torch.load("{bench.DATA_FILE}")' in adp and "channels, operator, noise_level)" not in adp
    assert adp.rstrip().endswith(f'"{bench.RESULT_FILE}")')
    assert "manual_seed(3)" in adp and "upper_iter = 15" in adp
    assert "normalize" not in texts["utils.py"]
    untouched = set(bench.SOURCES) - {"ADP.py", "utils.py"}
    assert all(texts[name] == (checkout / name).read_text() for name in untouched)


def test_the_logs_agree_as_long_as_acceptance_and_fista_counts_do():
    row = lambda accepted, n: dict(accepted=accepted, fista_iterations=n)  # noqa: E731
    a = [row(True, 5), row(False, 8), row(True, 20)]
    assert bench.steps_in_step(a, a) == 3
    assert bench.steps_in_step(a, [row(True, 5), row(False, 9), row(True, 20)]) == 1
    assert bench.steps_in_step(a, [row(False, 5)]) == 0
    assert bench.steps_in_step(a, [row(True, 6), row(False, 9), row(False, 20)], ("accepted",)) == 2
