"""Every number in the docs is traceable: each link into docs/results resolves, and every results folder holds the
config.json of the run its rows came from (script, arguments, git revision, device)."""

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RESULTS = ROOT / "docs" / "results"
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_every_link_to_a_file_of_the_repository_resolves():
    broken = []
    for page in PAGES:
        for number, line in enumerate(page.read_text().splitlines(), 1):
            for target in LINK.findall(line):
                if "://" in target or target.startswith("mailto:"):
                    continue
                if not (page.parent / target).exists():
                    broken.append(f"{page.relative_to(ROOT)}:{number}: {target}")
    assert not broken, broken


def test_every_results_folder_holds_the_config_of_its_run():
    folders = {path.parent for path in RESULTS.rglob("*") if path.is_file() and path.name != "config.json"
               and not path.name.endswith("_protocol.md")}  # a protocol is written before its runs: no run of its own
    def run_of(folder):  # the folder itself, or the run folder above it (an image's curve.csv in <run>/<image>/)
        return any((f / "config.json").is_file() for f in (folder, *folder.parents) if RESULTS in (f, *f.parents))

    missing = sorted(str(folder.relative_to(ROOT)) for folder in folders if not run_of(folder))
    assert not missing, f"results without the config.json of their run: {missing}"
    for config in RESULTS.rglob("config.json"):
        record = json.loads(config.read_text())
        assert {"command", "code", "environment"} <= set(record), config
        assert record["code"].get("revision"), config


def test_the_docs_link_every_results_folder():
    linked = {(page.parent / target).resolve() for page in PAGES for target in LINK.findall(page.read_text())}
    unlinked = [str(folder.relative_to(ROOT)) for folder in {p.parent for p in RESULTS.rglob("config.json")}
                if not any(link == folder or folder in link.parents for link in linked)]
    assert not unlinked, f"results folders no page links to: {unlinked}"
