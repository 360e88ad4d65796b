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

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Hashable, Protocol

import torch

from .blind import Problem, problems_of, with_chroma
from .device import choose_device, keep_freed_memory
from .batch import group_runs
from .engines import Batch, Job, Runner, Unit, concurrent_runs, in_process, make_runner
from .errors import Failed, RunError
from .figures import save_png
from .levin import KnownKernel, Scorer, check_scoring, known_kernel_baseline, quantise_8bit
from .loop import Estimate, save_kernel_png
from .memory import batch_that_fits, check_fits, training_footprint
from .report import describe, problem_figures, summary_lines, write_tables
from .runs import read_kept, save_atomically, start_run, write_metrics


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



@dataclass(frozen=True)
class Batching:
    """Runs stepped together (dipkit.batch): at most `most` runs per batch, runs of one `key(problem, config)`
    (their shapes: the image and kernel sizes, the networks, the loop's length) in a batch, made by
    `together(problems, configs, seeds, scorers) -> [Estimate | Failed]`. most = 1: each run alone."""

    most: int = 1
    together: Callable | None = None
    key: Callable[[Problem, Any], Hashable] | None = None

    def units(self, jobs: list[Job]) -> list[Unit]:
        """The jobs as units of work: batches of runs of one key, a run alone where its batch would hold one."""
        if self.most <= 1 or self.together is None or self.key is None:
            return list(jobs)
        return [group[0] if len(group) == 1 else Batch(group, self.together)
                for group in group_runs(jobs, lambda job: self.key(job.problem, job.config), self.most)]



def run_script(*, record: Any, script: str, method: str, headline: str, device_name: str, problems: list[Problem],
               variants: dict[str, Any], seeds: tuple[int, ...], deblur: Callable[[Problem, Any, int, Scorer], Estimate],
               scoring: Scoring, resume: bool = False, runner: Runner | None = None,
               footprint: Callable[[Problem, Any], int] | None = None, at_once: int = 1,
               batching: Batching = Batching()) -> dict[str, Any]:
    """What selfdeblur.py's and vdip.py's run() do once their constants are checked: check that `at_once` runs (or
    batches of `batching.most` runs) fit the device's memory (`footprint(problem, variant config)`: one run's
    bytes; a batch too large is made smaller, said in one line), say what runs where ("<method> on <device>:
    <headline>"), open Results/<script>/<run> with `record` (the script's constants) as its config.json (with
    `resume`, the folder of that name if it exists), run the study (by `runner`: make_runner); returns its rows and
    the folder."""
    device = choose_device(device_name)
    study_jobs(problems, variants, seeds)
    if footprint is not None:
        most = check_memory(problems, variants, footprint, device, at_once, batching.most)
        batching = dataclasses.replace(batching, most=most)
    keep_freed_memory()
    print(f"{method} on {device}: {headline}" + (f"; up to {batching.most} runs at a time in a batch"
                                                  if batching.most > 1 else ""))
    folder = start_run(record, script, device, resume=resume)
    result = run_study(problems, variants, seeds, deblur, folder, scoring, resume=resume, runner=runner or in_process,
                       batching=batching)
    seconds = sum(r.get("seconds", 0.0) for r in result["rows"] if r.get("seed", "") != "")
    write_metrics(folder, script, result["summary"], result["rows"], seconds, str(device))
    print(f"wrote {folder}")
    return dict(result, folder=folder)



def check_memory(problems: list[Problem], variants: dict[str, Any], footprint: Callable[[Problem, Any], int],
                 device: torch.device, at_once: int, batch: int = 1) -> int:
    """The batch size that fits: a RunError, before anything is written, if `at_once` runs of the largest problem
    do not fit the device's free memory (one run: `footprint` for each variant, plus the scoring's images); a
    `batch` of which `at_once` do not fit is made smaller, with one line saying so."""
    largest = max(problems, key=lambda p: (p.blurred.shape[-2] + p.kernel_size[0]) * (p.blurred.shape[-1] +
                                                                                        p.kernel_size[1]))
    h, w = largest.blurred.shape[-2:]
    need = max(footprint(largest, config) for config in variants.values()) + 64 * h * w * 4  # + the scoring
    advice = "give a smaller image, or fewer workers" if at_once > 1 else "give a smaller image (or crop the photo)"
    check_fits(need * at_once, device, f"{at_once} run(s) on {largest.name} ({h}x{w})", advice)
    return batch_that_fits(need * at_once, batch, device, f"on {largest.name} ({h}x{w})")



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
    batching: Batching = Batching(),
) -> dict[str, Any]:
    """Run every variant (name -> what `deblur` takes) with every seed on every problem; write the folder; return
    the rows. Scores follow `scoring` (wide-shift scores are named `psnr_gt_shift10`, ...).

    Every finished run is kept at once in runs/<problem>__<variant>__seed<seed>.pt (its row, curve, estimate,
    kernel and maps; written to a temporary file, then renamed, so a killed process never leaves half a file) and
    the tables are rewritten from all finished runs; with `resume`, the runs already in runs/ are read back, not
    run again (one that is damaged, or was made on another input, is said and run again). `runner` runs the jobs
    (here, in a process pool, on Ray), alone or in batches (`batching`), and yields them as they finish. A run that
    fails inside a batch is said, and the others go on; the study then ends with a RunError naming the failed runs
    (not kept: --resume runs them again)."""
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
    failed: list[str] = []
    for job, estimate in runner(batching.units([j for j in jobs if j.stem not in done]), deblur, scorers):
        if isinstance(estimate, Failed):
            failed.append(f"{job.stem}: {estimate.message}")
            log(f"{job.label}: failed: {estimate.message}")
            continue
        done[job.stem] = _keep(folder, job, estimate, scorers[job.problem.name])
        log(f"{job.label}: " + describe(done[job.stem]["scores"], estimate.seconds))
        write_tables(folder, *_rows_and_curves(jobs, done, baseline_rows), figures_too=False)
    for problem in problems:
        panels: dict[str, list] = {}
        for job in (j for j in jobs if j.problem is problem and j.stem in done):
            record = done[job.stem]
            panels.setdefault(job.variant, []).append((job.seed, record["image"], _estimate(record), record["scores"]))
        problem_figures(folder, problem, knowns[problem.name], baseline_scores[problem.name], panels,
                         scoring.known_kernel.label)
    rows, curves = _rows_and_curves(jobs, done, baseline_rows)
    summary = write_tables(folder, rows, curves)
    for line in summary_lines(summary):
        log(line)
    if failed:
        raise RunError(f"{len(failed)} run(s) failed (the others are kept in {folder}; --resume runs these again): "
                       + "; ".join(failed))
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



# ---------------------------------------------------------------------------------------------------------------
# What selfdeblur.py and vdip.py share: the study's constants, their checks and the run


class StudyConstants(Protocol):
    """The constants of a blind-deblurring study that selfdeblur.py and vdip.py share. Each script keeps them in its
    own Config, with its method's constants, at the top of the script (SHARED_CONSTANTS lists them; a test keeps
    their defaults, ranges and comments equal in the two scripts); this is what the shared code reads of them."""

    levin_dir: str
    blurred: tuple[str, ...]
    kernel_size: int | None
    images: tuple[str, ...]
    kernel_sizes: tuple[int, ...]
    size: int
    noise_level: float
    data_seed: int
    only: tuple[str, ...]
    seeds: tuple[int, ...]
    crop: int
    max_shift: float
    wide_shift: float
    known_kernel: str
    known_kernel_weight: float
    known_kernel_iterations: int
    known_kernel_tv: float
    device: str
    resume: bool
    workers: int
    batch: int
    batch_mode: str
    engine: str
    ray_address: str
    gpus_per_run: float


# the constants both scripts hold, with the same meaning, default and range (tests/test_study.py)
SHARED_CONSTANTS = ("images", "kernel_sizes", "size", "noise_level", "data_seed", "levin_dir", "blurred", "kernel_size",
                    "only", "variants", "seeds", "channels_last", "bf16", "compile", "crop", "max_shift", "wide_shift",
                    "curve_every", "known_kernel", "known_kernel_weight", "known_kernel_iterations",
                    "known_kernel_tv", "deterministic", "device", "run_name", "resume", "workers", "batch",
                    "batch_mode", "engine",
                    "ray_address", "gpus_per_run", "progress")


# the constants every run of one batch (dipkit.batch) shares: they shape its networks, its loop and its device
BATCH_SHAPE = ("input_channels", "channels", "skip_channels", "scales", "non_local", "kernel_input", "kernel_hidden",
               "iterations", "pretrain_iterations", "curve_every", "channels_last", "bf16", "compile", "deterministic",
               "device", "batch_mode", "progress")


def shape_key(problem: Problem, constants: Any, *own: str) -> tuple:
    """What the runs of one batch share: the image and kernel sizes, the constants of BATCH_SHAPE and the script's
    `own` ones; runs that differ only in other constants (seeds, learning rates, losses) can share a batch."""
    return (tuple(problem.blurred.shape), problem.kernel_size) + tuple(getattr(constants, name)
                                                                      for name in BATCH_SHAPE + own)


def study_scoring(constants: StudyConstants) -> Scoring:
    """Levin's protocol as the constants set it: crop, shift searches, the known-kernel deconvolution."""
    return Scoring(constants.crop, constants.max_shift, constants.wide_shift,
                   KnownKernel(constants.known_kernel, constants.known_kernel_weight,
                               constants.known_kernel_iterations, constants.known_kernel_tv))


def study_problems(constants: StudyConstants) -> list[Problem]:
    """The study's problems, read and checked against the scoring (a RunError before any folder exists)."""
    if not constants.seeds:
        raise RunError("seeds: give at least one")
    problems = problems_of(levin_dir=constants.levin_dir, blurred=constants.blurred,
                           kernel_size=constants.kernel_size, images=constants.images,
                           kernel_sizes=constants.kernel_sizes, size=constants.size,
                           noise_level=constants.noise_level, data_seed=constants.data_seed, only=constants.only)
    study_scoring(constants).check(problems)
    return problems


def latent_footprint(problem: Problem, image_net: torch.nn.Module, input_channels: int) -> int:
    """The memory one run holds (estimated): the image network's optimisation step on the latent grid of the
    problem (its blurred size plus the kernel's, less one; dipkit.memory)."""
    (h, w), (kh, kw) = problem.blurred.shape[-2:], problem.kernel_size
    return training_footprint(image_net, input_channels)(h + kh - 1, w + kw - 1)


def run_study_script(constants: StudyConstants, *, script: str, method: str, headline: str,
                     problems: list[Problem], variants: dict[str, Any],
                     deblur: Callable[[Problem, Any, int, Scorer], Estimate],
                     footprint: Callable[[Problem, Any], int], together: Callable | None = None,
                     batch_key: Callable[[Problem, Any], Hashable] | None = None) -> dict[str, Any]:
    """A script's run() once its constants are checked: run_script with the engine, workers, batches and resume
    the constants ask for (`together`, `batch_key`: the script's batched loop and which runs it can batch)."""
    return run_script(record=constants, script=script, method=method, headline=headline, device_name=constants.device,
                      problems=problems, variants=variants, seeds=constants.seeds, deblur=deblur,
                      scoring=study_scoring(constants), resume=constants.resume,
                      runner=make_runner(constants.engine, constants.workers, constants.ray_address,
                                         constants.gpus_per_run),
                      footprint=footprint, at_once=concurrent_runs(constants.engine, constants.workers,
                                                                   constants.ray_address),
                      batching=Batching(constants.batch, together, batch_key))


if __name__ == "__main__":  # python -m dipkit.study RUN_A RUN_B --out FOLDER: the merge (dipkit.report)
    from .cli import run_main
    from .report import main

    run_main(main)
