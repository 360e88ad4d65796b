"""What the network benchmarks share: their command line, the timing of a blind-deblurring run, the JSON file.

The benchmarks put the repository root on the path (they import the scripts they time) and write
Results/bench/<name>.json beside the table they print.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path
from typing import Any

from dipkit.device import choose_device, keep_freed_memory
from dipkit.runs import environment, write_json

RESULTS = Path(__file__).resolve().parent.parent / "Results" / "bench"


def blind_arguments(description: str) -> tuple[argparse.Namespace, Any]:
    """--iterations (timed per variant), --kernel (its size), --device; returns them and the device, with freed
    memory kept (glibc) as the scripts run."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--kernel", type=int, default=27)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--switch_iterations", type=int, default=20, help="budget of each speed-switch run")
    args = parser.parse_args()
    keep_freed_memory()
    return args, choose_device(args.device)


def seconds_per_iteration(deblur, problem, config, iterations: int) -> float:
    """Seconds per iteration of deblur(problem, config, seed), after a 2-iteration warm-up (allocations, cuDNN)."""
    deblur(problem, dataclasses.replace(config, iterations=2), seed=0)
    return deblur(problem, dataclasses.replace(config, iterations=iterations), seed=0).seconds / iterations


def write_bench(name: str, device: Any, **content: Any) -> Path:
    """Results/bench/<name>.json: the rows and settings, with the environment that produced them."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    write_json(path, dict(content, device=str(device), environment=environment(device)))
    return path


def speed_switches(device: Any) -> dict[str, dict[str, bool]]:
    """The speed switches every network benchmark reports, float32 (the baseline, measured first) included. On a
    CPU without bfloat16 arithmetic, bf16 autocast is emulated and very slow (on the 2-core Xeon VM six DIP
    iterations at 256² did not finish in 8 minutes, against 3 s each in float32): it is measured there only with
    BENCH_CPU_BF16=1. torch.compile only on a GPU (on a CPU its compilation alone outlasts a benchmark)."""
    switches = {"float32": {}, "channels-last": dict(channels_last=True)}
    cuda = getattr(device, "type", str(device)) == "cuda"
    if cuda or os.environ.get("BENCH_CPU_BF16") == "1":
        switches["bf16 autocast"] = dict(bf16=True)
    if cuda:
        switches.update({"compile": dict(compile=True),
                         "bf16 + channels-last + compile": dict(bf16=True, channels_last=True, compile=True)})
    return switches


def switch_rows(deblur, problem, config, iterations: int, device: Any) -> list[dict[str, Any]]:
    """Each speed switch on a blind-deblurring run of `iterations` steps: seconds per iteration (after a 2-step
    warm-up), speed-up over float32 in this process, and PSNR-GT after the budget beside float32's."""
    from dipkit.metrics import psnr

    rows = []
    for name, switches in speed_switches(device).items():
        variant = dataclasses.replace(config, **switches)
        seconds = seconds_per_iteration(deblur, problem, variant, iterations)
        estimate = deblur(problem, dataclasses.replace(variant, iterations=iterations), seed=0)
        rows.append(dict(variant=name, seconds_per_iteration=seconds, psnr_gt=psnr(estimate.image, problem.truth)))
        rows[-1]["speedup"] = rows[0]["seconds_per_iteration"] / seconds
        rows[-1]["psnr_change"] = rows[-1]["psnr_gt"] - rows[0]["psnr_gt"]
        print(f"  {name:<32} {seconds:8.4f} s/iteration  x{rows[-1]['speedup']:.2f}  PSNR-GT {rows[-1]['psnr_gt']:.2f} "
              f"dB ({rows[-1]['psnr_change']:+.2f}) after {iterations} iterations", flush=True)
    return rows
