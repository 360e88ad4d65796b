"""First-order and Krylov solvers with certificates: FISTA for smooth convex problems, conjugate gradients.

Both count their work in the unit that costs: gradient evaluations for FISTA, matrix-vector (Hessian-vector)
products for CG.
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
class FistaResult:
    x: torch.Tensor  # the returned point
    gradient_evaluations: int  # the cost
    gradient_norm: float  # ‖∇h(x)‖ at the returned point
    converged: bool  # gradient_norm <= tolerance


def fista(
    gradient: Operator,
    x0: torch.Tensor,
    lipschitz: float,
    tolerance: float,
    max_iterations: int,
) -> FistaResult:
    """Minimise a smooth convex h with ∇h `lipschitz`-Lipschitz by FISTA with adaptive gradient restart.

    Stops at the first extrapolated point y with ‖∇h(y)‖ ≤ tolerance and returns it, so the stopping test
    costs no extra gradient. If h is μ-strongly convex, ‖y − x*‖ ≤ ‖∇h(y)‖/μ: tolerance = μ·ε certifies an
    ε-accurate solution. Momentum restarts when ⟨∇h(y_k), x_{k+1} − x_k⟩ > 0 (O'Donoghue and Candès 2015),
    which gives linear convergence on strongly convex problems without knowing μ. At most max_iterations
    steps are taken (max_iterations + 1 gradient evaluations).
    """
    step = 1.0 / lipschitz
    x = y = x0
    t = 1.0
    for k in range(max_iterations + 1):
        g = gradient(y)
        g_norm = _norm(g)
        if not math.isfinite(g_norm):
            raise FloatingPointError("FISTA: the gradient is not finite")
        if g_norm <= tolerance or k == max_iterations:
            return FistaResult(y, k + 1, g_norm, g_norm <= tolerance)
        x_next = y.add(g, alpha=-step)
        move = x_next - x
        if _dot(g, move) > 0:  # the step points uphill from the last iterate: drop the momentum
            t = 1.0
        t_next = (1 + math.sqrt(1 + 4 * t * t)) / 2
        y = x_next.add(move, alpha=(t - 1) / t_next)
        x, t = x_next, t_next
    raise AssertionError("unreachable")


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
