"""VDIP: variational deep image prior for blind deblurring, with the sparse and the extreme-channel priors.

Huo, Masoumzadeh, Kushol, Yang, "Blind Image Deconvolution Using Variational Deep Image Prior", IEEE TPAMI 2023
(arXiv 2202.00179; github Dong-Huo/VDIP-Deconvolution). SelfDeblur's two generators, but the image network outputs
a per-pixel Gaussian q(x) = Π N(μ_i, σ_i²) instead of one image, and the loss is a (scaled) negative ELBO:

    μ, σ = G_x(z_x)          skip network 3 -> 2·3 channels (sigmoid on all), as SelfDeblur's otherwise; a grey
                             image is replicated to RGB as VDIP's scripts do; no input perturbation
    k = G_k(z_k)             SelfDeblur's kernel generator, shared by the colour channels
    x̃ = μ + σ ⊙ ε            one sample per step
    loss = data(x̃) + λ_t · (−Σ log σ + prior(μ, σ) + 10 · ½‖k‖²)        for steps < 2000
         = 1 − SSIM(k ⋆ μ, y)                                            from step 2000 on (the mean only)
    data = (½‖r‖² + ¼ (‖∂_x r‖² + ‖∂_y r‖²) + ⅛ (‖∂_xx r‖² + ‖∂_xy r‖² + ‖∂_yy r‖²)) / (3 H' W'),  r = k ⋆ x̃ − y
                             (Shan et al.'s derivatives Θ = {∂0, ∂x, ∂y, ∂xx, ∂xy, ∂yy}, weights 2^−order)

prior (VDIP-Sparse): ¼ Σ_d E[(∂_d x)²] / E[(∂_d x)²]^detached, an IRLS form of a log-gradient prior on the posterior
second moments. prior (VDIP-Extreme): the same IRLS form of the dark channel (min over colours and a 35 x 35 window)
of a sample of x² and of the bright channel of (1 − x)², each sampled from its Gaussian approximation. λ_t starts at
0.1 (Sparse) or 1e-4 (Extreme) and is divided by 10 every 1000 steps. Before the main loop, 500 steps fit [μ, σ] to
[y, 0] and k to a flat kernel (5 in the Lai-uniform Extreme script: VDIP-Extreme-lai-uniform-orig). Adam 1e-2 (G_x)
and 1e-4 (G_k), halved at 2000, 3000 and 4000; 5000 steps; the estimate is the centre of μ (the channel mean for a
grey image); σ at the last variational step is the uncertainty map.

Corrected here; each of the code's behaviours is one switch away (--original_bugs NAME ...), and the -orig variants
turn all of them on, which is VDIP as published:
  first_order_twice  the code adds ¼ Σ_d ‖k ⋆ ∂_d x̃ − ∂_d y‖², which is the first-order term again
  mixed_twice        the code sums both ordered pairs ∂x∂y and ∂y∂x, which are the same array: ∂xy counted twice
  bright_variance    the code's variance of (1 − x)² is 4σ² + 4μ²σ² + 2σ⁴; the right one is 4(1 − μ)²σ² + 2σ⁴
  nan_skip           the code's extreme prior: unclamped samples of x², std √(Var + 1e-32), IRLS bias 1e-45 (the
                     smallest float32, 1.4e-45), and steps whose gradient holds a NaN skipped silently (an infinite
                     one is taken); here the samples are clamped at 0, the std is σ√(4m² + 2σ²), the bias 1e-6

Data, scoring, seeds, speed and run constants as selfdeblur.py (dipkit.study.StudyConstants): the synthetic
benchmark (default), --levin_dir, --blurred my_photo.png --kernel_size 31; --batch N steps runs of one shape
together (`deblur` below is the one loop, for a run alone and a batch). --variants runs several of VDIP's named
variants (VARIANTS below) in one command. To compare with SelfDeblur's variants on the same problems and seeds,
run selfdeblur.py with the same data flags, then
python -m dipkit.compare Results/selfdeblur/RUN Results/vdip/RUN --out Results/comparison.

Run   python vdip.py                        VDIP-Sparse (corrected) on the synthetic benchmark (GPU)
      python vdip.py --quick                one 64x64 image, 1000 iterations, narrow networks: about a minute on a CPU
      python vdip.py --variants VDIP-Sparse VDIP-Extreme --seeds 0 1 2
      python vdip.py --levin_dir ~/data/levin --variants VDIP-Std VDIP-Sparse VDIP-Extreme
      python vdip.py --help
Writes Results/vdip/<run>/ as selfdeblur.py (see dipkit/study.py), plus <problem>_std.png: the σ maps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Literal, Optional

import torch
import torch.nn.functional as F

from dipkit.batch import StackedAdam, forward_backward
from dipkit.blind import Problem
from dipkit.blind_loop import BlindRun, BlindRuns, Estimate, prepare
from dipkit.blur import blur_valid, centre_of
from dipkit.cli import RunError, parse_config, run_main
from dipkit.errors import Failed
from dipkit.metrics import ssim_loss
from dipkit.networks import KernelGenerator, SkipNetwork
from dipkit.study import StudyConstants, latent_footprint, named_variants, run_study, shape_key, study_problems
from dipkit.tv import forward_differences

# Named variants for --variants: overrides of the constants below (edit or add your own)
VARIANTS: dict[str, dict[str, Any]] = {
    "VDIP-Sparse": dict(prior="sparse"),
    "VDIP-Extreme": dict(prior="extreme"),
    "VDIP-Std": dict(prior="none"),  # the data term alone ("VDIP-Std" in the code's comment)
    # VDIP as published: the code's behaviour, all of it (-orig), and the Lai-uniform Extreme script, which
    # pretrains for 5 steps where the other three scripts take 500
    "VDIP-Sparse-orig": dict(prior="sparse", original_bugs=("first_order_twice", "mixed_twice")),
    "VDIP-Extreme-orig": dict(prior="extreme", original_bugs=("first_order_twice", "mixed_twice", "bright_variance",
                                                              "nan_skip")),
    "VDIP-Extreme-lai-uniform-orig": dict(prior="extreme", pretrain_iterations=5,
                                          original_bugs=("first_order_twice", "mixed_twice", "bright_variance",
                                                         "nan_skip")),
    # one of the code's behaviours at a time on the corrected VDIP-Extreme, and its 5 pretraining steps alone
    "VDIP-Extreme-twice": dict(prior="extreme", original_bugs=("first_order_twice",)),
    "VDIP-Extreme-mixed": dict(prior="extreme", original_bugs=("mixed_twice",)),
    "VDIP-Extreme-bright": dict(prior="extreme", original_bugs=("bright_variance",)),
    "VDIP-Extreme-nan": dict(prior="extreme", original_bugs=("nan_skip",)),
    "VDIP-Extreme-pre5": dict(prior="extreme", pretrain_iterations=5),
}
ORIGINAL_BUGS = ("first_order_twice", "mixed_twice", "bright_variance", "nan_skip")
PRIOR_WEIGHT = {"sparse": 0.1, "extreme": 1e-4, "none": 0.0}  # λ_0 of each prior (the code's noise_sigma)
ORIGINAL_BIAS = 1e-45  # the code's IRLS bias of the extreme prior; 1.4e-45 (the smallest float32) once added


@dataclass
class Config(StudyConstants):
    # VDIP's constants as published (the Lai scripts); the code's bugs are corrected unless original_bugs names them
    prior: Literal["sparse", "extreme", "none"] = "sparse"  # VDIP-Sparse, VDIP-Extreme or VDIP-Std (data term only)
    prior_weight: Optional[float] = None  # λ_0; None: the prior's own (sparse 0.1, extreme 1e-4)
    prior_decay_every: int = 1000  # λ is divided by 10 every this many steps
    kernel_l2: float = 10.0  # weight of ½‖k‖² in the prior
    extreme_window: int = 35  # side of the dark and bright channels' window
    extreme_bias: float = 1e-6  # bias of the extreme prior's IRLS denominators (the code: 1e-45, see nan_skip)
    colour_channels: Literal[1, 3] = 3  # 3: a grey image replicated to RGB as VDIP's scripts; 1: grey only
    iterations: int = 5000  # optimisation steps after the pretraining
    pretrain_iterations: int = 500  # steps fitting [μ, σ] to [y, 0] and k to a flat kernel (Lai-uniform Extreme: 5)
    loss_switch: Optional[int] = 2000  # from this step on the loss is 1 − SSIM(k ⋆ μ, y); None: the ELBO throughout
    lr_image: float = 1e-2  # Adam learning rate of G_x
    lr_kernel: float = 1e-4  # Adam learning rate of G_k
    milestones: tuple[int, ...] = (2000, 3000, 4000)  # the learning rates are multiplied by gamma at these steps
    gamma: float = 0.5  # learning-rate factor at each milestone
    beta1_image: float = 0.9  # Adam β1 of G_x; G_k keeps 0.9
    input_channels: int = 3  # channels of z_x
    input_scale: float = 0.1  # z_x, z_k ~ U[0, 1) times this
    channels: int = 128  # channels of G_x at every scale, down and up
    skip_channels: int = 16  # skip channels of G_x at every scale
    scales: int = 5  # scales of G_x
    non_local: bool = True  # non-local blocks at the 3 deepest scales
    kernel_input: int = 200  # size of z_k
    kernel_hidden: int = 1000  # hidden units of G_k
    original_bugs: tuple[str, ...] = ()  # the code's: first_order_twice, mixed_twice, bright_variance, nan_skip
    quick: bool = False  # the QUICK preset: one 64x64 image, 1000 iterations, every schedule scaled by 1/5

    SCHEDULE: ClassVar[tuple[str, ...]] = StudyConstants.SCHEDULE + ("prior_decay_every",)
    QUICK: ClassVar[dict[str, Any]] = dict(iterations=1000, pretrain_iterations=100, loss_switch=400,
                                           prior_decay_every=200, milestones=(400, 600, 800), channels=32,
                                           skip_channels=8, kernel_hidden=200)
    LIMITS: ClassVar[dict[str, str]] = dict(
        prior_weight="[0, inf)", prior_decay_every="[1, inf)", kernel_l2="[0, inf)", extreme_window="[1, inf)",
        extreme_bias="(0, inf)", iterations="[1, inf)", pretrain_iterations="[0, inf)", loss_switch="[0, inf)",
        lr_image="(0, inf)", lr_kernel="(0, inf)", milestones="[1, inf)", gamma="(0, 1]", beta1_image="[0, 1)",
        input_channels="[1, inf)", input_scale="(0, inf)", channels="[1, inf)", skip_channels="[0, inf)",
        scales="[1, inf)", kernel_input="[1, inf)", kernel_hidden="[1, inf)",
    )


def check_config(config: Config) -> tuple[list[Problem], dict[str, Config]]:
    """The problems and variants, after the checks the ranges (Config.LIMITS) cannot make: bad input stops here,
    before run() opens a run folder."""
    unknown = set(config.original_bugs) - set(ORIGINAL_BUGS)
    if unknown:
        raise RunError(f"unknown original_bugs {', '.join(sorted(unknown))}: choose from {', '.join(ORIGINAL_BUGS)}")
    variants = named_variants(config, VARIANTS, "VDIP-" + {"sparse": "Sparse", "extreme": "Extreme",
                                                          "none": "Std"}[config.prior],
                              " (SelfDeblur's variants run in selfdeblur.py; python -m dipkit.compare merges the runs)")
    problems = study_problems(config)
    extreme = any(v.prior == "extreme" for v in variants.values())
    for p in problems:
        latent = min(s + k - 1 for s, k in zip(p.blurred.shape[-2:], p.kernel_size))
        if latent <= 2**config.scales:  # G_x halves it `scales` times; its deepest batch norm needs 2 x 2 pixels
            raise RunError(f"{p.name}: a {latent}-pixel latent image is too small for {config.scales} scales (needs "
                           f"more than {2**config.scales}); lower scales")
        if extreme and config.extreme_window > latent:
            raise RunError(f"{p.name}: the extreme prior's {config.extreme_window}-pixel window exceeds the "
                           f"{latent}-pixel latent image; lower extreme_window")
    return problems, variants


# ---------------------------------------------------------------------------------------------------------------
# The variational objective


def data_term(residual: torch.Tensor, latent_pixels: int, first_order_twice: bool = False,
              mixed_twice: bool = False) -> torch.Tensor:
    """Shan et al.'s multi-derivative misfit of r = k ⋆ x̃ − y over C·H'·W': Θ = {∂0, ∂x, ∂y, ∂xx, ∂xy, ∂yy} with
    weights ½ · 2^−order, ½‖r‖² + ¼ (‖∂_x r‖² + ‖∂_y r‖²) + ⅛ (‖∂_xx r‖² + ‖∂_xy r‖² + ‖∂_yy r‖²).
    The code's misfit differs twice: it sums the four ordered pairs ∂_d ∂_e, and ∂_x ∂_y r = ∂_y ∂_x r, so ∂xy has
    weight ¼ (`mixed_twice`); and it adds ¼ Σ_d ‖k ⋆ ∂_d x̃ − ∂_d y‖², which is ∂_d r again since the convolution
    commutes with differences, so the first-order weight is ½ (`first_order_twice`)."""
    (dv, dh), weight = forward_differences(residual), 0.5 if first_order_twice else 0.25
    vv, vh = forward_differences(dv)
    hh = forward_differences(dh)[1]
    second = vv.square().sum() + hh.square().sum() + (2 if mixed_twice else 1) * vh.square().sum()
    total = 0.5 * residual.square().sum() + weight * (dv.square().sum() + dh.square().sum()) + 0.125 * second
    return total / latent_pixels


def squared_moments(mu: torch.Tensor, sigma: torch.Tensor, bright: bool = False, original_variance: bool = False,
                    stable: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of x² (bright: (1 − x)²) for x ~ N(μ, σ²): E = m² + σ², Var = σ²(4m² + 2σ²)
    with m = μ (bright: 1 − μ). `original_variance`: the code's bright variance σ²(4 + 4μ² + 2σ²), without the
    −8μσ² cross term. The standard deviation is σ·√(4m² + 2σ²); `stable=False` takes √(Var + 1e-32) as the code
    does (1e-32 is a normal float32; both forms have a finite slope, 0 for the code's, where σ = 0)."""
    m = 1 - mu if bright else mu
    a = (4 + 4 * mu.square() if bright and original_variance else 4 * m.square()) + 2 * sigma.square()
    return m.square() + sigma.square(), sigma * a.sqrt() if stable else (sigma.square() * a + 1e-32).sqrt()


def extreme_channel(values: torch.Tensor, window: int) -> torch.Tensor:
    """min over the colours and a window x window neighbourhood ('valid'), as separable minimum filters."""
    values = values.amin(dim=1, keepdim=True)
    values = -F.max_pool2d(-values, (window, 1), stride=1)
    return -F.max_pool2d(-values, (1, window), stride=1)


def sparse_prior(mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """¼ Σ_d Σ E[g_d²] / (E[g_d²] + 1e-6)^detached over C(H'−1)(W'−1), E[g²] = (μ_i − μ_j)² + σ_i² + σ_j²: its
    gradient is that of ¼ Σ log E[g²], an IRLS (Jeffreys-type) gradient prior on the posterior's second moments."""
    variance = sigma.square()
    total = 0
    for dm, dv in zip(forward_differences(mu), (variance[..., 1:, :] + variance[..., :-1, :],
                                        variance[..., :, 1:] + variance[..., :, :-1])):
        moment = dm.square() + dv
        total = total + (moment / (moment.detach() + 1e-6)).sum()
    c, h, w = mu.shape[-3:]
    return total / (4 * c * (h - 1) * (w - 1))


def extreme_prior(mu: torch.Tensor, sigma: torch.Tensor, window: int, bias: float = 1e-6,
                  original_variance: bool = False, original_numerics: bool = False,
                  normal: Callable[[torch.Size], torch.Tensor] | None = None) -> torch.Tensor:
    """The dark channel of a sample of x² and the bright channel of a sample of (1 − x)², each sampled from the
    Gaussian with the mean and standard deviation of squared_moments, each in the IRLS form D / (D^detached + bias).
    The samples are clamped at 0 (a square is never negative; its Gaussian approximation is); `original_numerics`:
    no clamp and √(Var + 1e-32), as the code; with its 1e-45 bias (1.4e-45 in float32) a sample near 0 gives a
    gradient of up to 1/1.4e-45, beyond float32 (infinite), and samples below 0 flip the IRLS weight's sign.
    `normal(shape)` draws the samples' noise (default: the device's generator)."""
    normal = normal or (lambda shape: torch.randn(shape, device=mu.device, dtype=mu.dtype))
    total = 0
    for bright in (False, True):
        mean, std = squared_moments(mu, sigma, bright, original_variance, stable=not original_numerics)
        sample = mean + std * normal(mean.shape)
        channel = extreme_channel(sample if original_numerics else sample.clamp(min=0), window)
        total = total + (channel / (channel.detach() + bias)).sum()
    return total / (4 * channel.shape[-2] * channel.shape[-1])


def prior_term(config: Config, mu: torch.Tensor, sigma: torch.Tensor, kernel: torch.Tensor,
               normal: Callable[[torch.Size], torch.Tensor] | None = None) -> torch.Tensor:
    """−(−KL) of the code: −Σ log σ / (C H' W') + the image prior + kernel_l2 · ½‖k‖² (`normal`: the extreme
    prior's noise)."""
    entropy = sigma.clamp(min=1e-45).log().mean()
    if config.prior == "sparse":
        image = sparse_prior(mu, sigma)
    else:
        bugs = config.original_bugs
        original = "nan_skip" in bugs
        image = extreme_prior(mu, sigma, config.extreme_window, ORIGINAL_BIAS if original else config.extreme_bias,
                              "bright_variance" in bugs, original, normal)
    return -entropy + image + config.kernel_l2 * 0.5 * kernel.square().sum()


def prior_weight(config: Config, step: int) -> float:
    """λ_t: λ_0 divided by 10 every prior_decay_every steps."""
    start = PRIOR_WEIGHT[config.prior] if config.prior_weight is None else config.prior_weight
    return start * 0.1 ** (step // config.prior_decay_every)


# ---------------------------------------------------------------------------------------------------------------
# The VDIP iteration


def networks(config: Config, kernel_size: tuple[int, int]) -> tuple[SkipNetwork, KernelGenerator]:
    deep = [i >= config.scales - 3 and config.non_local for i in range(config.scales)]
    image_net = SkipNetwork(config.input_channels, 2 * config.colour_channels, (config.channels,) * config.scales,
                            (config.channels,) * config.scales, (config.skip_channels,) * config.scales, deep)
    return image_net, KernelGenerator(kernel_size, config.kernel_input, config.kernel_hidden)


def vdip_loss(config: Config, step: int, out: torch.Tensor, k: torch.Tensor, y: torch.Tensor,
              normal: Callable[[torch.Size], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The loss of step `step` (negative: the pretraining) from G_x's output [μ, σ] and the kernel k, and σ where
    the step is a variational one (its sample's noise drawn by `normal(shape)`)."""
    c, kernel_size = config.colour_channels, k.shape[-2:]
    mu, sigma = out[:, :c], out[:, c:]
    if step < 0:  # pretraining: [μ, σ] -> [y, 0] (the no-blur image, σ = 0), k -> flat
        target = torch.cat([y, torch.zeros_like(y)], dim=1)
        return F.mse_loss(centre_of(out, kernel_size), target) + F.mse_loss(k, torch.full_like(k, 1 / k[0, 0].numel())), None
    if config.loss_switch is not None and config.loss_switch <= step:  # the mean alone, no prior and no sampling
        return ssim_loss(blur_valid(mu, k), y), None
    # the negative ELBO with one sample
    bugs = config.original_bugs
    sample = mu + sigma * normal(sigma.shape)
    loss = data_term(blur_valid(sample, k) - y, c * out.shape[-2] * out.shape[-1], "first_order_twice" in bugs,
                     "mixed_twice" in bugs)
    if config.prior != "none":
        loss = loss + prior_weight(config, step) * prior_term(config, mu, sigma, k, normal)
    return loss, sigma.detach()


def deblur(runs: list[BlindRun]) -> list[Estimate | Failed]:
    """VDIP: the pretraining, the ELBO steps, then 1 − SSIM on the mean, for runs of one shape (batch_key) together,
    a run alone being a list of one; each run computes what it computes alone (dipkit.batch, selfdeblur.py). A run
    with the code's nan_skip drops its steps whose gradient holds a NaN, alone; a run whose loss or image turns
    non-finite fails alone (Failed), the others go on."""
    config, kernel_size = runs[0].config, runs[0].problem.kernel_size  # what batch_key keeps equal
    device, c, n = prepare(config.device, runs[0].seed, config.deterministic), config.colour_channels, len(runs)
    ys = [run.problem.blurred.to(device).expand(1, c, -1, -1) for run in runs]
    batch = BlindRuns(runs, networks, device)
    skip_nan = ["nan_skip" in run.config.original_bugs for run in runs]
    skipped, infinite, sigmas = [0] * n, [0] * n, [None] * n

    def loss(step: int, i: int, r: int, out: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        value, sigma = vdip_loss(runs[r].config, step, out[0][i], out[1][i], ys[r],
                                 lambda shape: torch.randn(shape, generator=batch.noise[r], device=device))
        sigmas[r] = sigmas[r] if sigma is None else sigma  # σ of the last variational step: the uncertainty map
        return value

    for step in batch.steps:  # negative steps: the pretraining
        active = batch.active
        batch.adam.zero_grad()
        (out, k), losses = forward_backward(active, batch.image_nets.vectorise, lambda rs: (
            batch.image_nets(batch.z_x[batch.image_nets.index(rs)], rs),  # the runs' inputs gathered on the device
            batch.kernel_nets(batch.z_k[batch.image_nets.index(rs)], rs)), lambda i, r, o: loss(step, i, r, o))
        take = active
        if any(skip_nan):  # the code's checkNaN in its main loop: a step whose gradient holds a NaN is dropped
            nan, finite = gradient_checks(batch.adam, batch.image_nets.index(active))
            take = [r for r, bad in zip(active, nan) if not (skip_nan[r] and step >= 0 and bad)]
            for r, bad, ok in zip(active, nan, finite):
                skipped[r] += skip_nan[r] and step >= 0 and bad
                infinite[r] += skip_nan[r] and r in take and not ok  # taken, as the code does: Adam spreads the NaN
        batch.adam.step(take)
        if step >= 0:  # MultiStepLR's learning rates for the next step
            batch.next_learning_rates(step)
        batch.after(step, losses, lambda i: centre_of(out[i][:, :c], kernel_size).mean(1, keepdim=True),
                    lambda r: skip_nan[r])
    with torch.no_grad():
        out, k = batch.image_nets(batch.z_x), batch.kernel_nets(batch.z_k)
    return batch.finish(out, lambda r, seconds: estimate_of(
        runs[r].config, out[r], k[r], sigmas[r], kernel_size, batch.curves[r], seconds,
        dict(skipped_steps=skipped[r], infinite_steps=infinite[r]) if skip_nan[r] else {}))


def estimate_of(config: Config, out: torch.Tensor, k: torch.Tensor, sigma_map: torch.Tensor | None,
                kernel_size: tuple[int, int], curve: list[dict], seconds: float, stats: dict) -> Estimate:
    """A run's result: the centre of μ (the channel mean), its kernel, and σ of the last variational step."""
    c = config.colour_channels
    if sigma_map is None:  # no variational step was taken
        sigma_map = out[:, c:]
    extra = dict(std=centre_of(sigma_map, kernel_size).mean(1, keepdim=True).cpu())
    return Estimate(image=centre_of(out[:, :c], kernel_size).mean(1, keepdim=True).cpu(), kernel=k[0, 0].cpu(),
                    curve=curve, seconds=seconds, extra=extra, stats=stats)


def gradient_checks(adam: StackedAdam, index: torch.Tensor) -> tuple[list[bool], list[bool]]:
    """For each run of `index` (on the device): whether its gradient holds a NaN (the code's checkNaN), and whether
    it is all finite (reduced on the device, one transfer to the host for all the parameters)."""
    grads = [p.grad for group in adam.groups for p in group["params"] if p.grad is not None]
    if not grads:
        return [False] * len(index), [True] * len(index)
    nan = torch.stack([g[index].flatten(1).isnan().any(1) for g in grads]).any(0)
    finite = torch.stack([g[index].flatten(1).isfinite().all(1) for g in grads]).all(0)
    nan, finite = torch.stack([nan, finite]).cpu().tolist()
    return nan, finite


def batch_key(problem: Problem, config: Config) -> tuple:
    """What runs of one batch share: the image and kernel sizes, the networks, the loop's length and the device."""
    return shape_key(problem, config, "colour_channels")


def footprint(problem: Problem, config: Config):
    """The memory one run holds (estimated): G_x's optimisation step at the latent size (dipkit.study)."""
    return latent_footprint(problem, networks(config, problem.kernel_size)[0], config.input_channels)


# ---------------------------------------------------------------------------------------------------------------
# The command line


def run(config: Config) -> dict[str, Any]:
    """Check the constants and read the problems, then run every variant and seed on every problem; returns the
    rows and the folder."""
    problems, variants = check_config(config)
    first = next(iter(variants.values()))
    headline = (f"{len(problems)} problem(s) x {len(variants)} variant(s) ({', '.join(variants)}) x "
                f"{len(config.seeds)} seed(s), {first.pretrain_iterations} + {first.iterations} iterations")
    return run_study(config, script="vdip", method="VDIP", headline=headline, problems=problems, variants=variants,
                     deblur=deblur, footprint=footprint, batch_key=batch_key)


def main(argv: list[str] | None = None) -> None:
    run(parse_config(Config, argv, description=__doc__))


if __name__ == "__main__":
    run_main(main)
