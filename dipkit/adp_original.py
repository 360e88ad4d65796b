"""The ADP paper's code, reproduced: the two columns of its figure (TV and ADP-β-MAID) as that code computed them.

The paper's figure came from code (Analytical-Deep-Priors: ADP.py, MAID.py, hg.py, TV.py) that differs from the
method the paper states. This module re-states that code's behaviour, written from a reading of it; `ADP.py
--original_code` runs it. Both columns minimise the same TV problem

    h(x; b) = ½‖B_b x − y‖² + λ TV(x)                  (FISTA's objective; TV with the code's boundary)

and differ in how far their FISTA runs. Everything else below decides that:

- FISTA steps 1/L, with L from 10 power iterations on the Hessian of ½‖B_b x − y‖² + 100·λ TV(x), not of h
  (a TV weight ×100: L ≈ 200 where h has L ≈ 2, a step about 90× too small); it stops when the mean over
  channels of the per-channel gradient norm falls below the tolerance, and restarts its momentum at every call.
- The TV column is one FISTA call from y: tolerance 1e-3, at most 100 iterations (it stops at 100).
- MAID (MAID.py) solves the lower level only in its line search, from the last accepted x, to a tolerance ε
  that halves after every failed line search and grows by 1.05 after every success; the hypergradient reuses
  the accepted x (one FISTA solve at the first iteration only). CG solves H q = ∇ₓU with the ×100 Hessian,
  started from a random vector the first time and from that first solution ever after.
- The upper loss U(b, x) = ‖B_b x − y‖²/C + β S(b − b0) uses the learned B, its ∂_b term is dropped from the
  hypergradient, and S is the non-squared H¹ norm √(‖u‖² + ‖D₁u‖² + ‖D₂u‖²) whose "gradient" is
  β(u/‖u‖ + D₁ᵀD₁u/‖D₁u‖ + D₂ᵀD₂u/‖D₂u‖) (0 at u = 0).
- A trial step is accepted when the bounds certify a decrease OR the plain inexact loss decreases; the bounds
  are U ± (‖∇ₓU‖ε/C + L_g ε²/2) with L_g = 1/C and ε measured as above (not a distance to x(b)).
- Every trial steps b by α₀: the step the line search shrinks (×0.1 per trial) and grows (×1.5 after success)
  is MAID's own attribute, while the SGD step it calls reads the learning rate the optimiser was built with;
  the line-search step enters only the Armijo term.
- A failed trial is reverted by pointing the weight at the saved copy, which the next trial's in-place step then
  overwrites: after trial 2 fails, b has moved by 2α₀z, and trials 1 and 2 read the Sobolev term at the first
  trial's kernel. (On a CPU the code's b0 aliased the learned kernel, so S was identically 0 there; the
  paper ran on Apple MPS, where it is a copy: reproduced here is the MPS behaviour.)

`bugs` names the behaviours kept; removing one name replaces it by the correct piece (see ORIGINAL_BUGS), so
what each fix changes can be measured. The structure (ε semantics, the skipped lower solve, three trials,
step ×0.1 per trial, ×1.5 after success) is the code's and stays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from dipkit.blur import blur, blur_adjoint
from dipkit.tv import SmoothedTV, forward_differences, forward_differences_adjoint

ORIGINAL_BUGS = {
    "tv_step": "FISTA's step from the Hessian with the TV weight ×100 (fix: L of the problem FISTA minimises)",
    "cg_hessian": "CG on the Hessian with the TV weight ×100 (fix: the Hessian of h)",
    "upper_learned_b": "the upper loss uses the learned B and drops its ∂_b term (fix: the known A = B_b0)",
    "sobolev": "non-squared H¹ norm with a sum-of-norms gradient (fix: (β/2)‖b − b0‖²_H¹ and its gradient)",
    "acceptance": "accept a certified OR a plain decrease (fix: certified decrease only)",
    "cg_start": "CG restarts from its first solution (fix: from the last one)",
    "fixed_step": "every trial steps by α₀: the line search's step reaches only the Armijo term (fix: it is the step)",
    "revert": "a failed line search leaves b moved and the Sobolev term stale (fix: a true revert)",
}

TV_FACTOR = 100.0  # the code's Lower_Level.param: in its Hessian and Lipschitz estimate, not in its gradient
POWER_ITERATIONS = 10


@dataclass
class OriginalSettings:
    """The code's constants (ADP.py, MAID.py and hg.py defaults), with the paper's values as defaults."""

    tv_weight: float = math.exp(-6)  # λ = exp(TV.weights) = e⁻⁶
    tv_smoothing: float = 0.01  # √(d² + 1e-4)
    sobolev_weight: float = 100.0  # β = Upper_Level.reg_param
    tv_column_tolerance: float = 1e-3  # FISTA(y, 1e-3, 100): the TV column
    tv_column_iterations: int = 100
    upper_iterations: int = 41
    alpha0: float = 1e-6
    eps0: float = 1.0
    cg_tolerance0: float = 0.1  # Hypergrad_Calculator's cg_tol until the first MAID step sets it to ε
    lower_max_iterations: int = 200
    cg_max_iterations: int = 200
    trials: int = 3  # max_line_search
    rho: float = 0.1  # step ×0.1 per failed trial (from the step at the start of the line search)
    step_growth: float = 1.5  # nu_step
    eps_growth: float = 1.05  # nu_acc
    eps_shrink: float = 0.5  # tau
    armijo: float = 1e-8
    eps_threshold: float = 1e-6
    bugs: tuple[str, ...] = tuple(ORIGINAL_BUGS)


class OriginalADP:
    """The code's lower and upper levels for one observation y (N = 1, C channels), with kernels (C, k, k)."""

    def __init__(self, y: torch.Tensor, b0: torch.Tensor, settings: OriginalSettings, generator: torch.Generator):
        unknown = set(settings.bugs) - set(ORIGINAL_BUGS)
        if unknown:
            raise ValueError(f"unknown original bug(s) {sorted(unknown)}: use {', '.join(ORIGINAL_BUGS)}")
        self.y, self.b0, self.s, self.bugs = y, b0, settings, set(settings.bugs)
        self.channels = y.shape[1]
        self.tv = SmoothedTV(settings.tv_smoothing, double_last_edges=True)
        self.generator = generator
        self.counts = dict(fista_iterations=0, cg_iterations=0, power_products=0, fista_calls=0)

    def randn_like(self, x: torch.Tensor) -> torch.Tensor:
        return torch.randn(x.shape, generator=self.generator, dtype=x.dtype).to(x.device)

    # lower level ------------------------------------------------------------------------------------------------
    def lower_gradient(self, x: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """∇ₓh = B_bᵀ(B_b x − y) + λ∇TV(x): what the code's FISTA steps along."""
        return blur_adjoint(blur(x, b) - self.y, b) + self.s.tv_weight * self.tv.gradient(x)

    def hessian_vector(self, x: torch.Tensor, b: torch.Tensor, v: torch.Tensor, scaled: bool) -> torch.Tensor:
        """B_bᵀB_b v + f·λ∇²TV(x) v with f = 100 where the code's Hessian is used (scaled), 1 for h's."""
        factor = TV_FACTOR if scaled else 1.0
        return blur_adjoint(blur(v, b), b) + factor * self.s.tv_weight * self.tv.hessian_vector(x, v)

    def power_lipschitz(self, x: torch.Tensor, b: torch.Tensor) -> float:
        """The code's L: 10 normalised power iterations from a random vector, then a Rayleigh quotient."""
        scaled = "tv_step" in self.bugs
        v = self.randn_like(x)
        for _ in range(POWER_ITERATIONS):
            v = self.hessian_vector(x, b, v, scaled)
            v = v / torch.linalg.vector_norm(v)
        hv = self.hessian_vector(x, b, v, scaled)
        self.counts["power_products"] += POWER_ITERATIONS + 1
        return (torch.vdot(hv.flatten(), v.flatten()) / torch.vdot(v.flatten(), v.flatten())).item()

    def fista(self, x0: torch.Tensor, b: torch.Tensor, tolerance: float, max_iterations: int) -> tuple[torch.Tensor, int, float]:
        """The code's FISTA: step 1/L, no restart, stop once mean_c ‖∇h(y)_c‖ < tolerance; returns (x, iterations, L).

        The test reads the gradient at the extrapolated point y_k, and the point returned is x_{k+1}, the step
        taken from it."""
        lipschitz = self.power_lipschitz(x0, b)
        x = y = x0
        t = 1.0
        for i in range(max_iterations):
            g = self.lower_gradient(y, b)
            x_next = y - g / lipschitz
            t_next = (1 + math.sqrt(1 + 4 * t * t)) / 2
            y = x_next + ((t - 1) / t_next) * (x_next - x)
            x, t = x_next, t_next
            channel_norms = torch.linalg.vector_norm(g, dim=(-2, -1)).mean(dim=1)
            if not torch.isfinite(channel_norms).all():
                raise FloatingPointError("the original code's FISTA produced a non-finite gradient")
            if channel_norms.max().item() < tolerance:
                break
        self.counts["fista_iterations"] += i + 1
        self.counts["fista_calls"] += 1
        return x, i + 1, lipschitz

    # upper level ------------------------------------------------------------------------------------------------
    def upper_operator(self, b: torch.Tensor) -> torch.Tensor:
        return b if "upper_learned_b" in self.bugs else self.b0

    def sobolev_value(self, b: torch.Tensor) -> torch.Tensor:
        u = b - self.b0
        d1, d2 = forward_differences(u)
        squared = u.pow(2).sum() + d1.pow(2).sum() + d2.pow(2).sum()
        return self.s.sobolev_weight * (squared.sqrt() if "sobolev" in self.bugs else 0.5 * squared)

    def sobolev_gradient(self, b: torch.Tensor) -> torch.Tensor:
        u = b - self.b0
        d1, d2 = forward_differences(u)
        if "sobolev" not in self.bugs:
            return self.s.sobolev_weight * (u + forward_differences_adjoint(d1, d2))
        unit = lambda w: w / torch.linalg.vector_norm(w) if torch.any(w != 0) else torch.zeros_like(w)  # noqa: E731
        zero1, zero2 = torch.zeros_like(d1), torch.zeros_like(d2)
        terms = unit(u) + forward_differences_adjoint(unit(d1), zero2) + forward_differences_adjoint(zero1, unit(d2))
        return self.s.sobolev_weight * terms

    def upper_loss(self, b: torch.Tensor, x: torch.Tensor, b_sobolev: torch.Tensor | None = None) -> float:
        """U = ‖B x − y‖²/C + β S(b − b0); the Sobolev term read at b_sobolev (a stale kernel) when given."""
        residual = blur(x, self.upper_operator(b)) - self.y
        sob = self.sobolev_value(b if b_sobolev is None else b_sobolev)
        return (residual.pow(2).sum() / self.channels + sob).item()

    def upper_x_gradient(self, b: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        a = self.upper_operator(b)
        return (2.0 / self.channels) * blur_adjoint(blur(x, a) - self.y, a)

    def hypergradient(self, b: torch.Tensor, x: torch.Tensor, cg_tolerance: float, q_start: torch.Tensor | None):
        """z = −∇_b⟨∇ₓh(x; b), q⟩ + Sobolev gradient, H q = ∇ₓU(x) by the code's CG; returns (z, q, iterations)."""
        rhs = self.upper_x_gradient(b, x)
        q0 = self.randn_like(rhs) if q_start is None else q_start
        q, iterations = self.conjugate_gradient(
            lambda v: self.hessian_vector(x, b, v, "cg_hessian" in self.bugs), rhs, q0, cg_tolerance
        )
        bb = b.detach().requires_grad_(True)
        mixed = (blur(x, bb) - self.y).mul(blur(q, bb)).sum()
        (grad_mixed,) = torch.autograd.grad(mixed, bb)
        return -grad_mixed + self.sobolev_gradient(b), q, iterations

    def conjugate_gradient(self, operator: Callable, rhs: torch.Tensor, x0: torch.Tensor, tolerance: float):
        """The code's CG: the residual is tested after each update (so at least one iteration), ‖r‖ < tolerance."""
        x, r = x0, rhs - operator(x0)
        p, rr = r, r.pow(2).sum()
        for i in range(self.s.cg_max_iterations):
            ap = operator(p)
            a = rr / (p * ap).sum()
            x, r = x + a * p, r - a * ap
            rr_next = r.pow(2).sum()
            if rr_next.sqrt().item() < tolerance:
                break
            p, rr = r + (rr_next / rr) * p, rr_next
        self.counts["cg_iterations"] += i + 1
        return x, i + 1


@dataclass
class OriginalResult:
    tv_column: torch.Tensor  # FISTA(y, 1e-3, 100)
    tv_column_lipschitz: float  # the L its step used
    tv_column_iterations: int  # FISTA iterations it ran
    adp_column: torch.Tensor  # MAID's last accepted x
    b: torch.Tensor  # the learned kernels
    log: list[dict[str, Any]] = field(default_factory=list)  # one row per upper iteration
    counts: dict[str, int] = field(default_factory=dict)
    stop_reason: str = ""


def run_original(
    y: torch.Tensor,
    b0: torch.Tensor,
    settings: OriginalSettings,
    seed: int,
    observe: Callable[[dict[str, Any], torch.Tensor], None] | None = None,
) -> OriginalResult:
    """Both columns of the paper's figure as its code computed them; `observe(row, x)` after each upper step."""
    problem = OriginalADP(y, b0, settings, torch.Generator().manual_seed(seed))
    s = settings
    tv_column, tv_iterations, tv_lipschitz = problem.fista(y, b0, s.tv_column_tolerance, s.tv_column_iterations)
    problem.counts.update(fista_iterations=0, fista_calls=0, power_products=0)  # count MAID's work alone

    b, x = b0.clone(), y
    eps, cg_tolerance, step = s.eps0, s.cg_tolerance0, s.alpha0
    loss_old, q_first, q_last = math.inf, None, None
    log, stop_reason = [], "upper iteration cap reached"
    for k in range(s.upper_iterations):
        x_hyper = problem.fista(x, b, eps, s.lower_max_iterations)[0] if k == 0 else x
        q_start = q_first if "cg_start" in problem.bugs else q_last
        z, q_last, cg_iterations = problem.hypergradient(b, x_hyper, cg_tolerance, q_start)
        q_first = q_last if q_first is None else q_first
        z_norm2 = z.pow(2).sum().item()

        start_step, b_before, accepted, trial_b0 = step, b, False, None
        moved = torch.zeros_like(b)  # what the failed trials leave behind under the revert bug
        for i in range(s.trials):
            trial_step = start_step * s.rho**i  # the line search's step
            applied = s.alpha0 if "fixed_step" in problem.bugs else trial_step  # the step b really takes
            b_trial = (b_before - moved if "revert" in problem.bugs else b_before) - applied * z
            trial_b0 = b_trial if i == 0 else trial_b0
            x_new = problem.fista(x, b_trial, eps, s.lower_max_iterations)[0]
            stale = trial_b0 if "revert" in problem.bugs else None
            loss_new = problem.upper_loss(b_trial, x_new, stale)
            decrease = -trial_step * s.armijo * z_norm2
            margin_new = torch.linalg.vector_norm(problem.upper_x_gradient(b_trial, x_new)).item() * eps
            margin_old = torch.linalg.vector_norm(problem.upper_x_gradient(b_trial, x)).item() * eps
            certified = (loss_new + margin_new / problem.channels + 0.5 * eps**2 / problem.channels
                         - loss_old + margin_old / problem.channels) <= decrease
            plain = loss_new - loss_old <= decrease
            if certified or ("acceptance" in problem.bugs and plain):
                b, x, loss_old, accepted = b_trial, x_new, loss_new, True
                step = trial_step * s.step_growth
                break
            if i >= 1:
                moved = moved + applied * z
        if not accepted:
            b = b_before - moved if "revert" in problem.bugs else b_before
        eps = eps * (s.eps_growth if accepted else s.eps_shrink)
        cg_tolerance = eps
        row = dict(iteration=k, accepted=accepted, trials=i + 1, eps=eps, step=step, upper_loss=loss_old,
                   cg_this_iteration=cg_iterations, **problem.counts)
        log.append(row)
        if observe is not None:
            observe(row, x)
        if eps < s.eps_threshold:
            stop_reason = f"ε = {eps:.2e} below threshold"
            break
    return OriginalResult(tv_column, tv_lipschitz, tv_iterations, x, b, log, dict(problem.counts), stop_reason)


def paper_columns(y: torch.Tensor, b0: torch.Tensor, settings: OriginalSettings, seed: int,
                  observe: Callable | None = None) -> OriginalResult:
    """The paper code's TV column and (unless settings.upper_iterations = 0) its ADP column, computed in float32 as
    that code ran, returned in y's dtype."""
    theta0 = b0.expand(y.shape[1], -1, -1).float()
    result = run_original(y.float(), theta0, settings, seed, observe)
    result.tv_column, result.adp_column, result.b = (t.to(y.dtype) for t in (result.tv_column, result.adp_column,
                                                                            result.b))
    return result
