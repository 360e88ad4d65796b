"""1-D analytic deep prior: MAID against high-accuracy implicit differentiation (IFT) and unrolled LISTA.

The 1-D experiment of Salehi, Bubba, Korolev (SSVM 2025, arXiv 2502.09758), after the analytic deep prior of
Dittmer, Kluth, Maass, Otero Baguer (JMIV 2020) and Arndt (Inverse Problems 2022). The "network" is the solution
map of an elastic net whose operator B (a full n x n matrix, started at the true operator A) is learned:

    lower level   x(B) = argmin_x h(x; B) = ½‖Bx − y‖² + α₁‖x‖₁ + (α₂/2)‖x‖²
    upper level   min_B  F(B) = ½‖A x(B) − y‖² + (β/2)‖B − A‖²_F        (β = 0 in the paper)

On the support S of x(B) the solution is smooth in B, and the implicit function theorem gives
∇F = β(B − A) − (Bx − y)vᵀ − (Bv)xᵀ with (BᵀB + α₂I)_SS v_S = [Aᵀ(Ax − y)]_S, v = 0 off S.
Three solvers of the same problem, all from x = 0, all timed the same way and counted in the same units:

    MAID    adaptive inexact descent (the implementation of ADP.py): certified lower accuracy ε, CG residual δ,
            inexact line search, ε and δ adapted to what the line search needs
    IFT     fixed step on the hypergradient with the lower level solved to a fixed tight accuracy
    LISTA   L = ∞: each step runs L proximal-gradient layers from the previous output and backpropagates through them

The lower level is always proximal FISTA with the certificate ‖x − x(B)‖ ≤ 2‖G(x)‖/α₂ (G the gradient mapping);
a lower-level iteration is one gradient of ½‖Bx − y‖², counted wherever it happens (line-search trials
included); linear-solve work is CG products for MAID and IFT and backpropagated layers for LISTA.

Run   python adp_1d.py                  the paper's setting: Gaussian blur, piecewise-constant signal
      python adp_1d.py --quick          seconds
      python adp_1d.py --signal gaussians --operator integration --operator_weight 1e-3
      python adp_1d.py --help
Writes Results/adp_1d/<run>/: curve.png and curve.csv (upper loss against wall time and lower-level
iterations), reconstructions.png, B_minus_A.png, table.csv (time and iterations to within 1% of the best loss),
config.json, metrics.json.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from tqdm import tqdm

from dipkit.maid import maid
from dipkit import figures
from dipkit.cli import RunError, parse_config, run_main
from dipkit.device import choose_device, seed_everything, synchronize
from dipkit.runs import start_run, write_csv, write_json
from dipkit.solvers import conjugate_gradient, fista, soft_threshold

# The original's hand-tuned elastic-net weights (α₁, α₂) of the ADP lower level, [operator][signal].
TUNED_WEIGHTS = {
    "integration": {"piecewise_constant": (0.087, 0.0145), "gaussians": (0.072, 0.072), "piecewise_linear": (0.072, 0.024)},
    "gaussian": {"piecewise_constant": (0.108, 0.027), "gaussians": (0.042, 0.168), "piecewise_linear": (0.123, 0.041)},
}


@dataclass
class Config:
    # data
    signal: Literal["piecewise_constant", "gaussians", "piecewise_linear"] = "piecewise_constant"  # the truth
    operator: Literal["gaussian", "integration"] = "gaussian"  # A: Gaussian convolution (σ = 5 samples) or integration
    points: int = 200  # grid size n on [−1, 1] (spacing 2/n)
    noise_level: float = 0.005  # standard deviation of the Gaussian noise
    # problem
    l1_weight: float = -1.0  # α₁ of the elastic net; −1: the original's tuned value for this signal and operator
    l2_weight: float = -1.0  # α₂ (> 0, the strong convexity μ); −1: the original's tuned value
    operator_weight: float = 0.0  # β of (β/2)‖B − A‖²_F (0 in the paper: plain ADP)
    lower_max_iterations: int = 500  # cap on FISTA iterations per lower-level solve
    cg_max_iterations: int = 200  # cap on CG iterations per hypergradient
    solvers: tuple[str, ...] = ("maid", "ift", "lista")  # which solvers to run
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
    # IFT
    ift_iterations: int = 7500  # IFT: upper iterations
    ift_step: float = 1e-3  # IFT: fixed step (the code's 0.1 on a gradient scaled by 0.01)
    ift_accuracy: float = 1e-6  # IFT: fixed lower-level accuracy ε; CG residual 1e-2·ε
    # LISTA with L = ∞
    lista_epochs: int = 4000  # LISTA: training steps
    lista_layers: int = 50  # LISTA: proximal-gradient layers per step, started from the previous output
    lista_lr: float = 1e-3  # LISTA: SGD learning rate on ½‖Ax − y‖² (the code's 0.1 on the mean squared error)
    # run
    seed: int = 0  # seeds the noise
    deterministic: bool = False  # ask torch for deterministic kernels
    device: str = "cpu"  # 200 x 200 matrices are fastest on a CPU; auto, cuda or mps also work
    results_dir: str = "Results"  # outputs go to <results_dir>/adp_1d/<run_name>/
    run_name: str = ""  # folder name of this run (default: a time stamp); never overwrites an existing one
    progress: bool = True  # show progress bars
    quick: bool = False  # the QUICK preset: shorter runs of all three solvers (seconds)

    QUICK: ClassVar[dict[str, Any]] = dict(upper_iterations=60, ift_iterations=300, lista_epochs=300)


def check_config(config: Config) -> None:
    if config.signal not in TUNED_WEIGHTS["gaussian"]:
        raise RunError(f"unknown signal '{config.signal}' (use {', '.join(TUNED_WEIGHTS['gaussian'])})")
    if config.operator not in TUNED_WEIGHTS:
        raise RunError(f"unknown operator '{config.operator}' (use gaussian or integration)")
    unknown = set(config.solvers) - {"maid", "ift", "lista"}
    if unknown or not config.solvers:
        raise RunError(f"unknown solver(s) {', '.join(sorted(unknown)) or '(none given)'}: use maid, ift, lista")
    if config.points < 10:
        raise RunError(f"points must be at least 10, not {config.points}")
    weights = elastic_net_weights(config)
    if not (weights[0] >= 0 and weights[1] > 0):
        raise RunError(f"need l1_weight >= 0 and l2_weight > 0, not {weights}")


def elastic_net_weights(config: Config) -> tuple[float, float]:
    tuned = TUNED_WEIGHTS[config.operator][config.signal]
    return (tuned[0] if config.l1_weight == -1 else config.l1_weight, tuned[1] if config.l2_weight == -1 else config.l2_weight)


# ---------------------------------------------------------------------------------------------------------------
# Data


def grid(points: int) -> torch.Tensor:
    h = 2.0 / points
    return -1 + h / 2 + h * torch.arange(points, dtype=torch.float64)


def test_signal(name: str, t: torch.Tensor) -> torch.Tensor:
    """The three ground truths of the original ADP experiments."""
    s = lambda a: (t > a).double()  # noqa: E731  (a step at a)
    if name == "piecewise_constant":
        return s(-0.6) - 0.7 * s(-0.5) - 0.3 * s(0) + 0.7 * s(0.2) - 0.7 * s(0.5)
    if name == "gaussians":
        return 0.8 * torch.exp(-32 * (t + 0.3) ** 2) + 0.4 * torch.exp(-16 * (t - 0.1) ** 2)
    return ((t + 0.7) * s(-0.7) - (2 * t + 1) * s(-0.5) + (t + 0.3) * s(-0.3) + (0.9 - t) * s(-0.1)
            + (t - 0.2) * s(0.2) - 0.7 * s(0.4) + (3 * t - 1.8) * s(0.6) - (3 * t - 1.8) * s(0.8))


def forward_operator(name: str, points: int) -> torch.Tensor:
    """Gaussian convolution A_ij = exp(−(i − j)²/50)/(5√(2π)) or integration A_ij = h for j ≤ i."""
    i = torch.arange(points, dtype=torch.float64)
    if name == "gaussian":
        return torch.exp(-((i[:, None] - i[None, :]) ** 2) / 50) / (5 * math.sqrt(2 * math.pi))
    return torch.tril(torch.full((points, points), 2.0 / points, dtype=torch.float64))


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


def sync_clock(device: torch.device) -> float:
    synchronize(device)
    return time.perf_counter()


def run_maid(problem: ElasticNetADP, x0: torch.Tensor, config: Config, bar: tqdm) -> dict[str, Any]:
    start = sync_clock(x0.device)
    log = [dict(seconds=0.0, lower_iterations=0, linear_work=0, loss=problem.upper_loss(x0))]

    def observe(row: dict[str, Any], b: torch.Tensor, x: torch.Tensor) -> None:
        log.append(dict(seconds=sync_clock(x.device) - start, lower_iterations=row["cumulative_lower_evaluations"],
                        linear_work=row["cumulative_cg_matvecs"], loss=problem.upper_loss(x)))
        bar.update(1 if row["attempt"] == 0 else 0)
        bar.set_postfix(loss=f"{log[-1]['loss']:.4g}", eps=f"{row['eps']:.1e}")

    result = maid(problem, problem.a.clone(), x0, config, observe)
    return dict(b=result.theta, x=result.x, log=log, stop_reason=result.stop_reason)


def run_ift(problem: ElasticNetADP, x0: torch.Tensor, config: Config, bar: tqdm) -> dict[str, Any]:
    """Implicit differentiation at a fixed tight accuracy with a fixed step (the paper's 'high-accuracy IFT')."""
    b, x, q = problem.a.clone(), x0, None
    start = sync_clock(x0.device)
    log = [dict(seconds=0.0, lower_iterations=0, linear_work=0, loss=problem.upper_loss(x0))]
    lower, linear = 0, 0
    for _ in range(config.ift_iterations):
        x, _, cost = problem.solve_lower(b, config.ift_accuracy, x)
        z, q, matvecs = problem.hypergradient(b, x, 1e-2 * config.ift_accuracy, q)
        lower, linear = lower + cost, linear + matvecs
        log.append(dict(seconds=sync_clock(x.device) - start, lower_iterations=lower, linear_work=linear,
                        loss=problem.upper_loss(x)))
        b = b - config.ift_step * z
        bar.update(1)
    x, _, cost = problem.solve_lower(b, config.ift_accuracy, x)  # the reconstruction at the final B
    return dict(b=b, x=x, log=log, stop_reason="iteration cap reached")


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


SOLVERS = {"maid": ("MAID", run_maid, "upper_iterations"), "ift": ("IFT", run_ift, "ift_iterations"),
           "lista": ("LISTA L=∞", run_lista, "lista_epochs")}


def time_to_target(log: list[dict[str, Any]], target: float) -> dict[str, Any]:
    """The first logged point with loss ≤ target: its time and lower-level iterations (None if never)."""
    for row in log:
        if row["loss"] <= target:
            return dict(seconds=row["seconds"], lower_iterations=row["lower_iterations"], linear_work=row["linear_work"])
    return dict(seconds=None, lower_iterations=None, linear_work=None)


# ---------------------------------------------------------------------------------------------------------------
# Outputs


def write_outputs(folder, t, truth, y, a, results: dict[str, dict[str, Any]], table: list[dict[str, Any]]) -> None:
    lines = lambda key: [([r[key] for r in res["log"]], [r["loss"] for r in res["log"]], SOLVERS[n][0])  # noqa: E731
                         for n, res in results.items()]
    figures.curves(folder / "curve.png", [
        dict(lines=lines("seconds"), xlabel="wall time (s)", ylabel="upper loss ½‖Ax − y‖²", logy=True),
        dict(lines=[(x[1:], l[1:], n) for x, l, n in lines("lower_iterations")],
             xlabel="cumulative lower-level iterations", ylabel="upper loss ½‖Ax − y‖²", logx=True, logy=True),
    ], n_cols=2)
    write_csv(folder / "curve.csv", [dict(solver=n, **row) for n, res in results.items() for row in res["log"]])
    reconstructions = [(t, truth, "truth"), (t, y, "noisy data")] + [
        (t, res["x"], f"{SOLVERS[n][0]} (ℓ1 error {(res['x'] - truth).abs().sum().item() * 2 / len(t):.3f})")
        for n, res in results.items()
    ]
    figures.curves(folder / "reconstructions.png", [dict(lines=reconstructions, xlabel="t", ylabel="signal")], n_cols=1)
    figures.kernel_grid(folder / "B_minus_A.png", [[(res["b"] - a, f"B − A, {SOLVERS[n][0]}") for n, res in results.items()]])
    write_csv(folder / "table.csv", table)


def run(config: Config) -> dict[str, Any]:
    """Solve the 1-D ADP problem with every solver of the config; write the run folder; return the results."""
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
    folder = start_run(config, "adp_1d", device)
    results = {}
    for name in config.solvers:
        label, solver, iterations = SOLVERS[name]
        with tqdm(total=getattr(config, iterations), desc=label, disable=not config.progress, leave=False) as bar:
            results[name] = solver(problem, torch.zeros_like(y), config, bar)
    best = min(row["loss"] for res in results.values() for row in res["log"])
    table = []
    for name, res in results.items():
        reached = time_to_target(res["log"], 1.01 * best)
        table.append(dict(solver=SOLVERS[name][0], final_loss=res["log"][-1]["loss"],
                          seconds=res["log"][-1]["seconds"], lower_iterations=res["log"][-1]["lower_iterations"],
                          linear_work=res["log"][-1]["linear_work"],
                          seconds_to_1pct=reached["seconds"], lower_iterations_to_1pct=reached["lower_iterations"],
                          l1_error=(res["x"] - truth).abs().sum().item() * 2 / config.points,
                          stop_reason=res["stop_reason"]))
    write_outputs(folder, t, truth, y, a, results, table)
    speedups = {}
    rows = {name: row for name, row in zip(results, table)}
    maid_row, ift_row = rows.get("maid"), rows.get("ift")
    if maid_row and ift_row and maid_row["seconds_to_1pct"] is not None and ift_row["seconds_to_1pct"] is not None:
        speedups = dict(time=ift_row["seconds_to_1pct"] / maid_row["seconds_to_1pct"],
                        lower_iterations=ift_row["lower_iterations_to_1pct"] / maid_row["lower_iterations_to_1pct"])
    write_json(folder / "metrics.json", dict(best_loss=best, initial_loss=results[config.solvers[0]]["log"][0]["loss"],
                                             solvers=table, maid_speedup_over_ift_to_1pct=speedups))
    print(f"best upper loss {best:.5g}; to within 1% of it:")
    for row in table:
        when = "never" if row["seconds_to_1pct"] is None else \
            f"{row['seconds_to_1pct']:.2f} s, {row['lower_iterations_to_1pct']} lower iterations"
        print(f"  {row['solver']:>10}: final {row['final_loss']:.5g} in {row['seconds']:.1f} s; 1%: {when}")
    if speedups:
        print(f"MAID over IFT: {speedups['time']:.1f}x in time, {speedups['lower_iterations']:.1f}x in lower iterations")
    print(f"wrote {folder}")
    return dict(folder=folder, results=results, table=table, best_loss=best, speedups=speedups)


def main(argv: list[str] | None = None) -> None:
    run(parse_config(Config, argv, description=__doc__))


if __name__ == "__main__":
    run_main(main)
