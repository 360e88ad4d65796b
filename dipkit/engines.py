"""Where a study's runs run (its engines): here one after another (in_process), in a pool of spawned processes of
this machine (pool_runner), or as Ray tasks on a local Ray or a cluster (ray_runner); make_runner picks one. Each
takes the study's units of work (a Job, one run; or a Batch, runs of one shape stepped together in one process) and
yields (job, outcome) as runs finish: an Estimate, or Failed for a run that failed inside a batch while the others
went on; the study writes what they give."""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
import socket
import threading
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from tqdm import tqdm

from .blind import Problem
from .device import keep_freed_memory
from .errors import Failed, RunError
from .levin import Scorer
from .loop import Estimate


@dataclass
class Job:
    """One run of a study: `deblur(problem, config, seed, scorer)`; `stem` names its files."""

    problem: Problem
    variant: str
    config: Any
    seed: int

    @property
    def stem(self) -> str:
        return f"{self.problem.name}__{self.variant}__seed{self.seed}"

    @property
    def label(self) -> str:
        return f"{self.problem.name:>16} {self.variant:>14} seed {self.seed}"



@dataclass
class Batch:
    """Runs of one shape made together, in one process: `together(problems, configs, seeds, scorers)` returns one
    Estimate or Failed per run (dipkit.batch). A module-level function, so that a worker process can import it."""

    jobs: list[Job]
    together: Callable

    @property
    def stem(self) -> str:
        return f"{self.jobs[0].stem} and {len(self.jobs) - 1} more"



Unit = Job | Batch
Runner = Callable[[list[Unit], Callable, dict[str, Scorer]], Iterator[tuple[Job, Estimate | Failed]]]



def run_unit(deblur: Callable, unit: Unit, scorers: dict[str, Scorer]) -> list[tuple[Job, Estimate | Failed]]:
    """A Job by `deblur(problem, config, seed, scorer)` (its RunError raised), a Batch by its `together`."""
    if isinstance(unit, Job):
        return [(unit, deblur(unit.problem, unit.config, unit.seed, scorers[unit.problem.name]))]
    jobs = unit.jobs
    outcomes = unit.together([j.problem for j in jobs], [j.config for j in jobs], [j.seed for j in jobs],
                             [scorers[j.problem.name] for j in jobs])
    return list(zip(jobs, outcomes))



def in_process(units: list[Unit], deblur: Callable,
               scorers: dict[str, Scorer]) -> Iterator[tuple[Job, Estimate | Failed]]:
    """Each unit in turn, here."""
    for unit in units:
        yield from run_unit(deblur, unit, scorers)



def _worker_threads(threads: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle: it stops the workers itself
    # tqdm's default lock is a named semaphore, which a stopped worker would leave behind (and the resource
    # tracker complain of): a worker shows no bars, a thread lock serves
    tqdm.set_lock(threading.RLock())
    torch.set_num_threads(threads)
    keep_freed_memory()



def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """Stop a pool now: queued jobs cancelled, running ones ended (they are not kept; --resume runs them)."""
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        process.terminate()
    pool.shutdown(wait=True, cancel_futures=True)  # the pool sees its workers gone, and closes its queues



def _quiet(job: Job) -> Job:
    config = dataclasses.replace(job.config, progress=False) if hasattr(job.config, "progress") else job.config
    return dataclasses.replace(job, config=config)


def _run_job(deblur: Callable, unit: Unit, scorers: dict[str, Scorer]) -> list[tuple[Job, Estimate | Failed]]:
    """A unit in a worker: no progress bar (the driver reports each finished run); its outcomes under the jobs the
    driver gave (not the worker's copies)."""
    quiet = _quiet(unit) if isinstance(unit, Job) else dataclasses.replace(unit, jobs=[_quiet(j) for j in unit.jobs])
    return [outcome for _, outcome in run_unit(deblur, quiet, scorers)]


def _jobs(unit: Unit) -> list[Job]:
    return [unit] if isinstance(unit, Job) else unit.jobs


def _scorers(unit: Unit, scorers: dict[str, Scorer]) -> dict[str, Scorer]:
    return {job.problem.name: scorers[job.problem.name] for job in _jobs(unit)}



@dataclass(frozen=True)
class Refused:
    """A run's RunError (bad input: the same on every try), handed back by a Ray task as its result, so that Ray,
    which retries a task that raises, does not run it again."""

    message: str


def _ray_job(deblur: Callable, unit: Unit, scorers: dict[str, Scorer]) -> list[Estimate | Failed] | Refused:
    try:
        return _run_job(deblur, unit, scorers)
    except RunError as error:
        return Refused(str(error))


def pool_runner(workers: int, threads: int | None = None, retries: int = 1) -> Runner:
    """Jobs `workers` at a time in spawned processes of this machine, each with `threads` CPU threads (default: its
    share of the cores) or all sharing its GPU; a job whose worker fails is run again up to `retries` times, then
    the failure is raised with the job named. A bad-input error (RunError) is not retried."""
    threads = threads or max(1, (os.cpu_count() or 1) // workers)

    def run(units: list[Unit], deblur: Callable,
            scorers: dict[str, Scorer]) -> Iterator[tuple[Job, Estimate | Failed]]:
        if not units:
            return
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_threads,
                                 initargs=(threads,)) as pool:
            tries = {unit.stem: 0 for unit in units}
            pending = {pool.submit(_run_job, deblur, unit, _scorers(unit, scorers)): unit for unit in units}
            try:
                while pending:
                    finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in finished:
                        unit = pending.pop(future)
                        try:
                            yield from zip(_jobs(unit), future.result())
                        except RunError:
                            raise
                        except Exception as error:  # a crashed worker or a failing run: try again, then report
                            tries[unit.stem] += 1
                            if tries[unit.stem] > retries:
                                raise RunError(f"{unit.stem} failed {tries[unit.stem]} times in a worker: "
                                               f"{error}") from error
                            print(f"{unit.stem}: the worker failed ({error}); running it again", flush=True)
                            pending[pool.submit(_run_job, deblur, unit, _scorers(unit, scorers))] = unit
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
    """Jobs as Ray tasks: on a local Ray started for the study with `workers` CPUs (one per run), or on the cluster
    at `address` (`ray start --head` on one machine, `ray start --address HEAD:6379` on the others; or a cluster
    launcher). Each run asks for one CPU and `gpus_per_run` GPUs (a fraction packs runs on one GPU). A task whose
    worker dies, or which fails, is retried `retries` times by Ray; a failure after that names the job. Ray is
    connected here, before the study writes anything (connect_ray)."""
    ray, started = connect_ray(workers, address)
    task = ray.remote(num_cpus=1, num_gpus=gpus_per_run, max_retries=retries, retry_exceptions=True)(_ray_job)

    def run(units: list[Unit], deblur: Callable,
            scorers: dict[str, Scorer]) -> Iterator[tuple[Job, Estimate | Failed]]:
        try:
            pending = {task.remote(deblur, unit, _scorers(unit, scorers)): unit for unit in units}
            while pending:
                (ready,), _ = ray.wait(list(pending), num_returns=1)
                unit = pending.pop(ready)
                try:
                    done = ray.get(ready)
                except Exception as error:
                    raise RunError(f"{unit.stem} failed on Ray after {retries + 1} tries: "
                                   f"{str(error).splitlines()[-1] if str(error) else type(error).__name__}") from error
                if isinstance(done, Refused):  # an input error: the same on every try, so never retried
                    raise RunError(done.message)
                yield from zip(_jobs(unit), done)
        finally:
            if started:
                ray.shutdown()

    return run



def concurrent_runs(engine: str = "local", workers: int = 1, ray_address: str = "") -> int:
    """How many runs share this machine at once: the workers of a local pool or a local Ray, one otherwise (a
    cluster's runs are spread over its machines)."""
    return 1 if engine == "ray" and ray_address else workers



def make_runner(engine: str = "local", workers: int = 1, ray_address: str = "", gpus_per_run: float = 0.0) -> Runner:
    """Here (one worker, local engine), a local process pool (workers > 1), or Ray (engine "ray")."""
    if engine == "ray":
        return ray_runner(workers, ray_address, gpus_per_run)
    return pool_runner(workers) if workers > 1 else in_process
