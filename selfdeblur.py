"""SelfDeblur: blind deblurring by two untrained generators, and the variants of Brožová's study.

Ren, Zhang, Wang, Hu, Zuo, "Neural Blind Deconvolution Using Deep Priors", CVPR 2020 (github csdwren/SelfDeblur).
The sharp image and the kernel are the outputs of two networks fitted, from scratch, to one blurred image y:

    x = G_x(z_x + 0.001·n_t)   skip network, 8 -> 1 channels, 128 x 5 scales, 16 skip channels, non-local blocks
                               at the 3 deepest scales; z_x ~ 0.1·U[0, 1) of size (H + K_h − 1) x (W + K_w − 1)
    k = G_k(z_k)               Linear(200 -> 1000), ReLU6, Linear(1000 -> K_h·K_w), softmax: k ≥ 0, Σk = 1
    loss = MSE(k ⋆ x, y)       'valid' cross-correlation, so k ⋆ x is H x W with no boundary rule
           (setting repo: 1 − SSIM(k ⋆ x, y) from iteration 1000)

Adam, one optimiser with the learning rates 1e-2 (G_x) and 1e-4 (G_k), halved at 2000, 3000 and 4000; 5000
iterations; the estimate is the centre H x W of x at the end. `--setting paper` (MSE only) is how the paper's numbers
were made; `--setting repo` is the repository's later default.

Variants (Brožová, "Blind image deconvolution based on deep image prior", CTU 2023; ICPRAM 2024), each a switch:
--simpler (SimplerSDB: no non-local blocks, no input perturbation, one loss), --pretrain_iterations 500 (first fit
α·L_blind + (1 − α)·L_no-blur, where L_no-blur pulls the centre of x towards y), --loss_switch N (1 − SSIM from
iteration N; 0: SSIM throughout), --beta1_image (Adam β1 of G_x), --seeds 0 1 2 (one run per seed),
--deterministic; --variants runs several named variants (VARIANTS below) in one command.

Data: the synthetic benchmark (bundled images x random motion kernels, default), --levin_dir (a folder in Levin's
layout, scored by the MATLAB protocol) or --blurred my_photo.png --kernel_size 31 (no metrics).

The data, seeds, variants, scoring, speed and run constants are the study's, shared with vdip.py
(dipkit.study.StudyConstants); the constants below are SelfDeblur's. Runs of one shape (seeds, variants, same-size
images) are stepped together with --batch N: `deblur` below is the one loop, for a run alone and for a batch.

Run   python selfdeblur.py                  the paper's setting on the synthetic benchmark (GPU: about a minute an image)
      python selfdeblur.py --quick          one 64x64 image, 1000 iterations, narrow networks: 30 s on a CPU
      python selfdeblur.py --levin_dir ~/data/levin --setting repo --seeds 0 1 2 3 4
      python selfdeblur.py --variants SelfDeblur SimplerSDB SimplerSDB+pre --seeds 0 1 2 --batch 3
      python selfdeblur.py --help
Writes Results/selfdeblur/<run>/ (see dipkit/study.py): per problem the images and kernels, curve.png/csv,
scatter.png, table.csv, summary.csv, units/ (each finished run), config.json, metrics.json.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Optional

import torch
import torch.nn.functional as F

from dipkit.batch import forward_backward
from dipkit.blind import Problem
from dipkit.blur import centre_of
from dipkit.blind_loop import BlindRun, BlindRuns, Estimate, prepare
from dipkit.cli import parse_config, run_main
from dipkit.errors import Failed
from dipkit.metrics import ssim_loss
from dipkit.networks import KernelGenerator, SkipNetwork
from dipkit.study import StudyConstants, latent_footprint, named_variants, run_study, shape_key, study_problems

# Named variants for --variants: overrides of the constants below (edit or add your own)
VARIANTS: dict[str, dict[str, Any]] = {
    "SelfDeblur": dict(simpler=False),
    "SimplerSDB": dict(simpler=True),
    "SelfDeblur+pre": dict(simpler=False, pretrain_iterations=500),
    "SimplerSDB+pre": dict(simpler=True, pretrain_iterations=500),
    "SimplerSDB-b0.95": dict(simpler=True, beta1_image=0.95),
    "SimplerSDB-b0.99": dict(simpler=True, beta1_image=0.99),
    "SelfDeblur-SSIM2000": dict(simpler=False, loss_switch=2000),
    "SelfDeblur+pre-SSIM2000": dict(simpler=False, pretrain_iterations=500, loss_switch=2000),
    "SelfDeblur-repo": dict(simpler=False, setting="repo"),
}


@dataclass
class Config(StudyConstants):
    # SelfDeblur as published
    setting: Literal["paper", "repo"] = "paper"  # paper: MSE throughout; repo: 1 − SSIM from iteration 1000
    iterations: int = 5000  # optimisation steps
    lr_image: float = 1e-2  # Adam learning rate of G_x
    lr_kernel: float = 1e-4  # Adam learning rate of G_k
    milestones: tuple[int, ...] = (2000, 3000, 4000)  # the learning rates are multiplied by gamma at these steps
    gamma: float = 0.5  # learning-rate factor at each milestone
    beta1_image: float = 0.9  # Adam β1 of G_x (Brožová's study: 0.99); G_k keeps 0.9
    input_channels: int = 8  # channels of z_x
    input_scale: float = 0.1  # z_x, z_k ~ U[0, 1) times this
    channels: int = 128  # channels of G_x at every scale, down and up
    skip_channels: int = 16  # skip channels of G_x at every scale
    scales: int = 5  # scales of G_x
    non_local: bool = True  # non-local blocks at the 3 deepest scales
    reg_noise: float = 0.001  # σ of the fresh perturbation of z_x at each step (0: none)
    kernel_input: int = 200  # size of z_k
    kernel_hidden: int = 1000  # hidden units of G_k
    loss_switch: Optional[int] = None  # first iteration with the 1 − SSIM loss; None: the setting's (paper never, repo 1000)
    # variants
    simpler: bool = False  # SimplerSDB: no non-local blocks, no reg noise, one loss (unless loss_switch is set)
    pretrain_iterations: int = 0  # steps of α·L_blind + (1 − α)·L_no-blur before the main loop (the talk: 500)
    pretrain_alpha: float = 0.9  # α of the pretraining
    quick: bool = False  # the QUICK preset: one 64x64 image, 1000 iterations, 32-channel G_x (30 s on a CPU)

    QUICK: ClassVar[dict[str, Any]] = dict(iterations=1000, milestones=(600, 800, 900), channels=32, skip_channels=8,
                                           kernel_hidden=200)
    LIMITS: ClassVar[dict[str, str]] = dict(
        iterations="[1, inf)", lr_image="(0, inf)", lr_kernel="(0, inf)", milestones="[1, inf)", gamma="(0, 1]",
        beta1_image="[0, 1)", input_channels="[1, inf)", input_scale="(0, inf)", channels="[1, inf)",
        skip_channels="[0, inf)", scales="[1, inf)", reg_noise="[0, inf)", kernel_input="[1, inf)",
        kernel_hidden="[1, inf)", loss_switch="[0, inf)", pretrain_iterations="[0, inf)", pretrain_alpha="[0, 1]",
    )


def loss_switch(config: Config) -> int | None:
    """The first iteration with the 1 − SSIM loss, or None for MSE throughout."""
    if config.loss_switch is not None:
        return config.loss_switch
    return round(1000 * config.schedule_scale) if config.setting == "repo" and not config.simpler else None


# ---------------------------------------------------------------------------------------------------------------
# The SelfDeblur iteration


def networks(config: Config, kernel_size: tuple[int, int]) -> tuple[SkipNetwork, KernelGenerator]:
    deep = [i >= config.scales - 3 and config.non_local and not config.simpler for i in range(config.scales)]
    image_net = SkipNetwork(config.input_channels, 1, (config.channels,) * config.scales,
                            (config.channels,) * config.scales, (config.skip_channels,) * config.scales, deep)
    return image_net, KernelGenerator(kernel_size, config.kernel_input, config.kernel_hidden)


def blind_loss(config: Config, step: int, x: torch.Tensor, k: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The loss of step `step` (negative: the pretraining) for the latent image x and the kernel k."""
    switch = loss_switch(config)
    y_hat = F.conv2d(x, k)  # 'valid' cross-correlation: H x W
    loss = ssim_loss(y_hat, y) if switch is not None and step >= switch else F.mse_loss(y_hat, y)
    if step < 0:  # pretraining: pull the image towards the no-blur solution x = y
        loss = config.pretrain_alpha * loss + (1 - config.pretrain_alpha) * F.mse_loss(centre_of(x, k.shape[-2:]), y)
    return loss


def deblur(runs: list[BlindRun]) -> list[Estimate | Failed]:
    """SelfDeblur: fit G_x and G_k to y, for runs of one shape (batch_key) together, a run alone being a list of
    one. Each run has its own weights, inputs, perturbations, Adam, schedule and loss, and computes what it
    computes alone; forward_backward takes the runs' passes (in turn, or vectorised: dipkit.batch). A run whose
    loss or image turns non-finite fails alone (Failed), the others go on."""
    config, kernel_size = runs[0].config, runs[0].problem.kernel_size  # what batch_key keeps equal
    device = prepare(config.device, runs[0].seed, config.deterministic)
    ys = [run.problem.blurred.to(device) for run in runs]
    batch = BlindRuns(runs, networks, device)
    reg_noise = [0.0 if run.config.simpler else run.config.reg_noise for run in runs]

    def forward(chosen: list[int]) -> tuple[torch.Tensor, torch.Tensor]:  # x = G_x(z_x + σ n_t), k = G_k(z_k)
        z = torch.stack([batch.z_x[r] + reg_noise[r] * torch.randn(batch.z_x.shape[1:], generator=batch.noise[r],
                                                                   device=device) if reg_noise[r] else batch.z_x[r]
                         for r in chosen])
        return batch.image_nets(z, chosen), batch.kernel_nets(batch.z_k[batch.image_nets.index(chosen)], chosen)

    for step in batch.steps:  # negative steps: the pretraining
        batch.adam.zero_grad()
        (x, k), losses = forward_backward(batch.active, batch.image_nets.vectorise, forward, lambda i, r, out: blind_loss(
            runs[r].config, step, out[0][i], out[1][i], ys[r]))
        batch.adam.step(batch.active)
        if step >= 0:  # MultiStepLR's learning rates for the next step
            batch.next_learning_rates(step)
        batch.after(step, losses, lambda i: centre_of(x[i], kernel_size))
    with torch.no_grad():
        x, k = batch.image_nets(batch.z_x), batch.kernel_nets(batch.z_k)
    return batch.finish(x, lambda r, seconds: Estimate(image=centre_of(x[r], kernel_size).cpu(), kernel=k[r, 0, 0].cpu(),
                                                        curve=batch.curves[r], seconds=seconds))


def batch_key(problem: Problem, config: Config) -> tuple:
    """What runs of one batch share: the image and kernel sizes, the networks, the loop's length and the device."""
    return shape_key(problem, config, "simpler")


def footprint(problem: Problem, config: Config):
    """The memory one run holds (estimated): G_x's optimisation step at the latent size (dipkit.study)."""
    return latent_footprint(problem, networks(config, problem.kernel_size)[0], config.input_channels)


# ---------------------------------------------------------------------------------------------------------------
# The command line


def run(config: Config) -> dict[str, Any]:
    """Read the problems and variants (bad input stops here, before a run folder exists), then run every variant
    and seed on every problem; returns the rows and the folder."""
    variants = named_variants(config, VARIANTS, "SimplerSDB" if config.simpler else "SelfDeblur")
    problems = study_problems(config)
    headline = (f"{len(problems)} problem(s) x {len(variants)} variant(s) x {len(config.seeds)} seed(s), "
                f"{next(iter(variants.values())).iterations} iterations ({config.setting} setting)")
    return run_study(config, script="selfdeblur", method="SelfDeblur", headline=headline, problems=problems,
                     variants=variants, deblur=deblur, footprint=footprint, batch_key=batch_key)


def main(argv: list[str] | None = None) -> None:
    run(parse_config(Config, argv, description=__doc__))


if __name__ == "__main__":
    run_main(main)
