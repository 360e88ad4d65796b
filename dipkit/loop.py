"""The pieces of one blind-deblurring run's loop, shared by selfdeblur.py and vdip.py: the run's device and seeds
(prepare), the two-rate Adam of G_x and G_k, the steps under a progress bar with the curve scored every few steps
(Progress; BatchProgress for the runs of a batch), what a run returns (Estimate), and its kernel as an 8-bit PNG."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple

import torch
from tqdm import tqdm

from .batch import StackedAdam, StackedNetworks, learning_rate, run_generator, stacker
from .blind import Problem
from .device import choose_device, seed_everything, synchronize
from .errors import Failed, RunError
from .figures import save_png
from .levin import Scorer


@dataclass
class Estimate:
    image: torch.Tensor  # the deblurred image, (1, 1, H, W) like y
    kernel: torch.Tensor  # the estimated kernel, (K_h, K_w)
    curve: list[dict[str, float]]  # rows: iteration, loss, seconds (without the scoring), psnr_gt, psnr_nb
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



def latent_inputs(problem: Problem, input_channels: int, kernel_input: int, input_scale: float,
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """z_x ~ input_scale·U[0, 1) on the latent grid (the blurred size plus the kernel's, less one), then z_k ~
    input_scale·U[0, 1) of kernel_input values, drawn in this order from the global generator."""
    (h, w), (kh, kw) = problem.blurred.shape[-2:], problem.kernel_size
    z_x = (torch.rand(1, input_channels, h + kh - 1, w + kw - 1) * input_scale).to(device)
    return z_x, (torch.rand(kernel_input) * input_scale).to(device)



class BlindBatch(NamedTuple):
    """The runs of a batch of G_x and G_k (dipkit.batch): their stacked networks, inputs (run first), random
    streams and StackedAdam."""

    image_nets: StackedNetworks
    kernel_nets: StackedNetworks
    z_x: torch.Tensor
    z_k: torch.Tensor
    noise: list[torch.Generator]
    adam: StackedAdam



def blind_batch(problems: list[Problem], configs: list, seeds: list[int], start: Callable,
                device: torch.device) -> BlindBatch:
    """Each run started as it starts alone (`start(problem, config, seed, device)` -> G_x, G_k, z_x, z_k), then its
    random stream; the networks stacked as the first config's batch_mode and speed switches ask; one StackedAdam
    with each run's lr_image (β1 beta1_image) and lr_kernel (β1 0.9), as two_rate_adam gives a run alone."""
    starts = [start(p, c, s, device) + (run_generator(device, s),) for p, c, s in zip(problems, configs, seeds)]
    first = configs[0]
    stack = stacker(first.batch_mode, device, first.bf16, first.compile, first.channels_last)
    image_nets, kernel_nets = stack([s[0] for s in starts]), stack([s[1] for s in starts])
    adam = StackedAdam([(image_nets.parameters(), [c.lr_image for c in configs], [c.beta1_image for c in configs]),
                        (kernel_nets.parameters(), [c.lr_kernel for c in configs], [0.9] * len(configs))])
    return BlindBatch(image_nets, kernel_nets, torch.stack([s[2] for s in starts]), torch.stack([s[3] for s in starts]),
                      [s[4] for s in starts], adam)



def next_learning_rates(adam: StackedAdam, configs: list, step: int) -> None:
    """After main step `step`: each run's two learning rates for the next step (two_rate_adam's MultiStepLR)."""
    adam.set_lr(0, [learning_rate(c.lr_image, step + 1, c.milestones, c.gamma) for c in configs])
    adam.set_lr(1, [learning_rate(c.lr_kernel, step + 1, c.milestones, c.gamma) for c in configs])



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
        seconds = tick - self.start - self.scoring_seconds  # the run's time so far, without the scoring
        scores = self.scorer(estimate().detach(), full=False) if self.scorer is not None else {}
        self.scoring_seconds += time.perf_counter() - tick
        self.curve.append(dict(iteration=done, loss=value, seconds=seconds, **scores))
        self.steps.set_postfix(loss=f"{value:.2e}", **{key: f"{v:.2f}" for key, v in scores.items()})

    def seconds(self, image: torch.Tensor) -> float:
        """The run's time without the scoring; checks that the final image is finite."""
        if not torch.isfinite(image).all():
            raise RunError(f"{self.problem.name}: the image network's output became NaN; try smaller learning rates")
        synchronize(self.device)
        return time.perf_counter() - self.start - self.scoring_seconds



class BatchProgress:
    """The runs of a batch (dipkit.batch) under one progress bar: each run's Progress (its curve, its checks, its
    time), the runs still going (`active`, in order), and the failures: a run whose check fails (a non-finite
    loss or image) is taken out of the batch and comes back as Failed; the others go on."""

    def __init__(self, progress: list[Progress], show: bool = True):
        first = progress[0]
        self.progress, self.failures = progress, {}
        self.steps = tqdm(range(-(first.steps.total - first.iterations), first.iterations), disable=not show,
                          leave=False, desc=f"{first.problem.name} batch of {len(progress)}")

    @property
    def active(self) -> list[int]:
        return [r for r in range(len(self.progress)) if r not in self.failures]

    def after(self, step: int, losses: list[torch.Tensor], estimate: Callable[[int], torch.Tensor],
              allow_non_finite: list[bool] | None = None) -> None:
        """Progress.after for each active run: losses[i] and estimate(i) are the i-th active run's."""
        points = sum(len(p.curve) for p in self.progress)
        for i, r in enumerate(self.active):
            try:
                self.progress[r].after(step, losses[i], lambda i=i: estimate(i),
                                       allow_non_finite=bool(allow_non_finite and allow_non_finite[r]))
            except RunError as error:
                self.failures[r] = str(error)
        if sum(len(p.curve) for p in self.progress) > points:  # a scored step: the runs' mean on the bar
            last = [self.progress[r].curve[-1] for r in self.active if self.progress[r].curve]
            self.steps.set_postfix(runs=len(self.active), **{key: f"{sum(p[key] for p in last) / len(last):.3g}"
                                                             for key in ("loss", "psnr_gt") if last and key in last[0]})

    def finish(self, images: torch.Tensor, estimate: Callable[[int, float], Estimate]) -> list[Estimate | Failed]:
        """Each run's Estimate (estimate(r, its seconds)) once its final image (images[r]) is checked, or Failed.
        A run's seconds, and those of its curve, are its share of the batch's time: the batch's wall-clock time
        (less the run's own scoring) over the runs of the batch, so that a study's seconds add up to its time."""
        outcomes: list[Estimate | Failed] = []
        share = 1 / len(self.progress)
        for r, progress in enumerate(self.progress):
            for point in progress.curve:
                point["seconds"] *= share
            try:
                if r in self.failures:
                    raise RunError(self.failures[r])
                outcomes.append(estimate(r, share * progress.seconds(images[r])))
            except RunError as error:
                outcomes.append(Failed(str(error)))
        self.steps.close()
        return outcomes



def save_kernel_png(path: Path, kernel: torch.Tensor) -> None:
    """Scaled to a maximum of 255, as SelfDeblur (and Levin's gt/kernel*.png) store kernels."""
    k = kernel.detach().float()
    save_png(path, (k / k.max())[None, None])
