import json

import pytest
import torch

import adp_1d
from dipkit import runs, signals
from dipkit.cli import make_config



def small_problem(points=40, **overrides):
    config = make_config(adp_1d.Config, points=points, progress=False, **overrides)
    t = signals.grid(points)
    truth = signals.test_signal(config.signal, t)
    a = signals.forward_operator(config.operator, points)
    y = a @ truth + config.noise_level * torch.randn(points, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return adp_1d.ElasticNetADP(a, y, config), config


def exact_loss(problem, b):
    x, accuracy, _ = problem.solve_lower(b, 1e-12, torch.zeros_like(problem.y))
    assert accuracy <= 1e-12
    return problem.upper_value_and_gradient_norm(b, x)[0], x


def test_signals_and_operators_match_their_definitions():
    t = signals.grid(200)
    assert t[0] == pytest.approx(-1 + 0.005) and t[-1] == pytest.approx(1 - 0.005)
    signal = signals.test_signal("piecewise_constant", t)
    assert signal[t < -0.6].abs().max() == 0 and signal[(t > -0.6) & (t < -0.5)].eq(1).all()
    assert signal[(t > 0.2) & (t < 0.5)].sub(0.7).abs().max() < 1e-12 and signal[t > 0.5].abs().max() < 1e-12
    a = signals.forward_operator("gaussian", 200)
    assert a[0, 0] == pytest.approx(1 / (5 * (2 * torch.pi) ** 0.5)) and torch.equal(a, a.T)
    integration = signals.forward_operator("integration", 200)
    assert (integration @ torch.ones(200, dtype=torch.float64))[-1] == pytest.approx(2.0)


@pytest.mark.parametrize("beta", [0.0, 0.5])
def test_elastic_net_hypergradient_matches_finite_differences_on_a_fixed_active_set(beta):
    problem, _ = small_problem(operator_weight=beta)
    b = problem.a + 0.01 * torch.randn(problem.a.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    _, x = exact_loss(problem, b)
    z, _, _ = problem.hypergradient(b, x, 1e-13, None)
    direction = torch.randn(b.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    h = 1e-6  # small enough that the support of x(B) does not change
    (plus, x_plus), (minus, x_minus) = exact_loss(problem, b + h * direction), exact_loss(problem, b - h * direction)
    assert torch.equal(x_plus != 0, x != 0) and torch.equal(x_minus != 0, x != 0)
    assert 0 < (x != 0).sum() < len(x)  # a genuinely sparse solution: the active set matters
    fd = (plus - minus) / (2 * h)
    assert (z * direction).sum().item() == pytest.approx(fd, rel=1e-5)


@pytest.mark.parametrize("solver", ["maid", "maid_fixed", "ift", "lista"])
def test_each_solver_lowers_the_upper_loss(solver):
    problem, config = small_problem(upper_iterations=15, ift_iterations=15, lista_epochs=15)
    _, run, _ = adp_1d.SOLVERS[solver]
    with adp_1d.tqdm(disable=True) as bar:
        result = run(problem, torch.zeros_like(problem.y), config, bar)
    losses = [row["loss"] for row in result["log"]]
    assert losses[-1] < 0.5 * losses[0]
    assert all(b["lower_iterations"] >= a["lower_iterations"] for a, b in zip(result["log"], result["log"][1:]))


def test_the_counters_count_what_they_claim():
    """Wrap the lower solver and the Hessian products: the logged totals must equal what really ran."""
    problem, config = small_problem(upper_iterations=5, ift_iterations=4, lista_epochs=3, lista_layers=7)
    counts = {"gradients": 0, "products": 0}
    solve, hypergradient = problem.solve_lower, problem.hypergradient

    def counted_solve(b, eps, warm):
        x, accuracy, cost = solve(b, eps, warm)
        counts["gradients"] += cost
        return x, accuracy, cost

    def counted_hypergradient(b, x, delta, q0):
        z, v, matvecs = hypergradient(b, x, delta, q0)
        counts["products"] += matvecs
        return z, v, matvecs

    problem.solve_lower, problem.hypergradient = counted_solve, counted_hypergradient
    with adp_1d.tqdm(disable=True) as bar:
        maid = adp_1d.run_maid(problem, torch.zeros_like(problem.y), config, bar)
    assert maid["log"][-1]["lower_iterations"] == counts["gradients"] > 0
    assert maid["log"][-1]["linear_work"] == counts["products"] > 0

    counts.update(gradients=0, products=0)
    with adp_1d.tqdm(disable=True) as bar:
        ift = adp_1d.run_ift(problem, torch.zeros_like(problem.y), config, bar)
    final_solve = counts["gradients"] - ift["log"][-1]["lower_iterations"]  # the reconstruction at the final B
    assert len(ift["log"]) == 5 and 1 <= final_solve and ift["log"][-1]["linear_work"] == counts["products"]

    with adp_1d.tqdm(disable=True) as bar:
        lista = adp_1d.run_lista(problem, torch.zeros_like(problem.y), config, bar)
    assert [row["lower_iterations"] for row in lista["log"]] == [0, 7, 14, 21]


def test_end_to_end_writes_every_file_and_reports_the_speedup(tmp_path):
    adp_1d.run(make_config(adp_1d.Config, quick=True, points=60, upper_iterations=40, ift_iterations=40,
                           lista_epochs=40, tuning_steps=(1e-2, 1.0), tuning_accuracies=(1e-3,), tuning_iterations=100,
                           results_dir=str(tmp_path), run_name="e2e", progress=False))
    folder = tmp_path / "adp_1d" / "e2e"
    for name in ("curve.png", "curve.csv", "reconstructions.png", "B_minus_A.png", "table.csv", "grid.csv",
                 "config.json", "metrics.json"):
        assert (folder / name).stat().st_size > 0, name
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["best_loss"] < metrics["initial_loss"] and len(metrics["items"]) == 6 and metrics["script"] == "adp_1d"
    assert "IFT, tuned" in (folder / "table.csv").read_text() and "MAID, original schedule" in metrics["summary"]
    assert "maid_speedup_over_tuned_ift_to_1pct" in metrics and metrics["ift_tuned"]["step"] == 1e-2


def test_the_tuning_grid_picks_the_fastest_step_that_does_not_diverge():
    problem, config = small_problem(points=60, tuning_steps=(1e-3, 1e-2, 1.0), tuning_accuracies=(1e-6, 1e-3),
                                    tuning_iterations=400)
    rows = adp_1d.tune_ift(problem, torch.zeros_like(problem.y), config, target=None)
    by_step = {(row["step"], row["accuracy"]): row for row in rows}
    assert by_step[1.0, 1e-3]["diverged"] and by_step[1.0, 1e-6]["diverged"]  # far too large a step
    best = adp_1d.best_tuning(rows)
    assert not best["diverged"] and best["seconds_to_1pct"] is not None
    reached = [row for row in rows if not row["diverged"] and row["seconds_to_1pct"] is not None]
    assert best["seconds_to_1pct"] == min(row["seconds_to_1pct"] for row in reached) and len(reached) >= 2
    assert all(row["stop_reason"] == "diverged" for row in rows if row["diverged"])
    # a step that diverges has a loss more than twice its best; the chosen one descends to the target
    with adp_1d.tqdm(disable=True) as bar:
        path = adp_1d.ift_path(problem, torch.zeros_like(problem.y), 1.0, 1e-3, 50, bar)
    losses = [row["loss"] for row in path["log"]]
    assert path["stop_reason"] == "diverged" and losses[-1] > 2 * min(losses[:-1])


def test_maid_with_a_fixed_accuracy_keeps_it_and_terminates():
    problem, config = small_problem(points=60, upper_iterations=30, maid_fixed_accuracy=1e-5)
    rows = []
    fixed = adp_1d.MAIDSettings.of(config, eps0=1e-5, delta0=1e-5, nu=1.0, nu_bar=1.0)
    result = adp_1d.maid(problem, problem.a.clone(), torch.zeros_like(problem.y), fixed,
                         lambda row, b, x: rows.append(row))
    assert rows and all(row["eps"] == 1e-5 and row["delta"] == 1e-5 for row in rows)
    assert sum(row["accepted"] for row in rows) >= 10 and all(row["accepted"] for row in rows[:-1])
    assert result.stop_reason == "upper iteration cap reached" or "fixed accuracy" in result.stop_reason
    with adp_1d.tqdm(disable=True) as bar:
        through_solver = adp_1d.run_maid_fixed(problem, torch.zeros_like(problem.y), config, bar)
    assert through_solver["log"][-1]["loss"] == pytest.approx(problem.upper_loss(result.x))


def test_help_lists_every_option(capsys):
    """Each field's comment is argparse help text, where a bare percent sign breaks --help."""
    with pytest.raises(SystemExit) as exit_:
        adp_1d.parse_config(adp_1d.Config, ["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert all(f"--{field.name}" in text for field in __import__("dataclasses").fields(adp_1d.Config))


def test_bad_input_exits_with_code_2_and_one_line(refused):
    refused("adp_1d.py", ["--solvers", "maid", "newton"], "newton")


def test_lower_lipschitz_is_a_bound():
    problem, _ = small_problem()
    noise = torch.randn(problem.a.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    for size, slack in ((0.05, 10.0), (0.002, 1.5)):  # a bound always; tight for the small changes ADP makes
        b = problem.a + size * noise
        exact = torch.linalg.matrix_norm(b, 2).item() ** 2 + problem.l2_weight
        assert exact <= problem.lower_lipschitz(b) <= slack * exact


def test_the_speedup_compares_maid_with_ift_whatever_the_solver_order(tmp_path):
    """LISTA (listed between them, too short to reach the target) must not stand in for IFT."""
    out = adp_1d.run(make_config(adp_1d.Config, quick=True, points=60, upper_iterations=100, ift_iterations=200,
                                 ift_step=1e-2, lista_epochs=5, solvers=("maid", "lista", "ift"),
                                 results_dir=str(tmp_path), progress=False))
    rows = {row["solver"]: row for row in out["table"]}
    maid, lista, ift = rows["MAID"], rows["LISTA L=∞"], rows["IFT"]
    assert lista["seconds_to_1pct"] is None and maid["seconds_to_1pct"] and ift["seconds_to_1pct"]
    assert not (out["folder"] / "grid.csv").exists()  # no tuned IFT asked for: the grid does not run
    metrics = json.loads((out["folder"] / "metrics.json").read_text())
    assert metrics["ift_tuning_grid"] == [] and metrics["maid_speedup_over_tuned_ift_to_1pct"] == {}
    assert out["speedups"]["time"] == pytest.approx(ift["seconds_to_1pct"] / maid["seconds_to_1pct"])
    assert out["speedups"]["lower_iterations"] == pytest.approx(
        ift["lower_iterations_to_1pct"] / maid["lower_iterations_to_1pct"])


def test_the_smallest_grid_runs_to_its_end_and_a_cut_run_resumes_its_finished_solvers(tmp_path, monkeypatch):
    """--points 10 (the least allowed): MAID can be within 1% at its start, where no speed-up is defined; the run
    still ends with its metrics. Its solvers are kept as they finish: a resume solves only the missing ones."""
    common = dict(quick=True, points=10, upper_iterations=20, ift_iterations=20, lista_epochs=20, tuning_iterations=20,
                  results_dir=str(tmp_path), run_name="small", progress=False)
    first = adp_1d.run(make_config(adp_1d.Config, solvers=("maid", "ift"), **common))
    assert (first["folder"] / "metrics.json").is_file()
    solved = []
    original = adp_1d.solve
    monkeypatch.setattr(adp_1d, "solve", lambda tasks: solved.extend(t.name for t in tasks) or original(tasks))
    again = adp_1d.run(make_config(adp_1d.Config, solvers=("maid", "ift", "lista"), resume=True, **common))
    assert solved == ["lista"] and again["folder"] == first["folder"]
    assert again["table"][:2] == first["table"]
    # the solvers are timed against each other: on another processor every one is solved again
    monkeypatch.setattr(runs, "cpu_name", lambda: "another processor")
    solved.clear()
    adp_1d.run(make_config(adp_1d.Config, solvers=("maid", "ift", "lista"), resume=True, **common))
    assert solved == ["maid", "ift", "lista"]
