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

Backtracking (the official code's safeguard): if the PSNR of the output against y falls by more than 5 dB since
the last checkpoint, the run goes back to the checkpoint (kept on the device, refreshed every `checkpoint_every`
iterations) and redoes the iterations: parameters, BatchNorm statistics, Adam state, average, the ES-WMV window,
its minimum, image and patience count, and the oracle are all restored, so the discarded iterations leave no
trace. At most `max_restores` restores per image; after that, drops are accepted (with a warning).

Iterations are counted from 0, as in the official code: iteration k is the (k+1)-th optimisation step, in
metrics.json, table.csv, curve.csv, the figures and the printed lines alike.

Image size: bundled images are resized to 512x512 (the paper-like size); image files (--images path, --folder)
keep their size, centre-cropped to a multiple of 32 as the original does; --size N resizes every image to N x N
(centre-cropped to a square first), --size 0 keeps every image's size.

Run   python dip_denoise.py                          the paper's setting on a bundled 512x512 image (GPU: seconds)
      python dip_denoise.py --quick                  whole images resized to 64x64, 1000 iterations (CPU: minutes)
      python dip_denoise.py --images my_noisy_photo.png --no-add_noise   a real noisy photo: no clean image
      python dip_denoise.py --folder path/to/images   every image of a folder, one table
      python dip_denoise.py --help
Writes Results/dip_denoise/<run>/: per image <name>/DIP.png, <name>/curve.png, <name>/curve.csv and
<name>/denoised.png (averaged, at the ES-WMV choice), <name>/es_wmv.png (the output there); table.csv,
config.json, metrics.json. From Python: `denoise(image, config) -> result`.
"""

from __future__ import annotations

import copy
import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional

import torch
import torch.nn.functional as F
from tqdm import tqdm

from dipkit import figures
from dipkit.figures import save_png
from dipkit.batch import StackedAdam, StackedNetworks, forward_backward, group_runs, run_generator, stacker
from dipkit.cli import RunError, parse_config, run_main
from dipkit.errors import Failed
from dipkit.device import Speed, choose_device, normal_like, seed_everything, synchronize
from dipkit.images import load_image, resolve_image
from dipkit.metrics import psnr, ssim
from dipkit.networks import SkipNetwork
from dipkit.memory import batch_that_fits, check_fits, training_footprint
from dipkit.runs import read_kept, start_run, write_csv, write_json, write_metrics
from dipkit.sources import file_digest, item_names

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
BUNDLED_SIZE = 512  # what size None gives a bundled image (the paper's images are 512x512)


@dataclass
class Config:
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
    # speed
    channels_last: bool = False  # channels-last memory format for the network
    bf16: bool = False  # bfloat16 autocast for the network's forward and backward (fast on GPUs)
    compile: bool = False  # torch.compile the network (pays a compilation first)
    # run
    seed: int = 0  # seeds the noise, the network and its input
    deterministic: bool = False  # ask torch for deterministic kernels
    device: str = "auto"  # auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps
    results_dir: str = "Results"  # outputs go to <results_dir>/dip_denoise/<run_name>/
    run_name: str = ""  # folder name of this run (default: a time stamp); never overwrites an existing one
    resume: bool = False  # go on with the run <run_name>: its finished images read back, the others (added last) run
    batch: int = 1  # most images of one size denoised together in one process (1: one after another)
    batch_mode: Literal["auto", "vmap", "loop"] = "auto"  # vmap: grouped kernels (GPUs); loop: runs in turn (CPUs)
    progress: bool = True  # show a progress bar
    quick: bool = False  # the QUICK preset: whole images resized to 64x64, 1000 iterations (CPU: minutes)

    QUICK: ClassVar[dict[str, Any]] = dict(size=64, iterations=1000, checkpoint_every=50, stop_window=50,
                                           stop_patience=200)
    LIMITS: ClassVar[dict[str, str]] = dict(
        size="[0, inf)",  # and 0 or a multiple of 32 of at least 64 (checked in check_config)
        noise_level="[0, 1]", iterations="[1, inf)", learning_rate="(0, inf)", reg_noise_std="[0, inf)",
        ema="[0, 1)", input_depth="[1, inf)", input_scale="(0, inf)", backtrack_drop="(0, inf]",
        checkpoint_every="[1, inf)", max_restores="[0, inf)", stop_window="[2, inf)", stop_patience="[1, inf)",
        seed="[0, inf)", batch="[1, inf)",
    )


def image_list(config: Config) -> list[str]:
    if not config.folder:
        if not config.images:
            raise RunError("images: give at least one bundled image name or image path (or a folder)")
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


def target_size(name: str, config: Config) -> int:
    """The side an image is resized to, or 0 to keep its size (cropped to a multiple of 32)."""
    if config.size is None:  # an existing file is the user's image; anything else is a bundled one
        return 0 if Path(name).expanduser().is_file() else BUNDLED_SIZE
    return config.size


def load_clean(name: str, config: Config) -> torch.Tensor:
    """The image, centre-cropped to a square and resized to N x N, or kept at its size and centre-cropped to a
    multiple of 32 in each direction (as the original's crop_image); see `Config.size`."""
    size = target_size(name, config)
    if size:
        return load_image(name, (size, size), channels=3)
    image = load_image(name, channels=3)
    (h, w), (full_h, full_w) = ((s // 32) * 32 for s in image.shape[-2:]), image.shape[-2:]
    if h < 64 or w < 64:
        raise RunError(f"image '{name}' is smaller than 64 x 64, the least the five-scale network takes")
    top, left = (full_h - h) // 2, (full_w - w) // 2
    return image[..., top : top + h, left : left + w]


# ---------------------------------------------------------------------------------------------------------------
# The DIP loop


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
    seconds: float = 0.0
    device: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)


class DIPState:
    """Network, optimiser and running average, with checkpoints kept on the device."""

    def __init__(self, noisy: torch.Tensor, config: Config, generator: torch.Generator):
        device = noisy.device
        self.speed = Speed(config.channels_last, config.bf16, config.compile)
        self.net, self.forward = self.speed.network(SkipNetwork(config.input_depth, noisy.shape[1]), device)
        z0 = torch.rand((1, config.input_depth, *noisy.shape[-2:]), generator=generator) * config.input_scale
        self.z0 = self.speed.input(z0.to(device))
        self.optimiser = torch.optim.Adam(self.net.parameters(), lr=config.learning_rate)
        self.average = torch.zeros_like(noisy)
        self.steps = 0  # steps taken since the start (the iteration index)

    def checkpoint(self) -> dict[str, Any]:
        return dict(
            net={k: v.detach().clone() for k, v in self.net.state_dict().items()},
            optimiser=copy.deepcopy(self.optimiser.state_dict()),
            average=self.average.clone(), steps=self.steps,
        )

    def restore(self, checkpoint: dict[str, Any]) -> None:
        self.net.load_state_dict(checkpoint["net"])
        self.optimiser.load_state_dict(copy.deepcopy(checkpoint["optimiser"]))  # never alias the checkpoint
        self.average.copy_(checkpoint["average"])
        self.steps = checkpoint["steps"]


class Trackers:
    """What the run reads off its outputs, kept on the device (no host synchronisation per iteration) and
    checkpointed with the network: the curves (entry k: iteration k), the ES-WMV window and rule (minimum, its
    iteration and averaged image, the patience count, where it fired) and the oracle (best PSNR of the average
    against the clean image)."""

    TENSORS = ("ring", "best_variance", "best_iteration", "wait", "fired_iteration", "stop_image", "stop_output",
               "best_oracle", "oracle_iteration", "oracle_image")
    CURVES = ("psnr_noisy", "psnr_clean", "psnr_clean_average", "variance")

    def __init__(self, image: torch.Tensor, window: int, patience: int, iterations: int):
        device = image.device
        self.window, self.patience = window, patience
        self.curves = {key: torch.full((iterations,), float("nan"), device=device) for key in self.CURVES}
        self.ring = torch.zeros((window, *image.shape[1:]), device=device)  # output k sits at k % window
        self.filled = 0  # outputs in the window so far (host-side: known without a synchronisation)
        self.best_variance = torch.tensor(float("inf"), device=device)
        self.best_iteration = torch.tensor(-1, device=device)  # -1: no minimum yet
        self.wait = torch.tensor(0, device=device)  # iterations since the minimum
        self.fired_iteration = torch.tensor(-1, device=device)  # -1: not fired
        self.stop_image = image.clone()  # the average at the variance minimum
        self.stop_output = image.clone()  # the output at the variance minimum: the official ES-WMV image
        self.best_oracle = torch.tensor(-float("inf"), device=device)
        self.oracle_iteration = torch.tensor(-1, device=device)
        self.oracle_image = image.clone()

    def checkpoint(self) -> dict[str, Any]:
        return dict({name: getattr(self, name).clone() for name in self.TENSORS}, filled=self.filled,
                    curves={key: curve.clone() for key, curve in self.curves.items()})

    def restore(self, checkpoint: dict[str, Any]) -> None:
        for name in self.TENSORS:
            getattr(self, name).copy_(checkpoint[name])
        for key, curve in self.curves.items():
            curve.copy_(checkpoint["curves"][key])  # NaN again from the checkpoint on
        self.filled = checkpoint["filled"]

    def observe(self, i: int, out: torch.Tensor, average: torch.Tensor, noisy: torch.Tensor,
                clean: torch.Tensor | None) -> None:
        """Everything read off output i and the average after it: the PSNRs, the oracle, the window and the rule."""
        self.curves["psnr_noisy"][i] = _psnr_device(out, noisy)
        if clean is not None:
            self.curves["psnr_clean"][i] = _psnr_device(out, clean)
            self.curves["psnr_clean_average"][i] = _psnr_device(average, clean)
            self.observe_oracle(self.curves["psnr_clean_average"][i], i, average)
        if self.observe_output(out, i):
            self.curves["variance"][i] = _window_variance(self.ring)
            self.observe_variance(self.curves["variance"][i], i, out, average)

    @property
    def fired(self) -> bool:
        return self.fired_iteration.item() >= 0  # one synchronisation: asked once per checkpoint

    def observe_output(self, out: torch.Tensor, i: int) -> bool:
        """Put output i in the window; whether the window is full."""
        self.ring[i % self.window] = out[0]
        self.filled += 1
        return self.filled >= self.window

    def observe_variance(self, variance: torch.Tensor, i: int, out: torch.Tensor, average: torch.Tensor) -> None:
        """The ES-WMV rule at iteration i (as the official EarlyStop.check_stop): a new minimum resets the
        patience count; once the count reaches P the rule fires and nothing changes any more."""
        active = self.fired_iteration < 0
        lower = active & (variance < self.best_variance)
        self.best_variance.copy_(torch.where(lower, variance, self.best_variance))
        self.best_iteration.copy_(torch.where(lower, i, self.best_iteration))
        self.stop_image.copy_(torch.where(lower, average, self.stop_image))
        self.stop_output.copy_(torch.where(lower, out, self.stop_output))
        self.wait.copy_(torch.where(lower, 0, torch.where(active, self.wait + 1, self.wait)))
        self.fired_iteration.copy_(torch.where(active & (self.wait >= self.patience), i, self.fired_iteration))

    def observe_oracle(self, psnr_average: torch.Tensor, i: int, average: torch.Tensor) -> None:
        better = psnr_average > self.best_oracle
        self.best_oracle.copy_(torch.where(better, psnr_average, self.best_oracle))
        self.oracle_iteration.copy_(torch.where(better, i, self.oracle_iteration))
        self.oracle_image.copy_(torch.where(better, average, self.oracle_image))


class Backtracking:
    """The official code's safeguard, read once per checkpoint: if the PSNR of the output against y fell by more
    than `drop` dB since the last checkpoint, go back to it (the network and the trackers) and redo the block,
    at most `max_restores` times; after that, drops are accepted with a warning."""

    def __init__(self, state: DIPState, trackers: Trackers, drop: float, max_restores: int):
        self.drop, self.max_restores = drop, max_restores
        self.restores, self.exhausted, self.reference = 0, False, -float("inf")
        self.save(state, trackers)

    def save(self, state: DIPState, trackers: Trackers) -> None:
        self.saved = (state.checkpoint(), trackers.checkpoint())

    def restored(self, state: DIPState, trackers: Trackers) -> int:
        """At a checkpoint: the number of iterations undone (0: none), after one device-to-host transfer of the
        block's PSNRs; a non-finite output stops the run."""
        start = self.saved[0]["steps"]
        block = trackers.curves["psnr_noisy"][start:state.steps].cpu()
        if not torch.isfinite(block).all():
            raise RunError(f"the DIP output became NaN near iteration {state.steps - 1}: try a smaller learning_rate")
        if block.min().item() < self.reference - self.drop:
            if self.restores < self.max_restores:
                state.restore(self.saved[0])
                trackers.restore(self.saved[1])
                self.restores += 1
                return len(block)
            if not self.exhausted:
                tqdm.write(f"warning: PSNR against the noisy image fell by more than {self.drop} dB again after "
                           f"{self.restores} restores; accepting it from now on (iteration {state.steps - 1}); a "
                           "smaller learning_rate may help")
            self.exhausted = True
        self.reference = block[-1].item()
        return 0


def _psnr_device(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """PSNR in dB as a 0-d tensor on the device (no host synchronisation)."""
    return -10 * torch.log10(F.mse_loss(x.detach().clamp(0, 1).float(), reference.float()))


def _window_variance(ring: torch.Tensor) -> torch.Tensor:
    """ES-WMV's variance: the mean over pixels of the variance of the window's outputs (a 0-d tensor)."""
    return ring.var(dim=0, unbiased=False).mean()


def _optional(value: int) -> int | None:
    return None if value < 0 else value


def denoise(image: torch.Tensor | str, config: Config, clean: torch.Tensor | None = None) -> DenoiseResult:
    """Denoise a noisy image (a (1, C, H, W) tensor in [0, 1], or a path/bundled name) by DIP.

    With `clean`, PSNR curves against it and the oracle best iteration are reported too. The rule that needs no
    clean image always runs; with `config.stop_early` or without `clean` the run ends at the first checkpoint
    after it fires. Iterations are counted from 0.
    """
    device = choose_device(config.device)
    noisy = load_image(image, channels=3) if isinstance(image, str) else image
    noisy = noisy.to(device=device, dtype=torch.float32)
    clean = None if clean is None else clean.to(device=device, dtype=torch.float32)
    torch.manual_seed(config.seed)
    state = DIPState(noisy, config, torch.Generator().manual_seed(config.seed))
    trackers = Trackers(state.average, config.stop_window, config.stop_patience, config.iterations)
    backtracking = Backtracking(state, trackers, config.backtrack_drop, config.max_restores)
    stop_early, steps_run = config.stop_early or clean is None, 0
    bar = tqdm(total=config.iterations, disable=not config.progress, leave=False, desc="DIP")
    synchronize(device)
    start = time.perf_counter()
    while state.steps < config.iterations:
        # the DIP step: min_θ ‖f_θ(z0 + σ_p n) − y‖², fresh n each step, then the exponential average
        z = state.z0 + config.reg_noise_std * normal_like(state.z0)
        out = state.speed.run(state.forward, z, device)
        loss = F.mse_loss(out, noisy)
        state.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        state.optimiser.step()
        with torch.no_grad():
            out = out.detach()
            if state.steps == 0:
                state.average.copy_(out)
            else:
                state.average.mul_(config.ema).add_(out, alpha=1 - config.ema)
            trackers.observe(state.steps, out, state.average, noisy, clean)
        state.steps, steps_run = state.steps + 1, steps_run + 1
        bar.update(1)
        if state.steps % config.checkpoint_every and state.steps < config.iterations:
            continue
        undone = backtracking.restored(state, trackers)
        if undone:
            bar.update(-undone)
            continue
        bar.set_postfix(psnr_y=f"{backtracking.reference:.2f}", loss=f"{loss.item():.2e}")
        if stop_early and trackers.fired:
            break
        backtracking.save(state, trackers)
    synchronize(device)
    seconds = time.perf_counter() - start
    bar.close()
    return _result(state, trackers, backtracking, noisy, clean, steps_run, seconds, device)


def _result(state: DIPState, trackers: Trackers, backtracking: Backtracking, noisy: torch.Tensor,
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


class RunOfBatch:
    """Run `run` of a batch seen as a DIPState (its slice of the stacked networks and Adam, its average and step
    count), so that Trackers and Backtracking treat it as a run alone."""

    def __init__(self, networks: StackedNetworks, adam: StackedAdam, run: int, z0: torch.Tensor, noisy: torch.Tensor):
        self.networks, self.adam, self.run, self.z0 = networks, adam, run, z0
        self.average = torch.zeros_like(noisy)
        self.steps = 0

    def net(self, z: torch.Tensor) -> torch.Tensor:
        return self.networks(z[None], [self.run])[0]

    def checkpoint(self) -> dict[str, Any]:
        return dict(net=self.networks.state_of(self.run), optimiser=self.adam.state_of(self.run),
                    average=self.average.clone(), steps=self.steps)

    def restore(self, checkpoint: dict[str, Any]) -> None:
        self.networks.load_state_of(self.run, checkpoint["net"])
        self.adam.load_state_of(self.run, checkpoint["optimiser"])
        self.average.copy_(checkpoint["average"])
        self.steps = checkpoint["steps"]


def denoise_batch(noisies: list[torch.Tensor], config: Config,
                  cleans: list[torch.Tensor | None]) -> list[DenoiseResult | Failed]:
    """denoise() for several noisy images of one size at once (dipkit.batch): one forward and one backward of the N
    networks per step, each image with its own network, Adam, average, ES-WMV rule, backtracking (a run that goes
    back to its checkpoint redoes its block while the others go on) and stop; a run whose output turns NaN fails
    alone (Failed). Each gives what denoise() gives it alone."""
    device, n = choose_device(config.device), len(noisies)
    noisies = [x.to(device=device, dtype=torch.float32) for x in noisies]
    cleans = [None if c is None else c.to(device=device, dtype=torch.float32) for c in cleans]
    networks, z0, noise = [], [], []
    for _ in range(n):  # what DIPState draws for a run alone, in its order: all runs share the seed
        torch.manual_seed(config.seed)
        networks.append(SkipNetwork(config.input_depth, noisies[0].shape[1]))
        generator = torch.Generator().manual_seed(config.seed)
        z0.append(torch.rand((1, config.input_depth, *noisies[0].shape[-2:]), generator=generator) * config.input_scale)
        noise.append(run_generator(device, config.seed))
    stacked = stacker(config.batch_mode, device, config.bf16, config.compile, config.channels_last)(networks)
    adam = StackedAdam([(stacked.parameters(), [config.learning_rate] * n, [0.9] * n)])
    z0 = torch.stack(z0).to(device)
    runs = [RunOfBatch(stacked, adam, r, z0[r], noisies[r]) for r in range(n)]
    trackers = [Trackers(run.average, config.stop_window, config.stop_patience, config.iterations) for run in runs]
    backtracking = [Backtracking(run, t, config.backtrack_drop, config.max_restores) for run, t in zip(runs, trackers)]
    stop_early = [config.stop_early or clean is None for clean in cleans]
    active, failures, steps_run, seconds = list(range(n)), {}, [0] * n, [0.0] * n
    bar = tqdm(total=config.iterations, disable=not config.progress, leave=False, desc=f"DIP batch of {n}")

    def forward(chosen: list[int]) -> tuple[torch.Tensor]:  # each run's z0 with its fresh perturbation
        noise_of = [torch.randn(z0.shape[1:], generator=noise[r], device=device) for r in chosen]
        return (stacked(torch.stack([z0[r] + config.reg_noise_std * n for r, n in zip(chosen, noise_of)]), chosen),)

    synchronize(device)
    start = time.perf_counter()
    while active:  # the DIP step of every active run: its perturbed input, its loss, its Adam step
        adam.zero_grad()
        (out,), _ = forward_backward(active, stacked.vectorise, forward,
                                     lambda i, r, outputs: F.mse_loss(outputs[0][i], noisies[r]))
        adam.step(active)
        with torch.no_grad():
            for i, r in enumerate(active):
                run = runs[r]
                if run.steps == 0:
                    run.average.copy_(out[i])
                else:
                    run.average.mul_(config.ema).add_(out[i].detach(), alpha=1 - config.ema)
                trackers[r].observe(run.steps, out[i].detach(), run.average, noisies[r], cleans[r])
                run.steps, steps_run[r] = run.steps + 1, steps_run[r] + 1
        bar.update(1)
        for r in list(active):  # each run's checkpoint, as denoise() takes it
            run = runs[r]
            if run.steps % config.checkpoint_every and run.steps < config.iterations:
                continue
            try:
                undone = backtracking[r].restored(run, trackers[r])
            except RunError as error:
                failures[r] = str(error)
            else:
                if undone:
                    continue
                if run.steps < config.iterations and not (stop_early[r] and trackers[r].fired):
                    backtracking[r].save(run, trackers[r])
                    continue
            active.remove(r)
            synchronize(device)
            seconds[r] = (time.perf_counter() - start) / n  # its share of the batch's time
    bar.close()
    return [Failed(failures[r]) if r in failures else
            _result(runs[r], trackers[r], backtracking[r], noisies[r], cleans[r], steps_run[r], seconds[r], device)
            for r in range(n)]


# ---------------------------------------------------------------------------------------------------------------
# Outputs and the command line


def add_noise(clean: torch.Tensor, config: Config, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(clean.shape, generator=generator, dtype=torch.float32)
    return (clean + config.noise_level * noise).clamp(0, 1)


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


def read_inputs(sources: list[Source], config: Config, device: torch.device) -> tuple[int, dict[str, tuple]]:
    """Read every image once before anything is written, and check that its run fits the device's memory, so that
    bad input stops the run with no folder; returns the batch size that fits (config.batch, or fewer, said) and
    each image's shape (images of one shape can share a batch)."""
    footprints, largest, shapes = {}, 0, {}
    for source in sources:
        clean = load_clean(source.given, config)
        c, h, w = shapes.setdefault(source.name, tuple(clean.shape))[1:]
        if c not in footprints:
            footprints[c] = training_footprint(SkipNetwork(config.input_depth, c), config.input_depth)
        need = footprints[c](h, w) + (2 * config.stop_window + 12) * c * h * w * 4  # + the ES-WMV window, images
        advice = "give a smaller --size (e.g. 512)" if not config.size or config.size > 512 else "use a larger device"
        check_fits(need, device, f"denoising {source.name} ({h}x{w})", advice)
        largest = max(largest, need)
    batch = batch_that_fits(largest, config.batch, device, "of the largest image") if config.batch > 1 else 1
    return batch, shapes


def images_of(index: int, source: Source, config: Config) -> tuple[torch.Tensor | None, torch.Tensor]:
    """The index-th image of the run, clean and noisy (noise seeded by seed + 1 + index), or (None, the image) for a
    noisy photo."""
    if config.add_noise:
        clean = load_clean(source.given, config)
        return clean, add_noise(clean, config, config.seed + 1 + index)
    return None, load_clean(source.given, config)


def denoise_images(items: list[tuple[int, Source]], config: Config,
                   folder: Path) -> list[tuple[dict, dict, DenoiseResult] | Failed]:
    """Denoise the run's (index, source) items, one alone or several of one size in a batch; write each image's
    folder; returns each one's table row, metrics.json entry and result, or Failed."""
    images = [images_of(index, source, config) for index, source in items]
    if len(items) == 1:
        results = [denoise(images[0][1], config, images[0][0])]
    else:
        results = denoise_batch([noisy for _, noisy in images], config, [clean for clean, _ in images])
    return [result if isinstance(result, Failed) else image_outputs(folder, source, noisy, clean, result)
            for (_, source), (clean, noisy), result in zip(items, images, results)]


def image_outputs(folder: Path, source: Source, noisy: torch.Tensor, clean: torch.Tensor | None,
                  result: DenoiseResult) -> tuple[dict, dict, DenoiseResult]:
    """Write an image's folder; its table row, its metrics.json entry and the result."""
    stem = source.name
    write_image_outputs(folder / stem, stem, noisy, clean, result)
    m = result.metrics
    facts = dict(source=str(source.path), height=noisy.shape[-2], width=noisy.shape[-1],
                 es_wmv_iteration=result.stop_iteration, es_wmv_fired=result.stop_fired,
                 es_wmv_fired_iteration=result.stop_fired_iteration, oracle_iteration=result.oracle_iteration,
                 backtracks=result.backtracks, restores_exhausted=result.restores_exhausted,
                 iterations_run=result.iterations_run, seconds=result.seconds,
                 seconds_per_iteration=result.seconds / max(result.iterations_run, 1))
    row = dict(image=stem, **facts)
    if clean is not None:
        row.update(psnr_noisy=m["noisy"]["psnr"], psnr_final=m["final_output"]["psnr"],
                   psnr_final_average=m["final_average"]["psnr"], psnr_es_wmv=m["es_wmv"]["psnr"],
                   psnr_es_wmv_average=m["es_wmv_average"]["psnr"],
                   psnr_oracle=m["oracle"]["psnr"])
    summary = "" if clean is None else (
        f": noisy {m['noisy']['psnr']:.2f}, final average {m['final_average']['psnr']:.2f}, ES-WMV "
        f"{m['es_wmv']['psnr']:.2f}, averaged {m['es_wmv_average']['psnr']:.2f} ({rule_summary(result)}), oracle {m['oracle']['psnr']:.2f} dB "
        f"(it. {result.oracle_iteration})")
    print(f"{stem:>12} ({noisy.shape[-2]}x{noisy.shape[-1]}){summary}; {result.seconds:.1f} s, "
          f"{result.backtracks} backtracks")
    return row, dict(m, **facts, device=result.device), result


def kept_image(folder: Path, source: Source) -> dict | None:
    """The earlier run's entry for this image (<name>/row.json), if it was made from the same file (its digest);
    None if there is none, if it is damaged, or if the file changed since (said in one line): denoise it again."""
    def read(path: Path) -> dict:
        entry = json.loads(path.read_text())
        if not {"row", "item", "digest"} <= set(entry):
            raise ValueError("not a row.json of this script")
        return entry

    entry = read_kept(folder / source.name / "row.json", read, source.name)
    if entry is not None and entry["digest"] != file_digest(source.path):
        print(f"{source.name}: {source.path} is not the file the earlier run denoised (its content differs); "
              "denoising it again")
        return None
    return entry


def run(config: Config) -> dict[str, Any]:
    """Denoise every image of the config; write the run folder; return the results and the table. Each finished
    image is kept at once (<image>/row.json, with its file's digest, and table.csv rewritten); with `resume`, the
    images of the run `run_name` that have their row.json, made from the same file, are read back, not denoised
    again. Images may be added on a resume, at the end of the list: the noise of the index-th image is seeded by
    seed + 1 + index."""
    sources = check_config(config)
    device = choose_device(config.device)
    batch, shapes = read_inputs(sources, config, device)
    seed_everything(config.seed, config.deterministic)
    print(f"DIP denoising on {device}: {len(sources)} image(s), {config.iterations} iterations"
          + (f", up to {batch} images of one size at a time in a batch" if batch > 1 else ""))
    folder = start_run(config, "dip_denoise", device, resume=config.resume, also_resumable=("images", "folder"))
    entries, results, todo, failed = {}, {}, [], []
    for index, source in enumerate(sources):
        entry = kept_image(folder, source) if config.resume else None
        if entry is not None:
            print(f"{source.name:>12}: kept from the earlier run")
            entries[source.name] = entry
        else:
            todo.append((index, source))
    for unit in group_runs(todo, lambda item: shapes[item[1].name], batch):
        for (_, source), done in zip(unit, denoise_images(unit, config, folder)):
            if isinstance(done, Failed):
                print(f"{source.name:>12}: failed: {done.message}")
                failed.append(f"{source.name}: {done.message}")
                continue
            row, item, results[source.name] = done
            entries[source.name] = dict(row=row, item=item, digest=file_digest(source.path))
            write_json(folder / source.name / "row.json", entries[source.name])
        write_csv(folder / "table.csv", [entries[s.name]["row"] for s in sources if s.name in entries])
    if failed:
        raise RunError(f"{len(failed)} image(s) failed (the others are kept in {folder}; --resume denoises these "
                       "again): " + "; ".join(failed))
    table = [entries[s.name]["row"] for s in sources]
    per_image = {s.name: entries[s.name]["item"] for s in sources}
    summary = {key: statistics.fmean(row[key] for row in table) for key in table[0] if key.startswith("psnr_")}
    write_metrics(folder, "dip_denoise", summary, per_image, sum(row["seconds"] for row in table), str(device),
                  iterations_counted_from=0)
    print(f"wrote {folder}")
    return dict(folder=folder, results=results, table=table)


def main(argv: list[str] | None = None) -> None:
    run(parse_config(Config, argv, description=__doc__))


if __name__ == "__main__":
    run_main(main)
