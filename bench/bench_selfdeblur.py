"""Speed of SelfDeblur: seconds per iteration and per 255x255 image (5000 iterations, projected), and the parts
this project computes differently from the original, each as a ratio against the original's way in this process:

  * the non-local block as θᵀ(φ g)/N instead of forming the (hw x N) affinity (θᵀφ/N) g first;
  * Levin's shift search by windowed sums instead of sampling all 81 x 81 shifted images.

Then every speed switch against float32 (--switch_iterations each), and on a GPU (or with --pack N) N runs at once
in a process pool against one alone (--pack_iterations each).

    python bench/bench_selfdeblur.py [--iterations 10] [--kernel 27] [--device auto] [--switch_iterations 20]
                                     [--pack N] [--pack_iterations 300]
Writes Results/bench/selfdeblur.json.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import selfdeblur  # noqa: E402
from common import blind_arguments, seconds_per_iteration, switches_and_packing  # noqa: E402  (bench/)
from dipkit import blind, levin  # noqa: E402
from dipkit.cli import make_config  # noqa: E402
from dipkit.device import synchronize  # noqa: E402
from dipkit.networks import NonLocalBlock  # noqa: E402


def affinity_first(self: NonLocalBlock, x: torch.Tensor) -> torch.Tensor:
    """The original's order of operations: the full affinity matrix, then the values."""
    n, _, h, w = x.shape
    query = self.theta(x).flatten(2).transpose(1, 2)
    key = F.max_pool2d(self.phi(x), 2).flatten(2)
    value = F.max_pool2d(self.g(x), 2).flatten(2).transpose(1, 2)
    affinity = query @ key
    attended = (affinity / affinity.shape[-1]) @ value
    return x + self.out(attended.transpose(1, 2).reshape(n, -1, h, w))


def main() -> None:
    args, device = blind_arguments(__doc__)
    problem = blind.synthetic_problems(("camera",), (args.kernel,))[0]
    config = make_config(selfdeblur.Config, device=args.device, progress=False, curve_every=0)
    rows = {}
    ours = seconds_per_iteration(selfdeblur.deblur, problem, config, args.iterations)
    original = NonLocalBlock.forward
    NonLocalBlock.forward = affinity_first
    try:
        theirs = seconds_per_iteration(selfdeblur.deblur, problem, config, args.iterations)
    finally:
        NonLocalBlock.forward = original
    rows["iteration"] = dict(seconds=ours, affinity_first_seconds=theirs, speedup=theirs / ours,
                             projected_seconds_per_image=5000 * ours)
    simpler = seconds_per_iteration(selfdeblur.deblur, problem, dataclasses.replace(config, simpler=True), args.iterations)
    rows["simpler_iteration"] = dict(seconds=simpler, projected_seconds_per_image=5000 * simpler)
    estimate = problem.blurred.to(device)
    truth = problem.truth.to(device)
    timings = []
    for align in (levin.align_up_to_shift, levin._align_by_sampling):
        synchronize(device)
        start = time.perf_counter()
        align(estimate, truth)
        synchronize(device)
        timings.append(time.perf_counter() - start)
    rows["levin_alignment"] = dict(seconds=timings[0], sampling_seconds=timings[1], speedup=timings[1] / timings[0])
    print(f"SelfDeblur, 255x255, {args.kernel}x{args.kernel} kernel, on {device}")
    print(f"  one iteration           {ours:8.3f} s   (affinity first: {theirs:.3f} s, x{theirs / ours:.2f})")
    print(f"  5000 iterations         {5000 * ours:8.0f} s   projected; SimplerSDB {5000 * simpler:.0f} s")
    print(f"  Levin shift search      {timings[0]:8.3f} s   (every shift sampled: {timings[1]:.1f} s, "
          f"x{timings[1] / timings[0]:.0f})")
    switches_and_packing("selfdeblur", selfdeblur.deblur, problem, config, args, device, rows)


if __name__ == "__main__":
    main()
