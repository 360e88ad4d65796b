"""The optimiser step of a batch: StackedAdam (dipkit.batch; torch's foreach Adam on the stacked tensors) against
the runs' own torch.optim.Adam one after another, tensor by tensor (foreach off, as torch.optim.Adam runs on a CPU)
and foreach, on the parameters of SelfDeblur's image network G_x (the quick widths and the paper's).

Each row: seconds per step of N runs, after 3 warm-up steps, the median of --repeats timings of --steps steps; and
the kernels (operator calls) one step launches, counted with torch's profiler. Results are the same to the last bit
(tests/test_batch.py); only the time differs.

    python bench/bench_stacked_adam.py [--runs 1 4 8] [--steps 20] [--device auto]
Writes Results/bench/stacked_adam.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import selfdeblur  # noqa: E402
from common import write_bench  # noqa: E402  (bench/)
from dipkit.batch import StackedAdam  # noqa: E402
from dipkit.cli import make_config  # noqa: E402
from dipkit.device import choose_device, synchronize  # noqa: E402


def image_network_shapes(quick: bool) -> list[torch.Size]:
    config = make_config(selfdeblur.Config, quick=quick)
    return [p.shape for p in selfdeblur.networks(config, (27, 27))[0].parameters()]


def timed(step, steps: int, repeats: int, device: torch.device) -> float:
    for _ in range(3):
        step()
    timings = []
    for _ in range(repeats):
        synchronize(device)
        tic = time.perf_counter()
        for _ in range(steps):
            step()
        synchronize(device)
        timings.append((time.perf_counter() - tic) / steps)
    return statistics.median(timings)


def kernels(step) -> int:
    with torch.profiler.profile() as profile:
        step()
    return sum(event.count for event in profile.key_averages() if event.key.startswith("aten::"))


def steppers(shapes: list[torch.Size], runs: int, device: torch.device) -> dict:
    """step() of each way: the stacked parameters with their gradients, or each run's own tensors."""
    stacked = [torch.randn(runs, *shape, device=device, requires_grad=True) for shape in shapes]
    for p in stacked:
        p.grad = torch.randn_like(p)
    adam = StackedAdam([(stacked, [1e-2] * runs, [0.9] * runs)])
    ways = {"StackedAdam": adam.step}
    for name, foreach in (("torch Adam per run, tensor by tensor", False), ("torch Adam per run, foreach", True)):
        alone = [[p[r].detach().clone().requires_grad_() for p in stacked] for r in range(runs)]
        for tensors in alone:
            for t in tensors:
                t.grad = torch.randn_like(t)
        adams = [torch.optim.Adam(tensors, lr=1e-2, foreach=foreach) for tensors in alone]
        ways[name] = lambda adams=adams: [a.step() for a in adams]
    return ways


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = choose_device(args.device)
    rows = []
    for width, quick in (("quick (32 channels)", True), ("paper (128 channels)", False)):
        shapes = image_network_shapes(quick)
        for runs in args.runs:
            ways = steppers(shapes, runs, device)
            baseline = None
            for name, step in ways.items():
                seconds = timed(step, args.steps, args.repeats, device)
                baseline = baseline or seconds
                rows.append(dict(network=width, tensors=len(shapes), runs=runs, way=name, seconds_per_step=seconds,
                                 relative_to_stacked=seconds / baseline, kernels_per_step=kernels(step)))
                print(f"{width:>22}, {runs} run(s), {name:<38} {seconds * 1e3:8.2f} ms/step "
                      f"(x{seconds / baseline:.2f})  {rows[-1]['kernels_per_step']} kernels", flush=True)
    path = write_bench("stacked_adam", device, rows=rows, steps=args.steps, repeats=args.repeats)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
