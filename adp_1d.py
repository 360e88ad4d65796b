"""1-D analytic deep prior: MAID against high-accuracy implicit differentiation (IFT) and unrolled LISTA.

The 1-D experiment of Salehi, Bubba, Korolev (SSVM 2025, arXiv 2502.09758), after the analytic deep prior of
Dittmer, Kluth, Maass, Otero Baguer (JMIV 2020) and Arndt (Inverse Problems 2022). The "network" is the solution
map of an elastic net whose operator B (a full n x n matrix, started at the true operator A) is learned:

    lower level   x(B) = argmin_x h(x; B) = ½‖Bx − y‖² + α₁‖x‖₁ + (α₂/2)‖x‖²
    upper level   min_B  F(B) = ½‖A x(B) − y‖² + (β/2)‖B − A‖²_F        (β = 0 in the paper)

On the support S of x(B) the solution is smooth in B, and the implicit function theorem gives
∇F = β(B − A) − (Bx − y)vᵀ − (Bv)xᵀ with (BᵀB + α₂I)_SS v_S = [Aᵀ(Ax − y)]_S, v = 0 off S.
Three methods and three variants, all from x = 0 in one process, timed the same way and counted in the same units:

    MAID            adaptive inexact descent (dipkit.maid, as ADP.py): certified lower accuracy ε, CG residual δ,
                    inexact line search, ε and δ adapted to what the line search needs; it stops on a certificate
    MAID, original  the 1-D code's schedule (its lines 470-490): ε shrinks by ν at every upper iteration (after ν̄
    schedule        on success), five trials per line search, bounds on the target ε, and it stops at its budget
                    of 300 iterations or when the loss changes by less than 1e-12 after 10
    MAID, fixed ε   the same line search with ε = δ held at 1e-6 (an ablation: what adapting the accuracy is worth);
                    it stops at its first failed line search
    IFT             the paper's high-accuracy IFT: fixed step 1e-3 on the hypergradient, lower level to a fixed 1e-6
    IFT, tuned      the same with the fastest (in wall time to within 1% of the best loss) step and accuracy of a
                    small grid, each point run in this process; points whose loss blows up or bounces are excluded
    LISTA L = ∞     each step runs L proximal-gradient layers from the previous output and backpropagates through them

The lower level is always proximal FISTA with the certificate ‖x − x(B)‖ ≤ 2‖G(x)‖/α₂ (G the gradient mapping);
a lower-level iteration is one gradient of ½‖Bx − y‖², counted wherever it happens (line-search trials
included); linear-solve work is CG products for MAID and IFT and backpropagated layers for LISTA.

The ℓ1 term puts this lower level outside MAID's assumptions (x(B) is only piecewise smooth in B): the certificate
and the line search's bounds still hold, so every accepted step certainly decreases F, but the hypergradient's
error bound does not where the support changes; docs/adp_1d.md says what a stop there means.

Run   python adp_1d.py                  the paper's setting: Gaussian blur, piecewise-constant signal
      python adp_1d.py --quick          seconds
      python adp_1d.py --signal gaussians --operator integration --operator_weight 1e-3
      python adp_1d.py --help
Each solver is a unit of the engine (dipkit.engine), kept as soon as it is done (--resume reads the kept ones
back); they run one after another in this process, since they are timed against each other.
Writes Results/adp_1d/<run>/: curve.png and curve.csv (upper loss against wall time and lower-level
iterations), reconstructions.png, B_minus_A.png, table.csv (time and iterations to within 1% of the best final
loss), grid.csv (the tuned IFT's grid: each point's step, accuracy, how it stopped, time and iterations to 1%),
units/, config.json, metrics.json (the table, the grid, MAID's speed-ups over the paper's IFT and the tuned IFT).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, NamedTuple, Optional

import torch
from tqdm import tqdm

from dipkit.maid import MAIDSettings, fixed_step_ift, maid, sync_clock
from dipkit import adp_report
from dipkit.cli import RunError, parse_config, run_main
from dipkit.device import choose_device, seed_everything, to_cpu
from dipkit.engine import RunConstants, Unit, run_units
from dipkit.runs import environment, start_run, unit_settings, write_metrics
from dipkit.sources import digest_of
from dipkit.signals import forward_operator, grid, test_signal
from dipkit.solvers import conjugate_gradient, fista, soft_threshold

# The original's hand-tuned elastic-net weights (α₁, α₂) of the ADP lower level, [operator][signal].
TUNED_WEIGHTS = {
    "integration": {"piecewise_constant": (0.087, 0.0145), "gaussians": (0.072, 0.072), "piecewise_linear": (0.072, 0.024)},
    "gaussian": {"piecewise_constant": (0.108, 0.027), "gaussians": (0.042, 0.168), "piecewise_linear": (0.123, 0.041)},
}


@dataclass
class Config(RunConstants):
    # data
    signal: Literal["piecewise_constant", "gaussians", "piecewise_linear"] = "piecewise_constant"  # the truth
    operator: Literal["gaussian", "integration"] = "gaussian"  # A: Gaussian convolution (σ = 5 samples) or integration
    points: int = 200  # grid size n on [−1, 1] (spacing 2/n)
    noise_level: float = 0.005  # standard deviation of the Gaussian noise
    # problem
    l1_weight: Optional[float] = None  # α₁ of the elastic net; None: the original's tuned value for this signal and operator
    l2_weight: Optional[float] = None  # α₂ (> 0, the strong convexity μ); None: the original's tuned value
    operator_weight: float = 0.0  # β of (β/2)‖B − A‖²_F (0 in the paper: plain ADP)
    lower_max_iterations: int = 500  # cap on FISTA iterations per lower-level solve
    cg_max_iterations: int = 200  # cap on CG iterations per hypergradient
    solvers: tuple[str, ...] = ("maid", "maid_original", "maid_fixed", "ift", "ift_tuned", "lista")  # which solvers to run
    # MAID (the 1-D settings of the paper's code)
    upper_iterations: int = 300  # MAID: maximum upper iterations
    alpha0: float = 1e-3  # MAID: initial step (the code's 0.1 on a gradient scaled by the grid spacing 0.01)
    eps0: float = 1e-3  # MAID: initial lower-level accuracy ε
    delta0: float = 1e-3  # MAID: initial CG residual δ
    rho: float = 0.5  # MAID: step shrink in the line search
    rho_bar: float = 10 / 9  # MAID: step growth after success
    nu: float = 0.5  # MAID: accuracy shrink after failure
    nu_bar: float = 1.05  # MAID: accuracy growth after success
    armijo: float = 1e-8  # MAID: Armijo fraction
    backtracking: int = 5  # MAID: line-search trials (one more after each failure at the same point)
    eps_threshold: float = 1e-10  # MAID: stop once ε falls below this
    maid_fixed_accuracy: float = 1e-6  # MAID, fixed ε: the lower accuracy ε (and CG residual δ) it keeps throughout
    # IFT
    ift_iterations: int = 7500  # IFT: upper iterations (also the tuned IFT's)
    ift_step: float = 1e-3  # IFT: fixed step (the code's 0.1 on a gradient scaled by 0.01)
    ift_accuracy: float = 1e-6  # IFT: fixed lower-level accuracy ε; CG residual 1e-2·ε
    tuning_steps: tuple[float, ...] = (3e-3, 1e-2, 2e-2, 3e-2, 1e-1)  # tuned IFT: steps tried (the paper's 1e-3 is the IFT row)
    tuning_accuracies: tuple[float, ...] = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2)  # tuned IFT: accuracies tried (at 1e-1 the loss logged at x̃ is off by over 1 percent)
    tuning_iterations: int = 2000  # tuned IFT: upper iterations per grid point (each stops once at the loss target)
    # LISTA with L = ∞
    lista_epochs: int = 4000  # LISTA: training steps
    lista_layers: int = 50  # LISTA: proximal-gradient layers per step, started from the previous output
    lista_lr: float = 1e-3  # LISTA: SGD learning rate on ½‖Ax − y‖² (the code's 0.1 on the mean squared error)
    # run (with the run constants of dipkit.engine: results_dir, run_name, resume, ...)
    device: str = "cpu"  # 200 x 200 matrices are fastest on a CPU; auto, cuda or mps also work
    seed: int = 0  # seeds the noise
    quick: bool = False  # the QUICK preset: shorter runs of every solver and of the tuning grid (seconds)

    QUICK: ClassVar[dict[str, Any]] = dict(upper_iterations=60, ift_iterations=300, lista_epochs=300,
                                           tuning_steps=(1e-2, 2e-2, 3e-2), tuning_accuracies=(1e-6, 1e-4, 1e-2),
                                           tuning_iterations=60)
    LIMITS: ClassVar[dict[str, str]] = dict(
        points="[10, inf)", noise_level="[0, inf)", l1_weight="[0, inf)", l2_weight="(0, inf)",
        operator_weight="[0, inf)", lower_max_iterations="[1, inf)", cg_max_iterations="[1, inf)",
        upper_iterations="[1, inf)", alpha0="(0, inf)", eps0="(0, inf)", delta0="(0, inf)", rho="(0, 1)",
        rho_bar="[1, inf)", nu="(0, 1)", nu_bar="[1, inf)", armijo="[0, 1)", backtracking="[1, inf)",
        eps_threshold="(0, inf)", maid_fixed_accuracy="(0, inf)", ift_iterations="[1, inf)", ift_step="(0, inf)",
        ift_accuracy="(0, inf)", tuning_steps="(0, inf)", tuning_accuracies="(0, inf)", tuning_iterations="[1, inf)",
        lista_epochs="[1, inf)", lista_layers="[1, inf)", lista_lr="(0, inf)", seed="[0, inf)",
    )


def check_config(config: Config) -> None:
    if config.signal not in TUNED_WEIGHTS["gaussian"]:
        raise RunError(f"unknown signal '{config.signal}' (use {', '.join(TUNED_WEIGHTS['gaussian'])})")
    if config.operator not in TUNED_WEIGHTS:
        raise RunError(f"unknown operator '{config.operator}' (use gaussian or integration)")
    unknown = set(config.solvers) - set(SOLVERS)
    if unknown or not config.solvers:
        raise RunError(f"unknown solver(s) {', '.join(sorted(unknown)) or '(none given)'}: use {', '.join(SOLVERS)}")
    if not (config.tuning_steps and config.tuning_accuracies):
        raise RunError("tuning_steps and tuning_accuracies must not be empty")
    weights = elastic_net_weights(config)
    if not (weights[0] >= 0 and weights[1] > 0):
        raise RunError(f"need l1_weight >= 0 and l2_weight > 0, not {weights}")


def elastic_net_weights(config: Config) -> tuple[float, float]:
    tuned = TUNED_WEIGHTS[config.operator][config.signal]
    return (tuned[0] if config.l1_weight is None else config.l1_weight,
            tuned[1] if config.l2_weight is None else config.l2_weight)


# ---------------------------------------------------------------------------------------------------------------
# The 1-D ADP problem


class ElasticNetADP:
    """ADP with an elastic-net lower level; the upper variable θ is the matrix B."""

    def __init__(self, a: torch.Tensor, y: torch.Tensor, config: Config):
        self.a, self.y = a, y
        self.l1_weight, self.l2_weight = elastic_net_weights(config)
        self.operator_weight = config.operator_weight
        self.lower_max_iterations, self.cg_max_iterations = config.lower_max_iterations, config.cg_max_iterations
        self.mu = self.l2_weight  # h is α₂-strongly convex
        self.norm_a = torch.linalg.matrix_norm(a, 2).item()
        self.upper_lipschitz = self.norm_a**2  # L_g = ‖A‖²

    def lower_lipschitz(self, b: torch.Tensor) -> float:
        """‖B‖² + α₂ with ‖B‖ ≤ ‖A‖ + ‖B − A‖_F: a guaranteed bound without an SVD per solve."""
        return (self.norm_a + torch.linalg.matrix_norm(b - self.a).item()) ** 2 + self.l2_weight

    def solve_lower(self, b: torch.Tensor, eps: float, warm: torch.Tensor) -> tuple[torch.Tensor, float, int]:
        """x̃ with ‖x̃ − x(B)‖ ≤ returned accuracy (≤ eps unless the cap was hit), and the iterations used."""
        result = fista(
            lambda x: b.T @ (b @ x - self.y) + self.l2_weight * x, warm, self.lower_lipschitz(b), self.mu * eps,
            self.lower_max_iterations, lambda v, step: soft_threshold(v, self.l1_weight * step),
        )
        return result.x, result.stationarity / self.mu, result.gradient_evaluations

    def upper_loss(self, x: torch.Tensor) -> float:
        """½‖Ax − y‖², the data part of F, the loss every solver logs."""
        return 0.5 * (self.a @ x - self.y).pow(2).sum().item()

    def upper_value_and_gradient_norm(self, b: torch.Tensor, x: torch.Tensor) -> tuple[float, float]:
        residual = self.a @ x - self.y
        value = 0.5 * residual.pow(2).sum() + 0.5 * self.operator_weight * (b - self.a).pow(2).sum()
        return value.item(), torch.linalg.vector_norm(self.a.T @ residual).item()

    def hypergradient(
        self, b: torch.Tensor, x: torch.Tensor, delta: float, q0: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """∇F(B) = β(B − A) − (Bx − y)vᵀ − (Bv)xᵀ, (BᵀB + α₂I)_SS v_S = [Aᵀ(Ax − y)]_S by CG to residual δ."""
        support = (x != 0).to(x.dtype)
        rhs = support * (self.a.T @ (self.a @ x - self.y))
        cg = conjugate_gradient(
            lambda v: support * (b.T @ (b @ (support * v)) + self.l2_weight * v), rhs, delta, self.cg_max_iterations,
            x0=None if q0 is None else support * q0,
        )
        v = cg.x
        z = self.operator_weight * (b - self.a) - torch.outer(b @ x - self.y, v) - torch.outer(b @ v, x)
        return z, v, cg.matvecs


# ---------------------------------------------------------------------------------------------------------------
# The three solvers; each returns its final B and x and a log of (time, lower iterations, linear work, loss)


def run_maid(problem: ElasticNetADP, x0: torch.Tensor, config: Config, bar: tqdm,
             settings: MAIDSettings | None = None) -> dict[str, Any]:
    """MAID (the adaptive, certified schedule unless `settings` say otherwise) from B = A."""
    start = sync_clock(x0.device)
    log = [dict(seconds=0.0, lower_iterations=0, linear_work=0, loss=problem.upper_loss(x0))]

    def observe(row: dict[str, Any], b: torch.Tensor, x: torch.Tensor) -> None:
        log.append(dict(seconds=sync_clock(x.device) - start, lower_iterations=row["cumulative_lower_evaluations"],
                        linear_work=row["cumulative_cg_matvecs"], loss=problem.upper_loss(x)))
        bar.update(1 if row["attempt"] == 0 else 0)
        bar.set_postfix(loss=f"{log[-1]['loss']:.4g}", eps=f"{row['eps']:.1e}")

    result = maid(problem, problem.a.clone(), x0, settings or MAIDSettings.of(config), observe)
    return dict(b=result.theta, x=result.x, log=log, stop_reason=result.stop_reason)


def run_maid_original(problem: ElasticNetADP, x0: torch.Tensor, config: Config, bar: tqdm) -> dict[str, Any]:
    """MAID with the 1-D code's schedule: ε shrinks at every upper iteration, it stops at its budget (or when the
    loss stalls), the bounds on the target ε (dipkit.maid, schedule "original")."""
    return run_maid(problem, x0, config, bar, MAIDSettings.of(config, schedule="original"))


def run_maid_fixed(problem: ElasticNetADP, x0: torch.Tensor, config: Config, bar: tqdm) -> dict[str, Any]:
    """MAID's line search with the accuracy held at maid_fixed_accuracy (ν = ν̄ = 1): what adapting ε is worth.
    It stops at its first failed line search, where only a tighter accuracy could certify a decrease."""
    eps = config.maid_fixed_accuracy
    return run_maid(problem, x0, config, bar, MAIDSettings.of(config, eps0=eps, delta0=eps, nu=1.0, nu_bar=1.0))


def ift_path(problem: ElasticNetADP, x0: torch.Tensor, step: float, accuracy: float, iterations: int, bar: tqdm,
             stop_below: float = -math.inf) -> dict[str, Any]:
    """Implicit differentiation with a fixed step and accuracy from B = A (dipkit.maid.fixed_step_ift): it stops at
    the loss target `stop_below`, or as diverged (a step too large for the curvature makes the loss bounce, at 3e-2
    in the paper's setting between about 0.16 and 0.52, never near the minimum 9e-3, or blow up)."""
    result = fixed_step_ift(problem, problem.a.clone(), x0, step, accuracy, iterations, problem.upper_loss,
                            lambda: bar.update(1), stop_below)
    return dict(b=result.theta, x=result.x, log=result.log, stop_reason=result.stop_reason)


def run_ift(problem: ElasticNetADP, x0: torch.Tensor, config: Config, bar: tqdm) -> dict[str, Any]:
    """The paper's 'high-accuracy IFT': fixed step ift_step, fixed accuracy ift_accuracy."""
    return ift_path(problem, x0, config.ift_step, config.ift_accuracy, config.ift_iterations, bar)


def tune_ift(problem: ElasticNetADP, x0: torch.Tensor, config: Config, target: float | None) -> list[dict[str, Any]]:
    """Every (step, accuracy) of the grid for at most tuning_iterations, each stopping at the loss target (None:
    1% above the best loss the grid itself reaches), one after the other in this process: one row each with how
    it stopped and the time and lower-level iterations it took to reach the target (None if it did not)."""
    paths = {}
    for step, accuracy in itertools.product(config.tuning_steps, config.tuning_accuracies):
        with tqdm(disable=True) as quiet:
            stop_below = -math.inf if target is None else target
            paths[step, accuracy] = ift_path(problem, x0, step, accuracy, config.tuning_iterations, quiet, stop_below)
    if target is None:
        target = 1.01 * min(row["loss"] for path in paths.values() for row in path["log"])
    return [dict(step=step, accuracy=accuracy, diverged=path["stop_reason"] == "diverged", target=target,
                 **{f"{k}_to_1pct": v for k, v in adp_report.time_to_target(path["log"], target).items()},
                 upper_iterations=len(path["log"]) - 1, stop_reason=path["stop_reason"])
            for (step, accuracy), path in paths.items()]


def best_tuning(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The grid point that reached the target fastest in wall time, among those that did not diverge."""
    reached = [row for row in rows if not row["diverged"] and row["seconds_to_1pct"] is not None]
    return min(reached, key=lambda row: row["seconds_to_1pct"]) if reached else None


def run_ift_tuned(problem: ElasticNetADP, x0: torch.Tensor, config: Config, bar: tqdm, target: float | None = None):
    """The grid first (to the loss target, see tune_ift), then IFT with its fastest (step, accuracy) for the paper
    IFT's iteration budget."""
    grid_rows = tune_ift(problem, x0, config, target)
    best = best_tuning(grid_rows)
    if best is None:
        raise RunError("no (step, accuracy) of the tuning grid reached the target: widen tuning_steps")
    result = ift_path(problem, x0, best["step"], best["accuracy"], config.ift_iterations, bar)
    return dict(result, grid=grid_rows, tuned=dict(step=best["step"], accuracy=best["accuracy"]))


def run_lista(problem: ElasticNetADP, x0: torch.Tensor, config: Config, bar: tqdm) -> dict[str, Any]:
    """LISTA with L = ∞: each step runs L layers from the previous output, then SGD on B through those layers."""
    b = problem.a.clone().requires_grad_(True)
    optimiser = torch.optim.SGD([b], lr=config.lista_lr)
    step = 1.0 / (problem.upper_lipschitz + problem.l2_weight)  # the same 1/L for every layer (B starts at A)
    x, start = x0, sync_clock(x0.device)
    log = [dict(seconds=0.0, lower_iterations=0, linear_work=0, loss=problem.upper_loss(x0))]
    for epoch in range(config.lista_epochs):
        for _ in range(config.lista_layers):
            x = soft_threshold(x - step * (b.T @ (b @ x - problem.y) + problem.l2_weight * x), problem.l1_weight * step)
        loss = 0.5 * (problem.a @ x - problem.y).pow(2).sum()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        x = x.detach()
        if not math.isfinite(loss.item()):
            raise RunError(f"LISTA diverged at step {epoch}: try a smaller lista_lr")
        n = (epoch + 1) * config.lista_layers
        log.append(dict(seconds=sync_clock(x.device) - start, lower_iterations=n, linear_work=n, loss=loss.item()))
        bar.update(1)
    return dict(b=b.detach(), x=x, log=log, stop_reason="iteration cap reached")


SOLVERS = {"maid": ("MAID", run_maid, "upper_iterations"),
           "maid_original": ("MAID, original schedule", run_maid_original, "upper_iterations"),
           "maid_fixed": ("MAID, fixed ε", run_maid_fixed, "upper_iterations"),
           "ift": ("IFT", run_ift, "ift_iterations"),
           "ift_tuned": ("IFT, tuned", run_ift_tuned, "ift_iterations"),
           "lista": ("LISTA L=∞", run_lista, "lista_epochs")}


class SolverTask(NamedTuple):
    """One solver of a run, as the engine hands it to `solve`: its name, the problem, the constants, and (the tuned
    IFT) the loss target its grid stops at."""

    name: str
    problem: ElasticNetADP
    config: Config
    target: float | None = None


def solve(tasks: list[SolverTask]) -> list[dict[str, Any]]:
    """Each solver's result from x = 0, one after another (they are timed against each other)."""
    results = []
    for name, problem, config, target in tasks:
        label, solver, iterations = SOLVERS[name]
        with tqdm(total=getattr(config, iterations), desc=label, disable=not config.progress, leave=False) as bar:
            x0 = torch.zeros_like(problem.y)
            results.append(to_cpu(solver(problem, x0, config, bar, target) if name == "ift_tuned" else
                                  solver(problem, x0, config, bar)))
    return results


def run(config: Config) -> dict[str, Any]:
    """Solve the 1-D ADP problem with every solver of the config (each a unit of the engine, kept as it finishes;
    with `resume`, the solvers of run `run_name` made on the same problem are read back); write the run folder;
    return the results."""
    check_config(config)
    device = choose_device(config.device)
    seed_everything(config.seed, config.deterministic)
    t = grid(config.points)
    truth = test_signal(config.signal, t)
    a = forward_operator(config.operator, config.points)
    noise = torch.randn(config.points, generator=torch.Generator().manual_seed(config.seed), dtype=torch.float64)
    y = a @ truth + config.noise_level * noise
    t, truth, a, y = (v.to(device) for v in (t, truth, a, y))
    problem = ElasticNetADP(a, y, config)
    print(f"1-D ADP on {device}: {config.signal} signal, {config.operator} operator, "
          f"α₁ = {problem.l1_weight}, α₂ = {problem.l2_weight}, β = {config.operator_weight}")
    folder = start_run(config, "adp_1d", device, resume=config.resume, also_resumable=("solvers",))
    # the solvers are timed against each other: a solver made on another device or processor is made again
    machine = {key: value for key, value in environment(device).items()
               if key in ("device", "processor", "cpu_threads", "gpu")}
    settings = unit_settings(config, ("solvers",))
    unit = lambda name, target=None: Unit(name, SolverTask(name, problem, config, target),  # noqa: E731
                                          digest_of(a, y, settings, machine, target))
    expects, code = ("b", "x", "log", "stop_reason"), dict(script="adp_1d", keep_other_code=config.keep_other_code)
    # the tuned IFT runs last: its grid stops at 1% above the best final loss of the solvers before it
    kept = run_units(folder, [unit(n) for n in config.solvers if n != "ift_tuned"], solve, lambda u, r: r,
                     resume=config.resume, expects=expects, **code)
    results = dict(kept.records)
    if "ift_tuned" in config.solvers and not kept.failed:
        finals = [res["log"][-1]["loss"] for res in results.values()]
        tuned = run_units(folder, [unit("ift_tuned", 1.01 * min(finals) if finals else None)], solve,
                          lambda u, r: r, resume=config.resume, expects=expects, **code)
        results.update(tuned.records)
        kept.failed.update(tuned.failed)
    kept.check(folder, "solver")
    results = {name: results[name] for name in config.solvers}  # kept on the CPU
    t, truth, a, y = (v.cpu() for v in (t, truth, a, y))
    # the best final loss: a path's intermediate losses, measured at inexact x̃, can dip below the bilevel minimum
    best = min(res["log"][-1]["loss"] for res in results.values())
    labels = {name: SOLVERS[name][0] for name in results}
    table = adp_report.solver_table(results, labels, truth, best)
    grid_rows = results["ift_tuned"]["grid"] if "ift_tuned" in results else []
    adp_report.write_comparison(folder, t, truth, y, a, results, labels, table, grid_rows)
    rows = {name: row for name, row in zip(results, table)}
    speedups = adp_report.speedup(rows.get("maid"), rows.get("ift"))
    tuned_speedups = adp_report.speedup(rows.get("maid"), rows.get("ift_tuned"))
    write_metrics(
        folder, "adp_1d", {row["solver"]: row for row in table}, table, sum(row["seconds"] for row in table),
        str(device), best_loss=best, initial_loss=results[config.solvers[0]]["log"][0]["loss"],
        maid_speedup_over_ift_to_1pct=speedups, maid_speedup_over_tuned_ift_to_1pct=tuned_speedups,
        ift_tuned=results["ift_tuned"]["tuned"] if "ift_tuned" in results else {}, ift_tuning_grid=grid_rows,
    )
    for line in adp_report.comparison_lines(table, best, {"IFT": speedups, "the tuned IFT": tuned_speedups}):
        print(line)
    print(f"wrote {folder}")
    return dict(folder=folder, results=results, table=table, best_loss=best, speedups=speedups,
                tuned_speedups=tuned_speedups)


def main(argv: list[str] | None = None) -> None:
    run(parse_config(Config, argv, description=__doc__))


if __name__ == "__main__":
    run_main(main)
