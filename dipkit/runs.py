"""Run folders: Results/<script>/<run-name>/ with config.json, metrics.json, CSV curves and figures.

A run never overwrites another: if the folder exists, the name gets a suffix -2, -3, ...
config.json holds every constant, the environment (library versions, machine, device), the git revision of the
code with a flag for uncommitted changes, and the command line. metrics.json has one shape for every script:
    {"script": ..., "summary": ..., "items": ..., "seconds": ..., "device": ..., <script-specific keys>}
where `summary` is what the run found (per method or solver), `items` one entry per image, problem or run.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import platform
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .cli import RunError


def new_run_folder(results_dir: str | Path, script: str, name: str = "") -> Path:
    """Create and return a fresh folder results_dir/script/name (a time stamp if name is empty)."""
    base = Path(results_dir) / script
    name = name or datetime.now().strftime("%Y%m%d-%H%M%S")
    folder, n = base / name, 1
    while True:
        try:
            folder.mkdir(parents=True, exist_ok=False)
            return folder
        except FileExistsError:
            n += 1
            folder = base / f"{name}-{n}"


# constants that may differ when a study is resumed: which runs, where and how they run, not what a run computes
RESUMABLE = {"seeds", "variants", "only", "resume", "workers", "engine", "ray_address", "gpus_per_run", "progress",
             "device", "quick"}


def start_run(config: Any, script: str, device: torch.device, resume: bool = False,
              also_resumable: tuple[str, ...] = ()) -> Path:
    """A fresh folder <config.results_dir>/<script>/<config.run_name> holding config.json: every constant, the
    environment, the code's revision and the command line. With `resume`, the folder of that name is reused if it
    exists, after checking that its constants differ only in RESUMABLE ones and `also_resumable` (a RunError
    otherwise, nothing written); its earlier config.json records are kept in the new one under "earlier"."""
    record = dict(config=dataclasses.asdict(config), environment=environment(device), code=code_revision(),
                  command=[Path(sys.argv[0]).name, *sys.argv[1:]])
    folder = Path(config.results_dir) / script / config.run_name
    if resume and not config.run_name:
        raise RunError("resume needs the run_name of the study to go on with")
    if resume and (folder / "config.json").is_file():
        earlier = json.loads((folder / "config.json").read_text())
        changed = sorted(key for key, value in _plain(record["config"]).items()
                         if key not in RESUMABLE | set(also_resumable) and earlier["config"].get(key) != value)
        if changed:
            raise RunError(f"cannot resume {folder}: its runs were made with other {', '.join(changed)}; "
                           "choose another run_name")
        record["earlier"] = earlier.get("earlier", []) + [{k: v for k, v in earlier.items() if k != "earlier"}]
    else:
        folder = new_run_folder(config.results_dir, script, config.run_name)
    write_json(folder / "config.json", record)
    return folder


def code_revision() -> dict[str, Any]:
    """The git revision of this code and whether it has uncommitted changes (None where git or the repository is
    missing, as in an installed copy)."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    revision = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if revision else None
    return dict(revision=revision, dirty=None if status is None else bool(status))


def mean_scores(items: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per method, the mean over the items of each number in its {"psnr": ..., "ssim": ...} entry."""
    methods = [key for key, value in next(iter(items.values())).items() if isinstance(value, dict)]
    return {method: {name: float(np.mean([item[method][name] for item in items.values()]))
                     for name, value in items[next(iter(items))][method].items()
                     if isinstance(value, (int, float)) and not isinstance(value, bool)}
            for method in methods}


def write_metrics(folder: Path, script: str, summary: Any, items: Any, seconds: float, device: Any,
                  **extra: Any) -> None:
    """metrics.json in the one shape every script writes (see the module's docstring)."""
    write_json(folder / "metrics.json", dict(script=script, summary=summary, items=items, seconds=seconds,
                                             device=device, **extra))


def environment(device: torch.device) -> dict[str, Any]:
    """What produced the numbers: library versions, the machine and the device."""
    import deepinv

    info = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "deepinv": deepinv.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "processor": cpu_name(),
        "cpu_cores": os.cpu_count(),
        "cpu_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def cpu_name() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo; elsewhere what the platform module says)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _plain(value: Any) -> Any:
    """JSON-friendly: tensors and arrays to lists, NaN and infinities to None, dataclasses to dicts."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return _plain(value.tolist())
    if isinstance(value, (np.floating, np.integer)):
        return _plain(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (torch.device, torch.dtype, Path)):
        return str(value)
    return value


def replace_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """write(temporary) then rename it to `path`: a killed process leaves the old file or the new, never half."""
    partial = path.with_name(path.name + ".partial")
    write(partial)
    os.replace(partial, path)


def save_atomically(path: Path, content: Any) -> None:
    """torch.save(content) to `path`, written atomically (what --resume reads back with torch.load)."""
    replace_atomically(path, lambda partial: torch.save(content, partial))


def write_json(path: Path, content: Any) -> None:
    replace_atomically(path, lambda p: p.write_text(json.dumps(_plain(content), indent=2) + "\n"))


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rows of equal keys as CSV (the first row's keys are the header), written atomically."""
    def write(partial: Path) -> None:
        with partial.open("w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)

    replace_atomically(path, write)
