"""Runs per hour with runs batched (dipkit.batch: N networks stepped together in one process) against the same runs
alone one after another, and (--pack) packed in N processes: SelfDeblur at the paper's setting (255², 128 channels,
27x27 kernel, 5000 iterations a run) and DIP denoising at 512² (3000 iterations a run).

Each configuration is timed over --iterations steps after a 2-step warm-up, in this process; a run's throughput is
projected from its seconds per step (the loop alone: building the networks and scoring are left out). For a batch of
N: one step of the N runs; alone: one run's step (N alone one after another take N times as long: the same runs per
hour). On a GPU also the speed switches on a batch of 8 (--switches): bf16, TF32 matmuls and convolutions,
torch.compile, with PSNR after --switch_iterations steps beside float32's.

    python bench/bench_batch.py [--method selfdeblur|dip|both] [--runs 1 2 4 8 16 32] [--iterations 5]
                                [--modes auto] [--pack 0] [--switches] [--device auto] [--tiny]
Writes Results/bench/batch.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import dip_denoise  # noqa: E402
import selfdeblur  # noqa: E402
from common import FLOAT32, write_bench  # noqa: E402  (bench/)
from dipkit import blind  # noqa: E402
from dipkit.cli import make_config  # noqa: E402
from dipkit.device import choose_device, keep_freed_memory  # noqa: E402
from dipkit.blind_loop import BlindRun  # noqa: E402
from dipkit.engine import Unit, pool_runner  # noqa: E402
from dipkit.metrics import psnr  # noqa: E402

FULL = dict(selfdeblur=5000, dip=3000)  # iterations of a whole run, for runs per hour


def selfdeblur_step(config, problem, runs: int, iterations: int, batched: bool) -> tuple[float, list]:
    """Seconds per step of `runs` SelfDeblur runs (batched, or one alone when runs = 1 and not batched), and the
    estimates."""
    config = dataclasses.replace(config, iterations=iterations)
    estimates = selfdeblur.deblur([BlindRun(problem, config, seed) for seed in range(runs if batched else 1)])
    return sum(e.seconds for e in estimates) / iterations, estimates  # the shares add up to the batch's time


def dip_step(config, images, runs: int, iterations: int, batched: bool) -> tuple[float, list]:
    """Seconds per step of `runs` DIP runs on the images (cycled), batched or one alone."""
    config = dataclasses.replace(config, iterations=iterations)
    clean = [images[i % len(images)] for i in range(runs)]
    images = [dip_denoise.DIPRun(dip_denoise.add_noise(c, config, i), config, c) for i, c in enumerate(clean)]
    results = dip_denoise.denoise(images if batched else images[:1])
    return sum(r.seconds for r in results) / iterations, results


def timed(step, runs: int, iterations: int, batched: bool) -> tuple[float, list]:
    step(runs, 2, batched)  # warm-up: allocations, cuDNN's autotuner
    return step(runs, iterations, batched)


def packed(config, problem, runs: int, iterations: int) -> dict[str, float]:
    """`runs` SelfDeblur runs in `runs` spawned processes sharing the device: wall time and the runs' own time."""
    units = [[Unit(f"seed{seed}", BlindRun(problem, dataclasses.replace(config, iterations=iterations), seed))]
             for seed in range(runs)]
    start = time.perf_counter()
    seconds = [estimate.seconds for _, estimate in pool_runner(runs)(units, selfdeblur.deblur)]
    return dict(wall_seconds=time.perf_counter() - start, run_seconds=max(seconds))


def quality(method: str, outcome, data) -> float:
    """PSNR of a run's result: SelfDeblur's estimate against the truth, DIP's final average against the clean."""
    if method == "selfdeblur":
        return psnr(outcome.image, data.truth)
    return outcome.metrics["final_average"]["psnr"]


SWITCHES = {"float32": FLOAT32, "bf16": dict(FLOAT32, precision="bf16"), "tf32": FLOAT32,
            "compile": dict(FLOAT32, compile=True)}


def setting(method: str, tiny: bool, device_name: str):
    """The method's configuration and problem (SelfDeblur's blurred camera, or DIP's clean images) at the paper's
    size, or at quick sizes with `tiny`; and what it is, in words."""
    if method == "selfdeblur":
        problem = blind.synthetic_problems(("camera",), (9 if tiny else 27,), size=64 if tiny else 255)[0]
        config = make_config(selfdeblur.Config, quick=tiny, device=device_name, progress=False, curve_every=0,
                             **FLOAT32)
        return config, problem, f"SelfDeblur {problem.blurred.shape[-1]}², {config.channels} channels"
    size = 64 if tiny else 512
    config = make_config(dip_denoise.Config, quick=tiny, size=size, device=device_name, progress=False,
                         backtrack_drop=float("inf"), **FLOAT32)
    images = [dip_denoise.load_clean(name, config) for name in ("astronaut", "coffee", "chelsea", "rocket")]
    return config, images, f"DIP {size}²"


def stepper(method: str, config, data):
    """step(runs, iterations, batched) -> (seconds per step, outcomes) for the method on its data."""
    measure = selfdeblur_step if method == "selfdeblur" else dip_step
    return lambda runs, iterations, batched: measure(config, data, runs, iterations, batched)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", choices=("selfdeblur", "dip", "both"), default="both")
    parser.add_argument("--runs", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--iterations", type=int, default=5, help="steps timed per configuration")
    parser.add_argument("--modes", nargs="+", default=["auto"], choices=("auto", "loop", "vmap"))
    parser.add_argument("--pack", type=int, nargs="*", default=[], help="also N SelfDeblur runs in N processes")
    parser.add_argument("--pack_iterations", type=int, default=50)
    parser.add_argument("--switches", action="store_true", help="the speed switches on a batch (default on a GPU)")
    parser.add_argument("--switch_runs", type=int, default=8)
    parser.add_argument("--switch_iterations", type=int, default=200)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--tiny", action="store_true", help="quick sizes (a smoke test of the benchmark itself)")
    args = parser.parse_args()
    keep_freed_memory()
    device = choose_device(args.device)
    rows: list[dict[str, Any]] = []
    for method in ["selfdeblur", "dip"] if args.method == "both" else [args.method]:
        config, data, what = setting(method, args.tiny, args.device)
        alone, _ = timed(stepper(method, config, data), 1, args.iterations, False)
        per_hour = 3600 / (alone * FULL[method])
        rows.append(dict(method=method, way="alone", runs=1, seconds_per_step=alone, runs_per_hour=per_hour, gain=1.0))
        print(f"{what} on {device}: one run alone {alone:.3f} s/step, {per_hour:.1f} runs/hour", flush=True)
        for mode in args.modes:
            step = stepper(method, dataclasses.replace(config, batch_mode=mode), data)
            for runs in args.runs:
                try:
                    seconds, _ = timed(step, runs, args.iterations, True)
                except torch.OutOfMemoryError:
                    print(f"  batch of {runs} ({mode}): out of memory", flush=True)
                    break
                rate = runs * 3600 / (seconds * FULL[method])
                rows.append(dict(method=method, way=f"batched ({mode})", runs=runs, seconds_per_step=seconds,
                                 runs_per_hour=rate, gain=rate / per_hour, cost_vs_one_alone=seconds / alone))
                print(f"  batch of {runs:>2} ({mode}): {seconds:.3f} s/step, {rate:.1f} runs/hour, "
                      f"x{rate / per_hour:.2f} the runs alone; a step costs {seconds / alone:.2f} steps of one run",
                      flush=True)
        for runs in args.pack if method == "selfdeblur" else []:
            timing = packed(config, data, runs, args.pack_iterations)
            rate = runs * 3600 * args.pack_iterations / (timing["wall_seconds"] * FULL[method])
            rows.append(dict(method=method, way="packed (processes)", runs=runs, runs_per_hour=rate,
                             gain=rate / per_hour, **timing))
            print(f"  {runs} runs in {runs} processes: {rate:.1f} runs/hour (x{rate / per_hour:.2f})", flush=True)
        if args.switches or device.type == "cuda":
            rows += switch_rows(method, config, data, args, device)
    path = write_bench("batch", device, rows=rows, iterations=args.iterations, tiny=args.tiny)
    print(f"wrote {path}")


def switch_rows(method: str, config, data, args: argparse.Namespace, device) -> list[dict[str, Any]]:
    """Each speed switch on a batch of --switch_runs: seconds per step and PSNR after --switch_iterations steps
    (mean over the runs), beside float32 in this process."""
    rows: list[dict[str, Any]] = []
    for name, switches in SWITCHES.items():
        if name == "compile" and device.type != "cuda":
            continue  # on a CPU the compilation alone outlasts the benchmark
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = name == "tf32"
        step = stepper(method, dataclasses.replace(config, **switches), data)
        seconds, outcomes = timed(step, args.switch_runs, args.switch_iterations, True)
        score = sum(quality(method, o, data) for o in outcomes) / len(outcomes)
        rows.append(dict(method=method, way=f"batched, {name}", runs=args.switch_runs, seconds_per_step=seconds,
                         psnr=score, iterations=args.switch_iterations))
        rows[-1].update(speedup=rows[0]["seconds_per_step"] / seconds, psnr_change=score - rows[0]["psnr"])
        print(f"  {name:<8} batch of {args.switch_runs}: {seconds:.3f} s/step (x{rows[-1]['speedup']:.2f}), PSNR "
              f"{score:.2f} dB ({rows[-1]['psnr_change']:+.2f}) after {args.switch_iterations} steps", flush=True)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    return rows


if __name__ == "__main__":
    main()
