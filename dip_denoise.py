"""Deep Image Prior denoising, as published, with backtracking done right and a stopping rule that needs no clean image.

Ulyanov, Vedaldi, Lempitsky, "Deep Image Prior", CVPR 2018 (arXiv 1711.10925): a randomly initialised
encoder-decoder f_θ maps a fixed noise input z0 to an image, and θ is fitted to the noisy image y alone,

    min_θ ‖f_θ(z0 + σ_r·n_k) − y‖²      (fresh n_k ~ N(0, I) each step, σ_r = 1/30; Adam, lr 0.01)

The network fits the image before the noise, so the output is a denoised image at some iteration; an exponential
average (0.99) of the outputs is better still. Which iteration? With a clean image one can read off the best
one (an oracle, reported as such). Without one, stopping rules watch the stream of outputs (dipkit/stopping.py),
all of them on every run: ES-WMV (Wang et al., "Early stopping for deep image prior", TMLR 2023: the minimum of the
variance of the last W outputs, frozen once P iterations bring no new one; its image is the output there, as the
official code reports it), ES-EMV (the same paper's exponential moving variance), the discrepancy principle
(‖y − x̄‖²/n of the average x̄ down to τσ², σ given or estimated from the noisy image) and the whiteness of the
residual y − x̄, each also with the average centred on its choice (99 iterations later, the mean age of the
average's outputs). `stop_rule` names the one that gives denoised.png and ends a run without a clean image (the
default, the discrepancy principle's centred average, landed 0.17 dB below the oracle on average at 64x64); every
rule's choice (iteration, whether it fired, PSNR and SSIM with a clean image) is in table.csv and metrics.json.

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
      python dip_denoise.py --quick --stop_rule discrepancy   another rule gives denoised.png
      python dip_denoise.py --folder path/to/images   every image of a folder, one table
      python dip_denoise.py --help
Writes Results/dip_denoise/<run>/: per image <name>/DIP.png, <name>/curve.png, <name>/curve.csv and
<name>/denoised.png (the stop rule's image); table.csv, units/ (each finished image), config.json, metrics.json.
From Python: `denoise([DIPRun(noisy, config, clean)])`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal, NamedTuple, Optional

import torch
import torch.nn.functional as F
from tqdm import tqdm

from dipkit import speed
from dipkit.backtracking import Backtracking, RunState, read_checkpoint, write_whole
from dipkit.batch import Clock, NetworkConstants, StackedAdam, forward_backward, run_generator, stack, vectorised
from dipkit.cli import RunError, parse_config, run_main
from dipkit.device import choose_device, seed_everything, to_cpu
from dipkit.engine import Unit, concurrent_units, make_runner, run_units, runs_here
from dipkit.errors import Failed
from dipkit.dip_report import image_record, scores, write_summary
from dipkit.images import load_image, source_name
from dipkit.memory import batch_that_fits, check_fits, held_bytes, training_footprint
from dipkit.networks import SkipNetwork
from dipkit.runs import start_run, unit_settings, write_csv
from dipkit.sources import Source, digest_of, image_sources
from dipkit.stopping import (Choice, Sure, Trackers, average_lag, estimate_sigma, make_rules, rule_of,
                             rule_summary)

BUNDLED_SIZE = 512  # what size None gives a bundled image (the paper's images are 512x512)


@dataclass
class Config(NetworkConstants):
    # data
    images: tuple[str, ...] = ("astronaut",)  # bundled image names or image paths
    folder: str = ""  # if set, every image in this folder instead of `images`
    size: Optional[int] = None  # None: bundled images 512x512, files keep their size (cut to /32); 0: all keep it; N: N x N
    crop: int = 0  # N: each image's centre N x N at its own resolution, not resized (size is then not used)
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
    save_every: int = 500  # iterations between the checkpoints written to disk (partial/<image>.pt; 0: none)
    max_restores: int = 10  # most checkpoint restores per image; later drops are accepted (0: no backtracking)
    # stopping rules without a clean image (dipkit/stopping.py); every rule is computed on every run
    stop_rule: Literal["es_wmv", "es_wmv_average", "es_wmv_centred", "es_emv", "es_emv_average", "es_emv_centred",
                       "discrepancy", "discrepancy_centred", "whiteness", "whiteness_centred", "sure",
                       "sure_centred"] = "discrepancy_centred"
    #   gives denoised.png and ends a run without a clean image (with stop_early: any run): a rule's image, the
    #   exponential average at its choice (<rule>_average) or the one centred on its choice (<rule>_centred); the
    #   default has the smallest mean gap to the oracle in the study of docs/dip_denoise.md
    stop_window: int = 100  # W: outputs in ES-WMV's window (and the iterations ES-EMV waits before it looks)
    stop_patience: int = 1000  # P: ES-WMV, ES-EMV, whiteness and SURE fire after P iterations without a new minimum
    emv_alpha: float = 0.1  # ES-EMV's weight of the new output in its moving average and variance (official: 0.1)
    sigma: Optional[float] = None  # σ of the noise for the discrepancy principle; None: estimated from each image
    estimate_sigma: bool = True  # estimate σ when it is not given (--no-estimate_sigma: no discrepancy rule)
    discrepancy_tau: float = 1.0  # τ: the discrepancy principle stops where ‖y − x̄‖²/n ≤ τσ²
    stop_early: bool = False  # end the run when stop_rule fires (always on when there is no clean image)
    sure: bool = False  # also the SURE rule: a twin run on y + εb beside each image (twice the cost; needs σ)
    sure_epsilon: float = 0.1  # ε of the twin's perturbation, in units of σ (ε = sure_epsilon·σ)
    seed: int = 0  # seeds the noise, the network and its input
    quick: bool = False  # the QUICK preset: whole images resized to 64x64, 1000 iterations (CPU: minutes)

    QUICK: ClassVar[dict[str, Any]] = dict(size=64, iterations=1000, checkpoint_every=50, stop_window=50,
                                           stop_patience=200)
    ADDED: ClassVar[dict[str, Any]] = dict(sure=False, sure_epsilon=0.1)  # runs kept before these resume across them
    LIMITS: ClassVar[dict[str, str]] = dict(
        size="[0, inf)",  # and 0 or a multiple of 32 of at least 64 (checked in check_config)
        crop="[0, inf)",  # and 0 or a multiple of 32 of at least 64 (checked in check_config)
        noise_level="[0, 1]", iterations="[1, inf)", learning_rate="(0, inf)", reg_noise_std="[0, inf)",
        ema="[0, 1)", input_depth="[1, inf)", input_scale="(0, inf)", backtrack_drop="(0, inf]",
        checkpoint_every="[1, inf)", save_every="[0, inf)", max_restores="[0, inf)", stop_window="[2, inf)",
        stop_patience="[1, inf)",
        emv_alpha="(0, 1)", sigma="(0, 1]", discrepancy_tau="(0, inf)", sure_epsilon="(0, inf)", seed="[0, inf)",
    )


def check_config(config: Config) -> list[Source]:
    """The run's images, after the checks that involve more than one constant or the file system: each file
    exists, the same file is not given twice, and files of the same stem get names that tell them apart."""
    if config.size and (config.size < 64 or config.size % 32):
        raise RunError(f"size must be None, 0 or a multiple of 32 of at least 64 (five scales), not {config.size}")
    if config.crop and (config.crop < 64 or config.crop % 32):
        raise RunError(f"crop must be 0 or a multiple of 32 of at least 64 (five scales), not {config.crop}")
    if rule_of(config.stop_rule) == "sure" and not config.sure:
        raise RunError(f"stop_rule {config.stop_rule} needs --sure (the twin run the SURE rule reads)")
    return image_sources(config.images, config.folder)


def load_clean(name: str, config: Config) -> torch.Tensor:
    """The image, centre-cropped to a square and resized to N x N, or kept at its size and centre-cropped to a
    multiple of 32 in each direction (as the original's crop_image); see `Config.size`. An existing file is the
    user's image; anything else a bundled one (512 x 512 unless size says otherwise). With `crop` N: the image's
    centre N x N at its own resolution (a RunError where the image is smaller)."""
    if config.crop:
        image = load_image(name, channels=3)
        (full_h, full_w), n = image.shape[-2:], config.crop
        if full_h < n or full_w < n:
            raise RunError(f"image '{name}' ({full_h} x {full_w}) is smaller than the crop of {n} x {n}")
        return centre(image, n, n)
    size = (0 if Path(name).expanduser().is_file() else BUNDLED_SIZE) if config.size is None else config.size
    if size:
        return load_image(name, (size, size), channels=3)
    image = load_image(name, channels=3)
    h, w = ((s // 32) * 32 for s in image.shape[-2:])
    if h < 64 or w < 64:
        raise RunError(f"image '{name}' is smaller than 64 x 64, the least the five-scale network takes")
    return centre(image, h, w)


def centre(image: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The image's centre h x w pixels."""
    top, left = (image.shape[-2] - h) // 2, (image.shape[-1] - w) // 2
    return image[..., top : top + h, left : left + w]


def add_noise(clean: torch.Tensor, config: Config, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(clean.shape, generator=generator, dtype=torch.float32)
    return (clean + config.noise_level * noise).clamp(0, 1)


# ---------------------------------------------------------------------------------------------------------------
# The DIP loop


class DIPRun(NamedTuple):
    """One image to denoise: the noisy image (1, C, H, W) in [0, 1], the constants, and the clean image if known;
    or, with `forward` (a linear forward model A, e.g. a deepinv physics' A), one image to recover from its
    measurement y = A x + n (`noisy`), fitting ‖A f_θ(z) − y‖² over images of `image_shape`."""

    noisy: torch.Tensor
    config: Config
    clean: torch.Tensor | None = None
    sigma: float | None = None  # σ for the discrepancy principle (None: config.sigma, or estimated if allowed)
    partial: str | None = None  # where its checkpoint goes on disk (a run cut goes on from it); None: nowhere
    key: str = ""  # its unit's key: a checkpoint on disk of another key is not taken up
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None  # A (None: the identity, denoising)
    image_shape: tuple[int, ...] | None = None  # the image's shape (1, C, H, W) where A changes it (None: y's)


@dataclass
class DenoiseResult:
    stop_rule: str  # the candidate that gives `denoised` (Config.stop_rule)
    choices: dict[str, Choice]  # every rule's choice, by rule name (es_wmv, es_emv, discrepancy, whiteness, sure)
    final_output: torch.Tensor  # f_θ(z0) at the end, the official code's shown image
    final_average: torch.Tensor  # the exponential average at the end
    curves: dict[str, list[float]]  # entry k is iteration k: psnr_noisy, psnr_clean, psnr_clean_average, statistics
    oracle_iteration: int | None = None  # best PSNR of the average against the clean image (needs it)
    oracle_image: torch.Tensor | None = None
    sigma: float | None = None  # the σ the discrepancy principle used
    backtracks: int = 0  # checkpoint restorations
    restores_exhausted: bool = False  # a drop came after max_restores restores and was accepted
    iterations_run: int = 0  # optimisation steps taken, redone ones included
    seconds: float = 0.0  # the run's time (in a batch, its share of the batch's time)
    device: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)

    def image(self, candidate: str) -> torch.Tensor:
        """A candidate's image: a rule's own, the exponential average at its choice (<rule>_average) or the one
        centred on its choice (<rule>_centred)."""
        choice = self.choices[rule_of(candidate)]
        return (choice.average if candidate.endswith("_average") else choice.centred if candidate.endswith("_centred")
                else choice.image)

    @property
    def denoised(self) -> torch.Tensor:  # the stop rule's image
        return self.image(self.stop_rule)

    @property
    def stop(self) -> Choice:
        return self.choices[rule_of(self.stop_rule)]

    def summary(self, rule: str) -> str:
        return rule_summary(self.choices[rule], len(self.curves["psnr_noisy"]))


@dataclass
class ImageRun:
    """One image in the DIP loop: its images, its slice of the stacked networks and of Adam with its average
    (state), what it reads off its outputs (trackers), its checkpoint (backtracking), its noise and its stop."""

    index: int  # its place in the batch
    noisy: torch.Tensor
    clean: torch.Tensor | None
    state: RunState
    trackers: Trackers
    backtracking: Backtracking
    noise: torch.Generator  # the fresh perturbations of its input
    stop_early: bool  # ends when the stop rule fires (always without a clean image)
    steps_run: int = 0  # steps taken, redone ones included
    failure: str | None = None
    partial: Path | None = None  # its checkpoint on disk (DIPRun.partial)
    key: str = ""
    seconds_before: float = 0.0  # the time spent before the run was cut, where it goes on from its checkpoint
    written_at: int = 0  # the step of the checkpoint last written to disk
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None  # A (None: the identity, denoising)
    twin: ImageRun | None = None  # with --sure: its twin on y + εb, stepped in lockstep (goes back and ends with it)
    follows: bool = False  # a twin: it never goes back or ends on its own, and its checkpoint is written by its run

    def write(self, config: Config, seconds: float) -> None:
        """After a checkpoint, every save_every iterations: the checkpoint (network, Adam, average, every rule's
        state and curve), the backtracking's count and reference, the input noise's stream and the time so far, to
        partial/<image>.pt (replaced whole, never half written), so that a run cut later goes on from here."""
        steps = self.state.steps
        if not (self.partial and config.save_every) or steps - self.written_at < config.save_every \
                or self.backtracking.saved[0]["steps"] != steps or steps >= config.iterations:
            return
        twin = self.twin and self.twin.backtracking.on_disk(noise=self.twin.noise.get_state())
        write_whole(self.partial, self.backtracking.on_disk(
            key=self.key, steps=steps, steps_run=self.steps_run, seconds=self.seconds_before + seconds,
            noise=self.noise.get_state(), twin=twin))
        self.written_at = steps

    def go_on_from_disk(self, device: torch.device) -> bool:
        """Take up the checkpoint on disk of this run's key, if there is one (a damaged one is ignored)."""
        content = read_checkpoint(self.partial, self.key)
        if content is None:
            return False
        self.backtracking.take_up(content, self.state, self.trackers, device)
        self.noise.set_state(content["noise"])
        if self.twin is not None:  # the twin goes on from the same step (written together)
            self.twin.backtracking.take_up(content["twin"], self.twin.state, self.twin.trackers, device)
            self.twin.noise.set_state(content["twin"]["noise"])
        self.steps_run, self.seconds_before = content["steps_run"], content["seconds"]
        self.written_at = content["steps"]
        return True

    def take(self, out: torch.Tensor, ema: float) -> None:
        """After a step: the exponential average of the outputs, and everything read off them."""
        if self.state.steps == 0:
            self.state.average.copy_(out)
        else:
            self.state.average.mul_(ema).add_(out, alpha=1 - ema)
        seen, fit = (None, None) if self.forward is None else (self.forward(out), self.forward(self.state.average))
        self.trackers.observe(self.state.steps, out, self.state.average, self.noisy, self.clean, seen, fit)
        self.state.steps, self.steps_run = self.state.steps + 1, self.steps_run + 1

    def measured(self, out: torch.Tensor) -> torch.Tensor:
        """A(output) for the loss (the output itself in denoising)."""
        return out if self.forward is None else self.forward(out)

    def goes_on(self, config: Config) -> bool:
        """At a checkpoint: back to the last one if its output's PSNR against y dropped (the block is redone);
        otherwise the run ends (its iterations done, its stop rule settled, or its output not finite) or saves
        this checkpoint and goes on."""
        try:
            if self.backtracking.restored(self.state, self.trackers):
                if self.twin is not None:  # the twin goes back with it (its checkpoint is of the same step)
                    self.twin.backtracking.go_back(self.twin.state, self.twin.trackers)
                return True
        except RunError as error:
            self.failure = str(error)
            return False
        if self.state.steps >= config.iterations:
            return False
        if self.follows:
            self.backtracking.save(self.state, self.trackers)
            return True
        if self.stop_early and self.trackers.rules[rule_of(config.stop_rule)].settled(
                self.state.steps, config.stop_rule.endswith("_centred")):
            return False
        self.backtracking.save(self.state, self.trackers)
        return True


def start(runs: list[DIPRun], config: Config, device: torch.device, twins: int = 0) -> tuple:
    """The runs' networks stacked, their Adam, their inputs z0 and each one's ImageRun, on `device`. With `twins`
    k (--sure): the first k runs are the twins of the last k, which read their averages (the SURE rule)."""
    networks, z0, noise = [], [], []
    channels, *shape = runs[0].image_shape[1:] if runs[0].image_shape else runs[0].noisy.shape[1:]
    for _ in runs:  # each run draws what it draws alone: the network, then z0 from its own generator
        torch.manual_seed(config.seed)
        networks.append(SkipNetwork(config.input_depth, channels))
        generator = torch.Generator().manual_seed(config.seed)
        z0.append(torch.rand((1, config.input_depth, *shape), generator=generator) * config.input_scale)
        noise.append(run_generator(device, config.seed))
    # precision and memory format as run() resolved them (or resolved here)
    stacked = stack(networks, device, speed.resolve(config, device, *shape, speed.widest(networks[0]))[0])
    adam = StackedAdam([(stacked.parameters(), [config.learning_rate] * len(runs), [0.9] * len(runs))])
    z0 = torch.stack(z0).to(device)
    images = []
    for r, run in enumerate(runs):
        noisy = run.noisy.to(device=device, dtype=torch.float32)
        state = RunState(stacked, adam, r, z0[r], noisy if run.forward is None else noisy.new_zeros(
            (1, channels, *shape)))
        if r < twins:  # a twin: only the PSNR against its own y; no rule, no going back on its own (NaN: it fails)
            trackers = Trackers(state.average, [], config.iterations)
            images.append(ImageRun(r, noisy, None, state, trackers, Backtracking(state, trackers, float("inf"), 0),
                                   noise[r], False, follows=True))
            continue
        clean = None if run.clean is None else run.clean.to(device=device, dtype=torch.float32)
        rules = make_rules(state.average, config.stop_window, config.stop_patience, config.emv_alpha, run.sigma,
                           config.discrepancy_tau, config.ema)
        twin = images[r - twins] if twins else None
        if twin is not None:
            rules.append(Sure(state.average, run.sigma, probe_of(run.noisy, config).to(device),
                              config.sure_epsilon * run.sigma, twin.state.average, config.stop_patience,
                              average_lag(config.ema)))
        trackers = Trackers(state.average, rules, config.iterations)
        backtracking = Backtracking(state, trackers, config.backtrack_drop, config.max_restores)
        images.append(ImageRun(r, noisy, clean, state, trackers, backtracking, noise[r],
                               config.stop_early or clean is None, partial=Path(run.partial) if run.partial else None,
                               key=run.key, forward=run.forward, twin=twin))
    return stacked, adam, z0, images


def probe_of(noisy: torch.Tensor, config: Config) -> torch.Tensor:
    """The SURE rule's probe b ~ N(0, I) of the image's shape, from its own generator (seed + 10000: apart from
    the noise's seed + 1 + k)."""
    return torch.randn(noisy.shape, generator=torch.Generator().manual_seed(config.seed + 10_000))


def twin_of(run: DIPRun, config: Config) -> DIPRun:
    """The SURE rule's twin of a run: the same constants on y + εb (ε = sure_epsilon·σ, not clipped: the
    divergence is that of the run's map y ↦ x̄_t(y)); no clean image, no checkpoint of its own."""
    epsilon = config.sure_epsilon * run.sigma
    return DIPRun(run.noisy + epsilon * probe_of(run.noisy, config), config, None, run.sigma)


def held_per_pixel(config: Config, channels: int) -> float:
    """Bytes per pixel that one run holds besides its network's optimisation step (training_footprint): its images
    and z0, what its trackers keep (ES-WMV's window among them), its checkpoint (the average and the trackers
    again) and its result's images. Measured on the objects `start` makes, on two small images (with a clean
    image and σ: every rule), so that what does not grow with the pixels cancels."""
    def held(side: int) -> int:
        image = torch.zeros(1, channels, side, side)
        run = DIPRun(image, dataclasses.replace(config, iterations=1), image.clone(), 1.0)
        *_, (one,) = start([run], run.config, torch.device("cpu"))
        results = 3 + 3 * len(one.trackers.rules)  # the final output and average, the oracle, each rule's three
        return held_bytes(one) + results * image.numel() * image.element_size()
    return (held(16) - held(8)) / (16**2 - 8**2)


def denoise(runs: list[DIPRun]) -> list[DenoiseResult | Failed]:
    """Denoise noisy images of one size (a run alone: a list of one) by DIP, each image with its own network, Adam,
    average, stopping rules, backtracking (a run that goes back to its checkpoint redoes its block while the others go
    on) and stop; each gives what it gives alone. With a clean image, PSNR curves against it and the oracle best
    iteration are reported too. The rules that need no clean image always run; with `stop_early` or without a
    clean image a run ends at the first checkpoint after the stop rule fires. A run whose output turns NaN fails alone
    (Failed). Iterations are counted from 0. The results' images are on the CPU."""
    config, n = runs[0].config, len(runs)  # the constants are the first run's: images of one size, one run
    runs = [run if run.sigma is not None else run._replace(sigma=noise_sigma(run.noisy, config)) for run in runs]
    if config.sure and any(run.forward is not None for run in runs):
        raise RunError("the SURE rule is for denoising (its divergence is that of y ↦ x̄): no forward model")
    twins = [twin_of(run, config) for run in runs] if config.sure else []
    device = choose_device(config.device)
    stacked, adam, z0, images = start(twins + runs, config, device, len(twins))
    for image in images[len(twins):]:  # a run cut before goes on from its last checkpoint on disk
        if image.go_on_from_disk(device):
            tqdm.write(f"{image.partial.stem}: going on from its checkpoint at iteration {image.state.steps}")
    active = list(images)
    bar = tqdm(total=config.iterations, disable=not config.progress, leave=False,
               desc=("DIP" if n == 1 else f"DIP batch of {n}") + (" with SURE twins" if twins else ""))

    def forward(chosen: list[int]) -> tuple[torch.Tensor]:  # f_θ(z0 + σ_r n_k), a fresh n_k for each run and step
        return (stacked(torch.stack([z0[r] + config.reg_noise_std * torch.randn(
            z0.shape[1:], generator=images[r].noise, device=device) for r in chosen]), chosen),)

    clock = Clock(len(images), device)

    def end(image: ImageRun) -> None:  # a run ends with its twin; a twin that fails fails its run
        for member in (image, image.twin, *(other for other in images if other.twin is image)):
            if member is not None and member in active:
                active.remove(member)
                clock.stop(member.index)
                if image.follows and image.failure and member is not image:
                    member.failure = f"its SURE twin failed: {image.failure}"

    while active:  # the DIP step of every active run: min_θ ‖f_θ(z0 + σ_r n_k) − y‖², Adam, then the average
        adam.zero_grad()
        stepped = [image.index for image in active]
        (out,), losses = forward_backward(stepped, stacked.vectorise, forward,
                                          lambda i, r, outputs: F.mse_loss(images[r].measured(outputs[0][i]),
                                                                           images[r].noisy))
        adam.step(stepped)
        with torch.no_grad():
            for i, image in enumerate(active):  # twins first: a run's SURE rule reads its twin's new average
                image.take(out[i], config.ema)
        loss_of = {image.index: losses[i] for i, image in enumerate(active)}
        at_checkpoint = [image for image in active if not (
            image.state.steps % config.checkpoint_every and image.state.steps < config.iterations)]
        for image in sorted(at_checkpoint, key=lambda image: image.follows):  # a run before its twin: it may
            if image in active and not image.goes_on(config):  # take the twin back before the twin saves
                end(image)
        for image in at_checkpoint:  # after its twin saved: the checkpoint on disk holds both
            if image in active and not image.follows:
                image.write(config, clock.seconds(image.index) + (  # a run's time includes its twin's
                    clock.seconds(image.twin.index) if image.twin else 0.0))
                bar.set_postfix(psnr_y=f"{image.backtracking.reference:.2f}",
                                loss=f"{loss_of[image.index].item():.2e}")
        bar.update(min((image.state.steps for image in active), default=config.iterations) - bar.n)
    bar.close()
    return [Failed(image.failure) if image.failure else _result(  # a run's time includes its twin's
        image, runs[image.index - len(twins)], image.seconds_before + clock.stop(image.index)
        + (clock.stop(image.twin.index) if image.twin else 0.0), device) for image in images[len(twins):]]


def _result(image: ImageRun, run: DIPRun, seconds: float, device: torch.device) -> DenoiseResult:
    """A run's result, scored on the device, its images moved to the CPU (what crosses processes)."""
    state, trackers, clean = image.state, image.trackers, image.clean
    with torch.no_grad():
        final_output = state.net(state.z0)
    choices = {name: rule.chosen(state.steps - 1, final_output, state.average) for name, rule in
               trackers.rules.items()}
    result = DenoiseResult(
        stop_rule=run.config.stop_rule, choices=choices, final_output=final_output,
        final_average=state.average.clone(), curves={key: curve[: state.steps].tolist() for key, curve in
                                                     trackers.curves.items()}, sigma=run.sigma,
        backtracks=image.backtracking.restores, restores_exhausted=image.backtracking.exhausted,
        iterations_run=image.steps_run, seconds=seconds, device=str(device))
    if clean is not None:
        result.oracle_iteration = trackers.oracle_iteration.item()
        result.oracle_image = trackers.oracle_image
        result.metrics = scores(result, image.noisy, clean)
    return to_cpu(result)


# ---------------------------------------------------------------------------------------------------------------
# Outputs and the command line


def noise_sigma(noisy: torch.Tensor, config: Config, name: str = "the image") -> float | None:
    """σ for the discrepancy principle and SURE: config.sigma, or the noisy image's estimate (if allowed and not
    0); a RunError when the stop rule or --sure needs it and there is none."""
    sigma = config.sigma if config.sigma is not None else estimate_sigma(noisy) if config.estimate_sigma else None
    sigma = sigma if sigma is None or math.isfinite(sigma) else 0.0  # a flat image's estimate is NaN: none
    if (rule_of(config.stop_rule) in ("discrepancy", "sure") or config.sure) and not sigma:
        raise RunError(("--sure" if config.sure else f"stop_rule {config.stop_rule}") + " needs σ: give --sigma" + (
            f" (the estimate for {name} is 0 or undefined)" if config.estimate_sigma
            else ", or leave --estimate_sigma on"))
    return sigma or None


def images_of(sources: list[Source], config: Config, device: torch.device) -> tuple[dict[str, DIPRun], int]:
    """Every image read once before anything is written (bad input stops the run with no folder): each one's DIPRun
    (the noise of the index-th image seeded by seed + 1 + index: images may be added at the end on a resume), and
    the batch size that fits the device's memory (config.batch, or fewer, said); an image that does not fit is
    refused. A run holds its network's footprint and what held_per_pixel measures (ES-WMV's window twice, with
    its checkpoint, and about three dozen images).
    σ for the discrepancy principle: the given one, or each noisy image's estimate."""
    runs, needs, at_once, per_channels = {}, [], concurrent_units(config), {}
    for index, source in enumerate(sources):
        clean = load_clean(source.given, config)
        noisy = add_noise(clean, config, config.seed + 1 + index) if config.add_noise else clean
        runs[source.name] = DIPRun(noisy, config, clean if config.add_noise else None,
                                   noise_sigma(noisy, config, source.name))
        c, h, w = clean.shape[1:]
        if c not in per_channels:  # measured once per channel count, not once per image
            per_channels[c] = (training_footprint(SkipNetwork(config.input_depth, c), config.input_depth),
                               held_per_pixel(config, c))
        footprint, held = per_channels[c][0], per_channels[c][1] * h * w
        k = 2 if config.sure else 1  # with --sure each image runs with its twin: twice the networks (and, at most,
        needs.append(lambda n, f=footprint, h=h, w=w, i=held: at_once * (  # twice what a run holds)
            f.bytes(h, w, k * n, k * n if vectorised(config.batch_mode) else 1) + k * n * i))
        advice = "give a smaller --size (e.g. 512)" if not config.size or config.size > 512 else "use a larger device"
        check_fits(needs[-1](1), device, f"denoising {source.name} ({h}x{w})", advice)
    need = lambda n: max(one(n) for one in needs)  # noqa: E731
    return runs, batch_that_fits(need, config.batch, device, "of the largest image") if config.batch > 1 else 1


def run(config: Config) -> dict[str, Any]:
    """Denoise every image of the config; write the run folder; return the results and the table. Each image is a
    unit of the engine, kept as soon as it is done (units/<image>.pt, under the key of the noisy image, σ and the
    constants; table.csv rewritten); with `resume`, the images of the run `run_name` of the same key and code are
    read back."""
    sources = check_config(config)
    device = choose_device(config.device)
    runs, batch = images_of(sources, config, device)
    runner = make_runner(config)  # Ray connected before anything is written
    seed_everything(config.seed, config.deterministic)
    print(f"DIP denoising on {device}: {len(sources)} image(s), {config.iterations} iterations"
          + (f", up to {batch} images of one size at a time in a batch" if batch > 1 else ""))
    task_config = config if runs_here(config) else dataclasses.replace(config, progress=False)
    channels = speed.widest(SkipNetwork(config.input_depth, 3))
    configs, said = {}, {}  # each image's constants with its precision and memory format resolved (dipkit.speed)
    for s in sources:
        configs[s.name], said[s.name] = speed.resolve(task_config, device, *runs[s.name].noisy.shape[-2:], channels)
    speed.announce(said, device)
    placing = ("images", "folder", "save_every")  # constants that change no image's result
    folder = start_run(config, "dip_denoise", device, resume=config.resume, also_resumable=placing, networks=said)
    keys = {s.name: digest_of(runs[s.name].noisy, runs[s.name].clean, runs[s.name].sigma,  # the noisy image it
                              unit_settings(configs[s.name], placing)) for s in sources}  # sees, σ, settings
    partial = {s.name: folder / "partial" / f"{s.name}.pt" for s in sources}  # a cut run's checkpoint
    units = [Unit(s.name, runs[s.name]._replace(config=configs[s.name], partial=str(partial[s.name]),
                                                key=keys[s.name]),
                  keys[s.name], tuple(runs[s.name].noisy.shape) + (said[s.name],)) for s in sources]
    sources_of, results = {s.name: s for s in sources}, {}

    def keep(unit: Unit, result: DenoiseResult) -> dict:
        results[unit.name] = result
        partial[unit.name].unlink(missing_ok=True)  # done: its checkpoint is no longer needed
        if partial[unit.name].parent.is_dir() and not any(partial[unit.name].parent.iterdir()):
            partial[unit.name].parent.rmdir()
        run = unit.task
        return image_record(folder, unit.name, source_name(sources_of[unit.name].path), run.noisy, run.clean,
                            result, config.noise_level if config.add_noise else None,
                            run.sigma if config.sigma is None else None)

    kept = run_units(folder, units, denoise, keep, resume=config.resume, batch=batch, runner=runner,
                     script="dip_denoise", keep_other_code=config.keep_other_code,
                     expects=("row", "item"), update=lambda records: write_csv(
                         folder / "table.csv", [record["row"] for record in records.values()]))
    kept.check(folder, "image")
    return dict(folder=folder, results=results, table=write_summary(folder, kept.records, device))


def main(argv: list[str] | None = None) -> None:
    run(parse_config(Config, argv, description=__doc__))


if __name__ == "__main__":
    run_main(main)
