import pytest
import torch

from dipkit.solvers import conjugate_gradient, fista, lbfgs, soft_threshold


def spd_matrix(n: int, condition: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return q @ torch.diag(torch.logspace(0, -torch.log10(torch.tensor(condition)).item(), n, dtype=torch.float64)) @ q.T


def quadratic(n: int, condition: float):
    """h(x) = ½xᵀHx − bᵀx: (H, b, μ, L, the minimiser)."""
    h = spd_matrix(n, condition)
    b = torch.randn(n, dtype=torch.float64)
    mu, lipschitz = torch.linalg.eigvalsh(h)[[0, -1]].tolist()
    return h, b, mu, lipschitz, torch.linalg.solve(h, b)


@pytest.mark.parametrize("eps", [1e-2, 1e-5, 1e-8])
def test_fista_meets_the_accuracy_it_certifies(eps):
    h, b, mu, lipschitz, exact = quadratic(30, 1e3)
    result = fista(lambda x: h @ x - b, torch.zeros(30, dtype=torch.float64), lipschitz, mu * eps, 100_000)
    assert result.converged
    assert (result.x - exact).norm() <= eps
    assert result.stationarity == pytest.approx((h @ result.x - b).norm().item())


def test_fista_stops_at_the_cap_and_says_so():
    h = spd_matrix(30, 1e4)
    result = fista(lambda x: h @ x - 1, torch.zeros(30, dtype=torch.float64), 1.0, 1e-12, 5)
    assert not result.converged and result.gradient_evaluations == 6


def test_fista_warm_start_at_the_solution_costs_one_gradient():
    h = spd_matrix(10, 10)
    b = torch.randn(10, dtype=torch.float64)
    result = fista(lambda x: h @ x - b, torch.linalg.solve(h, b), 1.0, 1e-8, 100)
    assert result.converged and result.gradient_evaluations == 1


@pytest.mark.parametrize("eps", [1e-2, 1e-5, 1e-8])
def test_lbfgs_meets_the_accuracy_it_certifies_in_fewer_evaluations_than_fista(eps):
    h, b, mu, lipschitz, exact = quadratic(60, 1e4)
    calls = []

    def value_and_gradient(x):
        calls.append(1)
        return (0.5 * x @ h @ x - b @ x).item(), h @ x - b

    start = torch.zeros(60, dtype=torch.float64)
    result = lbfgs(value_and_gradient, start, mu * eps, 100_000, 1.0 / lipschitz)
    assert result.converged and (result.x - exact).norm() <= eps
    assert result.gradient_evaluations == len(calls)  # line-search evaluations counted too
    assert result.stationarity == pytest.approx((h @ result.x - b).norm().item())
    reference = fista(lambda x: h @ x - b, start, lipschitz, mu * eps, 100_000)
    assert result.gradient_evaluations < reference.gradient_evaluations


def test_lbfgs_on_a_non_quadratic_objective_and_its_cap():
    """h(x) = Σ √(1 + x²) + ½‖x − c‖²: the minimiser solves x/√(1 + x²) + x − c = 0 componentwise (bisection)."""
    c = torch.linspace(-3, 3, 25, dtype=torch.float64)
    lo, hi = torch.full_like(c, -10.0), torch.full_like(c, 10.0)
    for _ in range(200):
        mid = (lo + hi) / 2
        above = mid / torch.sqrt(1 + mid**2) + mid - c > 0
        hi, lo = torch.where(above, mid, hi), torch.where(above, lo, mid)
    value_and_gradient = lambda x: ((torch.sqrt(1 + x**2) + 0.5 * (x - c) ** 2).sum().item(),  # noqa: E731
                                    x / torch.sqrt(1 + x**2) + x - c)
    result = lbfgs(value_and_gradient, torch.zeros_like(c), 1e-10, 1000, 0.5)
    torch.testing.assert_close(result.x, lo, atol=1e-9, rtol=0)
    capped = lbfgs(value_and_gradient, torch.zeros_like(c), 1e-14, 3, 0.5)
    assert not capped.converged and capped.gradient_evaluations == 3


def test_conjugate_gradient_solves_to_its_residual():
    h = spd_matrix(40, 1e4)
    b = torch.randn(40, dtype=torch.float64)
    result = conjugate_gradient(lambda v: h @ v, b, 1e-9, 500)
    assert result.converged and (b - h @ result.x).norm() <= 1e-8
    torch.testing.assert_close(result.x, torch.linalg.solve(h, b), rtol=1e-4, atol=1e-8)
    warm = conjugate_gradient(lambda v: h @ v, b, 1e-9, 500, x0=result.x)
    assert warm.matvecs <= 2  # one residual, at most one correction


@pytest.mark.parametrize("eps", [1e-2, 1e-6])
def test_proximal_fista_meets_the_accuracy_it_certifies(eps):
    """Elastic net ½‖Bx − y‖² + a‖x‖₁ + (m/2)‖x‖²: μ = m; the reference is solved to 1e-13."""
    g = torch.Generator().manual_seed(3)
    b = torch.randn(40, 30, generator=g, dtype=torch.float64)
    y = torch.randn(40, generator=g, dtype=torch.float64)
    a, m = 2.0, 0.05
    lipschitz = torch.linalg.matrix_norm(b, 2).item() ** 2 + m
    gradient = lambda x: b.T @ (b @ x - y) + m * x  # noqa: E731
    prox = lambda v, step: soft_threshold(v, a * step)  # noqa: E731
    x0 = torch.zeros(30, dtype=torch.float64)
    exact = fista(gradient, x0, lipschitz, m * 1e-13, 1_000_000, prox).x
    result = fista(gradient, x0, lipschitz, m * eps, 1_000_000, prox)
    assert result.converged and (result.x - exact).norm() <= eps
    assert 0 < (exact == 0).sum() < 30  # a genuinely sparse solution
