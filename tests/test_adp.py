import json

import pytest
import torch

import ADP
from dipkit.cli import RunError, make_config, run_main
from dipkit.maid import MAIDSettings, maid
from dipkit.solvers import conjugate_gradient, fista



def tiny_problem(height=12, width=10, kernel_size=3, **overrides):
    config = make_config(
        ADP.Config, height=height, width=width, kernel_size=kernel_size, dtype="float64", progress=False, **overrides
    )
    x_true = ADP.load_image("astronaut", (height, width), 3, "cpu", torch.float64)
    b0 = ADP.known_kernel(config).double()
    y = ADP.observe_data(x_true, b0, config, seed=0)
    return ADP.ADPBeta(y, b0, config), b0.expand(3, -1, -1).clone(), x_true, config


def exact_upper(problem, b):
    """F(b) with the lower level solved to 1e-10 (certified)."""
    x, accuracy, _ = problem.solve_lower(b, 1e-10, problem.y)
    assert accuracy <= 1e-10
    return problem.upper_value_and_gradient_norm(b, x)[0]


def test_lower_gradient_and_hessian_match_autograd():
    problem, b, _, _ = tiny_problem()
    x = problem.y.clone().requires_grad_(True)
    h = (
        0.5 * (ADP.blur(x, b) - problem.y).pow(2).sum()
        + problem.tv_weight * problem.tv.value(x)
        + 0.5 * problem.l2_weight * (x - problem.y_mean).pow(2).sum()
    )
    (grad,) = torch.autograd.grad(h, x, create_graph=True)
    v = torch.randn_like(x)
    (hv,) = torch.autograd.grad(grad, x, v)
    torch.testing.assert_close(problem.lower_gradient(x.detach(), b), grad.detach())
    torch.testing.assert_close(problem.lower_hessian_vector(x.detach(), b, v), hv)


def test_lower_lipschitz_bounds_the_hessian():
    problem, b, _, _ = tiny_problem()
    b = b + 0.05 * torch.randn_like(b)  # a perturbed kernel, with negative entries
    x, v = problem.y, torch.randn_like(problem.y)
    for _ in range(500):
        v = problem.lower_hessian_vector(x, b, v)
        top = v.norm().item()
        v = v / top
    assert top <= problem.lower_lipschitz(b)


def test_lower_solve_meets_the_accuracy_it_certifies():
    problem, b, _, _ = tiny_problem()
    reference, _, _ = problem.solve_lower(b, 1e-12, problem.y)
    for eps in (1e-1, 1e-3, 1e-6):
        x, accuracy, _ = problem.solve_lower(b, eps, problem.y)
        assert accuracy <= eps
        assert (x - reference).norm().item() <= accuracy + 1e-12


def test_hypergradient_matches_central_finite_differences():
    problem, b, _, _ = tiny_problem(tv_smoothing=0.05, sobolev_weight=10.0)
    b = b + 0.01 * torch.randn(b.shape, generator=torch.Generator().manual_seed(1), dtype=b.dtype)  # b ≠ b0
    x, _, _ = problem.solve_lower(b, 1e-11, problem.y)
    z, _, _ = problem.hypergradient(b, x, 1e-12, None)
    h = 1e-5
    fd = torch.zeros_like(b)
    for i in range(b.numel()):
        e = torch.zeros_like(b).flatten()
        e[i] = h
        e = e.view_as(b)
        fd.view(-1)[i] = (exact_upper(problem, b + e) - exact_upper(problem, b - e)) / (2 * h)
    assert ((z - fd).norm() / fd.norm()).item() < 1e-4


def test_every_accepted_maid_step_decreases_the_exact_upper_loss():
    problem, theta0, _, config = tiny_problem(height=24, width=20, kernel_size=5)
    config = make_config(
        ADP.Config, **{**config.__dict__, "upper_iterations": 12, "alpha0": 1e-4, "eps0": 1e-1}
    )
    accepted = []
    maid(problem, theta0, problem.y, ADP.MAIDSettings.of(config),
         lambda row, theta, x: accepted.append((row, theta.clone())))
    steps = [(row, theta) for row, theta in accepted if row["accepted"]]
    assert len(steps) >= 5
    previous = exact_upper(problem, theta0)
    for row, theta in steps:
        current = exact_upper(problem, theta)
        guaranteed = config.armijo * row["step"] * row["hypergradient_norm"] ** 2
        assert current <= previous - guaranteed + 1e-12
        previous = current


class QuadraticBilevel:
    """h(x, θ) = ½xᵀQx − xᵀ(Mθ + c), g(x) = ½‖x − t‖², R(θ) = (β/2)‖θ‖²: F has a closed-form minimiser."""

    def __init__(self, n=8, m=3, beta=0.1, seed=0):
        g = torch.Generator().manual_seed(seed)
        a = torch.randn(n, n, generator=g, dtype=torch.float64)
        self.q = a @ a.T / n + 0.5 * torch.eye(n, dtype=torch.float64)
        self.m = torch.randn(n, m, generator=g, dtype=torch.float64)
        self.c = torch.randn(n, generator=g, dtype=torch.float64)
        self.t = torch.randn(n, generator=g, dtype=torch.float64)
        self.beta = beta
        self.mu, self.lipschitz = torch.linalg.eigvalsh(self.q)[[0, -1]].tolist()
        self.upper_lipschitz = 1.0

    def minimiser(self):
        p = torch.linalg.solve(self.q, self.m)
        d = torch.linalg.solve(self.q, self.c)
        return torch.linalg.solve(p.T @ p + self.beta * torch.eye(p.shape[1], dtype=torch.float64), p.T @ (self.t - d))

    def solve_lower(self, theta, eps, warm):
        rhs = self.m @ theta + self.c
        result = fista(lambda x: self.q @ x - rhs, warm, self.lipschitz, self.mu * eps, 100_000)
        return result.x, result.stationarity / self.mu, result.gradient_evaluations

    def upper_value_and_gradient_norm(self, theta, x):
        return (0.5 * (x - self.t).pow(2).sum() + 0.5 * self.beta * theta.pow(2).sum()).item(), (x - self.t).norm().item()

    def hypergradient(self, theta, x, delta, q0):
        cg = conjugate_gradient(lambda v: self.q @ v, x - self.t, delta, 100, x0=q0)
        return self.beta * theta + self.m.T @ cg.x, cg.x, cg.matvecs


def test_maid_reaches_the_closed_form_optimum_of_a_quadratic_bilevel_problem():
    problem = QuadraticBilevel()
    settings = MAIDSettings(eps0=1.0, delta0=1.0, alpha0=0.1, rho=0.5, rho_bar=1.2, nu=0.5, nu_bar=1.1, armijo=1e-4,
                            backtracking=10, eps_threshold=1e-13, upper_iterations=500)
    theta0 = torch.zeros(3, dtype=torch.float64)
    result = maid(problem, theta0, torch.zeros(8, dtype=torch.float64), settings)
    assert (result.theta - problem.minimiser()).norm().item() < 1e-5


def test_end_to_end_writes_every_file(tmp_path, metrics_of):
    config = make_config(
        ADP.Config, quick=True, height=24, width=20, upper_iterations=3, results_dir=str(tmp_path), run_name="e2e",
        progress=False,
    )
    out = ADP.run(config)
    folder = tmp_path / "ADP" / "e2e"
    assert out["folder"] == folder
    for name in ("ADP.png", "kernel.png", "curve.png", "curve.csv", "table.csv", "config.json", "metrics.json"):
        assert (folder / name).stat().st_size > 0, name
    metrics = metrics_of(folder, "ADP")["items"]["astronaut"]
    assert metrics["tv"]["psnr"] > metrics["blurry"]["psnr"]
    assert metrics["tv_oracle"]["psnr"] >= metrics["tv"]["psnr"] - 1e-9
    assert ADP.run(config)["folder"] == tmp_path / "ADP" / "e2e-2"  # never overwrites a run


def test_semiblind_mode_runs_and_moves_the_kernel(tmp_path):
    config = make_config(
        ADP.Config, quick=True, mode="semiblind", height=24, width=20, upper_iterations=4,
        results_dir=str(tmp_path), progress=False,
    )
    metrics = ADP.run(config)["metrics"]["items"]["astronaut"]
    assert metrics["accepted_steps"] >= 1 and metrics["kernel_change_max"] > 0


def test_a_command_line_override_reaches_the_method(tmp_path):
    ADP.main([
        "--quick", "--height", "24", "--width", "20", "--upper_iterations", "2", "--tv_weight", "0.02",
        "--results_dir", str(tmp_path), "--run_name", "cli", "--no-progress",
    ])
    folder = tmp_path / "ADP" / "cli"
    assert json.loads((folder / "config.json").read_text())["config"]["tv_weight"] == 0.02
    metrics = json.loads((folder / "metrics.json").read_text())["items"]["astronaut"]
    assert metrics["tv"]["tv_weight"] == 0.02 and metrics["upper_iterations"] <= 2


@pytest.mark.parametrize(
    "arguments, message",
    [(["--images", "no-such-image.png"], "not found"), (["--setting", "blurry"], "invalid choice"),
     (["--quick", "--resume"], "resume needs the run_name"),
     (["--kernel_size", "99", "--quick"], "larger than the image"), (["--no-such-option", "1"], "Unrecognized options: --no-such-option")],
)
def test_bad_input_exits_with_code_2_and_one_line_writing_nothing(refused, arguments, message):
    refused("ADP.py", arguments, message)


def test_bad_config_through_the_api_is_refused_before_writing(tmp_path):
    with pytest.raises(RunError, match="setting must be one of motion, gaussian, disc, not 'blurry'"):
        ADP.run(make_config(ADP.Config, setting="blurry", results_dir=str(tmp_path)))
    with pytest.raises(RunError, match="unknown setting"):
        make_config(ADP.Config, no_such_field=1)
    assert list(tmp_path.iterdir()) == []


def tiny_adp(tmp_path, **overrides):
    return make_config(ADP.Config, **{**dict(quick=True, height=16, width=12, upper_iterations=2, progress=False,
                                             oracle_factors=(1.0,), images=("astronaut", "coffee"),
                                             results_dir=str(tmp_path), run_name="r"), **overrides})


def test_a_cut_run_resumes_with_its_finished_images_and_ends_as_an_uninterrupted_one(tmp_path, monkeypatch):
    whole = ADP.run(tiny_adp(tmp_path / "whole"))
    original, calls = ADP.solve, []

    def cut(tasks):  # the process is stopped while the second image is computed
        calls.append([task.item for task in tasks])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(tasks)

    monkeypatch.setattr(ADP, "solve", cut)
    with pytest.raises(KeyboardInterrupt):
        ADP.run(tiny_adp(tmp_path / "cut"))
    folder = tmp_path / "cut" / "ADP" / "r"
    assert [p.name for p in (folder / "units").glob("*.pt")] == ["astronaut.pt"]
    resumed = ADP.run(tiny_adp(tmp_path / "cut", resume=True))
    assert calls == [["astronaut"], ["coffee"], ["coffee"]]  # astronaut read back, not solved again
    assert resumed["folder"] == folder and (folder / "table.csv").read_text() == (whole["folder"] / "table.csv").read_text()




def test_a_non_finite_solver_state_stops_with_one_line_and_code_2(capsys):
    problem, b, _, _ = tiny_problem()
    problem.y[0, 0, 0, 0] = float("nan")

    def main():
        problem.solve_lower(b, 1e-3, problem.y)

    with pytest.raises(SystemExit) as stop:
        run_main(main)
    assert stop.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "not finite" in lines[0]


def test_the_original_schedule_shrinks_the_accuracy_at_every_iteration_and_stops_at_its_budget():
    """The 1-D code's loop: ε ← ν·ε after every upper iteration (ν̄·ν after an accepted step), a fixed number of
    trials, no threshold stop: with ν = 0.5 ε falls far below where the adaptive schedule would have stopped."""
    problem = QuadraticBilevel()
    settings = MAIDSettings(eps0=1e-1, delta0=1e-1, alpha0=0.1, rho=0.5, rho_bar=10 / 9, nu=0.5, nu_bar=1.05,
                            armijo=1e-8, backtracking=5, eps_threshold=1e-3, upper_iterations=9, schedule="original")
    rows = []
    result = maid(problem, torch.zeros(3, dtype=torch.float64), torch.zeros(8, dtype=torch.float64), settings,
                  lambda row, theta, x: rows.append(row))
    assert [row["iteration"] for row in rows] == list(range(9)) and result.stop_reason == "upper iteration cap reached"
    assert all(row["attempt"] == 0 and row["trials"] <= 5 for row in rows)
    for before, after in zip(rows, rows[1:]):
        assert after["eps"] == pytest.approx(before["eps"] * 0.5 * (1.05 if before["accepted"] else 1.0))
    assert rows[-1]["eps"] < settings.eps_threshold  # the adaptive schedule would have stopped here
    assert sum(row["accepted"] for row in rows) >= 5
