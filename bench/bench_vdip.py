"""Speed of VDIP against SelfDeblur in the same process: seconds per iteration of each stage and per 255x255 image
(500 + 5000 iterations, projected), and the extreme channel's minimum filter as two separable 1-D passes against
the code's 3-D min-pool over (3, 35, 35) windows.

Then every speed switch against float32 (--switch_iterations each), and on a GPU (or with --pack N) N runs at once
in a process pool against one alone (--pack_iterations each).

    python bench/bench_vdip.py [--iterations 10] [--kernel 27] [--device auto] [--switch_iterations 20]
                               [--pack N] [--pack_iterations 300]
Writes Results/bench/vdip.json.
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
import vdip  # noqa: E402
from common import blind_arguments, one_run, seconds_per_iteration, switches_and_packing  # noqa: E402  (bench/)
from dipkit import blind  # noqa: E402
from dipkit.cli import make_config  # noqa: E402
from dipkit.device import synchronize  # noqa: E402


def timed(function, device, repeats: int = 5) -> float:
    function()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    synchronize(device)
    return (time.perf_counter() - start) / repeats


def main() -> None:
    args, device = blind_arguments(__doc__)
    problem = blind.synthetic_problems(("camera",), (args.kernel,))[0]
    common = dict(device=args.device, progress=False, curve_every=0)
    base = make_config(vdip.Config, pretrain_iterations=0, **common)
    rows = {}
    reference = seconds_per_iteration(selfdeblur.deblur, problem, make_config(selfdeblur.Config, **common),
                                      args.iterations)
    rows["selfdeblur_iteration"] = dict(seconds=reference, projected_seconds_per_image=5000 * reference)
    stages = {}
    for name, overrides in (("sparse_elbo", dict(prior="sparse", loss_switch=None)),
                            ("extreme_elbo", dict(prior="extreme", loss_switch=None)),
                            ("ssim", dict(loss_switch=0)),
                            ("pretraining", dict(pretrain_iterations=args.iterations, iterations=1))):
        config = dataclasses.replace(base, **overrides)
        if name == "pretraining":  # the pretraining steps alone: time all, minus one main step
            total = one_run(vdip.deblur, problem, config).seconds
            stages[name] = max(total - stages["sparse_elbo"], 0.0) / args.iterations
        else:
            stages[name] = seconds_per_iteration(vdip.deblur, problem, config, args.iterations)
        rows[f"vdip_{name}_iteration"] = dict(seconds=stages[name], relative_to_selfdeblur=stages[name] / reference)
    for prior in ("sparse", "extreme"):  # 500 pretraining, 2000 ELBO, 3000 SSIM steps
        seconds = 500 * stages["pretraining"] + 2000 * stages[f"{prior}_elbo"] + 3000 * stages["ssim"]
        rows[f"vdip_{prior}_image"] = dict(projected_seconds_per_image=seconds,
                                           relative_to_selfdeblur=seconds / (5000 * reference))
    h, w = problem.blurred.shape[-2:]
    values = torch.rand(1, 3, h + args.kernel - 1, w + args.kernel - 1, device=device)
    separable = timed(lambda: vdip.extreme_channel(values, 35), device)
    pooled = timed(lambda: -F.max_pool3d(-values[:, None], (3, 35, 35), stride=1), device)
    rows["extreme_channel"] = dict(seconds=separable, min_pool_3d_seconds=pooled, speedup=pooled / separable)

    print(f"VDIP on {device}, 255x255 image, {args.kernel}x{args.kernel} kernel, paper networks")
    print(f"{'':>30} {'seconds':>10} {'vs SelfDeblur / speed-up':>26}")
    for name, row in rows.items():
        seconds = row.get("seconds", row.get("projected_seconds_per_image"))
        ratio = row.get("relative_to_selfdeblur", row.get("speedup", ""))
        print(f"{name:>30} {seconds:10.3f} {ratio if ratio == '' else f'x{ratio:.2f}':>26}")
    elbo = dataclasses.replace(base, loss_switch=None)
    switches_and_packing("vdip", vdip.deblur, problem, elbo, args, device, rows, " (VDIP-Sparse ELBO steps)")


if __name__ == "__main__":
    main()
