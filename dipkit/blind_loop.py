"""The pieces of the blind-deblurring loop that selfdeblur.py and vdip.py share, for a run alone and a batch alike
(a run alone is a batch of one): what a run is (BlindRun) and what it gives (Estimate); the runs of a batch under
way (BlindRuns: G_x and G_k stacked, their inputs and random streams, the two-rate Adam with its milestones, the
steps under one progress bar, each run's curve scored every few steps, its checks and its time)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, NamedTuple

import torch
from tqdm import tqdm

from . import speed
from .batch import Clock, StackedAdam, learning_rate, run_generator, stack
from .blind import Problem
from .device import choose_device, seed_everything
from .errors import Failed, RunError
from .levin import Scorer


class BlindRun(NamedTuple):
    """One run of a blind-deblurring method: a problem, the constants of its variant, its seed, and what scores its
    curve (None: no scores)."""

    problem: Problem
    config: Any
    seed: int
    scorer: Scorer | None = None


@dataclass
class Estimate:
    image: torch.Tensor  # the deblurred image, (1, 1, H, W) like y
    kernel: torch.Tensor  # the estimated kernel, (K_h, K_w)
    curve: list[dict[str, float]]  # rows: iteration, loss, seconds (without the scoring), psnr_gt, psnr_nb
    seconds: float  # optimisation time (scoring excluded; in a batch, the run's share of the batch's time)
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # other maps to save and show (VDIP's std)
    stats: dict[str, float] = field(default_factory=dict)  # other numbers for the table (skipped steps)


def prepare(device_name: str, seed: int, deterministic: bool) -> torch.device:
    """The device of a run, everything seeded; cuDNN's autotuner as the originals ran it unless deterministic."""
    device = choose_device(device_name)
    seed_everything(seed, deterministic)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not deterministic
    return device


def latent_inputs(problem: Problem, input_channels: int, kernel_input: int, input_scale: float,
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """z_x ~ input_scale·U[0, 1) on the latent grid (the blurred size plus the kernel's, less one), then z_k ~
    input_scale·U[0, 1) of kernel_input values, drawn in this order from the global generator."""
    (h, w), (kh, kw) = problem.blurred.shape[-2:], problem.kernel_size
    z_x = (torch.rand(1, input_channels, h + kh - 1, w + kw - 1) * input_scale).to(device)
    return z_x, (torch.rand(kernel_input) * input_scale).to(device)


class BlindRuns:
    """The runs of one batch under way (runs of one shape: their image and kernel sizes, networks and loop length
    are the first run's). Each run is started as it would start alone: everything seeded by its seed, its networks
    built (`networks(config, kernel_size)` -> G_x, G_k, on the CPU), then z_x and z_k drawn (latent_inputs), then
    its random stream for the steps taken (`noise[r]`); the networks are stacked (dipkit.batch; the precision and
    memory format, dipkit.speed, on G_x only) and one StackedAdam holds each run's lr_image (β1 beta1_image) and
    lr_kernel (β1 0.9), multiplied by gamma at its milestones (SelfDeblur's and VDIP's two-rate Adam with
    MultiStepLR). The steps run from −pretrain_iterations (the pretraining) to
    iterations under one progress bar; every curve_every steps each run's loss is checked and its estimate scored,
    and a run whose loss or image turns non-finite fails and leaves the batch while the others go on."""

    def __init__(self, runs: list[BlindRun], networks: Callable, device: torch.device):
        def start(run: BlindRun) -> tuple:
            seed_everything(run.seed, run.config.deterministic)
            image_net, kernel_net = networks(run.config, run.problem.kernel_size)
            c = run.config
            z_x, z_k = latent_inputs(run.problem, c.input_channels, c.kernel_input, c.input_scale, device)
            return image_net, kernel_net, z_x, z_k, run_generator(device, run.seed)

        first = runs[0].config
        starts = [start(run) for run in runs]
        self.runs, self.device = runs, device
        grid = starts[0][2].shape[-2:]  # the image network's precision and memory format on its grid (dipkit.speed)
        self.image_nets = stack([s[0] for s in starts], device,
                                speed.resolve(first, device, *grid, speed.widest(starts[0][0]))[0])
        self.kernel_nets = stack([s[1] for s in starts], device, first, switches=False)
        self.z_x, self.z_k = torch.stack([s[2] for s in starts]), torch.stack([s[3] for s in starts])
        self.noise = [s[4] for s in starts]
        configs = [run.config for run in runs]
        self.adam = StackedAdam([
            (self.image_nets.parameters(), [c.lr_image for c in configs], [c.beta1_image for c in configs]),
            (self.kernel_nets.parameters(), [c.lr_kernel for c in configs], [0.9] * len(configs))])
        self.curves: list[list[dict[str, float]]] = [[] for _ in runs]
        self.failures: dict[int, str] = {}
        name = runs[0].problem.name + (f" s{runs[0].seed}" if len(runs) == 1 else f" batch of {len(runs)}")
        self.bar = tqdm(range(-first.pretrain_iterations, first.iterations), disable=not first.progress,
                        leave=False, desc=name)
        self.clock = Clock(len(runs), device)

    @property
    def steps(self) -> Iterator[int]:
        """The steps, from −pretrain_iterations (the pretraining) to iterations, under the progress bar; they end
        early once every run has failed."""
        for step in self.bar:
            if not self.active:
                return
            yield step

    @property
    def active(self) -> list[int]:
        """The runs still going, in order."""
        return [r for r in range(len(self.runs)) if r not in self.failures]

    def next_learning_rates(self, step: int) -> None:
        """After main step `step`: each run's two learning rates for the next step (MultiStepLR's)."""
        configs = [run.config for run in self.runs]
        self.adam.set_lr(0, [learning_rate(c.lr_image, step + 1, c.milestones, c.gamma) for c in configs])
        self.adam.set_lr(1, [learning_rate(c.lr_kernel, step + 1, c.milestones, c.gamma) for c in configs])

    def after(self, step: int, losses: list[torch.Tensor], estimate: Callable[[int], torch.Tensor],
              allow_non_finite: Callable[[int], bool] = lambda r: False) -> None:
        """At a scored step (every curve_every main steps, and the last), for each active run (losses[i] and
        estimate(i): the i-th active run's): its loss checked (a non-finite one fails the run, unless
        allow_non_finite(run)), its estimate scored (PSNR-GT, PSNR-NB), its point added to its curve."""
        config = self.runs[0].config
        done, every = step + 1, config.curve_every
        if done <= 0 or not every or (done % every and done != config.iterations):
            return
        for i, r in enumerate(self.active):
            run, value = self.runs[r], losses[i].item()
            if not math.isfinite(value) and not allow_non_finite(r):
                self.fail(r, f"{run.problem.name}: the loss became {value} at iteration {done}; try smaller "
                             "learning rates")
                continue
            seconds = self.clock.seconds(r)
            with self.clock.scoring():
                scores = run.scorer(estimate(i).detach(), full=False) if run.scorer is not None else {}
            self.curves[r].append(dict(iteration=done, loss=value, seconds=seconds, **scores))
        last = [self.curves[r][-1] for r in self.active if self.curves[r]]
        self.bar.set_postfix({key: f"{sum(p[key] for p in last) / len(last):.3g}"
                                for key in ("loss", "psnr_gt", "psnr_nb") if last and key in last[0]})

    def fail(self, run: int, message: str) -> None:
        self.failures[run] = message
        self.clock.stop(run)

    def finish(self, images: torch.Tensor, estimate: Callable[[int, float], Estimate]) -> list[Estimate | Failed]:
        """Each run's Estimate (estimate(r, its seconds)) once its final image (images[r]) is checked, or Failed."""
        outcomes: list[Estimate | Failed] = []
        for r, run in enumerate(self.runs):
            if r not in self.failures and not torch.isfinite(images[r]).all():
                self.fail(r, f"{run.problem.name}: the image network's output became NaN; try smaller learning rates")
            if r in self.failures:
                outcomes.append(Failed(self.failures[r]))
                continue
            outcome = estimate(r, self.clock.stop(r))
            if len(self.runs) > 1:
                outcome.stats["batch_size"] = len(self.runs)
            outcomes.append(outcome)
        self.bar.close()
        return outcomes


def only_run(outcomes: list[Estimate | Failed]) -> Estimate:
    """The Estimate of a run alone, or its failure raised as a RunError."""
    (outcome,) = outcomes
    if isinstance(outcome, Failed):
        raise RunError(outcome.message)
    return outcome
