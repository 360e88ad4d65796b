"""A blind-deblurring study on the engine: one method over problems x variants x seeds, scored by Levin's protocol
and written to a run folder. selfdeblur.py and vdip.py share it, with the constants both hold (StudyConstants).

The method is a function deblur(runs: list[BlindRun]) -> [Estimate | Failed], one loop for a run alone and for a
batch of runs of one shape; each run is a unit of dipkit.engine, kept as units/<problem>__<variant>__seed<seed>.pt
as soon as it is done. What is written (into the run folder):
    <problem>.png             estimates beside the blurred input, the known-kernel deconvolution and the truth
    <problem>_kernels.png     estimated kernels beside the true one
    <problem>_<map>.png       the maps an estimate brings (VDIP's σ: std), one panel per run
    estimates/                every estimate and kernel as 8-bit PNG (the MATLAB protocol scores 8-bit images)
    curve.png, curve.csv      PSNR-GT and PSNR-NB over the iterations; <problem>_curve.png one problem's alone
    scatter.png               PSNR-GT against PSNR-NB, one point per run: the no-blur mode sits at high PSNR-NB
    error_ratio.png, .csv     the cumulative error ratio per variant (fraction of runs with ratio ≤ r, r in [1, 4])
    table.csv                 one row per run;  summary.csv  mean, spread and best-of-seeds per variant
Runs made apart (two scripts, two machines) are put side by side, and merged into one table, by
    python -m dipkit.compare Results/selfdeblur/run-a Results/vdip/run-b --out Results/comparison
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Hashable, Literal, Optional

import torch

from . import speed
from .batch import NetworkConstants, vectorised
from .blind import Problem, problems_of, with_chroma
from .blind_loop import BlindRun, Estimate
from .device import choose_device, keep_freed_memory
from .engine import Unit, concurrent_units, make_runner, run_units, runs_here
from .errors import RunError
from .figures import save_kernel_png, save_png
from .levin import KnownKernel, Scorer, check_scoring, known_kernel_baseline, quantise_8bit
from .memory import Footprint, batch_that_fits, check_fits, training_footprint
from .report import describe, problem_figures, summary_lines, write_tables
from .runs import start_run, unit_settings, write_metrics
from .sources import digest_of


@dataclass
class StudyConstants(NetworkConstants):
    """The constants of a blind-deblurring study that selfdeblur.py and vdip.py share: the data, the seeds and
    variants, the scoring (each script's Config adds its method's)."""

    # data: the synthetic benchmark unless levin_dir or blurred is given
    images: tuple[str, ...] = ("camera", "astronaut", "coffee", "chelsea", "rocket")  # synthetic: bundled images
    kernel_sizes: tuple[int, ...] = (13, 17, 21, 27)  # synthetic: one random motion kernel of each size
    size: int = 255  # synthetic: the blurred images are size x size (Levin's)
    noise_level: float = 0.01  # synthetic: standard deviation of the Gaussian noise (then 8-bit quantisation)
    data_seed: int = 0  # synthetic: seeds the kernels and the noise
    levin_dir: str = ""  # a folder in Levin's layout: im<i>_kernel<j>_img.png, gt/im<i>.png, gt/kernel<j>.png
    blurred: tuple[str, ...] = ()  # your own blurred photos (grey; no metrics); needs kernel_size
    kernel_size: Optional[int] = None  # side of the kernel to estimate; None: the true one (synthetic), SelfDeblur's (Levin)
    only: tuple[str, ...] = ()  # run only the problems of these names (e.g. im1_kernel4 camera_k27)
    variants: tuple[str, ...] = ()  # named variants (the script's VARIANTS) to run in one command; empty: the constants as set
    seeds: tuple[int, ...] = (0,)  # one run per seed: z_x, z_k, the initialisation and the random draws
    schedule_scale: float = 1.0  # step counts (SCHEDULE), the variants' too, times this (0.4: 2000 of 5000 iterations)
    # evaluation
    crop: int = 15  # pixels cropped on each side before scoring (Levin's protocol)
    max_shift: float = 5  # sub-pixel shifts up to this many pixels are tried, in steps of 0.25 (SelfDeblur's table)
    wide_shift: float = 10  # also report PSNR-GT, SSIM and error ratio with shifts up to this (0: not)
    curve_every: int = 100  # PSNR-GT and PSNR-NB every this many iterations (0: none)
    known_kernel: Literal["sparse", "tv"] = "sparse"  # the error ratio's denominator: Levin's deconvSps, or TV
    known_kernel_weight: float = 3e-3  # deconvSps's prior weight (0.003: SelfDeblur's known-k row; Levin's own 0.0068)
    known_kernel_iterations: int = 200  # deconvSps's CG steps per solve (Levin's own scripts: 70)
    known_kernel_tv: float = 1e-3  # TV weight of the known-kernel deconvolution with known_kernel tv

    # the step counts schedule_scale multiplies (a script adds its own): a study at a fraction of the paper's budget
    # keeps every milestone, pretraining and switch at the same fraction of the run
    SCHEDULE: ClassVar[tuple[str, ...]] = ("iterations", "milestones", "pretrain_iterations", "loss_switch")
    QUICK: ClassVar[dict[str, Any]] = dict(images=("camera",), kernel_sizes=(9,), size=64, crop=8, max_shift=4,
                                           wide_shift=0, curve_every=100)
    LIMITS: ClassVar[dict[str, str]] = dict(
        schedule_scale="(0, inf)", kernel_sizes="[1, inf)", size="[1, inf)", noise_level="[0, 1)", data_seed="[0, inf)",
        kernel_size="[1, inf)", seeds="[0, inf)", crop="[0, inf)", max_shift="[0, inf)", wide_shift="[0, inf)",
        curve_every="[0, inf)", known_kernel_weight="(0, inf)", known_kernel_iterations="[1, inf)", known_kernel_tv="(0, inf)")
    BF16_MEMORY_FORMAT: ClassVar[str] = "channels_last"  # measured faster in bf16 for SelfDeblur's network (dipkit.speed)
    AUTO_BF16: ClassVar[bool] = False  # bf16 moved the quick study's mean beyond its seeds' noise (docs/speed.md)


@dataclass(frozen=True)
class Scoring:
    """Levin's protocol as a study applies it: `crop` pixels off each side, shifts up to `max_shift` (and, when
    `wide_shift` > 0, PSNR-GT, SSIM and the error ratio under that wider search beside them), the known-kernel
    deconvolution (the error ratio's denominator: Levin's deconvSps by default, KnownKernel)."""

    crop: int = 15
    max_shift: float = 5
    wide_shift: float = 0
    known_kernel: KnownKernel = KnownKernel()

    @classmethod
    def of(cls, constants: StudyConstants) -> Scoring:
        return cls(constants.crop, constants.max_shift, constants.wide_shift,
                   KnownKernel(constants.known_kernel, constants.known_kernel_weight,
                               constants.known_kernel_iterations, constants.known_kernel_tv))

    def check(self, problems: list[Problem]) -> None:
        """A RunError if the wide search is not wider, or a problem is too small for the crop and the shifts."""
        if 0 < self.wide_shift <= self.max_shift:
            raise RunError(f"wide_shift ({self.wide_shift}) must exceed max_shift ({self.max_shift}), or be 0")
        for p in problems:
            check_scoring(p.blurred.shape[-2:], self.crop, max(self.max_shift, self.wide_shift), p.name)


def study_problems(constants: StudyConstants) -> list[Problem]:
    """The study's problems, read and checked against the scoring (a RunError before any folder exists)."""
    if not constants.seeds:
        raise RunError("seeds: give at least one")
    problems = problems_of(levin_dir=constants.levin_dir, blurred=constants.blurred,
                           kernel_size=constants.kernel_size, images=constants.images,
                           kernel_sizes=constants.kernel_sizes, size=constants.size,
                           noise_level=constants.noise_level, data_seed=constants.data_seed, only=constants.only)
    Scoring.of(constants).check(problems)
    return problems


def scaled(constants: Any) -> Any:
    """The constants with every step count of their SCHEDULE times schedule_scale, rounded (a count of steps stays
    at least 1, a switch or pretraining of 0 stays 0, None stays None); the constants themselves at scale 1."""
    scale = constants.schedule_scale
    if scale == 1:
        return constants

    def times(steps: int) -> int:
        return max(round(steps * scale), 1 if steps > 0 else 0)

    changes = {}
    for name in type(constants).SCHEDULE:
        value = getattr(constants, name)
        if value is not None:
            changes[name] = tuple(times(v) for v in value) if isinstance(value, tuple) else times(value)
    return dataclasses.replace(constants, **changes)


def named_variants(constants: Any, variants: dict[str, dict[str, Any]], alone: str, elsewhere: str = "") -> dict:
    """The study's variants: name -> its constants (the constants as set, named `alone`, when none is asked for),
    each with its schedule scaled (`scaled`); a RunError naming an unknown one."""
    if not constants.variants:
        return {alone: scaled(constants)}
    unknown = [v for v in constants.variants if v not in variants]
    if unknown:
        raise RunError(f"unknown variant(s) {', '.join(unknown)}: choose from {', '.join(variants)}{elsewhere}")
    return {name: scaled(dataclasses.replace(constants, **variants[name])) for name in constants.variants}


# the constants every run of one batch shares: they shape its networks, its loop and its device
BATCH_SHAPE = ("input_channels", "channels", "skip_channels", "scales", "non_local", "kernel_input", "kernel_hidden",
               "iterations", "pretrain_iterations", "curve_every", "precision", "memory_format", "compile", "deterministic",
               "device", "batch_mode", "progress")


def shape_key(problem: Problem, constants: Any, *own: str) -> tuple:
    """What the runs of one batch share: the image and kernel sizes, the constants of BATCH_SHAPE and the script's
    `own` ones; runs that differ only in other constants (seeds, learning rates, losses) can share a batch."""
    return (tuple(problem.blurred.shape), problem.kernel_size) + tuple(getattr(constants, name)
                                                                      for name in BATCH_SHAPE + own)


def latent_footprint(problem: Problem, image_net: torch.nn.Module, input_channels: int) -> tuple[Footprint, int, int]:
    """What one run holds (estimated): the image network's optimisation step on the latent grid of the problem
    (its blurred size plus the kernel's, less one; dipkit.memory), with the grid's size."""
    (h, w), (kh, kw) = problem.blurred.shape[-2:], problem.kernel_size
    return training_footprint(image_net, input_channels), h + kh - 1, w + kw - 1


# ---------------------------------------------------------------------------------------------------------------
# The study


RECORD_KEYS = ("scores", "image", "kernel", "extra", "curve", "seconds", "stats")


def run_study(constants: StudyConstants, *, script: str, method: str, headline: str, problems: list[Problem],
              variants: dict[str, Any], deblur: Callable[[list[BlindRun]], list],
              footprint: Callable[[Problem, Any], tuple[Footprint, int, int]],
              batch_key: Callable[[Problem, Any], Hashable]) -> dict[str, Any]:
    """A script's run() once its problems and variants are read: the memory checked (a batch too large made
    smaller, said), "<method> on <device>: <headline>" said, Results/<script>/<run> opened with the constants as its
    config.json, every run computed by the engine (kept as it finishes; with resume, the kept ones read back) and
    the study's files written. Returns its rows, summary, curves and folder; a RunError at the end names the runs
    that failed (the others are kept)."""
    device = choose_device(constants.device)
    batch = check_memory(problems, variants, footprint, device, concurrent_units(constants), constants.batch,
                         vectorised(constants.batch_mode))
    runner = make_runner(constants)  # Ray connected before anything is written
    keep_freed_memory()
    print(f"{method} on {device}: {headline}" + (f"; up to {batch} runs at a time in a batch" if batch > 1 else ""))
    here = runs_here(constants)
    configs, said = {}, {}  # each problem's and variant's constants, precision and memory format resolved (dipkit.speed)
    for p in problems:
        grid = [n + k - 1 for n, k in zip(p.blurred.shape[-2:], p.kernel_size)]  # the image network's
        for name, config in variants.items():
            configs[p.name, name], said[f"{p.name} {name}"] = speed.resolve(
                config if here else dataclasses.replace(config, progress=False), device, *grid, config.channels)
    speed.announce(said, device)
    settings = {name: unit_settings(config) for name, config in variants.items()}  # each variant's, resolved
    folder = start_run(constants, script, device, resume=constants.resume,
                       variants=variant_settings(unit_settings(constants), settings), networks=said)
    scoring = Scoring.of(constants)
    (folder / "estimates").mkdir(exist_ok=True)
    baseline_rows, scorers, knowns, baseline_scores = [], {}, {}, {}
    for problem in problems:
        scorers[problem.name], knowns[problem.name], baseline_scores[problem.name] = _baselines(problem, scoring)
        baseline_rows += [dict(problem=problem.name, variant=name, seed="", **scores)
                          for name, scores in baseline_scores[problem.name].items()]
    runs = {f"{p.name}__{variant}__seed{seed}": (p, variant, seed) for p in problems for variant in variants
            for seed in constants.seeds}
    inputs = {p.name: problem_digest(p) for p in problems}
    keys = {(p, v): unit_settings(config) for (p, v), config in configs.items()}
    units = [Unit(name, BlindRun(p, config, seed, scorers[p.name]),
                  digest_of(inputs[p.name], keys[p.name, variant], seed),  # the run's key
                  batch_key(p, config)) for name, (p, variant, seed) in runs.items()
             for config in (configs[p.name, variant],)]

    def keep(unit: Unit, estimate: Estimate) -> dict:
        record = _keep(folder, unit.name, estimate, unit.task.problem, scorers[unit.task.problem.name])
        print(f"{unit.name}: " + describe(record["scores"], estimate.seconds), flush=True)
        return record

    kept = run_units(folder, units, deblur, keep, resume=constants.resume, batch=batch, runner=runner,
                     expects=RECORD_KEYS, script=script, keep_other_code=constants.keep_other_code,
                     update=lambda records: write_tables(folder, *_rows_and_curves(runs, records, baseline_rows),
                                                         figures_too=False))
    for problem in problems:
        panels: dict[str, list] = {}
        for name, (p, variant, seed) in runs.items():
            if p is problem and name in kept.records:
                record = kept.records[name]
                panels.setdefault(variant, []).append((seed, record["image"], _estimate(record), record["scores"]))
        if panels:
            problem_figures(folder, problem, knowns[problem.name], baseline_scores[problem.name], panels,
                            scoring.known_kernel.label)
    rows, curves = _rows_and_curves(runs, kept.records, baseline_rows)
    summary = write_tables(folder, rows, curves)
    for line in summary_lines(summary):
        print(line)
    kept.check(folder, "run")  # a run with failed units is not finished: no metrics.json
    write_metrics(folder, script, summary, rows, sum(r["seconds"] for r in rows if r.get("seed", "") != ""),
                  str(device))
    print(f"wrote {folder}")
    return dict(rows=rows, summary=summary, curves=curves, folder=folder)


def variant_settings(base: dict[str, Any], settings: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each variant's resolved settings (`settings`, by name) where they differ from the run's constants (`base`;
    a variant's schedule scaled): what config.json records of the variants, so that a variant's name can be read
    back as what it meant."""
    return {name: {key: value for key, value in own.items() if base.get(key) != value}
            for name, own in settings.items()}


def problem_digest(problem: Problem) -> str:
    """What a run sees of its problem, for its key (with its variant's resolved settings, the scoring's among
    them, and its seed): the blurred image it fits, the truth and kernel it is scored against, the colour photo."""
    tensors = [problem.blurred, problem.truth, problem.true_kernel, problem.colour, problem.kernel_size]
    return digest_of([t for t in tensors if t is not None])


def check_memory(problems: list[Problem], variants: dict[str, Any],
                 footprint: Callable[[Problem, Any], tuple[Footprint, int, int]], device: torch.device, at_once: int,
                 batch: int, vectorise: bool) -> int:
    """The batch size that fits: a RunError, before anything is written, if `at_once` runs of the largest problem
    do not fit the device's free memory (one run: `footprint` for each variant, plus the scoring's images); a
    batch of which `at_once` do not fit is made smaller, with one line saying so. A batch's runs each hold their
    weights; their activations one at a time, all at once when `vectorise`."""
    largest = max(problems, key=lambda p: (p.blurred.shape[-2] + p.kernel_size[0]) * (p.blurred.shape[-1] +
                                                                                        p.kernel_size[1]))
    h, w = largest.blurred.shape[-2:]
    estimates = [footprint(largest, config) for config in variants.values()]

    def need(runs: int) -> int:  # bytes of `at_once` processes with a batch of `runs` each, + the scoring's images
        return at_once * max(f.bytes(fh, fw, runs, runs if vectorise else 1) + 64 * h * w * 4
                             for f, fh, fw in estimates)

    advice = "give a smaller image, or fewer workers" if at_once > 1 else "give a smaller image (or crop the photo)"
    check_fits(need(1), device, f"{at_once} run(s) on {largest.name} ({h}x{w})", advice)
    return batch_that_fits(need, batch, device, f"on {largest.name} ({h}x{w})") if batch > 1 else 1


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


def _keep(folder: Path, stem: str, estimate: Estimate, problem: Problem, scorer: Scorer) -> dict:
    """A finished run scored, its estimate PNGs written; its record (what the engine keeps)."""
    image = quantise_8bit(estimate.image)
    scores = scorer(image, estimate.kernel)
    estimates = folder / "estimates"
    save_png(estimates / f"{stem}.png", image)
    save_kernel_png(estimates / f"{stem}_kernel.png", estimate.kernel)
    if problem.colour is not None:
        save_png(estimates / f"{stem}_colour.png", with_chroma(image, problem.colour))
    for key, extra in estimate.extra.items():
        save_png(estimates / f"{stem}_{key}.png", extra / extra.max().clamp(min=1e-12))
    return dict(scores=scores, image=image, kernel=estimate.kernel, extra=estimate.extra, curve=estimate.curve,
                seconds=estimate.seconds, stats=estimate.stats)


def _estimate(record: dict) -> Estimate:
    return Estimate(image=record["image"], kernel=record["kernel"], curve=record["curve"], seconds=record["seconds"],
                    extra=record["extra"], stats=record["stats"])


def _rows_and_curves(runs: dict[str, tuple], records: dict[str, dict], baseline_rows: list[dict]) -> tuple[list, list]:
    """The table's rows (per problem: its baselines, then its finished runs in the study's order) and curves."""
    rows, curves = [], []
    for problem in {p.name: p for p, _, _ in runs.values()}.values():
        rows += [r for r in baseline_rows if r["problem"] == problem.name]
        for name, (p, variant, seed) in runs.items():
            if p is problem and name in records:
                record = records[name]
                key = dict(problem=problem.name, variant=variant, seed=seed)
                rows.append(dict(key, **record["scores"], seconds=record["seconds"], **record["stats"],
                                 source=problem.source))
                curves += [dict(key, **point) for point in record["curve"]]
    return rows, curves
