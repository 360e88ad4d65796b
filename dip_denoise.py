"""Deep Image Prior denoising, as published, with backtracking done right and a stopping rule that needs no clean image.

Ulyanov, Vedaldi, Lempitsky, "Deep Image Prior", CVPR 2018 (arXiv 1711.10925): a randomly initialised
encoder-decoder f_θ maps a fixed noise input z0 to an image, and θ is fitted to the noisy image y alone,

    min_θ ‖f_θ(z0 + σ_r·n_k) − y‖²      (fresh n_k ~ N(0, I) each step, σ_r = 1/30; Adam, lr 0.01)

The network fits the image before the noise, so the output is a denoised image at some iteration; an exponential
average (0.99) of the outputs is better still. Which iteration? With a clean image one can read off the best
one (an oracle, reported as such). Without one, this script uses the windowed moving variance of the outputs
(ES-WMV, Wang et al., "Early stopping for deep image prior", TMLR 2023): the variance of the last W outputs
falls while the image is being fitted and rises once the noise is. The rule fires when no new minimum has come
for P iterations; its choice, the variance's minimum, is then frozen (as in the official code), whether or not the
run goes on. Two images are reported at that iteration: the network's output f_θ(z0 + σ_r·n), what the official
code reports ("ES-WMV"), and the exponential average (`denoised`, "ES-WMV, averaged"). A run that ends before the
rule fires reports the lowest variance so far and says that the rule did not fire.

Backtracking (the official code's safeguard, dipkit/backtracking.py): if the PSNR of the output against y falls by
more than 5 dB since the last checkpoint, the run goes back to it and redoes the block, leaving no trace of the
discarded iterations; at most `max_restores` times per image. Iterations are counted from 0, as in the official
code, everywhere. Bundled images are resized to 512x512; image files keep their size, centre-cropped to a multiple
of 32 as the original does (--size N: every image N x N; --size 0: every image its size).

Each image is a unit of the engine (dipkit.engine): kept as soon as it is denoised, --resume, --workers, --engine
ray; --batch N denoises images of one size together (`denoise` below is the one loop, alone and batched).

Run   python dip_denoise.py                          the paper's setting on a bundled 512x512 image (GPU: seconds)
      python dip_denoise.py --quick                  whole images resized to 64x64, 1000 iterations (CPU: minutes)
      python dip_denoise.py --images my_noisy_photo.png --no-add_noise   a real noisy photo: no clean image
      python dip_denoise.py --folder path/to/images   every image of a folder, one table
      python dip_denoise.py --help
Writes Results/dip_denoise/<run>/: per image <name>/DIP.png, <name>/curve.png, <name>/curve.csv and
<name>/denoised.png (averaged, at the ES-WMV choice), <name>/es_wmv.png (the output there); table.csv,
units/ (each finished image), config.json, metrics.json. From Python: `denoise([DIPRun(noisy, config, clean)])`.
"""

from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, Optional

import torch
import torch.nn.functional as F
from tqdm import tqdm

from dipkit import figures
from dipkit.backtracking import Backtracking, RunState
from dipkit.batch import Clock, NetworkConstants, StackedAdam, forward_backward, run_generator, stack, vectorised
from dipkit.cli import RunError, parse_config, run_main
from dipkit.device import choose_device, seed_everything
from dipkit.engine import Unit, concurrent_units, make_runner, run_units, runs_here
from dipkit.errors import Failed
from dipkit.figures import save_png
from dipkit.images import load_image, resolve_image, source_name
from dipkit.memory import batch_that_fits, check_fits, training_footprint
from dipkit.metrics import psnr, ssim
from dipkit.networks import SkipNetwork
from dipkit.runs import start_run, write_csv, write_metrics
from dipkit.sources import file_digest, item_names
from dipkit.stopping import Trackers

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
BUNDLED_SIZE = 512  # what size None gives a bundled image (the paper's images are 512x512)


@dataclass
class Config(NetworkConstants):
    # data
    images: tuple[str, ...] = ("astronaut",)  # bundled image names or image paths
    folder: str = ""  # if set, every image in this folder instead of `images`
    size: Optional[int] = None  # None: bundled images 512x512, files keep their size (cut to /32); 0: all keep it; N: N x N
    add_noise: bool = True  # the images are clean: add the noise and measure PSNR; --no-add_noise for noisy photos
    noise_level: float = 25 / 255  # standard deviation σ of the added Gaussian noise (clipped to [0, 1] after)
    # DIP, the paper's denoising settings
    iterations: int = 3000  # optimisation steps
    learning_rate: float = 0.01  # Adam learning rate
    reg_noise_std: float = 1 / 30  # σ_r of the fresh perturbation of the input at each step
    ema: float = 0.99  # weight of the exponential average of the outputs
    input_depth: int = 32  # channels of the input noise z0
    input_scale: float = 0.1  # z0 ~ U[0, 1) times this
    # backtracking
    backtrack_drop: float = 5.0  # restore the checkpoint when PSNR(output, y) falls by more than this (dB); inf: never
    checkpoint_every: int = 100  # iterations between checkpoints (and between device-to-host transfers)
    max_restores: int = 10  # most checkpoint restores per image; later drops are accepted (0: no backtracking)
    # stopping rule without a clean image (ES-WMV)
    stop_window: int = 100  # W: outputs in the moving-variance window
    stop_patience: int = 1000  # P: the rule fires after this many iterations without a new variance minimum
    stop_early: bool = False  # end the run when the rule fires (always on when there is no clean image)
    seed: int = 0  # seeds the noise, the network and its input
    quick: bool = False  # the QUICK preset: whole images resized to 64x64, 1000 iterations (CPU: minutes)

    QUICK: ClassVar[dict[str, Any]] = dict(size=64, iterations=1000, checkpoint_every=50, stop_window=50,
                                           stop_patience=200)
    LIMITS: ClassVar[dict[str, str]] = dict(
        size="[0, inf)",  # and 0 or a multiple of 32 of at least 64 (checked in check_config)
        noise_level="[0, 1]", iterations="[1, inf)", learning_rate="(0, inf)", reg_noise_std="[0, inf)",
        ema="[0, 1)", input_depth="[1, inf)", input_scale="(0, inf)", backtrack_drop="(0, inf]",
        checkpoint_every="[1, inf)", max_restores="[0, inf)", stop_window="[2, inf)", stop_patience="[1, inf)",
        seed="[0, inf)",
    )


def image_list(config: Config) -> list[str]:
    if not config.folder:
        if not config.images:
            raise RunError("images: give at least one bundled image name or image path (or a folder)")
        folders = [name for name in config.images if Path(name).expanduser().is_dir()]
        if folders:
            raise RunError(f"images: '{folders[0]}' is a folder; give its images with --folder {folders[0]}")
        return list(config.images)
    folder = Path(config.folder).expanduser()
    if not folder.is_dir():
        raise RunError(f"folder '{config.folder}' does not exist")
    files = sorted(str(p) for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise RunError(f"folder '{config.folder}' holds no image ({', '.join(IMAGE_SUFFIXES)})")
    return files


@dataclass(frozen=True)
class Source:
    """One image of a run: how it was given, the file it is, and the item name its outputs go under."""

    given: str  # the bundled name or path as given
    path: Path  # the file read
    name: str  # unique within the run (a-rgb and b-rgb for a/rgb.png and b/rgb.png)


def check_config(config: Config) -> list[Source]:
    """The run's images, after the checks that involve more than one constant or the file system: each file
    exists, the same file is not given twice, and files of the same stem get names that tell them apart."""
    if config.size and (config.size < 64 or config.size % 32):
        raise RunError(f"size must be None, 0 or a multiple of 32 of at least 64 (five scales), not {config.size}")
    given = image_list(config)
    paths = [resolve_image(name) for name in given]
    return [Source(g, p, n) for g, p, n in zip(given, paths, item_names(paths))]


def load_clean(name: str, config: Config) -> torch.Tensor:
    """The image, centre-cropped to a square and resized to N x N, or kept at its size and centre-cropped to a
    multiple of 32 in each direction (as the original's crop_image); see `Config.size`. An existing file is the
    user's image; anything else a bundled one (512 x 512 unless size says otherwise)."""
    size = (0 if Path(name).expanduser().is_file() else BUNDLED_SIZE) if config.size is None else config.size
    if size:
        return load_image(name, (size, size), channels=3)
    image = load_image(name, channels=3)
    (h, w), (full_h, full_w) = ((s // 32) * 32 for s in image.shape[-2:]), image.shape[-2:]
    if h < 64 or w < 64:
        raise RunError(f"image '{name}' is smaller than 64 x 64, the least the five-scale network takes")
    top, left = (full_h - h) // 2, (full_w - w) // 2
    return image[..., top : top + h, left : left + w]


def add_noise(clean: torch.Tensor, config: Config, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(clean.shape, generator=generator, dtype=torch.float32)
    return (clean + config.noise_level * noise).clamp(0, 1)


# ---------------------------------------------------------------------------------------------------------------
# The DIP loop


class DIPRun(NamedTuple):
    """One image to denoise: the noisy image (1, C, H, W) in [0, 1], the constants, and the clean image if known."""

    noisy: torch.Tensor
    config: Config
    clean: torch.Tensor | None = None


@dataclass
class DenoiseResult:
    denoised: torch.Tensor  # the averaged output at the ES-WMV choice (the final average if there is none)
    es_wmv: torch.Tensor  # the output at the ES-WMV choice, the official code's image (the final output if none)
    final_output: torch.Tensor  # f_θ(z0) at the end, the official code's shown image
    final_average: torch.Tensor  # the exponential average at the end
    curves: dict[str, list[float]]  # entry k is iteration k: psnr_noisy, psnr_clean, psnr_clean_average, variance
    stop_iteration: int | None  # the ES-WMV choice: its variance minimum (None: the window never filled)
    stop_fired: bool  # whether the rule fired (its patience ran out) within the iterations run
    stop_fired_iteration: int | None = None  # where it fired; the choice is frozen from there on
    oracle_iteration: int | None = None  # best PSNR of the average against the clean image (needs it)
    oracle_image: torch.Tensor | None = None
    backtracks: int = 0  # checkpoint restorations
    restores_exhausted: bool = False  # a drop came after max_restores restores and was accepted
    iterations_run: int = 0  # optimisation steps taken, redone ones included
    seconds: float = 0.0  # the run's time (in a batch, its share of the batch's time)
    device: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)


def denoise(runs: list[DIPRun]) -> list[DenoiseResult | Failed]:
    """Denoise noisy images of one size (a run alone: a list of one) by DIP, each image with its own network, Adam,
    average, ES-WMV rule, backtracking (a run that goes back to its checkpoint redoes its block while the others go
    on) and stop; each gives what it gives alone. With a clean image, PSNR curves against it and the oracle best
    iteration are reported too. The rule that needs no clean image always runs; with `stop_early` or without a
    clean image a run ends at the first checkpoint after it fires. A run whose output turns NaN fails alone
    (Failed). Iterations are counted from 0."""
    config, n = runs[0].config, len(runs)  # the constants are the first run's: images of one size, one run
    device = choose_device(config.device)
    noisies = [run.noisy.to(device=device, dtype=torch.float32) for run in runs]
    cleans = [None if run.clean is None else run.clean.to(device=device, dtype=torch.float32) for run in runs]
    networks, z0, noise = [], [], []
    for _ in range(n):  # each run draws what it draws alone: the network, then z0 from its own generator
        torch.manual_seed(config.seed)
        networks.append(SkipNetwork(config.input_depth, noisies[0].shape[1]))
        generator = torch.Generator().manual_seed(config.seed)
        z0.append(torch.rand((1, config.input_depth, *noisies[0].shape[-2:]), generator=generator) * config.input_scale)
        noise.append(run_generator(device, config.seed))
    stacked = stack(networks, device, config)
    adam = StackedAdam([(stacked.parameters(), [config.learning_rate] * n, [0.9] * n)])
    z0 = torch.stack(z0).to(device)
    states = [RunState(stacked, adam, r, z0[r], noisies[r]) for r in range(n)]
    trackers = [Trackers(s.average, config.stop_window, config.stop_patience, config.iterations) for s in states]
    backtracking = [Backtracking(s, t, config.backtrack_drop, config.max_restores) for s, t in zip(states, trackers)]
    stop_early = [config.stop_early or clean is None for clean in cleans]
    active, failures, steps_run = list(range(n)), {}, [0] * n
    bar = tqdm(total=config.iterations, disable=not config.progress, leave=False,
               desc="DIP" if n == 1 else f"DIP batch of {n}")

    def forward(chosen: list[int]) -> tuple[torch.Tensor]:  # f_θ(z0 + σ_r n_k), a fresh n_k for each run and step
        return (stacked(torch.stack([z0[r] + config.reg_noise_std * torch.randn(z0.shape[1:], generator=noise[r],
                                                                                device=device) for r in chosen]),
                        chosen),)

    clock = Clock(n, device)
    while active:  # the DIP step of every active run: min_θ ‖f_θ(z0 + σ_r n_k) − y‖², Adam, then the average
        adam.zero_grad()
        stepped = list(active)
        (out,), losses = forward_backward(stepped, stacked.vectorise, forward,
                                          lambda i, r, outputs: F.mse_loss(outputs[0][i], noisies[r]))
        adam.step(stepped)
        with torch.no_grad():
            for i, r in enumerate(stepped):
                state = states[r]
                if state.steps == 0:
                    state.average.copy_(out[i])
                else:
                    state.average.mul_(config.ema).add_(out[i], alpha=1 - config.ema)
                trackers[r].observe(state.steps, out[i], state.average, noisies[r], cleans[r])
                state.steps, steps_run[r] = state.steps + 1, steps_run[r] + 1
        for r in list(active):  # at its checkpoints: backtrack, stop, or save the checkpoint
            state = states[r]
            if state.steps % config.checkpoint_every and state.steps < config.iterations:
                continue
            try:
                if backtracking[r].restored(state, trackers[r]):
                    continue
            except RunError as error:
                failures[r] = str(error)
            if r not in failures and state.steps < config.iterations and not (stop_early[r] and trackers[r].fired):
                backtracking[r].save(state, trackers[r])
                bar.set_postfix(psnr_y=f"{backtracking[r].reference:.2f}", loss=f"{losses[stepped.index(r)].item():.2e}")
                continue
            active.remove(r)
            clock.stop(r)
        bar.update(min((states[r].steps for r in active), default=config.iterations) - bar.n)
    bar.close()
    return [Failed(failures[r]) if r in failures else
            _result(states[r], trackers[r], backtracking[r], noisies[r], cleans[r], steps_run[r], clock.stop(r), device)
            for r in range(n)]


def _optional(value: int) -> int | None:
    return None if value < 0 else value


def _result(state: RunState, trackers: Trackers, backtracking: Backtracking, noisy: torch.Tensor,
            clean: torch.Tensor | None, steps_run: int, seconds: float, device: torch.device) -> DenoiseResult:
    with torch.no_grad():
        final_output = state.net(state.z0)
    stop_iteration = _optional(trackers.best_iteration.item())
    fired_iteration = _optional(trackers.fired_iteration.item())
    result = DenoiseResult(
        denoised=trackers.stop_image if stop_iteration is not None else state.average.clone(),
        es_wmv=trackers.stop_output if stop_iteration is not None else final_output,
        final_output=final_output, final_average=state.average.clone(),
        curves={key: curve[: state.steps].tolist() for key, curve in trackers.curves.items()},
        stop_iteration=stop_iteration, stop_fired=fired_iteration is not None, stop_fired_iteration=fired_iteration,
        backtracks=backtracking.restores, restores_exhausted=backtracking.exhausted, iterations_run=steps_run,
        seconds=seconds, device=str(device),
    )
    if clean is not None:
        result.oracle_iteration = trackers.oracle_iteration.item()
        result.oracle_image = trackers.oracle_image
        scores = lambda x: dict(psnr=psnr(x, clean), ssim=ssim(x, clean))  # noqa: E731
        result.metrics = dict(
            noisy=scores(noisy), final_output=scores(final_output), final_average=scores(state.average),
            es_wmv=dict(scores(result.es_wmv), iteration=stop_iteration, fired=result.stop_fired,
                        fired_iteration=fired_iteration),
            es_wmv_average=dict(scores(result.denoised), iteration=stop_iteration),
            oracle=dict(scores(result.oracle_image), iteration=result.oracle_iteration),
        )
    return result


# ---------------------------------------------------------------------------------------------------------------
# Outputs and the command line


def rule_summary(result: DenoiseResult) -> str:
    """'it. 412, fired at it. 1412' or 'it. 2990, did not fire in 3000 iterations' (iterations from 0)."""
    if result.stop_iteration is None:
        return "no choice: fewer iterations than the window"
    if result.stop_fired:
        return f"it. {result.stop_iteration}, fired at it. {result.stop_fired_iteration}"
    return f"it. {result.stop_iteration}, did not fire in {len(result.curves['variance'])} iterations"


def write_image_outputs(folder: Path, name: str, noisy: torch.Tensor, clean: torch.Tensor | None,
                        result: DenoiseResult) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    save_png(folder / "denoised.png", result.denoised)
    save_png(folder / "es_wmv.png", result.es_wmv)
    caption = lambda x: "" if clean is None else f"{psnr(x, clean):.2f} dB / {ssim(x, clean):.3f} "  # noqa: E731
    panels = ([(clean, "PSNR / SSIM")] if clean is not None else []) + [
        (noisy, caption(noisy)), (result.final_output, caption(result.final_output)),
        (result.final_average, caption(result.final_average)),
        (result.es_wmv, caption(result.es_wmv) + f"({rule_summary(result)})"),
        (result.denoised, caption(result.denoised)),
    ]
    titles = (["clean"] if clean is not None else []) + ["noisy", "DIP, end", "averaged DIP, end",
                                                          "ES-WMV: DIP at its choice", "averaged, at that choice"]
    figures.image_grid(folder / "DIP.png", [panels], titles, [name])
    its = list(range(len(result.curves["psnr_noisy"])))  # iterations from 0, as everywhere
    lines = [(its, result.curves["psnr_noisy"], "output vs noisy")]
    if clean is not None:
        lines += [(its, result.curves["psnr_clean"], "output vs clean"),
                  (its, result.curves["psnr_clean_average"], "average vs clean")]
    panels = [dict(lines=lines, xlabel="iteration", ylabel="PSNR (dB)", marks=_marks(result)),
              dict(lines=[(its, result.curves["variance"], "windowed variance")], xlabel="iteration",
                   ylabel="moving variance of the outputs", logy=True, marks=_marks(result),
                   title=f"ES-WMV: {rule_summary(result)}")]
    figures.curves(folder / "curve.png", panels, n_cols=2)
    write_csv(folder / "curve.csv", [dict(iteration=k, **{key: values[k] for key, values in result.curves.items()})
                                     for k in its])


def _marks(result: DenoiseResult) -> list[tuple[float, str]]:
    marks = []
    if result.oracle_iteration is not None:
        marks.append((result.oracle_iteration, "oracle best (uses the clean image)"))
    if result.stop_iteration is not None:
        fired = f"fired at {result.stop_fired_iteration}" if result.stop_fired else "did not fire"
        marks.append((result.stop_iteration, f"ES-WMV choice, no clean image ({fired})"))
    return marks


def image_record(folder: Path, source: Source, noisy: torch.Tensor, clean: torch.Tensor | None,
                 result: DenoiseResult) -> dict:
    """Write an image's folder; what the run keeps of it: its table row and its metrics.json entry."""
    stem = source.name
    write_image_outputs(folder / stem, stem, noisy, clean, result)
    m = result.metrics
    facts = dict(source=source_name(source.path), height=noisy.shape[-2], width=noisy.shape[-1],
                 es_wmv_iteration=result.stop_iteration, es_wmv_fired=result.stop_fired,
                 es_wmv_fired_iteration=result.stop_fired_iteration, oracle_iteration=result.oracle_iteration,
                 backtracks=result.backtracks, restores_exhausted=result.restores_exhausted,
                 iterations_run=result.iterations_run, seconds=result.seconds,
                 seconds_per_iteration=result.seconds / max(result.iterations_run, 1))
    row = dict(image=stem, **facts)
    if clean is not None:
        row.update(psnr_noisy=m["noisy"]["psnr"], psnr_final=m["final_output"]["psnr"],
                   psnr_final_average=m["final_average"]["psnr"], psnr_es_wmv=m["es_wmv"]["psnr"],
                   psnr_es_wmv_average=m["es_wmv_average"]["psnr"], psnr_oracle=m["oracle"]["psnr"])
    summary = "" if clean is None else (
        f": noisy {m['noisy']['psnr']:.2f}, final average {m['final_average']['psnr']:.2f}, ES-WMV "
        f"{m['es_wmv']['psnr']:.2f}, averaged {m['es_wmv_average']['psnr']:.2f} ({rule_summary(result)}), oracle "
        f"{m['oracle']['psnr']:.2f} dB (it. {result.oracle_iteration})")
    print(f"{stem:>12} ({noisy.shape[-2]}x{noisy.shape[-1]}){summary}; {result.seconds:.1f} s, "
          f"{result.backtracks} backtracks", flush=True)
    return dict(row=row, item=dict(m, **facts, device=result.device))


def images_of(sources: list[Source], config: Config, device: torch.device) -> tuple[dict[str, DIPRun], int]:
    """Every image read once before anything is written (bad input stops the run with no folder): each one's DIPRun
    (the noise of the index-th image seeded by seed + 1 + index: images may be added at the end on a resume), and
    the batch size that fits the device's memory (config.batch, or fewer, said); an image that does not fit is
    refused. A run holds its network's footprint, ES-WMV's window and a dozen images."""
    runs, needs, at_once = {}, [], concurrent_units(config)
    for index, source in enumerate(sources):
        clean = load_clean(source.given, config)
        runs[source.name] = DIPRun(add_noise(clean, config, config.seed + 1 + index) if config.add_noise else clean,
                                   config, clean if config.add_noise else None)
        c, h, w = clean.shape[1:]
        footprint, images = training_footprint(SkipNetwork(config.input_depth, c), config.input_depth), \
            (2 * config.stop_window + 12) * c * h * w * 4
        needs.append(lambda n, f=footprint, h=h, w=w, i=images: at_once * (
            f.bytes(h, w, n, n if vectorised(config.batch_mode) else 1) + n * i))
        advice = "give a smaller --size (e.g. 512)" if not config.size or config.size > 512 else "use a larger device"
        check_fits(needs[-1](1), device, f"denoising {source.name} ({h}x{w})", advice)
    need = lambda n: max(one(n) for one in needs)  # noqa: E731
    return runs, batch_that_fits(need, config.batch, device, "of the largest image") if config.batch > 1 else 1


def run(config: Config) -> dict[str, Any]:
    """Denoise every image of the config; write the run folder; return the results and the table. Each image is a
    unit of the engine, kept as soon as it is done (units/<image>.pt, with its file's digest; table.csv
    rewritten); with `resume`, the images of the run `run_name` made from the same files are read back."""
    sources = check_config(config)
    device = choose_device(config.device)
    runs, batch = images_of(sources, config, device)
    runner = make_runner(config)  # Ray connected before anything is written
    seed_everything(config.seed, config.deterministic)
    print(f"DIP denoising on {device}: {len(sources)} image(s), {config.iterations} iterations"
          + (f", up to {batch} images of one size at a time in a batch" if batch > 1 else ""))
    folder = start_run(config, "dip_denoise", device, resume=config.resume, also_resumable=("images", "folder"))
    task_config = config if runs_here(config) else dataclasses.replace(config, progress=False)
    units = [Unit(s.name, runs[s.name]._replace(config=task_config), file_digest(s.path), tuple(runs[s.name].noisy.shape))
             for s in sources]
    sources_of, results = {s.name: s for s in sources}, {}

    def keep(unit: Unit, result: DenoiseResult) -> dict:
        results[unit.name] = result
        return image_record(folder, sources_of[unit.name], unit.task.noisy, unit.task.clean, result)

    kept = run_units(folder, units, denoise, keep, resume=config.resume, batch=batch, runner=runner,
                     expects=("row", "item"), update=lambda records: write_csv(
                         folder / "table.csv", [record["row"] for record in records.values()]))
    kept.check(folder, "image")
    table = [record["row"] for record in kept.records.values()]
    summary = {key: statistics.fmean(row[key] for row in table) for key in table[0] if key.startswith("psnr_")}
    write_metrics(folder, "dip_denoise", summary, {name: record["item"] for name, record in kept.records.items()},
                  sum(row["seconds"] for row in table), str(device), iterations_counted_from=0)
    print(f"wrote {folder}")
    return dict(folder=folder, results=results, table=table)


def main(argv: list[str] | None = None) -> None:
    run(parse_config(Config, argv, description=__doc__))


if __name__ == "__main__":
    run_main(main)
