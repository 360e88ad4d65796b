"""MAID, the method of adaptive inexact descent (Salehi, Mukherjee, Roberts, Ehrhardt, SIMODS 2025, Algorithms 3.1
and 3.2), generic in the bilevel problem: ADP.py and adp_1d.py both call `maid`.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from .errors import RunError
from dipkit.device import synchronize



@dataclass
class MAIDResult:
    theta: torch.Tensor  # the final upper variable
    x: torch.Tensor  # the lower-level solution at theta, to the final accuracy
    log: list[dict[str, Any]]  # one row per oracle call (accepted or rejected line search)
    stop_reason: str
    seconds: dict[str, float] = field(default_factory=dict)  # wall time: lower, cg, line_search


def maid(
    problem: Any,
    theta: torch.Tensor,
    x: torch.Tensor,
    config: Any,
    observe: Callable[[dict[str, Any], torch.Tensor, torch.Tensor], None] | None = None,
) -> MAIDResult:
    """Minimise F(θ) = g(x(θ)) + R(θ) by MAID from θ, warm-starting the lower level at x.

    `problem` provides solve_lower(θ, ε, warm) -> (x̃, accuracy, cost), hypergradient(θ, x̃, δ, q0) -> (z, q,
    cost), upper_value_and_gradient_norm(θ, x̃) -> (g(x̃) + R(θ), ‖∇g(x̃)‖) and upper_lipschitz (L_g). The
    inexact line search accepts step a when U⁺(θ − a z) − U⁻(θ) + armijo·a‖z‖² ≤ 0 with the bounds
    U^±(θ) = g(x̃) + R(θ) ± (‖∇g(x̃)‖ε + L_g ε²/2) of F(θ), valid for ‖x̃ − x(θ)‖ ≤ ε: an accepted step
    decreases the exact F by at least armijo·a‖z‖². `observe(row, θ, x̃)` is called after each oracle call.
    """
    eps, delta, alpha = config.eps0, config.delta0, config.alpha0
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

    for k in range(config.upper_iterations):
        for attempt in itertools.count():
            if eps < config.eps_threshold:
                return MAIDResult(theta, x, log, f"accuracy ε = {eps:.2e} below threshold", dict(seconds))
            x, accuracy, cost = timed("lower", problem.solve_lower, theta, eps, x)
            z, q, cg_cost = timed("cg", problem.hypergradient, theta, x, delta, q)
            z_norm2 = z.pow(2).sum().item()
            if not math.isfinite(z_norm2):
                raise RunError(f"the hypergradient is not finite at upper iteration {k}")
            lower_bound, value = bound(theta, x, accuracy, -1)
            step, accepted, trial = alpha, False, 0
            tic = time.perf_counter()
            for trial in range(1, config.backtracking + attempt + 1):
                theta_trial = theta - step * z
                x_trial, accuracy_trial, trial_cost = problem.solve_lower(theta_trial, eps, x)
                cost += trial_cost
                upper_bound, trial_value = bound(theta_trial, x_trial, accuracy_trial, +1)
                if upper_bound - lower_bound + config.armijo * step * z_norm2 <= 0:
                    accepted = True
                    break
                step *= config.rho
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
                eps, delta, alpha = config.nu_bar * eps, config.nu_bar * delta, config.rho_bar * step
                break
            if accuracy > eps:  # the lower level stalled (iteration cap or floating-point floor): tightening is futile
                return MAIDResult(theta, x, log, f"lower level cannot reach accuracy ε = {eps:.2e}", dict(seconds))
            if config.nu >= 1:  # a fixed accuracy (an ablation): retrying with smaller steps cannot close the bounds' gap
                return MAIDResult(theta, x, log, f"line search failed at the fixed accuracy ε = {eps:.2e}", dict(seconds))
            eps, delta = config.nu * eps, config.nu * delta
    return MAIDResult(theta, x, log, "upper iteration cap reached", dict(seconds))
