"""Speed of ADP.py: the cost of one lower-level gradient, and the time split of a whole run.

1. One lower-level gradient ∇ₓh = B_bᵀ(B_b x − y) + λ∇TV_ε(x) + γ(x − ȳ) at 400x300x3, with the project's
   blur adjoint (conv2d only) against the same gradient using deepinv's conv_transpose2d, in the same process:
   the ratio is the speed-up.
2. The lower-level solvers on the paper's problem (astronaut, 400x300): L-BFGS against FISTA, in the same
   process, to the same certificate ‖∇h‖ ≤ γε: a cold solve from y (ε = 1e-2, the converged TV) and a warm solve
   after a kernel change of 1e-4 (ε = 2e-4, where MAID works): gradient evaluations, seconds, the ratio.
3. A full ADP.py run (any ADP.py options may follow; default: the paper's setting on one image) and its time
   split: lower level (oracle solves), CG (hypergradients), line search (trial solves), baselines.

    python bench/bench_adp.py                 # paper setting, one image (a few minutes on a 2-core CPU)
    python bench/bench_adp.py --quick         # seconds
Prints a table and writes Results/bench/adp.json.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import torch
from deepinv.physics.functional import conv_transpose2d

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ADP  # noqa: E402
from dipkit.blur import blur, blur_adjoint  # noqa: E402
from dipkit.cli import parse_config, run_main  # noqa: E402
from dipkit.device import choose_device, keep_freed_memory  # noqa: E402
from dipkit.runs import run_record, write_json  # noqa: E402
from dipkit.tv import SmoothedTV  # noqa: E402


def best_milliseconds(function, repeats: int = 5, number: int = 10) -> float:
    function()
    best = float("inf")
    for _ in range(repeats):
        tic = time.perf_counter()
        for _ in range(number):
            function()
        best = min(best, (time.perf_counter() - tic) / number)
    return 1e3 * best


def gradient_costs() -> list[dict]:
    rows = []
    tv = SmoothedTV(0.01)
    for dtype in (torch.float32, torch.float64):
        x = torch.rand(1, 3, 400, 300, dtype=dtype)
        y = torch.rand_like(x)
        b = (torch.eye(5, dtype=dtype) / 5).expand(3, 5, 5).clone()

        def ours():
            return blur_adjoint(blur(x, b) - y, b) + 2.5e-3 * tv.gradient(x) + 1e-2 * (x - 0.5)

        def with_deepinv_adjoint():
            return conv_transpose2d(blur(x, b) - y, b[None], padding="replicate") + 2.5e-3 * tv.gradient(x) + 1e-2 * (x - 0.5)

        torch.testing.assert_close(ours(), with_deepinv_adjoint())
        base, new = best_milliseconds(with_deepinv_adjoint), best_milliseconds(ours)
        rows.append(dict(dtype=str(dtype).split(".")[-1], deepinv_adjoint_ms=base, ours_ms=new, speedup=base / new))
    return rows


def lower_solver_costs(config) -> list[dict]:
    x_true = ADP.load_image("astronaut", (400, 300), 3, "cpu", torch.float64)
    b0 = ADP.known_kernel(config).double()
    y = ADP.observe_data(x_true, b0, config, config.seed)
    theta0 = b0.expand(3, -1, -1).clone()
    moved = theta0 + 1e-4 * torch.randn(theta0.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    rows = []
    for case, theta, eps, start in (("cold, from y", theta0, 1e-2, None), ("warm, kernel moved 1e-4", moved, 2e-4, "x0")):
        row = dict(case=case, accuracy=eps)
        for solver in ("fista", "lbfgs"):
            problem = ADP.ADPBeta(y, b0, dataclasses.replace(config, lower_solver=solver, lower_max_iterations=100_000))
            warm = y if start is None else problem.solve_lower(theta0, 1e-3, y)[0]
            tic = time.perf_counter()
            x, accuracy, evaluations = problem.solve_lower(theta, eps, warm)
            row.update({f"{solver}_evaluations": evaluations, f"{solver}_seconds": time.perf_counter() - tic})
            assert accuracy <= eps
        row["speedup"] = row["fista_seconds"] / row["lbfgs_seconds"]
        rows.append(row)
    return rows


def main() -> None:
    config = parse_config(ADP.Config, sys.argv[1:], description=__doc__)
    config = ADP.Config(**{**config.__dict__, "progress": False, "results_dir": "Results/bench", "run_name": "adp-run"})
    keep_freed_memory()  # as ADP.run does
    costs = gradient_costs()
    print("one lower-level gradient at 400x300x3 (best of 5x10, ms):")
    for row in costs:
        print(f"  {row['dtype']}: deepinv adjoint {row['deepinv_adjoint_ms']:.2f}, ours {row['ours_ms']:.2f}, "
              f"speed-up {row['speedup']:.2f}x")
    solvers = lower_solver_costs(config)
    print("\nlower-level solve, astronaut 400x300, to ‖∇h‖ ≤ γε:")
    for row in solvers:
        print(f"  {row['case']:>24} (ε = {row['accuracy']:g}): FISTA {row['fista_evaluations']} gradients "
              f"{row['fista_seconds']:.1f} s, L-BFGS {row['lbfgs_evaluations']} gradients {row['lbfgs_seconds']:.1f} s,"
              f" speed-up {row['speedup']:.2f}x")
    out = ADP.run(config)
    runs = []
    for name, m in out["metrics"]["items"].items():
        s = m["seconds"]
        runs.append(dict(image=name, upper_iterations=m["upper_iterations"], accepted=m["accepted_steps"],
                         lower_evaluations=m["lower_evaluations"], cg_matvecs=m["cg_matvecs"], **s,
                         adp_psnr=m["adp"]["psnr"], tv_psnr=m["tv"]["psnr"]))
    print(f"\n{'image':>10} {'iters':>5} {'grads':>6} {'HVPs':>5} {'lower s':>8} {'CG s':>6} {'search s':>8} "
          f"{'baselines s':>11}")
    for r in runs:
        print(f"{r['image']:>10} {r['upper_iterations']:>5} {r['lower_evaluations']:>6} {r['cg_matvecs']:>5} "
              f"{r['lower']:>8.1f} {r['cg']:>6.1f} {r['line_search']:>8.1f} {r['baselines']:>11.1f}")
    print(f"total {out['metrics']['seconds']:.1f} s")
    path = Path("Results/bench/adp.json")
    write_json(path, dict(gradient=costs, lower_solvers=solvers, runs=runs, total_seconds=out["metrics"]["seconds"],
                          config=config, **run_record(choose_device(config.device))))
    print(f"wrote {path}")


if __name__ == "__main__":
    run_main(main)
