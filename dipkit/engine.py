"""The one engine every script runs its units on: kept as they finish, resumed, here, in worker processes or on Ray.

A run is a set of units: an image (ADP.py, dip_denoise.py), a problem x variant x seed (selfdeblur.py, vdip.py), a
noise level (generative_prior.py), a solver (adp_1d.py). The script gives the engine its units, the function that
computes a list of them (`compute(tasks) -> outcomes`, one outcome per task; several tasks only where the script
batches units of one shape, `Unit.shape`) and what to keep of each outcome (`keep(unit, outcome) -> record`, which
also writes the unit's own files). The engine

  * keeps each unit as soon as it is done: units/<name>.pt holds its record and the digest of its inputs, written
    to a temporary file and renamed, so that a killed process leaves the file whole or not at all;
  * with `resume`, reads back every unit whose file is whole and was made from the same inputs (the same digest),
    and computes the others: a damaged file or a changed input is said in one line and the unit done again;
  * runs the units here one after another, in a pool of spawned processes of this machine (workers > 1), or as Ray
    tasks on a local Ray or a cluster (engine "ray"), units of one shape in batches of up to `batch`;
  * names a unit that fails (its method raised a RunError: a loss turned NaN, a solver diverged) and goes on with
    the others; the caller ends the run with Kept.check, a RunError naming the failed units (exit code 2).

It knows no method: units, tasks, outcomes and records are the scripts' own. The constants every script shares
for this (RunConstants, EngineConstants) are here too, so that --resume, --workers, --engine and --ray_address
mean the same in every script. The run folder, its lock and its config.json are dipkit.runs'.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Hashable, Iterator, Literal, Sequence, TypeVar

import torch

from .device import keep_freed_memory
from .errors import Failed, RunError
from .runs import read_kept, save_atomically

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
    compute takes (sent to a worker as it is), `digest` the digest of its inputs (a kept unit is read back only
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


def kept_record(folder: Path, unit: Unit, expects: Sequence[str], log: Callable[[str], None]) -> dict | None:
    """The record an earlier run kept of `unit`, or None (none there; damaged; made from other inputs: said)."""
    def read(path: Path) -> dict:
        saved = torch.load(path, weights_only=True)
        if not (isinstance(saved, dict) and isinstance(saved.get("record"), dict) and "digest" in saved
                and set(expects) <= set(saved["record"])):
            raise ValueError("not a unit this script keeps")
        return saved

    saved = read_kept(unit_file(folder, unit.name), read, unit.name, log)
    if saved is None:
        return None
    if saved["digest"] != unit.digest:
        log(f"{unit.name}: its input changed since the earlier run; computing it again")
        return None
    return saved["record"]


def run_units(folder: Path, units: list[Unit], compute: Callable[[list], list], keep: Callable[[Unit, Any], dict], *,
              resume: bool = False, batch: int = 1, runner: Runner | None = None, expects: Sequence[str] = (),
              update: Callable[[dict[str, dict]], None] | None = None, log: Callable[[str], None] = print) -> Kept:
    """Compute the units of a run into `folder`, or read them back (see the module's docstring). `compute` must be
    a module-level function where `runner` sends the units to other processes; `expects`: the keys a kept
    record must have; `update(records)` is called after each unit is kept (the script's tables, rewritten)."""
    names = [unit.name for unit in units]
    twice = next((name for i, name in enumerate(names) if name in names[:i]), None)
    if twice is not None:
        raise RunError(f"the unit {twice} would be made twice; give each input once")
    (folder / "units").mkdir(parents=True, exist_ok=True)
    done: dict[str, dict] = {}
    for unit in units if resume else ():
        record = kept_record(folder, unit, expects, log)
        if record is not None:
            done[unit.name] = record
            log(f"{unit.name}: kept from the earlier run")
    kept = Kept()
    todo = [unit for unit in units if unit.name not in done]
    for unit, outcome in (runner or in_process)(batches(todo, batch), compute):
        if isinstance(outcome, Failed):
            kept.failed[unit.name] = outcome.message
            log(f"{unit.name}: failed: {outcome.message}")
            continue
        record = keep(unit, outcome)
        save_atomically(unit_file(folder, unit.name), dict(digest=unit.digest, record=record))
        done[unit.name] = record
        if update is not None:
            update({name: done[name] for name in names if name in done})
    kept.records = {name: done[name] for name in names if name in done}
    return kept


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


def _start_worker(threads: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle: it stops the workers itself
    threading.Thread(target=_exit_with_driver, args=(os.getppid(),), daemon=True).start()
    from tqdm import tqdm

    # tqdm's default lock is a named semaphore, which a stopped worker would leave behind (and the resource
    # tracker complain of): a thread lock serves
    tqdm.set_lock(threading.RLock())
    torch.set_num_threads(threads)
    keep_freed_memory()


def _exit_with_driver(driver: int, every: float = 1.0) -> None:
    """A worker whose driver is gone (killed, so that it could not stop its workers) ends too, instead of
    computing on for nobody: it has been given another parent."""
    while os.getppid() == driver:
        time.sleep(every)
    os._exit(1)


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """Stop a pool now: queued batches cancelled, running ones ended (not kept: --resume computes them)."""
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        process.terminate()
    pool.shutdown(wait=True, cancel_futures=True)


def pool_runner(workers: int, threads: int | None = None, retries: int = 1) -> Runner:
    """Batches `workers` at a time in spawned processes of this machine, each with `threads` CPU threads (default:
    its share of the cores) or all sharing the GPU; a batch whose worker crashes is run again up to `retries`
    times, then its units fail with the error named."""
    threads = threads or max(1, (os.cpu_count() or 1) // workers)

    def run(groups: list[list[Unit]], compute: Callable) -> Iterator[tuple[Unit, Any]]:
        if not groups:
            return
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                                 initargs=(threads,)) as pool:
            tries = [0] * len(groups)
            pending = {pool.submit(compute_batch, compute, units): i for i, units in enumerate(groups)}
            try:
                while pending:
                    finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in finished:
                        i = pending.pop(future)
                        try:
                            outcomes = future.result()
                        except Exception as error:  # a crashed worker, or a bug: try again, then fail the units
                            tries[i] += 1
                            if tries[i] <= retries:
                                print(f"{groups[i][0].name}: the worker failed ({error}); running it again", flush=True)
                                pending[pool.submit(compute_batch, compute, groups[i])] = i
                                continue
                            outcomes = [Failed(f"failed {tries[i]} times in a worker: {error}")] * len(groups[i])
                        yield from zip(groups[i], outcomes)
            except BaseException:  # Ctrl-C, or an error: the pool must not go on with (or wait for) the rest
                _stop_workers(pool)
                raise

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
    root = str(Path(__file__).resolve().parent.parent)  # the workers import the scripts and dipkit from here
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    try:
        ray.init(address=address or None, num_cpus=None if address else workers, include_dashboard=False,
                 runtime_env=dict(env_vars=dict(PYTHONPATH=path)), log_to_driver=False)
    except Exception as error:  # Ray's own errors differ by version; each means: no Ray to run on
        lines = str(error).strip().splitlines()
        raise RunError(f"cannot start Ray{f' at {address}' if address else ''}: "
                       f"{lines[-1] if lines else type(error).__name__}") from None
    return ray, True


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
