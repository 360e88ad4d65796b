"""The one engine every script runs its units on: kept as they finish, resumed, here, in worker processes or on Ray.

A run is a set of units: an image (ADP.py, dip_denoise.py), a problem x variant x seed (selfdeblur.py, vdip.py), a
noise level (generative_prior.py), a solver (adp_1d.py). The script gives the engine its units, the function that
computes a list of them (`compute(tasks) -> outcomes`, one outcome per task; several tasks only where the script
batches units of one shape, `Unit.shape`) and what to keep of each outcome (`keep(unit, outcome) -> record`, which
also writes the unit's own files). The engine

  * keeps each unit as soon as it is done: units/<name>.pt holds its record, its key (`Unit.digest`: the digest of
    everything that decides its result, the input tensors it sees and its resolved settings, made by
    dipkit.sources.digest_of) and the code that computed it (`code_identity`: the digest of the script's file and
    of dipkit's, with the git revision and whether the tree was clean), written to a temporary file and renamed,
    so that a killed process leaves the file whole or not at all; units.json lists each unit's code;
  * with `resume`, reads back every unit whose file is whole, whose key is the same and which the same code
    computed, and computes the others, saying how many of each: a damaged file, another key or other code is said
    in one line per unit and the unit done again (`keep_other_code` keeps the units of other code instead, and
    units.json names them);
  * runs the units here one after another, in worker processes of this machine (workers > 1), or as Ray tasks on
    a local Ray or a cluster (engine "ray"), units of one shape in batches of up to `batch`;
  * names a unit that fails (its method raised a RunError: a loss turned NaN, a solver diverged) and goes on with
    the others; a worker that dies (killed for memory, a crash) costs only its own batch, which a fresh worker
    runs again; a batch that fails for good fails its units with one line naming the cause, its traceback kept
    in failures/<unit>.txt; the caller ends the run with Kept.check, a RunError naming the failed units (exit
    code 2).

It knows no method: units, tasks, outcomes and records are the scripts' own. The constants every script shares
for this (RunConstants, EngineConstants) are here too, so that --resume, --workers, --engine and --ray_address
mean the same in every script. The run folder, its lock and its config.json are dipkit.runs'.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import signal
import socket
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any, Callable, ClassVar, Hashable, Iterator, Literal, Sequence, TypeVar

import torch

from .device import keep_freed_memory
from .errors import Failed, RunError
from .runs import code_revision, read_kept, save_atomically, write_json

T = TypeVar("T")


@dataclass
class RunConstants:
    """What every script's run takes (the first constants of each script's Config)."""

    device: str = "auto"  # auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps
    deterministic: bool = False  # ask torch for deterministic kernels (cuDNN's autotuner off)
    results_dir: str = "Results"  # outputs go to <results_dir>/<script>/<run_name>/
    run_name: str = ""  # folder name of this run (default: a time stamp); never overwrites an existing one
    resume: bool = False  # go on with the run <run_name>: its finished units are read back, the others computed
    progress: bool = True  # show progress bars
    keep_other_code: bool = False  # with resume: keep units another version of the code computed (units.json names them)

    LIMITS: ClassVar[dict[str, str]] = {}


@dataclass
class EngineConstants(RunConstants):
    """Where a script's units run: here, in a pool of processes, or on Ray (every script but adp_1d.py, whose
    solvers are timed against each other and so run one after another here)."""

    workers: int = 1  # units at a time, each in its own process (its share of the CPU cores, or one GPU shared)
    engine: Literal["local", "ray"] = "local"  # local: here or a process pool; ray: Ray tasks (local or a cluster)
    ray_address: str = ""  # with engine ray: an existing cluster's address (empty: a local Ray with `workers` CPUs)
    gpus_per_run: float = 0.0  # with engine ray: GPUs each run asks for (0.25: four runs share a GPU)

    LIMITS: ClassVar[dict[str, str]] = dict(workers="[1, inf)", gpus_per_run="[0, inf)")


def runs_here(constants: Any) -> bool:
    """Whether the units run in this process (and so may show progress bars): one worker, the local engine."""
    return getattr(constants, "workers", 1) == 1 and getattr(constants, "engine", "local") == "local"


def concurrent_units(constants: Any) -> int:
    """How many units share this machine at once: the workers of a local pool or a local Ray, one otherwise (a
    cluster's units are spread over its machines)."""
    if getattr(constants, "engine", "local") == "ray" and getattr(constants, "ray_address", ""):
        return 1
    return getattr(constants, "workers", 1)


# ---------------------------------------------------------------------------------------------------------------
# Units and what is kept of them


@dataclass(frozen=True)
class Unit:
    """One unit of a run: `name` is unique within the run (its file is units/<name>.pt), `task` what the script's
    compute takes (sent to a worker as it is), `digest` its key: the digest of everything that decides its result
    (dipkit.sources.digest_of of the input tensors it sees and its resolved settings; a kept unit is read back only
    while it is the same), `shape` what units that may share a batch have in common (None: always alone)."""

    name: str
    task: Any
    digest: str = ""
    shape: Hashable = None


@dataclass
class Kept:
    """What a run's units came to: each finished unit's record (in the units' order) and each failed unit's
    message."""

    records: dict[str, dict] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    def check(self, folder: Path, what: str = "unit") -> None:
        """A RunError naming the failed units, if any (the others are kept in `folder`)."""
        if self.failed:
            raise RunError(f"{len(self.failed)} {what}(s) failed (the others are kept in {folder}; --resume computes "
                           "these again): " + "; ".join(f"{name}: {message}" for name, message in self.failed.items()))


def unit_file(folder: Path, name: str) -> Path:
    return folder / "units" / f"{name}.pt"


def code_identity(script: str = "") -> dict[str, Any]:
    """The code that computes a script's units: the digest of the script's file and of every dipkit module (what a
    unit's result depends on, whatever git says), with the git revision and whether the tree was clean (for the
    reader). A commit that changes neither (the docs, another script) keeps the same digest."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    files = sorted(Path(__file__).resolve().parent.glob("*.py")) + ([root / f"{script}.py"] if script else [])
    for path in files:
        if path.is_file():
            digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return dict(digest=digest.hexdigest(), **code_revision())


def _code_label(code: Any) -> str:
    if not isinstance(code, dict):
        return "code older than code records"
    revision = code.get("revision")
    return (f"revision {revision[:10]}" if revision else "code outside git") + (
        " with uncommitted changes" if code.get("dirty") else "") + f" (code {str(code.get('digest'))[:10]})"


def kept_unit(folder: Path, unit: Unit, expects: Sequence[str], log: Callable[[str], None]) -> tuple[dict | None, str]:
    """What an earlier run kept of `unit`: (its saved file's content, "") or (None, why it is to be computed: "new",
    "damaged", "key"; said in one line unless new)."""
    def read(path: Path) -> dict:
        saved = torch.load(path, weights_only=True)
        if not (isinstance(saved, dict) and isinstance(saved.get("record"), dict) and "digest" in saved
                and set(expects) <= set(saved["record"])):
            raise ValueError("not a unit this script keeps")
        return saved

    path = unit_file(folder, unit.name)
    if not path.is_file():
        return None, "new"
    saved = read_kept(path, read, unit.name, log)
    if saved is None:
        return None, "damaged"
    if saved["digest"] != unit.digest:
        log(f"{unit.name}: its input or settings changed since the earlier run; computing it again")
        return None, "key"
    return saved, ""


def run_units(folder: Path, units: list[Unit], compute: Callable[[list], list], keep: Callable[[Unit, Any], dict], *,
              resume: bool = False, batch: int = 1, runner: Runner | None = None, expects: Sequence[str] = (),
              update: Callable[[dict[str, dict]], None] | None = None, script: str = "",
              keep_other_code: bool = False, log: Callable[[str], None] = print) -> Kept:
    """Compute the units of a run into `folder`, or read them back (see the module's docstring). `compute` must be
    a module-level function where `runner` sends the units to other processes; `expects`: the keys a kept
    record must have; `update(records)` is called after each unit is kept (the script's tables, rewritten);
    `script`: whose code computes the units (code_identity)."""
    names = [unit.name for unit in units]
    twice = next((name for i, name in enumerate(names) if name in names[:i]), None)
    if twice is not None:
        raise RunError(f"the unit {twice} would be made twice; give each input once")
    (folder / "units").mkdir(parents=True, exist_ok=True)
    code = code_identity(script)
    done: dict[str, dict] = {}
    codes = _read_codes(folder)  # units.json: the code of each unit kept in the folder (several calls may share it)
    why: dict[str, int] = {}
    for unit in units if resume else ():
        saved, reason = kept_unit(folder, unit, expects, log)
        if saved is not None and (saved.get("code") or {}).get("digest") != code["digest"]:
            if keep_other_code:
                log(f"{unit.name}: kept from the earlier run, made by other code ({_code_label(saved.get('code'))})")
                codes[unit.name] = dict(code=saved.get("code"), other_code=True)
                done[unit.name] = saved["record"]
                continue
            log(f"{unit.name}: made by other code ({_code_label(saved.get('code'))}); computing it again "
                "(--keep_other_code keeps it)")
            saved, reason = None, "code"
        if saved is None:
            why[reason] = why.get(reason, 0) + 1
            codes.pop(unit.name, None)
            continue
        done[unit.name] = saved["record"]
        codes[unit.name] = dict(code=saved.get("code"), other_code=False)
        log(f"{unit.name}: kept from the earlier run")
    if resume:
        reasons = dict(new="new", damaged="damaged", key="changed input or settings", code="other code")
        again = ", ".join(f"{why[r]} {text}" for r, text in reasons.items() if why.get(r))
        log(f"resume: {len(done)} unit(s) kept, {len(units) - len(done)} to compute" + (f" ({again})" if again else ""))
    kept = Kept()
    todo = [unit for unit in units if unit.name not in done]
    for unit, outcome in (runner or in_process)(batches(todo, batch), compute):
        failure = folder / "failures" / f"{unit.name}.txt"
        if isinstance(outcome, Failed):
            kept.failed[unit.name] = outcome.message
            if outcome.traceback:
                failure.parent.mkdir(exist_ok=True)
                failure.write_text(outcome.traceback)
            log(f"{unit.name}: failed: {outcome.message}" + (f" (traceback: {failure})" if outcome.traceback else ""))
            continue
        record = keep(unit, outcome)
        save_atomically(unit_file(folder, unit.name), dict(digest=unit.digest, code=code, record=record))
        failure.unlink(missing_ok=True)
        done[unit.name] = record
        codes[unit.name] = dict(code=code, other_code=False)
        write_json(folder / "units.json", codes)
        if update is not None:
            update({name: done[name] for name in names if name in done})
    if resume:
        write_json(folder / "units.json", codes)
    kept.records = {name: done[name] for name in names if name in done}
    return kept


def _read_codes(folder: Path) -> dict[str, dict]:
    try:
        codes = json.loads((folder / "units.json").read_text())
        return codes if isinstance(codes, dict) else {}
    except (OSError, ValueError):
        return {}


def group_runs(items: Sequence[T], key: Callable[[T], Hashable], most: int) -> list[list[T]]:
    """The items in groups of at most `most`: items of one key together, in their order of first appearance."""
    groups: dict[Hashable, list[T]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return [group[i : i + most] for group in groups.values() for i in range(0, len(group), most)]


def batches(units: list[Unit], most: int) -> list[list[Unit]]:
    """Units of one shape in batches of at most `most`; a unit without a shape alone."""
    if most <= 1:
        return [[unit] for unit in units]
    return group_runs(units, lambda unit: ("alone", unit.name) if unit.shape is None else ("shape", unit.shape), most)


# ---------------------------------------------------------------------------------------------------------------
# Where the units run

Runner = Callable[[list[list[Unit]], Callable], Iterator[tuple[Unit, Any]]]


def compute_batch(compute: Callable[[list], list], units: list[Unit]) -> list:
    """compute's outcomes for a batch of units; a RunError (or a non-finite solver state) fails each of them."""
    try:
        outcomes = compute([unit.task for unit in units])
    except (RunError, FloatingPointError) as error:
        return [Failed(str(error))] * len(units)
    if len(outcomes) != len(units):
        raise ValueError(f"compute gave {len(outcomes)} outcomes for {len(units)} units")
    return list(outcomes)


def in_process(groups: list[list[Unit]], compute: Callable) -> Iterator[tuple[Unit, Any]]:
    """Each batch in turn, here."""
    for units in groups:
        yield from zip(units, compute_batch(compute, units))


def _worker(connection: Any, threads: int) -> None:
    """A worker process: batches in from the driver, outcomes out (or the error and its traceback), until told to
    stop or its driver is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle: it stops the workers itself
    threading.Thread(target=_exit_with_driver, args=(os.getppid(),), daemon=True).start()
    from tqdm import tqdm

    # tqdm's default lock is a named semaphore, which a stopped worker would leave behind (and the resource
    # tracker complain of): a thread lock serves
    tqdm.set_lock(threading.RLock())
    torch.set_num_threads(threads)
    keep_freed_memory()
    while True:
        try:
            job = connection.recv()
        except EOFError:
            return
        if job is None:
            return
        compute, units = job
        try:
            answer = ("done", compute_batch(compute, units))
        except BaseException as error:  # a bug, or memory: the driver decides; the traceback goes with it
            answer = ("error", f"{type(error).__name__}: {error}", traceback.format_exc(),
                      isinstance(error, (MemoryError, torch.OutOfMemoryError)))
        connection.send(answer)


def _exit_with_driver(driver: int, every: float = 1.0) -> None:
    """A worker whose driver is gone (killed, so that it could not stop its workers) ends too, instead of
    computing on for nobody: it has been given another parent."""
    while os.getppid() == driver:
        time.sleep(every)
    os._exit(1)


class _Workers:
    """Worker processes of this machine, each computing one batch at a time, so that a worker that dies is known
    by its batch: it is replaced by a fresh one and the others go on."""

    def __init__(self, threads: int):
        self.context, self.threads = multiprocessing.get_context("spawn"), threads
        self.idle: list[tuple[Any, Any]] = []
        self.busy: dict[Any, tuple[Any, int]] = {}  # connection -> (process, batch index)

    def start(self, compute: Callable, units: list[Unit], index: int) -> None:
        if self.idle:
            process, connection = self.idle.pop()
        else:
            connection, theirs = self.context.Pipe()
            process = self.context.Process(target=_worker, args=(theirs, self.threads), daemon=True)
            process.start()
            theirs.close()
        connection.send((compute, units))
        self.busy[connection] = (process, index)

    def finished(self) -> Iterator[tuple[int, tuple]]:
        """(batch index, answer) for each batch that ended: ("done", outcomes), ("error", cause, traceback,
        retryable) or ("died", cause, "", True) for a worker that died with its batch."""
        sentinels = {process.sentinel: connection for connection, (process, _) in self.busy.items()}
        for ready in wait(list(self.busy) + list(sentinels)):
            connection = sentinels.get(ready, ready)
            if connection not in self.busy:
                continue
            process, index = self.busy.pop(connection)
            try:
                answer = connection.recv()
            except (EOFError, OSError):  # the worker died: its pipe closed unanswered
                process.join(timeout=5)
                connection.close()
                yield index, ("died", f"the worker died ({_death(process.exitcode)})", "", True)
                continue
            self.idle.append((process, connection))
            yield index, answer

    def stop(self) -> None:
        """Idle workers told to end, busy ones ended now (their batches are not kept: --resume computes them)."""
        for _, connection in self.idle:
            try:
                connection.send(None)
            except OSError:
                pass
        for process, _ in self.busy.values():
            process.terminate()
        for process in [process for process, _ in self.busy.values()] + [process for process, _ in self.idle]:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
        self.idle, self.busy = [], {}


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name if -exitcode in signal.valid_signals() else str(-exitcode)
        return f"killed by {name}" + (": out of memory?" if -exitcode == signal.SIGKILL else "")
    return f"exit code {exitcode}"


def pool_runner(workers: int, threads: int | None = None, retries: int = 1) -> Runner:
    """Batches `workers` at a time in spawned processes of this machine, each with `threads` CPU threads (default:
    its share of the cores) or all sharing the GPU. A batch whose worker dies (killed for memory, a crash) or
    runs out of memory is run again, in a fresh worker, up to `retries` times, while the other batches go on; a
    batch that still fails, or raises an error that is not the user's (a bug), fails its units with one line
    naming the cause (Failed, with the traceback)."""
    threads = threads or max(1, (os.cpu_count() or 1) // workers)

    def run(groups: list[list[Unit]], compute: Callable) -> Iterator[tuple[Unit, Any]]:
        pool, waiting, tries = _Workers(threads), deque(range(len(groups))), [0] * len(groups)
        try:
            while waiting or pool.busy:
                while waiting and len(pool.busy) < workers:
                    i = waiting.popleft()
                    pool.start(compute, groups[i], i)
                for i, answer in list(pool.finished()):
                    if answer[0] == "done":
                        yield from zip(groups[i], answer[1])
                        continue
                    _, cause, trace, retryable = answer
                    tries[i] += 1
                    if retryable and tries[i] <= retries:
                        print(f"{groups[i][0].name}: {cause}; running its batch again", flush=True)
                        waiting.appendleft(i)
                        continue
                    times = f" ({tries[i]} tries)" if tries[i] > 1 else ""
                    yield from zip(groups[i], [Failed(f"{cause}{times}", trace)] * len(groups[i]))
        finally:  # done, Ctrl-C or an error: no worker goes on with (or waits for) the rest
            pool.stop()

    return run


def connect_ray(workers: int = 1, address: str = "") -> tuple[Any, bool]:
    """Ray, connected: to the cluster at `address` (checked to be reachable first), or a local Ray started with
    `workers` CPUs; and whether it was started here (to be shut down at the end). A RunError, before anything is
    written, when Ray is not installed or the cluster cannot be reached."""
    try:
        import ray  # only with --engine ray
    except ImportError:
        raise RunError("engine ray needs Ray: pip install ray") from None
    if ray.is_initialized():
        return ray, False
    if address and address != "auto":
        _check_reachable(address)
    try:
        ray.init(address=address or None, num_cpus=None if address else workers, include_dashboard=False,
                 runtime_env=ray_environment(), log_to_driver=False)
    except Exception as error:  # Ray's own errors differ by version; each means: no Ray to run on
        lines = str(error).strip().splitlines()
        raise RunError(f"cannot start Ray{f' at {address}' if address else ''}: "
                       f"{lines[-1] if lines else type(error).__name__}") from None
    return ray, True


# what the workers need of the checkout: the scripts, dipkit and the bundled images; not the runs, the docs, git
SHIPPED_AWAY = [".git", ".venv", "Results", "docs", "tests", "bench", ".data", ".whl", ".pytest_cache", "*.pyc",
                "__pycache__"]


def ray_environment() -> dict[str, Any]:
    """Ray's runtime environment for the units: this checkout's code shipped to every worker, on this machine or
    a cluster's others (its `working_dir`: the scripts, dipkit and images/, the workers' current folder and first
    import path), so that a node needs no copy of the code at the driver's path."""
    return dict(working_dir=str(Path(__file__).resolve().parent.parent), excludes=SHIPPED_AWAY)


def _check_reachable(address: str) -> None:
    """A RunError unless host:port (or ray://host:port) of a Ray cluster answers within a few seconds."""
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit():
        raise RunError(f"ray_address must be host:port, ray://host:port or auto, not '{address}'")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as error:
        raise RunError(f"cannot reach the Ray cluster at {address}: {error.strerror or error}") from None


def ray_runner(workers: int = 1, address: str = "", gpus_per_run: float = 0.0, retries: int = 1) -> Runner:
    """Batches as Ray tasks: on a local Ray started for the run with `workers` CPUs, or on the cluster at `address`
    (`ray start --head` on one machine, `ray start --address HEAD:6379` on the others; or a cluster launcher). A
    batch asks for one CPU (its units take their passes in turn, or in one vectorised pass) and the GPUs its units
    need, `gpus_per_run` each (at most one GPU: a batch runs in one process). A task whose worker dies is retried
    `retries` times by Ray; a unit's RunError comes back as its Failed outcome, so Ray never retries it. Ray is
    connected here, before anything is written (connect_ray)."""
    ray, started = connect_ray(workers, address)
    task = ray.remote(num_cpus=1, max_retries=retries, retry_exceptions=True)(compute_batch)

    def run(groups: list[list[Unit]], compute: Callable) -> Iterator[tuple[Unit, Any]]:
        try:
            pending = {task.options(num_gpus=min(1.0, gpus_per_run * len(units))).remote(compute, units): units
                       for units in groups}
            while pending:
                (ready,), _ = ray.wait(list(pending), num_returns=1)
                units = pending.pop(ready)
                try:
                    outcomes = ray.get(ready)
                except Exception as error:
                    lines = str(error).splitlines()
                    outcomes = [Failed(f"failed on Ray after {retries + 1} tries: "
                                       f"{lines[-1] if lines else type(error).__name__}")] * len(units)
                yield from zip(units, outcomes)
        finally:
            if started:
                ray.shutdown()

    return run


def make_runner(constants: Any) -> Runner:
    """Where the constants send the units: here (one worker, the local engine), a local process pool (workers > 1)
    or Ray (engine "ray"; connected now, a RunError if it cannot be)."""
    workers = getattr(constants, "workers", 1)
    if getattr(constants, "engine", "local") == "ray":
        return ray_runner(workers, constants.ray_address, constants.gpus_per_run)
    return pool_runner(workers) if workers > 1 else in_process
