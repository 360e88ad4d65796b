"""Run folders: Results/<script>/<run-name>/ with config.json, metrics.json, CSV curves and figures.

A run name is one plain folder name (check_run_name): a name with a path in it, or one the file system cannot
hold, is refused before anything is written. A run never overwrites another: if the folder exists, the name gets
a suffix -2, -3, ... A process that uses a run folder holds a lock on it (its .lock file) until it ends, so that
two processes never resume the same study at once; writing metrics.json, the last file of a run, frees it. config.json holds every constant, the environment (library
versions, machine, device), the git revision of the code with a flag for uncommitted changes, and the command
line. metrics.json has one shape for every script:
    {"script": ..., "summary": ..., "items": ..., "seconds": ..., "device": ..., <script-specific keys>}
where `summary` is what the run found (per method or solver), `items` one entry per image, problem or run.
What a run keeps of each finished unit (dipkit.engine) is read back by `read_kept`, which treats a damaged file as
a unit to do again.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.metadata
import json
import math
import os
import platform
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Callable

import numpy as np
import torch

from .device import native_bf16
from .errors import RunError

RUN_NAME = re.compile(r"[\w+=,@-][\w.+=,@-]*")  # letters, digits, _ . - + = , @; no path, not hidden
RUN_NAME_BYTES = 200  # file systems hold 255 bytes a name; room is left for the -N suffix and temporary files


def check_run_name(name: str) -> None:
    """A RunError unless `name` is empty (a time stamp is used) or one plain folder name: letters, digits and
    _ . - + = , @, not starting with a dot, at most RUN_NAME_BYTES bytes. Paths (a/b, ../x, /tmp/x) are refused:
    a run is always a folder of Results/<script>/."""
    if not name:
        return
    if not RUN_NAME.fullmatch(name):
        raise RunError(f"run_name must be one plain folder name (letters, digits and _ . - + = , @, not starting "
                       f"with a dot), not {name!r}")
    if len(name.encode()) > RUN_NAME_BYTES:
        raise RunError(f"run_name is {len(name.encode())} bytes long; at most {RUN_NAME_BYTES}")


def _os_problem(error: OSError) -> str:
    return error.strerror or type(error).__name__


def _broken_link_on(path: Path) -> Path | None:
    """The first symbolic link on the way to `path` that points nowhere, if any."""
    for part in reversed([path, *path.parents]):
        if part.is_symlink() and not part.exists():
            return part
    return None


def new_run_folder(results_dir: str | Path, script: str, name: str = "") -> Path:
    """Create and return a fresh folder results_dir/script/name (a time stamp if name is empty; name-2, name-3,
    ... if it exists). A file-system problem (no permission, a file or a broken link on the way) is a RunError."""
    check_run_name(name)
    base = Path(results_dir).expanduser() / script
    name = name or datetime.now().strftime("%Y%m%d-%H%M%S")
    try:
        broken = _broken_link_on(base)
        if broken is not None:
            raise RunError(f"cannot create run folders in {base}: {broken} is a broken symbolic link "
                           f"(to {os.readlink(broken)})")
        base.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunError(f"cannot create the results folder {base}: {_os_problem(error)}") from None
    for n in range(1, 10_000):
        folder = base / (name if n == 1 else f"{name}-{n}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
        except OSError as error:
            raise RunError(f"cannot create the run folder {folder}: {_os_problem(error)}") from None
    raise RunError(f"{base} holds {name} and 9,998 numbered copies of it; choose another run_name")


_held: dict[Path, IO] = {}  # the run folders this process holds, with their open lock files
_current: dict[str, Any] = {}  # the run this process writes: its folder


def hold(folder: Path) -> None:
    """Take the lock of a run folder until the run ends (write_metrics, or `release`): an exclusive flock on
    <folder>/.lock, which the operating system frees when the process ends, however it ends; a RunError if another
    process holds it. Where flock does not exist (Windows) nothing is locked."""
    key = folder.resolve()
    if key in _held:
        return
    try:
        import fcntl
    except ImportError:
        return
    try:
        handle = (folder / ".lock").open("a+")
    except OSError as error:
        raise RunError(f"cannot lock the run folder {folder}: {_os_problem(error)}") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        owner = handle.read().strip()
        handle.close()
        raise RunError(f"{folder} is in use by another process{f' (pid {owner})' if owner else ''}: wait for it to "
                       "end, or choose another run_name") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    _held[key] = handle


def release(folder: Path) -> None:
    """Free a run folder this process holds (nothing if it holds none)."""
    handle = _held.pop(folder.resolve(), None)
    if handle is not None:
        handle.close()  # closing the file frees its flock


def interrupted_line() -> str:
    """What Ctrl-C leaves: the run folder and how to go on with it."""
    folder = _current.get("folder")
    if folder is None:
        return "interrupted before a run folder was created: nothing was written"
    return (f"interrupted: every finished unit is kept in {folder}; go on with --resume --run_name {folder.name} "
            "(and the same constants)")


def read_config(path: Path) -> dict[str, Any]:
    """A run's config.json, checked to be one (a RunError naming the file otherwise)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RunError(f"{path} is damaged ({error})") from None
    if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
        raise RunError(f"{path} is damaged (it records no constants)")
    return record


def read_kept(path: Path, read: Callable[[Path], Any], what: str, log: Callable[[str], None] = print) -> Any:
    """What an earlier run kept of one item at `path`, read back by `read` (which raises if the content is not
    what it should be); None if there is none, or if it is damaged: that is said in one line, and the caller
    does the item again (its new result then replaces the damaged file)."""
    if not path.is_file():
        return None
    try:
        return read(path)
    except Exception as error:  # a truncated or foreign file fails in many ways; each means: do it again
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        log(f"{what}: {path} is damaged ({reason}); doing it again")
        return None


# constants that may differ when a run is resumed: which units, where and how they run, not what a unit computes
RESUMABLE = {"seeds", "variants", "only", "resume", "workers", "engine", "ray_address", "gpus_per_run", "progress",
             "device", "quick", "batch", "keep_other_code"}


def added_later(config: Any) -> dict[str, Any]:
    """The constants a config class gained after runs were kept (its ADDED: each with the value at which the code
    computes what it computed before the constant existed, JSON-plain): at that value a constant is left out of
    units' keys, and a config.json written before it reads as having it, so that a long study resumes across it."""
    return _plain(dict(getattr(type(config), "ADDED", {})))


def unit_settings(config: Any, also_resumable: tuple[str, ...] = ()) -> dict[str, Any]:
    """The resolved constants a unit computes with, for its key: every constant but those that only select or
    place units (RESUMABLE, `also_resumable`, the run's name and folder) and those added later, at the value that
    computes what the code did before them (added_later)."""
    left_out = RESUMABLE | set(also_resumable) | {"run_name", "results_dir"}
    added = added_later(config)
    return {key: value for key, value in _plain(dataclasses.asdict(config)).items()
            if key not in left_out and not (key in added and added[key] == value)}


def start_run(config: Any, script: str, device: torch.device, resume: bool = False,
              also_resumable: tuple[str, ...] = (), **records: Any) -> Path:
    """A fresh folder <config.results_dir>/<script>/<config.run_name> holding config.json: every constant, the
    environment, the code's revision and the command line. With `resume`, the folder of that name is reused if it
    exists, after checking that its constants differ only in RESUMABLE ones and `also_resumable` (a RunError
    otherwise, nothing written); its earlier config.json records are kept in the new one under "earlier"; where
    there is no run of that name yet, this is said and the run starts afresh under it. The folder is held
    (locked) by this process from here on. `records`: more that config.json holds (a study's variants' settings)."""
    check_run_name(config.run_name)
    if resume and not config.run_name:
        raise RunError("resume needs the run_name of the run to go on with")
    record = dict(config=dataclasses.asdict(config), **records, **run_record(device))
    folder = Path(config.results_dir).expanduser() / script / config.run_name
    try:
        earlier_run = resume and (folder / "config.json").is_file()
    except OSError:  # a path the file system refuses: new_run_folder says why
        earlier_run = False
    if resume and not earlier_run:
        print(f"resume: there is no run {folder} yet; starting it")
    if earlier_run:
        hold(folder)
        try:
            earlier = read_config(folder / "config.json")
        except RunError as error:
            raise RunError(f"cannot resume: {error}; choose another run_name") from None
        added = added_later(config)
        changed = sorted(key for key, value in _plain(record["config"]).items()
                         if key not in RESUMABLE | set(also_resumable)
                         and earlier["config"].get(key, added.get(key)) != value)
        if changed:
            raise RunError(f"cannot resume {folder}: its runs were made with other {', '.join(changed)}; "
                           "choose another run_name")
        record["earlier"] = earlier.get("earlier", []) + [{k: v for k, v in earlier.items() if k != "earlier"}]
    else:
        folder = new_run_folder(config.results_dir, script, config.run_name)
        hold(folder)
    write_json(folder / "config.json", record)
    _current.update(folder=folder)
    return folder


def run_record(device: torch.device) -> dict[str, Any]:
    """What produced a result, beside its numbers: the environment (library versions, machine, device), the git
    revision of the code and the command line (config.json's and every benchmark JSON's)."""
    return dict(environment=environment(device), code=code_revision(), command=[Path(sys.argv[0]).name, *sys.argv[1:]])


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
    """metrics.json in the one shape every script writes (see the module's docstring). It is the last file of a
    run: writing it ends the run, and frees its folder for another process."""
    write_json(folder / "metrics.json", dict(script=script, summary=summary, items=items, seconds=seconds,
                                             device=device, **extra))
    release(folder)


def environment(device: torch.device) -> dict[str, Any]:
    """What produced the numbers: library versions, the machine and the device."""
    info = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "deepinv": _version("deepinv"),  # read from the installed package's metadata: importing it costs 1.5 s
        "numpy": np.__version__,
        "platform": platform.platform(),
        "processor": cpu_name(),
        "cpu_cores": os.cpu_count(),
        "cpu_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # the vector instructions torch's kernels use
        "native_bf16": native_bf16(device),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


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
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    write(partial)
    os.replace(partial, path)


def save_atomically(path: Path, content: Any) -> None:
    """torch.save(content) to `path`, written atomically (what --resume reads back with torch.load)."""
    replace_atomically(path, lambda partial: torch.save(content, partial))


def write_json(path: Path, content: Any) -> None:
    replace_atomically(path, lambda p: p.write_text(json.dumps(_plain(content), indent=2) + "\n"))


def same_keys(rows: list[dict]) -> list[dict]:
    """Rows with every key any of them has (missing cells empty), in first-seen order: what write_csv takes."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    return [{k: r.get(k, "") for k in keys} for r in rows]


def read_csv(path: Path) -> list[dict[str, Any]]:
    """A CSV this project wrote, read back: empty cells left out, the seed an int, numbers floats, names strings.
    A RunError where a row has more or fewer cells than the header (a file cut short, or not one of ours)."""
    def value(key: str, text: str) -> Any:
        try:
            return int(float(text)) if key == "seed" else float(text)
        except ValueError:
            return text

    try:
        with path.open(newline="") as file:
            reader = csv.DictReader(file)
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise RunError(f"{path} cannot be read ({error})") from None
    for number, row in enumerate(rows, start=2):
        if None in row or None in row.values():
            raise RunError(f"{path} is damaged: line {number} does not have the header's {len(reader.fieldnames)} "
                           "cells (a file cut short?)")
    return [{key: value(key, text) for key, text in row.items() if text != ""} for row in rows]


def write_csv(path: Path, rows: list[dict[str, Any]], columns: tuple[str, ...] | None = None) -> None:
    """Rows of equal keys as CSV (the first row's keys are the header; no rows: an empty file), written
    atomically; with `columns`, those columns of the rows (empty where a row has none)."""
    if columns is not None:
        rows = [{k: row.get(k, "") for k in columns} for row in rows]

    def write(partial: Path) -> None:
        with partial.open("w", newline="") as file:
            if not rows:
                return
            writer = csv.DictWriter(file, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)

    replace_atomically(path, write)
