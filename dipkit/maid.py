"""MAID, the method of adaptive inexact descent (Salehi, Mukherjee, Roberts, Ehrhardt, SIMODS 2025, Algorithms 3.1
and 3.2), and the implicit differentiation with a fixed step and a fixed accuracy it is measured against
(`fixed_step_ift`, the ADP paper's "high-accuracy IFT"), both generic in the bilevel problem: ADP.py and adp_1d.py
call `maid` with the `MAIDSettings` their constants hold (`MAIDSettings.of`) and a problem that follows
`BilevelProblem`.

Two accuracy schedules:
- "adaptive" (the paper's Algorithm 3.1 with certified bounds): after an accepted step ε, δ grow by ν̄ and the next
  step starts at ρ̄ times the accepted one; after a failed line search ε, δ shrink by ν and the same point is tried
  again with one more trial; MAID stops when ε falls below its threshold, when the lower level cannot reach ε
  (a certificate that no further decrease can be shown) or at its iteration budget;
- "original" (the 1-D ADP code's loop, Analytical-Deep-Priors/1d/ADP_1D.py): every upper iteration shrinks ε, δ
  by ν, after ν̄ on success, so the accuracy tightens at every iteration whatever happens; each line search has
  the same number of trials; the bounds are built on the target ε (the code's, uncertified where the lower solver
  stops at its cap); it stops at its iteration budget, or after 10 iterations once the loss changes by less than
  1e-12 (up or down: a re-solve that raises the loss also stops it, as in the code).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Protocol

import torch

from .device import synchronize
from .errors import RunError


@dataclass(frozen=True)
class MAIDSettings:
    """What MAID takes; ADP.py and adp_1d.py hold it among their constants, under the same names (`of`)."""

    upper_iterations: int  # the budget of upper iterations
    alpha0: float  # initial step
    eps0: float  # initial lower-level accuracy ε (a bound on ‖x̃ − x(θ)‖)
    delta0: float  # initial residual δ of the hypergradient's linear solve
    rho: float = 0.5  # step shrink in the line search
    rho_bar: float = 1.5  # step growth after an accepted step
    nu: float = 0.5  # accuracy shrink (after a failure; "original": at every iteration)
    nu_bar: float = 1.05  # accuracy growth after an accepted step
    armijo: float = 1e-8  # demand a certified decrease of armijo·step·‖∇F‖²
    backtracking: int = 3  # line-search trials ("adaptive": one more after each failure at the same point)
    eps_threshold: float = 1e-6  # "adaptive": stop once ε falls below this
    schedule: Literal["adaptive", "original"] = "adaptive"  # the accuracy schedule (see the module's docstring)

    @classmethod
    def of(cls, constants: Any, **overrides: Any) -> MAIDSettings:
        """The settings a script's constants hold under these names (upper_iterations, alpha0, ...), then
        `overrides` (an ablation's)."""
        held = {f.name: getattr(constants, f.name) for f in dataclasses.fields(cls) if hasattr(constants, f.name)}
        return cls(**{**held, **overrides})


class BilevelProblem(Protocol):
    """min_θ F(θ) = g(x(θ)) + R(θ), x(θ) = argmin_x h(x; θ): what MAID asks of a problem."""

    upper_lipschitz: float  # L_g, the Lipschitz constant of ∇g

    def solve_lower(self, theta: torch.Tensor, eps: float, warm: torch.Tensor) -> tuple[torch.Tensor, float, int]:
        """(x̃, its certified accuracy ‖x̃ − x(θ)‖ (≤ eps unless a cap was hit), the work it took)."""

    def hypergradient(self, theta: torch.Tensor, x: torch.Tensor, delta: float,
                      q0: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(∇F at x̃ with the linear solve to residual δ, the solve's solution (a warm start), its work)."""

    def upper_value_and_gradient_norm(self, theta: torch.Tensor, x: torch.Tensor) -> tuple[float, float]:
        """(g(x̃) + R(θ), ‖∇g(x̃)‖)."""


@dataclass
class MAIDResult:
    theta: torch.Tensor  # the final upper variable
    x: torch.Tensor  # the lower-level solution at theta, to the final accuracy
    log: list[dict[str, Any]]  # one row per oracle call (accepted or rejected line search)
    stop_reason: str
    seconds: dict[str, float] = field(default_factory=dict)  # wall time: lower, cg, line_search


def maid(
    problem: BilevelProblem,
    theta: torch.Tensor,
    x: torch.Tensor,
    settings: MAIDSettings,
    observe: Callable[[dict[str, Any], torch.Tensor, torch.Tensor], None] | None = None,
) -> MAIDResult:
    """Minimise F(θ) = g(x(θ)) + R(θ) by MAID from θ, warm-starting the lower level at x.

    The inexact line search accepts step a when U⁺(θ − a z) − U⁻(θ) + armijo·a‖z‖² ≤ 0 with the bounds
    U^±(θ) = g(x̃) + R(θ) ± (‖∇g(x̃)‖ε + L_g ε²/2) of F(θ), valid for ‖x̃ − x(θ)‖ ≤ ε: an accepted step
    decreases the exact F by at least armijo·a‖z‖² (the "original" schedule builds them on the target ε instead of
    the certified accuracy). `observe(row, θ, x̃)` is called after each oracle call.
    """
    s = settings
    original = s.schedule == "original"
    eps, delta, alpha = s.eps0, s.delta0, s.alpha0
    lipschitz = problem.upper_lipschitz
    q, log, seconds = None, [], defaultdict(float)
    totals = dict(lower_evaluations=0, cg_matvecs=0)
    start = time.perf_counter()

    def timed(part: str, function: Callable, *args):
        synchronize(theta.device)
        tic = time.perf_counter()
        out = function(*args)
        synchronize(theta.device)
        seconds[part] += time.perf_counter() - tic
        return out

    def bound(theta_: torch.Tensor, x_: torch.Tensor, accuracy: float, sign: int) -> tuple[float, float]:
        """(U^±, the inexact value g(x̃) + R(θ) it was built on)."""
        value, gradient_norm = problem.upper_value_and_gradient_norm(theta_, x_)
        if not math.isfinite(value):
            raise RunError("the upper-level loss is not finite (NaN or inf): try a smaller alpha0")
        return value + sign * (gradient_norm * accuracy + 0.5 * lipschitz * accuracy**2), value

    for k in range(s.upper_iterations):
        for attempt in itertools.count():
            if eps < s.eps_threshold and not original:
                return MAIDResult(theta, x, log, f"accuracy ε = {eps:.2e} below threshold", dict(seconds))
            x, accuracy, cost = timed("lower", problem.solve_lower, theta, eps, x)
            z, q, cg_cost = timed("cg", problem.hypergradient, theta, x, delta, q)
            z_norm2 = z.pow(2).sum().item()
            if not math.isfinite(z_norm2):
                raise RunError(f"the hypergradient is not finite at upper iteration {k}")
            lower_bound, value = bound(theta, x, eps if original else accuracy, -1)
            step, accepted, trial = alpha, False, 0
            tic = time.perf_counter()
            for trial in range(1, s.backtracking + attempt + 1):
                theta_trial = theta - step * z
                x_trial, accuracy_trial, trial_cost = problem.solve_lower(theta_trial, eps, x)
                cost += trial_cost
                upper_bound, trial_value = bound(theta_trial, x_trial, eps if original else accuracy_trial, +1)
                if upper_bound - lower_bound + s.armijo * step * z_norm2 <= 0:
                    accepted = True
                    break
                step *= s.rho
            synchronize(theta.device)
            seconds["line_search"] += time.perf_counter() - tic
            if accepted:
                theta, x, value = theta_trial, x_trial, trial_value
            totals["lower_evaluations"] += cost
            totals["cg_matvecs"] += cg_cost
            row = dict(
                iteration=k, attempt=attempt, accepted=accepted, eps=eps, accuracy=accuracy, delta=delta,
                step=step, trials=trial, lower_evaluations=cost, cg_matvecs=cg_cost,
                cumulative_lower_evaluations=totals["lower_evaluations"], cumulative_cg_matvecs=totals["cg_matvecs"],
                seconds=time.perf_counter() - start, hypergradient_norm=math.sqrt(z_norm2),
                upper_loss=value,
            )
            log.append(row)
            if observe is not None:
                observe(row, theta, x)
            if accepted:
                eps, delta, alpha = s.nu_bar * eps, s.nu_bar * delta, s.rho_bar * step
            if original:  # the code: ε shrinks at every iteration, and a failed line search moves on
                eps, delta = s.nu * eps, s.nu * delta
                break
            if accepted:
                break
            if accuracy > eps:  # the lower level stalled (iteration cap or floating-point floor): tightening is futile
                return MAIDResult(theta, x, log, f"lower level cannot reach accuracy ε = {eps:.2e}", dict(seconds))
            if s.nu >= 1:  # a fixed accuracy (an ablation): retrying with smaller steps cannot close the bounds' gap
                return MAIDResult(theta, x, log, f"line search failed at the fixed accuracy ε = {eps:.2e}", dict(seconds))
            eps, delta = s.nu * eps, s.nu * delta
        if original and k > 10 and 0 != log[-2]["upper_loss"] - log[-1]["upper_loss"] < 1e-12:
            return MAIDResult(theta, x, log, "the loss changed by less than 1e-12", dict(seconds))
    return MAIDResult(theta, x, log, "upper iteration cap reached", dict(seconds))


def sync_clock(device: torch.device) -> float:
    """The wall-clock time once the device's queued work is done."""
    synchronize(device)
    return time.perf_counter()


def fixed_step_ift(problem: BilevelProblem, theta: torch.Tensor, x: torch.Tensor, step: float, accuracy: float,
                   iterations: int, loss: Callable[[torch.Tensor], float], tick: Callable[[], None] = lambda: None,
                   stop_below: float = -math.inf) -> MAIDResult:
    """Implicit differentiation with a fixed step on the hypergradient and a fixed lower-level accuracy (the linear
    solve's residual 1e-2·accuracy), from θ, warm-starting the lower level at x; `loss(x̃)` is logged after each
    iteration with its time, its cumulative lower-level evaluations and linear-solve work (the log's first row: the
    start), `tick()` called. It stops once the loss is ≤ stop_below, or as diverged once the lower level fails or
    the loss is not finite, above its start, or more than twice its lowest so far; otherwise after `iterations`. The
    result's x is the lower level solved at the final θ."""
    start, q = sync_clock(x.device), None
    log = [dict(seconds=0.0, lower_iterations=0, linear_work=0, loss=loss(x))]
    lower, linear, stop_reason = 0, 0, "iteration cap reached"
    for _ in range(iterations):
        try:
            x, _, cost = problem.solve_lower(theta, accuracy, x)
        except FloatingPointError:
            stop_reason = "diverged"
            break
        z, q, matvecs = problem.hypergradient(theta, x, 1e-2 * accuracy, q)
        lower, linear = lower + cost, linear + matvecs
        log.append(dict(seconds=sync_clock(x.device) - start, lower_iterations=lower, linear_work=linear, loss=loss(x)))
        tick()
        if not log[-1]["loss"] <= min(log[0]["loss"], 2 * min(row["loss"] for row in log)):
            stop_reason = "diverged"
            break
        if log[-1]["loss"] <= stop_below:
            stop_reason = "reached the target"
            break
        theta = theta - step * z
    if stop_reason != "diverged":
        x, _, _ = problem.solve_lower(theta, accuracy, x)  # the reconstruction at the final θ
    return MAIDResult(theta, x, log, stop_reason)
