"""ADP-β solved by MAID: the analytic deep image prior for colour deblurring, non-blind and semi-blind.

Salehi, Bubba, Korolev, "Fast Inexact Bilevel Optimization for Analytical Deep Image Priors", SSVM 2025
(arXiv 2502.09758); MAID from Salehi, Mukherjee, Roberts, Ehrhardt, SIMODS 2025 (arXiv 2308.10098).

The analytic deep prior replaces a network by the solution map of a variational problem whose operator is
learned. Here the operator is a blur with one k x k kernel per channel, b:

    lower level   x(b) = argmin_x h(x; b) = ½‖B_b x − y‖² + λ TV_ε(x) + (γ/2)‖x − ȳ‖²
    upper level   min_b  F(b) = ½‖A x(b) − y‖² + (β/2)‖b − b0‖²_H¹,     ‖u‖²_H¹ = ‖u‖² + ‖D₁u‖² + ‖D₂u‖²

ȳ is the mean of y per channel; the small γ (not in the paper or its code; 1e-3 costs the converged TV 0.03 dB)
makes h γ-strongly convex, which is what certifies the lower-level accuracy. A = B_b0 is the known blur (non-blind)
or the assumed one (semi-blind: the data carry an extra unknown Gaussian blur). MAID, the method of adaptive
inexact descent, minimises F with inexact pieces whose errors it controls: the lower level is solved by
warm-started L-BFGS (or FISTA) only to a certified accuracy ‖x̃ − x(b)‖ ≤ ‖∇h‖/γ ≤ ε, the
hypergradient ∇F = β(I + D₁ᵀD₁ + D₂ᵀD₂)(b − b0) − ∇_b⟨∇ₓh(x̃; b), q⟩ comes from the implicit function theorem
with H(x̃) q = Aᵀ(A x̃ − y) solved by CG to residual δ, and a backtracking line search on an upper bound of F at
the trial point against a lower bound at the current one accepts only steps that certainly decrease F. On
failure ε and δ shrink (×ν); on success they grow (×ν̄) and so does the step (×ρ̄). `--original_code` runs the
paper's code instead, re-stated with each of its behaviours named (dipkit/adp_original.py).

Each image is a unit of the engine (dipkit.engine): kept as soon as it is done, --resume, --workers, --engine ray.

Run   python ADP.py                     the paper's setting on one bundled image (a few minutes on a CPU)
      python ADP.py --quick             about a minute on a laptop CPU
      python ADP.py --original_code     the paper's two columns as its code computed them (dipkit/adp_original.py)
      python ADP.py --mode semiblind --images coffee rocket --workers 2
      python ADP.py --help              every constant, with its meaning and default
Writes Results/ADP/<run>/: ADP.png, kernel.png, curve.png, curve.csv (the per-iteration MAID log), table.csv,
units/ (each finished image), config.json, metrics.json.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, NamedTuple

import torch
from tqdm import tqdm

from dipkit import adp_report, kernels
from dipkit.blur import blur, blur_adjoint, operator_norm_squared
from dipkit.cli import RunError, parse_config, run_main
from dipkit.device import choose_device, keep_freed_memory, seed_everything, to_cpu
from dipkit.engine import EngineConstants, Unit, make_runner, run_units, runs_here
from dipkit.images import load_image, resolve_image, source_name
from dipkit.metrics import psnr, ssim
from dipkit.runs import mean_scores, start_run, unit_settings, write_metrics
from dipkit.sources import digest_of, item_names
from dipkit.adp_original import ORIGINAL_BUGS, OriginalSettings, paper_columns
from dipkit.maid import MAIDSettings, maid
from dipkit.solvers import conjugate_gradient, fista, lbfgs
from dipkit.tv import SmoothedTV, forward_differences


@dataclass
class Config(EngineConstants):
    # data
    images: tuple[str, ...] = ("astronaut",)  # bundled image names or image paths, one row each
    height: int = 400  # rows of the image after a centre crop to the aspect ratio and a resize
    width: int = 300  # columns of the image
    channels: int = 3  # 3 for colour, 1 for grey
    noise_level: float = 5 / 255  # standard deviation of the additive Gaussian noise
    setting: Literal["motion", "gaussian", "disc"] = "motion"  # known blur b0: diagonal motion, Gaussian or disc
    kernel_size: int = 5  # size of b0 and of the learned kernels
    gaussian_sigma: float = 2.0  # standard deviation of b0 in the gaussian setting
    mode: Literal["nonblind", "semiblind"] = "nonblind"  # semiblind: data blurred by G∘b0, the model knows b0 only
    semiblind_sigma: float = 0.5  # standard deviation of the unknown extra Gaussian blur G in semiblind mode
    clip_data: bool = True  # clip the blurred noisy data to [0, 1] (both modes)
    # lower level h(x; b) = ½‖B_b x − y‖² + λ TV_ε(x) + (γ/2)‖x − ȳ‖²
    tv_weight: float = math.exp(-6)  # λ, the TV weight (the one the paper's FISTA used)
    tv_smoothing: float = 0.01  # ε of the smoothed TV, √(d² + ε²) (ε² = 1e-4 in the paper's code)
    l2_weight: float = 1e-3  # γ > 0, pull towards the mean grey: certifies ‖x − x(b)‖ ≤ ‖∇h(x)‖/γ (costs ≤ 0.03 dB)
    lower_solver: Literal["lbfgs", "fista"] = "lbfgs"  # lower-level solver; both stop at the same certificate
    lower_max_iterations: int = 1000  # cap on gradient evaluations per lower-level solve
    # upper level F(b) = ½‖A x(b) − y‖² + (β/2)‖b − b0‖²_H¹
    sobolev_weight: float = 100.0  # β, the weight of the squared H¹ distance of the kernels from b0
    cg_max_iterations: int = 200  # cap on CG iterations (Hessian-vector products) per hypergradient
    # MAID
    upper_iterations: int = 41  # maximum number of accepted-or-not upper iterations
    alpha0: float = 1e-6  # initial step size
    eps0: float = 1.0  # initial lower-level accuracy ε (a bound on ‖x̃ − x(b)‖)
    delta0: float = 0.1  # initial CG residual tolerance δ
    rho: float = 0.1  # step shrink factor in the backtracking line search
    rho_bar: float = 1.5  # step growth factor after an accepted step
    nu: float = 0.5  # accuracy shrink factor (ε, δ) after a failed line search
    nu_bar: float = 1.05  # accuracy growth factor (ε, δ) after an accepted step
    armijo: float = 1e-8  # Armijo fraction: demand a certified decrease of armijo·step·‖∇F‖²
    backtracking: int = 3  # line-search trials; each failed line search at the same point adds one
    eps_threshold: float = 1e-6  # stop once ε falls below this
    # baselines
    baseline_accuracy: float = 1e-2  # certified accuracy ‖x − x(b0)‖ of the converged TV baselines
    oracle_factors: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)  # λ multipliers of the tuned TV
    # the paper's code (dipkit/adp_original.py)
    original_code: bool = False  # run the paper's code instead: its TV and ADP-β-MAID columns, in float32 as it ran
    original_bugs: tuple[str, ...] = tuple(ORIGINAL_BUGS)  # behaviours of that code kept; leave a name out to fix it
    # run (with the run and engine constants of dipkit.engine: device, run_name, resume, workers, ...)
    seed: int = 0  # seeds the noise and everything else
    dtype: Literal["float32", "float64"] = "float64"  # float32 cannot certify the small ε MAID comes to need
    quick: bool = False  # the QUICK preset: one small image, a few iterations (about a minute on a CPU)

    QUICK: ClassVar[dict[str, Any]] = dict(
        height=96, width=72, alpha0=1e-5, upper_iterations=15, oracle_factors=(0.5, 1.0, 2.0)
    )
    LIMITS: ClassVar[dict[str, str]] = dict(
        height="[8, inf)", width="[8, inf)", channels="[1, 3]", noise_level="[0, 1)", kernel_size="[1, inf)",
        gaussian_sigma="(0, inf)", semiblind_sigma="(0, inf)", tv_weight="(0, inf)", tv_smoothing="(0, inf)",
        l2_weight="(0, inf)", lower_max_iterations="[1, inf)", sobolev_weight="[0, inf)",
        cg_max_iterations="[1, inf)", upper_iterations="[1, inf)", alpha0="(0, inf)", eps0="(0, inf)",
        delta0="(0, inf)", rho="(0, 1)", rho_bar="[1, inf)", nu="(0, 1)", nu_bar="[1, inf)", armijo="[0, 1)",
        backtracking="[1, inf)", eps_threshold="(0, inf)", baseline_accuracy="(0, inf)", oracle_factors="(0, inf)",
        seed="[0, inf)",
    )


def check_config(config: Config) -> list[str]:
    """Refuse settings that cannot run, before anything is written: every image is read once here. Returns each
    image's item name (its file's stem; names that tell same-stem files apart, see dipkit.sources)."""
    if not config.images:
        raise RunError("images: give at least one bundled image name or image path")
    for name in config.images:
        load_image(name, (config.height, config.width), config.channels)
    if config.channels not in (1, 3):
        raise RunError(f"channels must be 1 or 3, not {config.channels}")
    if config.kernel_size < 1 or config.kernel_size % 2 == 0:
        raise RunError(f"kernel_size must be odd and positive, not {config.kernel_size}")
    if config.kernel_size > min(config.height, config.width):
        raise RunError(f"kernel_size {config.kernel_size} is larger than the image ({config.height}x{config.width})")
    unknown = set(config.original_bugs) - set(ORIGINAL_BUGS)
    if unknown:
        raise RunError(f"unknown original bug(s) {', '.join(sorted(unknown))} (use {', '.join(ORIGINAL_BUGS)})")
    return item_names([resolve_image(name) for name in config.images])


# ---------------------------------------------------------------------------------------------------------------
# The ADP-β bilevel problem


def sobolev_squared(u: torch.Tensor) -> torch.Tensor:
    """‖u‖²_H¹ = ‖u‖² + ‖D₁u‖² + ‖D₂u‖², differences taken inside each k x k kernel."""
    d1, d2 = forward_differences(u)
    return u.pow(2).sum() + d1.pow(2).sum() + d2.pow(2).sum()


class ADPBeta:
    """ADP-β for one observation y; the upper variable θ is the (C, k, k) tensor of kernels b."""

    def __init__(self, y: torch.Tensor, b0: torch.Tensor, config: Config):
        self.y, self.b0 = y, b0
        self.y_mean = y.mean(dim=(-2, -1), keepdim=True)  # ȳ, per channel
        self.tv = SmoothedTV(config.tv_smoothing)
        self.tv_weight, self.l2_weight, self.sobolev_weight = config.tv_weight, config.l2_weight, config.sobolev_weight
        self.lower_max_iterations, self.cg_max_iterations = config.lower_max_iterations, config.cg_max_iterations
        self.lower_solver = config.lower_solver
        self.mu = config.l2_weight  # h is μ-strongly convex with μ ≥ γ
        self.norm_b0 = math.sqrt(1.01 * operator_norm_squared(b0, tuple(y.shape)))  # ‖B_b0‖, 1% margin
        self.upper_lipschitz = self.norm_b0**2  # L_g = ‖A‖²

    # lower level ------------------------------------------------------------------------------------------------
    def lower_gradient(self, x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """∇ₓh(x; b) = B_bᵀ(B_b x − y) + λ∇TV_ε(x) + γ(x − ȳ)."""
        ridge = self.l2_weight * (x - self.y_mean)
        return blur_adjoint(blur(x, b) - self.y, b) + self.tv_weight * self.tv.gradient(x) + ridge

    def lower_value_and_gradient(self, x: torch.Tensor, b: torch.Tensor) -> tuple[float, torch.Tensor]:
        """(h(x; b), ∇ₓh(x; b)) sharing the residual and the TV square roots."""
        residual, ridge = blur(x, b) - self.y, x - self.y_mean
        tv_value, tv_gradient = self.tv.value_and_gradient(x)
        value = 0.5 * residual.pow(2).sum() + self.tv_weight * tv_value + 0.5 * self.l2_weight * ridge.pow(2).sum()
        gradient = blur_adjoint(residual, b) + self.tv_weight * tv_gradient + self.l2_weight * ridge
        return value.item(), gradient

    def lower_hessian_vector(self, x: torch.Tensor, b: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """∇²ₓₓh(x; b) v = B_bᵀB_b v + λ∇²TV_ε(x) v + γv."""
        return blur_adjoint(blur(v, b), b) + self.tv_weight * self.tv.hessian_vector(x, v) + self.l2_weight * v

    def lower_lipschitz(self, b: torch.Tensor) -> float:
        """‖B_b‖² + 8λ/ε + γ, with ‖B_b‖ ≤ ‖B_b0‖ + (k//2 + 1)·max_c ‖b_c − b0_c‖₁ (replicate padding copies a
        border pixel at most k//2 + 1 times along each axis)."""
        change = (b - self.b0).abs().flatten(-2).sum(-1).max().item()
        norm_b = self.norm_b0 + (b.shape[-1] // 2 + 1) * change
        return norm_b**2 + self.tv_weight * self.tv.lipschitz + self.l2_weight

    def minimise_lower(self, b: torch.Tensor, tolerance: float, start: torch.Tensor, max_evaluations: int):
        """Run the lower-level solver from `start` until ‖∇ₓh(x; b)‖ ≤ tolerance (or the evaluation cap)."""
        lipschitz = self.lower_lipschitz(b)
        if self.lower_solver == "fista":
            return fista(lambda x: self.lower_gradient(x, b), start, lipschitz, tolerance, max_evaluations - 1)
        return lbfgs(lambda x: self.lower_value_and_gradient(x, b), start, tolerance, max_evaluations, 1.0 / lipschitz)

    def solve_lower(self, b: torch.Tensor, eps: float, warm: torch.Tensor) -> tuple[torch.Tensor, float, int]:
        """x̃ with ‖x̃ − x(b)‖ ≤ returned accuracy (≤ eps unless the evaluation cap was hit), and the cost."""
        result = self.minimise_lower(b, self.mu * eps, warm, self.lower_max_iterations)
        return result.x, result.stationarity / self.mu, result.gradient_evaluations

    # upper level ------------------------------------------------------------------------------------------------
    def regulariser(self, b: torch.Tensor) -> torch.Tensor:
        """(β/2)‖b − b0‖²_H¹."""
        return 0.5 * self.sobolev_weight * sobolev_squared(b - self.b0)

    def upper_value_and_gradient_norm(self, b: torch.Tensor, x: torch.Tensor) -> tuple[float, float]:
        """F at (b, x̃) = ½‖A x̃ − y‖² + (β/2)‖b − b0‖²_H¹, and ‖∇g(x̃)‖ = ‖Aᵀ(A x̃ − y)‖ for MAID's bounds."""
        residual = blur(x, self.b0) - self.y
        value = 0.5 * residual.pow(2).sum() + self.regulariser(b)
        return value.item(), torch.linalg.vector_norm(blur_adjoint(residual, self.b0)).item()

    def hypergradient(
        self, b: torch.Tensor, x: torch.Tensor, delta: float, q0: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """∇F(b) ≈ ∇R(b) − ∇_b⟨∇ₓh(x̃; b), q⟩ with H(x̃) q = Aᵀ(A x̃ − y) solved by CG (warm start q0) to residual δ."""
        rhs = blur_adjoint(blur(x, self.b0) - self.y, self.b0)
        cg = conjugate_gradient(
            lambda v: self.lower_hessian_vector(x, b, v), rhs, delta, self.cg_max_iterations, x0=q0
        )
        b = b.detach().requires_grad_(True)
        # ⟨∇ₓh(x; b), q⟩ depends on b only through ⟨B_bᵀ(B_b x − y), q⟩ = ⟨B_b x − y, B_b q⟩
        mixed = (blur(x, b) - self.y).mul(blur(cg.x, b)).sum()
        (z,) = torch.autograd.grad(self.regulariser(b) - mixed, b)
        return z, cg.x, cg.matvecs


# ---------------------------------------------------------------------------------------------------------------
# Data, baselines and one image


def known_kernel(config: Config) -> torch.Tensor:
    """b0, the known (non-blind) or assumed (semi-blind) kernel of the setting."""
    size = config.kernel_size
    return {
        "motion": lambda: kernels.diagonal_motion(size),
        "gaussian": lambda: kernels.gaussian(size, config.gaussian_sigma),
        "disc": lambda: kernels.disc(size),
    }[config.setting]()


def observe_data(x_true: torch.Tensor, b0: torch.Tensor, config: Config, seed: int) -> torch.Tensor:
    """y = B_b0 x + n (non-blind) or G(B_b0 x) + n with an unknown Gaussian G (semi-blind), clipped if asked."""
    blurred = blur(x_true, b0)
    if config.mode == "semiblind":
        extra = kernels.gaussian(config.kernel_size, config.semiblind_sigma).to(x_true)
        blurred = blur(blurred, extra)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(x_true.shape, generator=generator, dtype=torch.float64).to(x_true)
    y = blurred + config.noise_level * noise
    return y.clamp(0, 1) if config.clip_data else y


def image_problem(name: str, index: int, config: Config, device: torch.device, dtype: torch.dtype):
    """(x_true, b0, θ0 = b0 for every channel, y) for the index-th image of the config; its noise seed is
    seed + index."""
    x_true = load_image(name, (config.height, config.width), config.channels, device, dtype)
    b0 = known_kernel(config).to(device=device, dtype=dtype)
    theta0 = b0.expand(config.channels, -1, -1).clone()  # one kernel per channel, all b0
    return x_true, b0, theta0, observe_data(x_true, b0, config, config.seed + index)


def quality(x: torch.Tensor, x_true: torch.Tensor) -> dict[str, float]:
    return {"psnr": psnr(x, x_true), "ssim": ssim(x, x_true)}


def original_settings(config: Config, upper_iterations: int | None = None) -> OriginalSettings:
    """The paper code's constants, with this config's problem and MAID values where both have them."""
    return OriginalSettings(
        tv_weight=config.tv_weight, tv_smoothing=config.tv_smoothing, sobolev_weight=config.sobolev_weight,
        upper_iterations=config.upper_iterations if upper_iterations is None else upper_iterations,
        alpha0=config.alpha0, eps0=config.eps0, trials=config.backtracking, rho=config.rho,
        step_growth=config.rho_bar, eps_growth=config.nu_bar, eps_shrink=config.nu, armijo=config.armijo,
        eps_threshold=config.eps_threshold, bugs=tuple(config.original_bugs),
    )


def tv_baselines(
    problem: ADPBeta, theta0: torch.Tensor, x_true: torch.Tensor, config: Config, adp_budget: int, seed: int,
    converged_only: bool = False,
) -> dict[str, dict[str, Any]]:
    """TV reconstructions with the known kernel: same λ converged, the paper code's TV column, x(b0) with
    ADP's lower-level budget, and λ tuned on the ground truth (an oracle)."""
    y, tolerance = problem.y, problem.mu * config.baseline_accuracy

    def solve(max_evaluations: int, start: torch.Tensor, tol: float = tolerance):
        """The lower-level solver with the known kernel at the problem's current λ."""
        result = problem.minimise_lower(theta0, tol, start, max_evaluations)
        return result.x, result.gradient_evaluations

    converged, n_converged = solve(config.lower_max_iterations * 10, y)
    out = {"tv": dict(x=converged, iterations=n_converged, tv_weight=problem.tv_weight)}
    if converged_only:
        return out
    paper = paper_columns(y, theta0, original_settings(config, upper_iterations=0), seed)
    out["paper_tv"] = dict(x=paper.tv_column, iterations=paper.tv_column_iterations, tv_weight=problem.tv_weight,
                           lipschitz=paper.tv_column_lipschitz)
    # the same deterministic solver path as the converged run, cut at ADP's budget if that comes first
    budget, n = (converged, n_converged) if adp_budget >= n_converged else solve(adp_budget, y)
    out["x_b0_same_budget"] = dict(x=budget, iterations=n, tv_weight=problem.tv_weight)

    best, base_weight = out["tv"], problem.tv_weight
    for factor in config.oracle_factors:
        if factor == 1.0:
            continue  # that is the converged TV above
        problem.tv_weight = base_weight * factor
        x, n = solve(config.lower_max_iterations * 10, converged)  # warm start at the converged TV
        if psnr(x, x_true) > psnr(best["x"], x_true):
            best = dict(x=x, iterations=n, tv_weight=problem.tv_weight)
    problem.tv_weight = base_weight
    out["tv_oracle"] = best
    return out


def run_image(name: str, index: int, config: Config, device: torch.device, dtype: torch.dtype,
              item: str) -> dict[str, Any]:
    """ADP-β-MAID on the index-th image of the config beside the TV baselines; with original_code, the paper
    code's two columns (dipkit.adp_original, in float32 as it ran) beside the converged TV."""
    x_true, b0, theta0, y = image_problem(name, index, config, device, dtype)
    problem, start = ADPBeta(y, b0, config), time.perf_counter()
    bar = tqdm(total=config.upper_iterations, desc=item, disable=not config.progress, leave=False)

    def observe(row: dict[str, Any], *point: torch.Tensor) -> None:  # after each upper step: (θ, x̃), or x
        row.update(image=item, **quality(point[-1], x_true))
        if config.original_code:
            row.update(seconds=time.perf_counter() - start, cumulative_lower_evaluations=row["fista_iterations"])
        bar.update(1 if row.get("attempt", 0) == 0 else 0)  # one tick per upper iteration
        bar.set_postfix(F=f"{row['upper_loss']:.4g}", psnr=f"{row['psnr']:.2f}", eps=f"{row['eps']:.1e}")

    if config.original_code:
        paper = paper_columns(y, b0, original_settings(config), config.seed + index, observe)
        b, log, stop_reason = paper.b, paper.log, paper.stop_reason
        methods = dict(paper_tv=dict(x=paper.tv_column, iterations=paper.tv_column_iterations,
                                     lipschitz=paper.tv_column_lipschitz),
                       paper_adp=dict(x=paper.adp_column, iterations=paper.counts["fista_iterations"]))
        facts = dict(original_bugs=list(config.original_bugs), upper_iterations=len(log), counts=paper.counts,
                     seconds=dict(paper_columns=time.perf_counter() - start))
        methods.update(tv_baselines(problem, theta0, x_true, config, 0, 0, converged_only=True))
    else:
        result = maid(problem, theta0, y, MAIDSettings.of(config), observe)
        b, log, stop_reason = result.theta, result.log, result.stop_reason
        budget = log[-1]["cumulative_lower_evaluations"] if log else 0
        tic = time.perf_counter()
        methods = tv_baselines(problem, theta0, x_true, config, budget, config.seed + index)
        methods["adp"] = dict(x=result.x, iterations=budget)
        facts = dict(upper_iterations=log[-1]["iteration"] + 1 if log else 0, lower_evaluations=budget,
                     cg_matvecs=log[-1]["cumulative_cg_matvecs"] if log else 0,
                     seconds=dict(**result.seconds, baselines=time.perf_counter() - tic),
                     kernel_change_h1=math.sqrt(sobolev_squared(b - theta0).item()))
    bar.close()
    methods = {"blurry": dict(x=y), **methods}
    return dict(name=item, x_true=x_true, y=y, b0=theta0, b=b, log=log, methods=methods, metrics=dict(
        source=source_name(resolve_image(name)),
        **{m: {**quality(v["x"], x_true), **{k: v[k] for k in v if k != "x"}} for m, v in methods.items()},
        stop_reason=stop_reason, accepted_steps=sum(r["accepted"] for r in log),
        kernel_change_max=(b - theta0).abs().max().item(), **facts))


class ImageTask(NamedTuple):  # one image of a run, as the engine hands it to `solve`
    given: str  # the name or path given
    index: int
    item: str  # its item name
    config: Config


def solve(tasks: list[ImageTask]) -> list[dict[str, Any]]:
    """Each image's result (run_image), its tensors on the CPU."""
    results = []
    for given, index, item, config in tasks:
        device, dtype = choose_device(config.device), getattr(torch, config.dtype)
        keep_freed_memory()
        seed_everything(config.seed, config.deterministic)
        results.append(to_cpu(run_image(given, index, config, device, dtype, item)))
    return results


def image_key(image: str, index: int, config: Config) -> str:
    """An image's key: the problem it is (the truth, b0 and the observation y, whose noise depends on its place in
    the list), made here on the CPU, and the resolved constants."""
    x_true, b0, _, y = image_problem(image, index, config, torch.device("cpu"), getattr(torch, config.dtype))
    return digest_of(x_true, b0, y, unit_settings(config, ("images",)))


def run(config: Config) -> dict[str, Any]:
    """Run ADP-β-MAID on every image of the config (each a unit of the engine, kept as soon as it is done; with
    `resume`, the images of run `run_name` made from the same files are read back); write the run folder; return
    the results."""
    names = check_config(config)
    device = choose_device(config.device)
    runner = make_runner(config)  # Ray connected before anything is written
    what = "the paper's code (float32)" if config.original_code else f"ADP-β-MAID ({config.dtype})"
    print(f"{what} on {device}, setting {config.setting}, mode {config.mode}")
    folder = start_run(config, "ADP", device, resume=config.resume, also_resumable=("images",))
    tic = time.perf_counter()
    task_config = config if runs_here(config) else dataclasses.replace(config, progress=False)
    units = [Unit(name, ImageTask(str(resolve_image(image)), i, name, task_config), image_key(image, i, config))
             for i, (image, name) in enumerate(zip(config.images, names))]
    kept = run_units(folder, units, solve, lambda unit, result: result, resume=config.resume, runner=runner,
                     script="ADP", keep_other_code=config.keep_other_code,
                     expects=("name", "x_true", "y", "b0", "b", "log", "methods", "metrics"))
    results = list(kept.records.values())
    seconds = time.perf_counter() - tic
    if results:
        adp_report.write_deblurring(folder, results, config.channels, config.original_code)
    kept.check(folder, "image")
    items = {r["name"]: r["metrics"] for r in results}
    write_metrics(folder, "ADP", mean_scores(items), items, seconds, str(device))
    for line in adp_report.deblurring_lines(results):
        print(line)
    print(f"wrote {folder} in {seconds:.1f} s")
    return dict(folder=folder, results=results, metrics=dict(items=items, seconds=seconds))


def main(argv: list[str] | None = None) -> None:
    run(parse_config(Config, argv, description=__doc__))


if __name__ == "__main__":
    run_main(main)
