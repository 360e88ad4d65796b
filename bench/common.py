"""What the network benchmarks share: their command line, the timing of a blind-deblurring run, the JSON file.

The benchmarks put the repository root on the path (they import the scripts they time) and write
Results/bench/<name>.json beside the table they print.
"""

from __future__ import annotations

import argparse
import dataclasses
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
