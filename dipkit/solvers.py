"""First-order, quasi-Newton and Krylov solvers with certificates: FISTA (with an optional prox) and L-BFGS for
convex problems, conjugate gradients for linear systems.

Each counts its work in the unit that costs: gradient evaluations for FISTA and L-BFGS (a function value
computed with its gradient counts once), matrix-vector (Hessian-vector) products for CG. The minimisers stop on
the same test, ‖∇h‖ ≤ tolerance (with a prox, the gradient mapping), so on a μ-strongly convex h either
certifies ‖x − x*‖ ≤ tolerance/μ whichever found x.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

Operator = Callable[[torch.Tensor], torch.Tensor]


def _dot(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.vdot(a.flatten(), b.flatten()).item()


def _norm(a: torch.Tensor) -> float:
    return torch.linalg.vector_norm(a).item()


@dataclass
class MinimiserResult:
    x: torch.Tensor  # the returned point
    gradient_evaluations: int  # the cost
    stationarity: float  # ‖∇h(x)‖, or with a prox 2‖G(x)‖: ‖x − x*‖ ≤ stationarity/μ for μ-strongly convex h
    converged: bool  # stationarity <= tolerance


def fista(
    gradient: Operator,
    x0: torch.Tensor,
    lipschitz: float,
    tolerance: float,
    max_iterations: int,
    prox: Callable[[torch.Tensor, float], torch.Tensor] | None = None,
) -> MinimiserResult:
    """Minimise h = f + r by FISTA with adaptive gradient restart; f convex with `lipschitz`-Lipschitz gradient,
    r convex with proximal map prox(v, step) (r = 0 when prox is None).

    Smooth case: stops at the first extrapolated point y with ‖∇f(y)‖ ≤ tolerance and returns it, so the test
    costs no extra gradient; if h is μ-strongly convex, ‖y − x*‖ ≤ ‖∇f(y)‖/μ. Composite case: with the step
    1/L, x⁺ = prox(y − ∇f(y)/L) and the gradient mapping G = L(y − x⁺), G − ∇f(y) + ∇f(x⁺) ∈ ∂h(x⁺), so
    ‖x⁺ − x*‖ ≤ (‖G‖ + L‖y − x⁺‖)/μ = 2‖G‖/μ; it stops when 2‖G‖ ≤ tolerance and returns x⁺. Either way
    tolerance = μ·ε certifies an ε-accurate solution. Momentum restarts when ⟨G, x_{k+1} − x_k⟩ > 0
    (O'Donoghue and Candès 2015), which gives linear convergence on strongly convex problems without knowing μ.
    At most max_iterations steps are taken (max_iterations + 1 gradient evaluations).
    """
    step = 1.0 / lipschitz
    x = y = x0
    t = 1.0
    for k in range(max_iterations + 1):
        g = gradient(y)
        x_next = y.add(g, alpha=-step)
        if prox is not None:
            x_next = prox(x_next, step)
            g = (y - x_next) / step  # the gradient mapping
        stationarity = _norm(g) * (1.0 if prox is None else 2.0)
        if not math.isfinite(stationarity):
            raise FloatingPointError("FISTA: the gradient is not finite")
        if stationarity <= tolerance or k == max_iterations:
            return MinimiserResult(y if prox is None else x_next, k + 1, stationarity, stationarity <= tolerance)
        move = x_next - x
        if _dot(g, move) > 0:  # the step points uphill from the last iterate: drop the momentum
            t = 1.0
        t_next = (1 + math.sqrt(1 + 4 * t * t)) / 2
        y = x_next.add(move, alpha=(t - 1) / t_next)
        x, t = x_next, t_next
    raise AssertionError("unreachable")


def lbfgs(
    value_and_gradient: Callable[[torch.Tensor], tuple[float, torch.Tensor]],
    x0: torch.Tensor,
    tolerance: float,
    max_evaluations: int,
    initial_step: float,
    memory: int = 10,
    armijo: float = 1e-4,
) -> MinimiserResult:
    """Minimise a smooth convex h by L-BFGS (Nocedal and Wright 2006, Alg. 7.4 and 7.5) until ‖∇h(x)‖ ≤ tolerance.

    The direction is the two-loop recursion on the last `memory` pairs (s, y) with sᵀy > 0, scaled by sᵀy/yᵀy;
    the first step is −initial_step·∇h (1/L is safe). A backtracking line search halves the step from 1 until
    h(x + t d) ≤ h(x) + armijo·t⟨∇h(x), d⟩, or ⟨∇h(x + t d), d⟩ ≤ armijo·⟨∇h(x), d⟩, which implies the same
    decrease for a convex h (h(x + td) − h(x) ≤ t⟨∇h(x + td), d⟩) and, unlike the values, does not drown in
    rounding near the minimum. If d is not a descent direction the memory is dropped. Every evaluation of
    (h, ∇h) counts, line-search ones included; at most max_evaluations are made.
    """
    value, g = value_and_gradient(x0)
    x, evaluations = x0, 1
    pairs: list[tuple[torch.Tensor, torch.Tensor, float]] = []
    while True:
        stationarity = _norm(g)
        if not math.isfinite(stationarity) or not math.isfinite(value):
            raise FloatingPointError("L-BFGS: the objective or its gradient is not finite")
        if stationarity <= tolerance or evaluations >= max_evaluations:
            return MinimiserResult(x, evaluations, stationarity, stationarity <= tolerance)
        direction = -_two_loop(g, pairs, initial_step)
        slope = _dot(g, direction)
        if not slope < 0:  # curvature pairs gone stale: restart from the scaled gradient
            pairs, direction = [], -initial_step * g
            slope = -initial_step * stationarity**2
        step = 1.0
        while True:
            x_next = x.add(direction, alpha=step)
            value_next, g_next = value_and_gradient(x_next)
            evaluations += 1
            decreased = value_next <= value + armijo * step * slope or _dot(g_next, direction) <= armijo * slope
            if decreased or evaluations >= max_evaluations:
                break
            step *= 0.5
        s, y = x_next - x, g_next - g
        sy = _dot(s, y)
        if sy > 0:
            pairs = (pairs + [(s, y, 1.0 / sy)])[-memory:]
        x, value, g = x_next, value_next, g_next


def _two_loop(g: torch.Tensor, pairs: list[tuple[torch.Tensor, torch.Tensor, float]], initial_step: float):
    """H g for the L-BFGS inverse-Hessian approximation H built from `pairs`."""
    q = g.clone()
    alphas = []
    for s, y, rho in reversed(pairs):
        alpha = rho * _dot(s, q)
        q.add_(y, alpha=-alpha)
        alphas.append(alpha)
    if pairs:
        s, y, _ = pairs[-1]
        q.mul_(_dot(s, y) / _dot(y, y))
    else:
        q.mul_(initial_step)
    for (s, y, rho), alpha in zip(pairs, reversed(alphas)):
        q.add_(s, alpha=alpha - rho * _dot(y, q))
    return q


def project_simplex(v: torch.Tensor) -> torch.Tensor:
    """The Euclidean projection of each row of v (N, d) onto the simplex {p ≥ 0, Σp = 1}: p = max(v − θ, 0) with
    θ found from the sorted entries (Held, Wolfe and Crowder 1974; Duchi et al. 2008)."""
    u = torch.sort(v, dim=1, descending=True).values
    excess = u.cumsum(dim=1) - 1
    ranks = torch.arange(1, v.shape[1] + 1, device=v.device, dtype=v.dtype)
    support = (u - excess / ranks > 0).sum(dim=1, keepdim=True)  # how many entries stay positive
    theta = excess.gather(1, support - 1) / support
    return (v - theta).clamp(min=0)


def soft_threshold(v: torch.Tensor, threshold: float) -> torch.Tensor:
    """prox of threshold·‖·‖₁: sign(v)·max(|v| − threshold, 0)."""
    return torch.sign(v) * torch.clamp(v.abs() - threshold, min=0)


@dataclass
class CGResult:
    x: torch.Tensor  # the approximate solution
    matvecs: int  # operator applications, the cost
    residual_norm: float  # ‖b − A x‖ (the recursively updated residual)
    converged: bool  # residual_norm <= tolerance


def conjugate_gradient(
    operator: Operator,
    rhs: torch.Tensor,
    tolerance: float,
    max_iterations: int,
    x0: torch.Tensor | None = None,
) -> CGResult:
    """Solve A x = rhs for symmetric positive definite A, stopping at the absolute residual ‖rhs − A x‖ ≤ tolerance.

    A warm start x0 costs one extra operator application (its residual).
    """
    if x0 is None:
        x, r, matvecs = torch.zeros_like(rhs), rhs.clone(), 0
    else:
        x, r, matvecs = x0.clone(), rhs - operator(x0), 1
    p = r.clone()
    rr = _dot(r, r)
    for _ in range(max_iterations):
        if math.sqrt(rr) <= tolerance:
            break
        ap = operator(p)
        matvecs += 1
        curvature = _dot(p, ap)
        if not curvature > 0:
            raise FloatingPointError("CG: the operator is not positive definite along the search direction")
        a = rr / curvature
        x = x + a * p
        r = r - a * ap
        rr_next = _dot(r, r)
        p = r + (rr_next / rr) * p
        rr = rr_next
    return CGResult(x, matvecs, math.sqrt(rr), math.sqrt(rr) <= tolerance)
