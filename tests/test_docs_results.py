"""bench/docs_results.py: an entry's run kept under docs/results/, and a cut run resumed rather than redone."""

import importlib.util
import json
import sys

from conftest import ROOT


def load_docs_results():
    spec = importlib.util.spec_from_file_location("docs_results", ROOT / "bench" / "docs_results.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["docs_results"] = module  # (its dataclasses look their module up)
    spec.loader.exec_module(module)
    return module


def test_an_entry_is_kept_and_a_cut_run_resumes(tmp_path, monkeypatch, capfd):
    docs_results = load_docs_results()
    monkeypatch.setattr(docs_results, "DOCS_RESULTS", tmp_path / "docs")
    monkeypatch.setattr(docs_results, "SCRATCH", tmp_path / "scratch")
    entry = docs_results.Entry(("selfdeblur.py", "--quick", "--iterations", "4", "--channels", "8", "--curve_every",
                                "2", "--seeds", "0", "1", "--known_kernel_iterations", "20"))
    docs_results.run_entry("selfdeblur/tiny", entry, "", "", force=False)
    kept = tmp_path / "docs" / "selfdeblur" / "tiny"
    assert {"table.csv", "summary.csv", "metrics.json", "config.json"} <= {p.name for p in kept.iterdir()}
    assert json.loads((kept / "config.json").read_text())["config"]["seeds"] == [0, 1]
    run = tmp_path / "scratch" / "selfdeblur" / "selfdeblur-tiny"
    (run / "units" / "camera_k9__SelfDeblur__seed1.pt").unlink()  # as if the study had been cut after seed 0
    capfd.readouterr()
    docs_results.run_entry("selfdeblur/tiny", entry, "", "", force=True, resume=True)
    out = capfd.readouterr().out
    assert "--resume" in out and "camera_k9__SelfDeblur__seed0: kept from the earlier run" in out
    assert (run / "units" / "camera_k9__SelfDeblur__seed1.pt").exists()


def test_keep_other_code_goes_to_the_script_only_with_resume():
    docs_results = load_docs_results()
    entry = docs_results.Entry(("dip_denoise.py", "--quick"))
    resumed = docs_results.command_of("dip_denoise/x", entry, "", "", resume=True, keep_other_code=True)
    assert resumed[-2:] == ["--resume", "--keep_other_code"]
    fresh = docs_results.command_of("dip_denoise/x", entry, "", "", resume=False, keep_other_code=True)
    assert "--keep_other_code" not in fresh and "--resume" not in fresh


def test_the_f16_entry_asks_for_the_dip_repository_and_reads_f16_from_it():
    import pytest

    from dipkit.errors import RunError

    docs_results = load_docs_results()
    entry = docs_results.ENTRIES["dip_denoise/paper_f16"]
    with pytest.raises(RunError, match="--dip_repo DIR"):
        docs_results.command_of("dip_denoise/paper_f16", entry, "", "")
    command = docs_results.command_of("dip_denoise/paper_f16", entry, "", "", dip_repo="/src/dip")
    assert "/src/dip/data/denoising/F16_GT.png" in command and "--save_every" in command
