"""A blind-deblurring study: one method over problems x variants x seeds, scored and written to a run folder.

The method is a function deblur(problem, config, seed, scorer) -> Estimate; selfdeblur.py and vdip.py each bring
theirs. What is written (into the run folder):
    <problem>.png             estimates beside the blurred input, the known-kernel deconvolution and the truth
    <problem>_kernels.png     estimated kernels beside the true one
    <problem>_<map>.png       the maps an estimate brings (VDIP's σ: std), one panel per run
    estimates/                every estimate and kernel as 8-bit PNG (the MATLAB protocol scores 8-bit images)
    curve.png, curve.csv      PSNR-GT and PSNR-NB over the iterations; <problem>_curve.png one problem's alone
    scatter.png               PSNR-GT against PSNR-NB, one point per run: the no-blur mode sits at high PSNR-NB
    error_ratio.png, .csv     the cumulative error ratio per variant (fraction of runs with ratio ≤ r, r in [1, 4])
    table.csv                 one row per run;  summary.csv  mean, spread and best-of-seeds per variant

Runs of the same problems made apart (two scripts, two machines) are put side by side by
    python -m dipkit.study Results/selfdeblur/run-a Results/vdip/run-b --out Results/comparison
which writes one table.csv, summary.csv, scatter.png, curve.csv and curve.png over all of them, and each problem's
PSNR curves of every method overlaid in <problem>_curve.png (merge_runs). This is how SelfDeblur's variants and
VDIP's are compared on the same problems and seeds: each script runs with the same data flags, then one merge.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import multiprocessing
import os
import signal
import socket
import statistics
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from tqdm import tqdm

from . import figures
from .blind import Problem, with_chroma
from .cli import run_main
from .errors import RunError
from .device import choose_device, keep_freed_memory, seed_everything, synchronize
from .figures import save_png
from .levin import (ERROR_RATIOS, KnownKernel, Scorer, check_scoring, error_ratio_curve, known_kernel_baseline,
                    quantise_8bit)
from .memory import check_fits
from .runs import RESUMABLE, read_config, read_kept, save_atomically, start_run, write_csv, write_metrics


@dataclass
class Estimate:
    image: torch.Tensor  # the deblurred image, (1, 1, H, W) like y
    kernel: torch.Tensor  # the estimated kernel, (K_h, K_w)
    curve: list[dict[str, float]]  # rows: iteration, loss, psnr_gt, psnr_nb
    seconds: float  # optimisation time (scoring excluded)
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # other maps to save and show (VDIP's std)
    stats: dict[str, float] = field(default_factory=dict)  # other numbers for the table (skipped steps)


def prepare(device_name: str, seed: int, deterministic: bool) -> torch.device:
    """The device of a run, everything seeded; cuDNN's autotuner as the originals ran it unless deterministic."""
    device = choose_device(device_name)
    seed_everything(seed, deterministic)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not deterministic
    return device


def two_rate_adam(image_net: torch.nn.Module, kernel_net: torch.nn.Module, lr_image: float, lr_kernel: float,
                  beta1_image: float, milestones: tuple[int, ...], gamma: float):
    """SelfDeblur's and VDIP's optimiser: one Adam, lr_image (β1 beta1_image) for G_x and lr_kernel for G_k, with
    the learning rates multiplied by gamma at the milestones."""
    optimiser = torch.optim.Adam([
        dict(params=image_net.parameters(), lr=lr_image, betas=(beta1_image, 0.999)),
        dict(params=kernel_net.parameters(), lr=lr_kernel),
    ])
    return optimiser, torch.optim.lr_scheduler.MultiStepLR(optimiser, list(milestones), gamma)


class Progress:
    """The steps of one run, from −pretrain_iterations (negative steps: the pretraining) to iterations, under a
    progress bar (`show`); every `curve_every` steps (0: never) the loss is checked and the estimate scored
    (PSNR-GT, PSNR-NB), the scoring time kept out of the run's time."""

    def __init__(self, problem: Problem, seed: int, scorer: Scorer | None, device: torch.device,
                 pretrain_iterations: int, iterations: int, curve_every: int, show: bool = True):
        self.problem, self.scorer, self.device = problem, scorer, device
        self.iterations, self.curve_every = iterations, curve_every
        self.steps = tqdm(range(-pretrain_iterations, iterations), disable=not show, leave=False,
                          desc=f"{problem.name} s{seed}")
        self.curve: list[dict[str, float]] = []
        self.scoring_seconds = 0.0
        synchronize(device)
        self.start = time.perf_counter()

    def after(self, step: int, loss: torch.Tensor, estimate: Callable[[], torch.Tensor],
              allow_non_finite: bool = False) -> None:
        done, every = step + 1, self.curve_every
        if done <= 0 or not every or (done % every and done != self.iterations):
            return
        value = loss.item()
        if not math.isfinite(value) and not allow_non_finite:
            raise RunError(f"{self.problem.name}: the loss became {value} at iteration {done}; "
                           "try smaller learning rates")
        tick = time.perf_counter()
        scores = self.scorer(estimate().detach(), full=False) if self.scorer is not None else {}
        self.scoring_seconds += time.perf_counter() - tick
        self.curve.append(dict(iteration=done, loss=value, **scores))
        self.steps.set_postfix(loss=f"{value:.2e}", **{key: f"{v:.2f}" for key, v in scores.items()})

    def seconds(self, image: torch.Tensor) -> float:
        """The run's time without the scoring; checks that the final image is finite."""
        if not torch.isfinite(image).all():
            raise RunError(f"{self.problem.name}: the image network's output became NaN; try smaller learning rates")
        synchronize(self.device)
        return time.perf_counter() - self.start - self.scoring_seconds


def save_kernel_png(path: Path, kernel: torch.Tensor) -> None:
    """Scaled to a maximum of 255, as SelfDeblur (and Levin's gt/kernel*.png) store kernels."""
    k = kernel.detach().float()
    save_png(path, (k / k.max())[None, None])


@dataclass(frozen=True)
class Scoring:
    """Levin's protocol as a study applies it: `crop` pixels off each side, shifts up to `max_shift` (and, when
    `wide_shift` > 0, PSNR-GT, SSIM and the error ratio under that wider search beside them), the known-kernel
    deconvolution (the error ratio's denominator: Levin's deconvSps by default, KnownKernel)."""

    crop: int = 15
    max_shift: float = 5
    wide_shift: float = 0
    known_kernel: KnownKernel = KnownKernel()

    def check(self, problems: list[Problem]) -> None:
        """A RunError if the wide search is not wider, or a problem is too small for the crop and the shifts."""
        if 0 < self.wide_shift <= self.max_shift:
            raise RunError(f"wide_shift ({self.wide_shift}) must exceed max_shift ({self.max_shift}), or be 0")
        for p in problems:
            check_scoring(p.blurred.shape[-2:], self.crop, max(self.max_shift, self.wide_shift), p.name)


def run_script(record: Any, script: str, method: str, headline: str, device_name: str, problems: list[Problem],
               variants: dict[str, Any], seeds: tuple[int, ...], deblur: Callable[[Problem, Any, int, Scorer], Estimate],
               scoring: Scoring, resume: bool = False, runner: Runner | None = None, *,
               footprint: Callable[[Problem, Any], int] | None = None, at_once: int = 1) -> dict[str, Any]:
    """What selfdeblur.py's and vdip.py's run() do once their constants are checked: check that `at_once` runs
    fit the device's memory (`footprint(problem, variant config)`: one run's bytes), say what runs where
    ("<method> on <device>: <headline>"), open Results/<script>/<run> with `record` (the script's constants) as its
    config.json (with `resume`, the folder of that name if it exists), run the study (by `runner`: make_runner);
    returns its rows and the folder."""
    device = choose_device(device_name)
    study_jobs(problems, variants, seeds)
    if footprint is not None:
        check_memory(problems, variants, footprint, device, at_once)
    keep_freed_memory()
    print(f"{method} on {device}: {headline}")
    folder = start_run(record, script, device, resume=resume)
    result = run_study(problems, variants, seeds, deblur, folder, scoring, resume=resume, runner=runner or in_process)
    seconds = sum(r.get("seconds", 0.0) for r in result["rows"] if r.get("seed", "") != "")
    write_metrics(folder, script, result["summary"], result["rows"], seconds, str(device))
    print(f"wrote {folder}")
    return dict(result, folder=folder)


def check_memory(problems: list[Problem], variants: dict[str, Any], footprint: Callable[[Problem, Any], int],
                 device: torch.device, at_once: int) -> None:
    """A RunError, before anything is written, if `at_once` runs of the largest problem do not fit the device's
    free memory (one run: `footprint` for each variant, plus the scoring's images)."""
    largest = max(problems, key=lambda p: (p.blurred.shape[-2] + p.kernel_size[0]) * (p.blurred.shape[-1] +
                                                                                        p.kernel_size[1]))
    h, w = largest.blurred.shape[-2:]
    need = max(footprint(largest, config) for config in variants.values()) + 64 * h * w * 4  # + the scoring
    advice = "give a smaller image, or fewer workers" if at_once > 1 else "give a smaller image (or crop the photo)"
    check_fits(need * at_once, device, f"{at_once} run(s) on {largest.name} ({h}x{w})", advice)


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


def study_jobs(problems: list[Problem], variants: dict[str, Any], seeds: tuple[int, ...]) -> list[Job]:
    """Every run of the study, problem by problem; a RunError if two would have one name (a problem, variant or
    seed given twice), so that no run is made, or counted, twice."""
    jobs = [Job(problem, variant, config, seed) for problem in problems for variant, config in variants.items()
            for seed in seeds]
    stems = [job.stem for job in jobs]
    twice = next((stem for i, stem in enumerate(stems) if stem in stems[:i]), None)
    if twice is not None:
        raise RunError(f"the run {twice} would be made twice (a problem, variant or seed given twice)")
    return jobs


Runner = Callable[[list[Job], Callable, dict[str, Scorer]], Iterator[tuple[Job, Estimate]]]


def in_process(jobs: list[Job], deblur: Callable, scorers: dict[str, Scorer]) -> Iterator[tuple[Job, Estimate]]:
    """Each job in turn, here."""
    for job in jobs:
        yield job, deblur(job.problem, job.config, job.seed, scorers[job.problem.name])


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


def _run_job(deblur: Callable, job: Job, scorer: Scorer) -> Estimate:
    """A job in a worker: no progress bar (the driver reports each finished run)."""
    config = dataclasses.replace(job.config, progress=False) if hasattr(job.config, "progress") else job.config
    return deblur(job.problem, config, job.seed, scorer)


def pool_runner(workers: int, threads: int | None = None, retries: int = 1) -> Runner:
    """Jobs `workers` at a time in spawned processes of this machine, each with `threads` CPU threads (default: its
    share of the cores) or all sharing its GPU; a job whose worker fails is run again up to `retries` times, then
    the failure is raised with the job named. A bad-input error (RunError) is not retried."""
    threads = threads or max(1, (os.cpu_count() or 1) // workers)

    def run(jobs: list[Job], deblur: Callable, scorers: dict[str, Scorer]) -> Iterator[tuple[Job, Estimate]]:
        if not jobs:
            return
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_threads,
                                 initargs=(threads,)) as pool:
            tries = {job.stem: 0 for job in jobs}
            pending = {pool.submit(_run_job, deblur, job, scorers[job.problem.name]): job for job in jobs}
            try:
                while pending:
                    finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in finished:
                        job = pending.pop(future)
                        try:
                            yield job, future.result()
                        except RunError:
                            raise
                        except Exception as error:  # a crashed worker or a failing run: try again, then report
                            tries[job.stem] += 1
                            if tries[job.stem] > retries:
                                raise RunError(f"{job.stem} failed {tries[job.stem]} times in a worker: "
                                               f"{error}") from error
                            print(f"{job.stem}: the worker failed ({error}); running it again", flush=True)
                            pending[pool.submit(_run_job, deblur, job, scorers[job.problem.name])] = job
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
    task = ray.remote(num_cpus=1, num_gpus=gpus_per_run, max_retries=retries, retry_exceptions=True)(_run_job)

    def run(jobs: list[Job], deblur: Callable, scorers: dict[str, Scorer]) -> Iterator[tuple[Job, Estimate]]:
        try:
            pending = {task.remote(deblur, job, scorers[job.problem.name]): job for job in jobs}
            while pending:
                (ready,), _ = ray.wait(list(pending), num_returns=1)
                job = pending.pop(ready)
                try:
                    yield job, ray.get(ready)
                except RunError:
                    raise
                except Exception as error:
                    raise RunError(f"{job.stem} failed on Ray after {retries + 1} tries: "
                                   f"{str(error).splitlines()[-1] if str(error) else type(error).__name__}") from error
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


def run_study(
    problems: list[Problem],
    variants: dict[str, Any],
    seeds: tuple[int, ...],
    deblur: Callable[[Problem, Any, int, Scorer], Estimate],
    folder: Path,
    scoring: Scoring = Scoring(),
    log: Callable[[str], None] = print,
    resume: bool = False,
    runner: Runner = in_process,
) -> dict[str, Any]:
    """Run every variant (name -> what `deblur` takes) with every seed on every problem; write the folder; return
    the rows. Scores follow `scoring` (wide-shift scores are named `psnr_gt_shift10`, ...).

    Every finished run is kept at once in runs/<problem>__<variant>__seed<seed>.pt (its row, curve, estimate,
    kernel and maps; written to a temporary file, then renamed, so a killed process never leaves half a file) and
    the tables are rewritten from all finished runs; with `resume`, the runs already in runs/ are read back, not
    run again (one that is damaged, or was made on another input, is said and run again). `runner` runs the jobs (here, in a process pool, on Ray) and yields them as they finish."""
    (folder / "estimates").mkdir(exist_ok=True)
    (folder / "runs").mkdir(exist_ok=True)
    baseline_rows, scorers, knowns, baseline_scores = [], {}, {}, {}
    for problem in problems:
        scorers[problem.name], knowns[problem.name], baseline_scores[problem.name] = _baselines(problem, scoring)
        baseline_rows += [dict(problem=problem.name, variant=name, seed="", **scores)
                          for name, scores in baseline_scores[problem.name].items()]
    jobs = study_jobs(problems, variants, seeds)
    done: dict[str, dict] = {}
    for job in jobs if resume else ():
        record = _kept_run(folder, job, log)
        if record is not None:
            done[job.stem] = record
            log(f"{job.label}: kept from the earlier run")
    for job, estimate in runner([j for j in jobs if j.stem not in done], deblur, scorers):
        done[job.stem] = _keep(folder, job, estimate, scorers[job.problem.name])
        log(f"{job.label}: " + _describe(done[job.stem]["scores"], estimate.seconds))
        write_tables(folder, *_rows_and_curves(jobs, done, baseline_rows), figures_too=False)
    for problem in problems:
        panels: dict[str, list] = {}
        for job in (j for j in jobs if j.problem is problem):
            record = done[job.stem]
            panels.setdefault(job.variant, []).append((job.seed, record["image"], _estimate(record), record["scores"]))
        _problem_figures(folder, problem, knowns[problem.name], baseline_scores[problem.name], panels,
                         scoring.known_kernel.label)
    rows, curves = _rows_and_curves(jobs, done, baseline_rows)
    summary = write_tables(folder, rows, curves)
    for line in summary_lines(summary):
        log(line)
    return dict(rows=rows, summary=summary, curves=curves)


def _baselines(problem: Problem, scoring: Scoring) -> tuple[Scorer, torch.Tensor | None, dict[str, dict]]:
    """The problem's scorer, its known-kernel deconvolution and the baselines' scores (blurred input, known kernel),
    scored once for the table and the figure's captions."""
    known = (known_kernel_baseline(problem, scoring.known_kernel, scoring.crop, scoring.max_shift)
             if problem.true_kernel is not None else None)
    scorer = Scorer(problem, known, scoring.crop, scoring.max_shift, scoring.wide_shift)
    scores = {}
    if problem.truth is not None:
        for name, image in [("blurred input", problem.blurred)] + ([("known kernel", known)] if known is not None else []):
            scores[name] = scorer(quantise_8bit(image))
    return scorer, known, scores


def _keep(folder: Path, job: Job, estimate: Estimate, scorer: Scorer) -> dict:
    """Score a finished run and write it at once: its estimate PNGs and runs/<stem>.pt; returns the record."""
    image = quantise_8bit(estimate.image)
    scores = scorer(image, estimate.kernel)
    estimates = folder / "estimates"
    save_png(estimates / f"{job.stem}.png", image)
    save_kernel_png(estimates / f"{job.stem}_kernel.png", estimate.kernel)
    if job.problem.colour is not None:
        save_png(estimates / f"{job.stem}_colour.png", with_chroma(image, job.problem.colour))
    for key, extra in estimate.extra.items():
        save_png(estimates / f"{job.stem}_{key}.png", extra / extra.max().clamp(min=1e-12))
    record = dict(scores=scores, image=image, kernel=estimate.kernel, extra=estimate.extra, curve=estimate.curve,
                  seconds=estimate.seconds, stats=estimate.stats, digest=job.problem.digest)
    save_atomically(folder / "runs" / f"{job.stem}.pt", record)
    return record


RECORD_KEYS = {"scores", "image", "kernel", "extra", "curve", "seconds", "stats", "digest"}


def _kept_run(folder: Path, job: Job, log: Callable[[str], None]) -> dict | None:
    """The earlier run's record of this job (runs/<stem>.pt), if it was made on the same blurred image; None if
    there is none, if it is damaged, or if the problem's input changed since (said in one line): run it again."""
    def read(path: Path) -> dict:
        record = torch.load(path, weights_only=True)
        if not isinstance(record, dict) or not RECORD_KEYS <= set(record):
            raise ValueError("not a run record of this study")
        return record

    record = read_kept(folder / "runs" / f"{job.stem}.pt", read, job.stem, log)
    if record is not None and record["digest"] != job.problem.digest:
        log(f"{job.stem}: the earlier run was made on another input ({job.problem.source or job.problem.name} "
            "differs); running it again")
        return None
    return record


def _estimate(record: dict) -> Estimate:
    return Estimate(image=record["image"], kernel=record["kernel"], curve=record["curve"], seconds=record["seconds"],
                    extra=record["extra"], stats=record["stats"])


def _rows_and_curves(jobs: list[Job], done: dict[str, dict], baseline_rows: list[dict]) -> tuple[list, list]:
    """The table's rows (per problem: its baselines, then its finished runs in the study's order) and curves."""
    rows, curves = [], []
    for name in dict.fromkeys(job.problem.name for job in jobs):
        rows += [r for r in baseline_rows if r["problem"] == name]
        for job in (j for j in jobs if j.problem.name == name and j.stem in done):
            record = done[job.stem]
            key = dict(problem=name, variant=job.variant, seed=job.seed)
            rows.append(dict(key, **record["scores"], seconds=record["seconds"], **record["stats"],
                             source=job.problem.source))
            curves += [dict(key, **point) for point in record["curve"]]
    return rows, curves


def write_tables(folder: Path, rows: list[dict], curves: list[dict], figures_too: bool = True) -> list[dict]:
    """What a study's rows and curves give, written into `folder`: table.csv, summary.csv (returned), curve.csv,
    and with `figures_too` curve.png (every problem), <problem>_curve.png (one problem, every method's curves
    overlaid) and scatter.png."""
    summary = summarise(rows)
    write_csv(folder / "table.csv", _same_keys(rows))
    write_csv(folder / "summary.csv", summary)
    if curves:
        write_csv(folder / "curve.csv", _same_keys(curves))
    if curves and figures_too:
        _curve_figure(folder / "curve.png", curves)
        for problem in dict.fromkeys(c["problem"] for c in curves):
            _curve_figure(folder / f"{problem}_curve.png", [c for c in curves if c["problem"] == problem])
    if figures_too and any("psnr_gt" in r for r in rows):
        figures.scatter(folder / "scatter.png", rows)
    ratios = _error_ratio_rows(rows)
    if ratios:
        write_csv(folder / "error_ratio.csv", ratios)
    if ratios and figures_too:
        lines = [(list(ERROR_RATIOS), [row[v] for row in ratios], v) for v in ratios[0] if v != "error_ratio"]
        figures.curves(folder / "error_ratio.png", [dict(lines=lines, xlabel="error ratio r", ylabel="fraction of "
                       "runs with error ratio ≤ r", title="cumulative error ratio (Levin's figure)")], n_cols=1)
    return summary


def _error_ratio_rows(rows: list[dict]) -> list[dict]:
    """The cumulative error-ratio curve of each variant's runs (error_ratio.csv): one row per r, one column per
    variant; none where no run has an error ratio."""
    curves = {}
    for variant in dict.fromkeys(r["variant"] for r in rows if r.get("seed", "") != ""):
        ratios = [r["error_ratio"] for r in rows if r["variant"] == variant and r.get("seed", "") != ""
                  and isinstance(r.get("error_ratio"), float) and math.isfinite(r["error_ratio"])]
        if ratios:
            curves[variant] = error_ratio_curve(ratios)
    return [dict(error_ratio=r, **{v: c[i] for v, c in curves.items()}) for i, r in enumerate(ERROR_RATIOS)]



def _describe(scores: dict[str, float], seconds: float) -> str:
    parts = [f"{key} {scores[key]:.2f}" for key in ("psnr_gt", "psnr_nb", "isnr") if key in scores]
    parts += [f"{key} {scores[key]:.3f}" for key in ("ssim", "error_ratio", "kernel_error") if key in scores]
    return ", ".join(parts + [f"{seconds:.1f} s"])


def _same_keys(rows: list[dict]) -> list[dict]:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    return [{k: r.get(k, "") for k in keys} for r in rows]


def summarise(rows: list[dict]) -> list[dict]:
    """Per variant, over problems and seeds: the mean and standard deviation of every score, and best-of-seeds
    (each problem's best PSNR-GT over the seeds, averaged over problems), reported apart from the mean because
    published DIP deblurring averages may be best-of-several-runs."""
    summary = []
    for variant in dict.fromkeys(r["variant"] for r in rows):
        mine = [r for r in rows if r["variant"] == variant]
        entry: dict[str, Any] = dict(variant=variant, runs=len(mine))
        for key in score_keys(mine):
            values = [r[key] for r in mine if isinstance(r.get(key), float) and math.isfinite(r[key])]
            if values:
                entry[f"{key}_mean"] = statistics.fmean(values)
                entry[f"{key}_std"] = statistics.pstdev(values)
        if any("psnr_gt" in r for r in mine):
            problems = dict.fromkeys(r["problem"] for r in mine)
            best = [max(r["psnr_gt"] for r in mine if r["problem"] == p) for p in problems]
            entry["psnr_gt_best_of_seeds"] = statistics.fmean(best)
        summary.append(entry)
    return _same_keys(summary)


def score_keys(rows: list[dict]) -> list[str]:
    """The numeric columns of a table that are summarised, in their first order of appearance."""
    skip = {"problem", "variant", "seed", "shift_rows", "shift_columns", "source", "run"}
    return [key for key in dict.fromkeys(k for r in rows for k in r) if key not in skip]


def summary_lines(summary: list[dict]) -> list[str]:
    return [f"{e['variant']:>20}: PSNR-GT {e['psnr_gt_mean']:.2f} ± {e['psnr_gt_std']:.2f} dB over {e['runs']} run(s), "
            f"SSIM {e['ssim_mean']:.3f}" for e in summary if "psnr_gt_mean" in e]


def _caption(scores: dict[str, float]) -> str:
    if "psnr_gt" in scores:
        return f"{scores['psnr_gt']:.2f} dB / {scores['ssim']:.3f}"
    return f"NB {scores['psnr_nb']:.2f} dB"


def _problem_figures(folder: Path, problem: Problem, known, baseline_scores: dict[str, dict],
                     panels: dict[str, list], known_label: str = "known kernel") -> None:
    has_truth = problem.truth is not None
    n_seeds = max(len(v) for v in panels.values())
    first = [(problem.blurred, _caption(baseline_scores["blurred input"]) if has_truth else "")]
    titles = ["blurred"]
    if known is not None:
        first.append((known, _caption(baseline_scores["known kernel"])))
        titles.append(known_label)
    titles += [f"seed {seed}" for seed, *_ in next(iter(panels.values()))] + (["truth"] if has_truth else [])
    grid = []
    for variant, runs in panels.items():
        row = list(first) + [(image, _caption(scores)) for _, image, _, scores in runs]
        row += [(torch.ones_like(problem.blurred), "")] * (n_seeds - len(runs))
        grid.append(row + ([(problem.truth, "PSNR / SSIM")] if has_truth else []))
    figures.image_grid(folder / f"{problem.name}.png", grid, titles, list(panels))
    kernel_rows = []
    for variant, runs in panels.items():
        row = [(problem.true_kernel, "true")] if problem.true_kernel is not None else []
        row += [(estimate.kernel, f"{variant}, seed {seed}" + (f"\nerror {scores['kernel_error']:.3f}"
                                                              if "kernel_error" in scores else ""))
                for seed, _, estimate, scores in runs]
        kernel_rows.append(row)
    figures.kernel_grid(folder / f"{problem.name}_kernels.png", kernel_rows, list(panels))
    for key in dict.fromkeys(key for runs in panels.values() for _, _, estimate, _ in runs for key in estimate.extra):
        _map_figure(folder / f"{problem.name}_{key}.png", key, panels)


def _map_figure(path: Path, key: str, panels: dict[str, list]) -> None:
    """One row per variant that has the map, one panel per seed, on one colour scale (its largest value)."""
    rows = {variant: [(seed, e.extra[key]) for seed, _, e, _ in runs if key in e.extra]
            for variant, runs in panels.items()}
    rows = {variant: maps for variant, maps in rows.items() if maps}
    top = max(m.max().item() for maps in rows.values() for _, m in maps) or 1.0
    n_cols = max(len(maps) for maps in rows.values())
    grid = []
    for maps in rows.values():
        row = [(m / top, f"seed {seed}: mean {m.mean().item():.3g}, max {m.max().item():.3g}") for seed, m in maps]
        grid.append(row + [(torch.zeros_like(maps[0][1]), "")] * (n_cols - len(row)))
    figures.image_grid(path, grid, [f"{key}, scale 0 to {top:.3g}"] + [""] * (n_cols - 1), list(rows),
                       cmap="magma")


def _curve_figure(path: Path, curves: list[dict]) -> None:
    panels = []
    for problem in dict.fromkeys(c["problem"] for c in curves):
        mine = [c for c in curves if c["problem"] == problem]
        for key, label in (("psnr_gt", "PSNR-GT (dB)"), ("psnr_nb", "PSNR-NB (dB)")):
            if not any(key in c for c in mine):
                continue
            lines = []
            for run in dict.fromkeys((c["variant"], c["seed"]) for c in mine):
                points = [c for c in mine if (c["variant"], c["seed"]) == run and key in c]
                lines.append(([c["iteration"] for c in points], [c[key] for c in points], f"{run[0]} s{run[1]}"))
            panels.append(dict(lines=lines, xlabel="iteration", ylabel=label, title=problem))
    figures.curves(path, panels, n_cols=2)


def _value(key: str, text: str) -> Any:
    """A table.csv cell read back: the seed an int, scores floats, names strings."""
    try:
        return int(text) if key == "seed" else float(text)
    except ValueError:
        return text


def _read_rows(path: Path) -> list[dict]:
    with path.open(newline="") as file:
        return [{key: _value(key, text) for key, text in row.items() if text != ""} for row in csv.DictReader(file)]


NOT_A_CONSTANT = {"run_name", "results_dir"}  # with runs.RESUMABLE: what may differ between runs that are pooled


def merge_runs(folders: list[Path], out: Path, log: Callable[[str], None] = print) -> list[dict]:
    """The rows of several runs' table.csv in one table, summary and scatter, and their curve.csv in one curve.csv
    drawn as curve.png and as one figure per problem (`<problem>_curve.png`, every method's PSNR curves overlaid).
    Every row keeps the run it came from (the `run` column). A variant's runs are pooled into one summary line
    only where they were made with the same constants (seeds, devices and engines may differ); otherwise each
    run's rows of it are kept apart as "<variant> (<run>)", and that is said. A folder given twice, or one run
    (problem, variant, seed) in two pooled folders, is refused. The baseline rows (blurred input, known kernel) of
    a problem are kept once where they agree. Returns the summary."""
    folders = [Path(f) for f in folders]
    resolved = [f.resolve() for f in folders]
    for i, folder in enumerate(resolved):
        if folder in resolved[:i]:
            raise RunError(f"{folders[i]} is given twice; give each run once")
    if (out / "table.csv").exists():
        raise RunError(f"{out} already holds a table.csv; choose another --out")
    names = [f.name if [g.name for g in folders].count(f.name) == 1 else f"{f.parent.name}/{f.name}" for f in folders]
    runs = []
    for folder, name in zip(folders, names):
        if not (folder / "table.csv").is_file() or not (folder / "config.json").is_file():
            raise RunError(f"{folder} holds no table.csv and config.json (not a finished study run)")
        constants = read_config(folder / "config.json")["config"]
        constants = {k: v for k, v in constants.items() if k not in RESUMABLE | NOT_A_CONSTANT}
        rows = [dict(row, run=name) for row in _read_rows(folder / "table.csv")]
        curves = [dict(c, run=name) for c in _read_rows(folder / "curve.csv")] if (folder / "curve.csv").is_file() else []
        runs.append((name, constants, rows, curves))
    renamed = _keep_apart(runs, log)
    rows, curves, seen = [], [], {}
    for name, _, run_rows, run_curves in runs:
        for row in run_rows:
            row["variant"] = renamed.get((name, row["variant"]), row["variant"])
            key = (row["problem"], row["variant"], row.get("seed", ""))
            if key in seen:
                if row.get("seed", "") == "" and _same_scores(seen[key], row):
                    continue
                if row.get("seed", "") != "":
                    raise RunError(f"{key[0]} {key[1]} seed {key[2]} is in both {seen[key]['run']} and {name}; "
                                   "merge one of them")
                row["variant"] = f"{row['variant']} ({name})"
            seen[key] = row
            rows.append(row)
        for curve in run_curves:
            curve["variant"] = renamed.get((name, curve["variant"]), curve["variant"])
            curves.append(curve)
    out.mkdir(parents=True, exist_ok=True)
    return write_tables(out, rows, curves)


def _keep_apart(runs: list[tuple[str, dict, list, list]], log: Callable[[str], None]) -> dict[tuple[str, str], str]:
    """(run, variant) -> the name its rows take: the variant's own name where every run of it was made with the
    same constants (pooled), else "<variant> (<runs>)" per group of runs with the same constants (the difference
    said in one line)."""
    renamed = {}
    variants = dict.fromkeys(r["variant"] for _, _, rows, _ in runs for r in rows if r.get("seed", "") != "")
    for variant in variants:
        groups: list[tuple[dict, list[str]]] = []
        for name, constants, rows, _ in runs:
            if any(r["variant"] == variant for r in rows):
                group = next((g for g in groups if g[0] == constants), None)
                if group is None:
                    groups.append((constants, [name]))
                else:
                    group[1].append(name)
        if len(groups) < 2:
            continue
        (a, a_names), (b, b_names) = groups[:2]
        differ = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        shown = ", ".join(f"{k} {a.get(k)} vs {b.get(k)}" for k in differ[:3]) + (", ..." if len(differ) > 3 else "")
        log(f"{variant}: {'+'.join(a_names)} and {'+'.join(b_names)} were made with other constants ({shown}); "
            "kept apart")
        for _, names in groups:
            renamed.update({(name, variant): f"{variant} ({'+'.join(names)})" for name in names})
    return renamed


def _same_scores(a: dict, b: dict) -> bool:
    return {k: v for k, v in a.items() if k != "run"} == {k: v for k, v in b.items() if k != "run"}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Put finished study runs side by side: one table, summary, scatter "
                                     "and the PSNR curves of every method overlaid, per problem.")
    parser.add_argument("folders", nargs="+", type=Path, help="run folders holding table.csv")
    parser.add_argument("--out", type=Path, required=True, help="folder for the merged table.csv, summary.csv, "
                        "scatter.png, curve.csv, curve.png and <problem>_curve.png")
    arguments = parser.parse_args()
    run_main(lambda: print("\n".join(summary_lines(merge_runs(arguments.folders, arguments.out)))))
