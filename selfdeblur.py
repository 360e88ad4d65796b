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

Run   python selfdeblur.py                  the paper's setting on the synthetic benchmark (GPU: about a minute an image)
      python selfdeblur.py --quick          one 64x64 image, 1000 iterations, narrow networks: 30 s on a CPU
      python selfdeblur.py --levin_dir ~/data/levin --setting repo --seeds 0 1 2 3 4
      python selfdeblur.py --variants SelfDeblur SimplerSDB SimplerSDB+pre --seeds 0 1 2
      python selfdeblur.py --help
Writes Results/selfdeblur/<run>/ (see dipkit/report.py): per problem the images and kernels, curve.png/csv,
scatter.png, table.csv, summary.csv, config.json, metrics.json.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Optional

import torch
import torch.nn.functional as F

from dipkit.blind import Problem, centre_of
from dipkit.cli import RunError, parse_config, run_main
from dipkit.device import Speed, normal_like, seed_everything
from dipkit.batch import forward_backward
from dipkit.errors import Failed
from dipkit.levin import Scorer
from dipkit.metrics import ssim_loss
from dipkit.networks import KernelGenerator, SkipNetwork
from dipkit.loop import (BatchProgress, Estimate, Progress, blind_batch, latent_inputs, next_learning_rates, prepare,
                         two_rate_adam)
from dipkit.study import latent_footprint, run_study_script, shape_key, study_problems

# Named variants for --variants: overrides of the constants below (edit or add your own)
VARIANTS: dict[str, dict[str, Any]] = {
    "SelfDeblur": dict(simpler=False),
    "SimplerSDB": dict(simpler=True),
    "SelfDeblur+pre": dict(simpler=False, pretrain_iterations=500),
    "SimplerSDB+pre": dict(simpler=True, pretrain_iterations=500),
    "SimplerSDB-b0.99": dict(simpler=True, beta1_image=0.99),
    "SelfDeblur-SSIM2000": dict(simpler=False, loss_switch=2000),
    "SelfDeblur-repo": dict(simpler=False, setting="repo"),
}


@dataclass
class Config:
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
    variants: tuple[str, ...] = ()  # named variants (VARIANTS) to run in one command; empty: the constants as set
    seeds: tuple[int, ...] = (0,)  # one run per seed: z_x, z_k, the initialisation and the perturbations
    # speed (the same switches as dip_denoise.py; benchmarked in bench/)
    channels_last: bool = False  # channels-last memory format for G_x and its input
    bf16: bool = False  # bfloat16 autocast for G_x's forward and backward (fast on GPUs)
    compile: bool = False  # torch.compile G_x (pays a compilation first)
    # evaluation
    crop: int = 15  # pixels cropped on each side before scoring (Levin's protocol)
    max_shift: float = 5  # sub-pixel shifts up to this many pixels are tried, in steps of 0.25 (the paper's table)
    wide_shift: float = 10  # also report PSNR-GT, SSIM and error ratio with shifts up to this (0: not)
    curve_every: int = 100  # PSNR-GT and PSNR-NB every this many iterations (0: none)
    known_kernel: Literal["sparse", "tv"] = "sparse"  # the error ratio's denominator: Levin's deconvSps, or TV
    known_kernel_weight: float = 3e-3  # deconvSps's prior weight (0.003: SelfDeblur's known-k row; Levin's own 0.0068)
    known_kernel_iterations: int = 200  # deconvSps's CG steps per solve (Levin's own scripts: 70)
    known_kernel_tv: float = 1e-3  # TV weight of the known-kernel deconvolution with known_kernel tv
    # run
    deterministic: bool = False  # deterministic kernels (cuDNN benchmark off); the original was non-deterministic
    device: str = "auto"  # auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps
    results_dir: str = "Results"  # outputs go to <results_dir>/selfdeblur/<run_name>/
    run_name: str = ""  # folder name of this run (default: a time stamp); never overwrites an existing one
    resume: bool = False  # go on with the study <run_name>: its finished runs are read back, the missing ones run
    workers: int = 1  # runs at a time, each in its own process (its share of the CPU cores, or one GPU shared)
    batch: int = 1  # most runs of one shape (seeds, variants, same-size images) stepped together in one process
    batch_mode: Literal["auto", "vmap", "loop"] = "auto"  # vmap: grouped kernels (GPUs); loop: runs in turn (CPUs)
    engine: Literal["local", "ray"] = "local"  # local: here or a process pool; ray: Ray tasks (local or a cluster)
    ray_address: str = ""  # with engine ray: an existing cluster's address (empty: a local Ray with `workers` CPUs)
    gpus_per_run: float = 0.0  # with engine ray: GPUs each run asks for (0.25: four runs share a GPU)
    progress: bool = True  # show a progress bar
    quick: bool = False  # the QUICK preset: one 64x64 image, 1000 iterations, 32-channel G_x (30 s on a CPU)

    QUICK: ClassVar[dict[str, Any]] = dict(images=("camera",), kernel_sizes=(9,), size=64, iterations=1000,
                                           milestones=(600, 800, 900), channels=32, skip_channels=8, kernel_hidden=200,
                                           crop=8, max_shift=4, wide_shift=0, curve_every=100)
    LIMITS: ClassVar[dict[str, str]] = dict(
        kernel_sizes="[1, inf)", size="[1, inf)", noise_level="[0, 1)", data_seed="[0, inf)", kernel_size="[1, inf)",
        iterations="[1, inf)", lr_image="(0, inf)", lr_kernel="(0, inf)", milestones="[1, inf)", gamma="(0, 1]",
        beta1_image="[0, 1)", input_channels="[1, inf)", input_scale="(0, inf)", channels="[1, inf)",
        skip_channels="[0, inf)", scales="[1, inf)", reg_noise="[0, inf)", kernel_input="[1, inf)",
        kernel_hidden="[1, inf)", loss_switch="[0, inf)", pretrain_iterations="[0, inf)", pretrain_alpha="[0, 1]",
        seeds="[0, inf)", crop="[0, inf)", max_shift="[0, inf)", wide_shift="[0, inf)", curve_every="[0, inf)",
        known_kernel_tv="(0, inf)", known_kernel_weight="(0, inf)",
        known_kernel_iterations="[1, inf)", workers="[1, inf)", batch="[1, inf)", gpus_per_run="[0, inf)",
    )


def loss_switch(config: Config) -> int | None:
    """The first iteration with the 1 − SSIM loss, or None for MSE throughout."""
    if config.loss_switch is not None:
        return config.loss_switch
    return 1000 if config.setting == "repo" and not config.simpler else None


def variant_configs(config: Config) -> dict[str, Config]:
    if not config.variants:
        return {"SimplerSDB" if config.simpler else "SelfDeblur": config}
    unknown = [v for v in config.variants if v not in VARIANTS]
    if unknown:
        raise RunError(f"unknown variant(s) {', '.join(unknown)}: choose from {', '.join(VARIANTS)}")
    return {name: dataclasses.replace(config, **VARIANTS[name]) for name in config.variants}


def check_config(config: Config) -> tuple[list[Problem], dict[str, Config]]:
    """What the ranges (Config.LIMITS, checked on parsing) cannot say; reads the problems, so that bad input
    stops here, before run() opens a run folder."""
    variants = variant_configs(config)
    problems = study_problems(config)
    return problems, variants


# ---------------------------------------------------------------------------------------------------------------
# The SelfDeblur iteration


def networks(config: Config, kernel_size: tuple[int, int]) -> tuple[SkipNetwork, KernelGenerator]:
    deep = [i >= config.scales - 3 and config.non_local and not config.simpler for i in range(config.scales)]
    image_net = SkipNetwork(config.input_channels, 1, (config.channels,) * config.scales,
                            (config.channels,) * config.scales, (config.skip_channels,) * config.scales, deep)
    return image_net, KernelGenerator(kernel_size, config.kernel_input, config.kernel_hidden)


def start(problem: Problem, config: Config, seed: int, device: torch.device):
    """A run's networks (on the CPU) and inputs z_x, z_k, drawn from the generator seeded by `seed` in this order."""
    seed_everything(seed, config.deterministic)
    image_net, kernel_net = networks(config, problem.kernel_size)
    return (image_net, kernel_net) + latent_inputs(problem, config.input_channels, config.kernel_input,
                                                   config.input_scale, device)


def blind_loss(config: Config, step: int, x: torch.Tensor, k: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The loss of step `step` (negative: the pretraining) for the latent image x and the kernel k."""
    switch = loss_switch(config)
    y_hat = F.conv2d(x, k)  # 'valid' cross-correlation: H x W
    loss = ssim_loss(y_hat, y) if switch is not None and step >= switch else F.mse_loss(y_hat, y)
    if step < 0:  # pretraining: pull the image towards the no-blur solution x = y
        loss = config.pretrain_alpha * loss + (1 - config.pretrain_alpha) * F.mse_loss(centre_of(x, k.shape[-2:]), y)
    return loss


def deblur(problem: Problem, config: Config, seed: int, scorer: Scorer | None = None) -> Estimate:
    """One SelfDeblur run on one problem: fit G_x and G_k to y; the curve is scored every curve_every steps."""
    device = prepare(config.device, seed, config.deterministic)
    y, kernel_size = problem.blurred.to(device), problem.kernel_size
    speed = Speed(config.channels_last, config.bf16, config.compile)
    image_net, kernel_net, z_x, z_k = start(problem, config, seed, device)
    (image_net, generate), kernel_net, z_x = speed.network(image_net, device), kernel_net.to(device), speed.input(z_x)
    optimiser, scheduler = two_rate_adam(image_net, kernel_net, config.lr_image, config.lr_kernel, config.beta1_image,
                                         config.milestones, config.gamma)
    reg_noise = 0.0 if config.simpler else config.reg_noise
    progress = Progress(problem, seed, scorer, device, config.pretrain_iterations, config.iterations,
                        config.curve_every, config.progress)
    for step in progress.steps:  # negative steps: the pretraining
        z = z_x + reg_noise * normal_like(z_x) if reg_noise else z_x
        x, k = speed.run(generate, z, device), kernel_net(z_k)
        loss = blind_loss(config, step, x, k, y)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if step >= 0:
            scheduler.step()
        progress.after(step, loss, lambda: centre_of(x, kernel_size))
    with torch.no_grad():
        x, k = image_net(z_x), kernel_net(z_k)
    seconds = progress.seconds(x)
    return Estimate(image=centre_of(x, kernel_size).cpu(), kernel=k[0, 0].cpu(), curve=progress.curve, seconds=seconds)


def deblur_batch(problems: list[Problem], configs: list[Config], seeds: list[int],
                 scorers: list[Scorer | None]) -> list[Estimate | Failed]:
    """Runs of one shape (batch_key) made together, each as deblur() makes it alone (dipkit.batch): the N networks'
    forward and backward passes together each step (forward_backward: one of each under vmap, run after run in
    turn), each run with its own weights, inputs, noise, Adam, schedule and loss; a run whose loss or image turns
    non-finite fails alone (Failed), the others go on."""
    config, n = configs[0], len(problems)  # what batch_key keeps equal is read from the first run
    device = prepare(config.device, seeds[0], config.deterministic)
    ys = [p.blurred.to(device) for p in problems]
    kernel_size = problems[0].kernel_size
    image_nets, kernel_nets, z_x, z_k, noise, adam = blind_batch(problems, configs, seeds, start, device)
    reg_noise = [0.0 if c.simpler else c.reg_noise for c in configs]
    runs = BatchProgress([Progress(p, s, scorer, device, c.pretrain_iterations, c.iterations, c.curve_every, False)
                          for p, c, s, scorer in zip(problems, configs, seeds, scorers)], config.progress)

    def forward(chosen: list[int]) -> tuple[torch.Tensor, torch.Tensor]:  # each z_x with its fresh perturbation
        z = torch.stack([z_x[r] + reg_noise[r] * torch.randn(z_x.shape[1:], generator=noise[r], device=device)
                         if reg_noise[r] else z_x[r] for r in chosen])
        return image_nets(z, chosen), kernel_nets(z_k[chosen], chosen)

    for step in runs.steps:  # negative steps: the pretraining
        active = runs.active
        adam.zero_grad()
        (x, k), losses = forward_backward(active, image_nets.vectorise, forward, lambda i, r, out: blind_loss(
            configs[r], step, out[0][i], out[1][i], ys[r]))
        adam.step(active)
        if step >= 0:  # MultiStepLR's learning rates for the next step
            next_learning_rates(adam, configs, step)
        runs.after(step, losses, lambda i: centre_of(x[i], kernel_size))
    with torch.no_grad():
        x, k = image_nets(z_x), kernel_nets(z_k)
    return runs.finish(x, lambda r, seconds: Estimate(image=centre_of(x[r], kernel_size).cpu(), kernel=k[r, 0, 0].cpu(),
                                                       curve=runs.progress[r].curve, seconds=seconds,
                                                       stats=dict(batch_size=n)))


def batch_key(problem: Problem, config: Config) -> tuple:
    """What runs of one batch share: the image and kernel sizes, the networks, the loop's length and the device."""
    return shape_key(problem, config, "simpler")


def footprint(problem: Problem, config: Config) -> int:
    """The memory one run holds (estimated): G_x's optimisation step at the latent size (dipkit.study)."""
    return latent_footprint(problem, networks(config, problem.kernel_size)[0], config.input_channels)


# ---------------------------------------------------------------------------------------------------------------
# The command line


def run(config: Config) -> dict[str, Any]:
    """Check the constants, then run every variant and seed on every problem; returns the rows and the folder."""
    problems, variants = check_config(config)
    headline = (f"{len(problems)} problem(s) x {len(variants)} variant(s) x {len(config.seeds)} seed(s), "
                f"{config.iterations} iterations ({config.setting} setting)")
    return run_study_script(config, script="selfdeblur", method="SelfDeblur", headline=headline, problems=problems,
                            variants=variants, deblur=deblur, footprint=footprint, together=deblur_batch,
                            batch_key=batch_key)


def main(argv: list[str] | None = None) -> None:
    run(parse_config(Config, argv, description=__doc__))


if __name__ == "__main__":
    run_main(main)
