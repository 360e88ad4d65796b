"""What the network benchmarks share: their command line, the timing of a blind-deblurring run, the JSON file.

The benchmarks put the repository root on the path (they import the scripts they time) and write
Results/bench/<name>.json beside the table they print.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path
from typing import Any

from dipkit.device import choose_device, keep_freed_memory
from dipkit.runs import run_record, write_json

RESULTS = Path(__file__).resolve().parent.parent / "Results" / "bench"


def blind_arguments(description: str) -> tuple[argparse.Namespace, Any]:
    """--iterations (timed per variant), --kernel (its size), --device; returns them and the device, with freed
    memory kept (glibc) as the scripts run."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--kernel", type=int, default=27)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--switch_iterations", type=int, default=20, help="budget of each speed-switch run")
    parser.add_argument("--pack", type=int, default=None,
                        help="runs packed at once in a process pool (default: 8 on a GPU, none on a CPU; 0: none)")
    parser.add_argument("--pack_iterations", type=int, default=300, help="iterations of each packed run")
    args = parser.parse_args()
    keep_freed_memory()
    return args, choose_device(args.device)


def one_run(deblur, problem, config, seed: int = 0):
    """A blind run alone (a batch of one of the script's loop), its Estimate."""
    from dipkit.blind_loop import BlindRun, only_run

    return only_run(deblur([BlindRun(problem, config, seed)]))


def seconds_per_iteration(deblur, problem, config, iterations: int) -> float:
    """Seconds per iteration of a run alone, after a 2-iteration warm-up (allocations, cuDNN)."""
    one_run(deblur, problem, dataclasses.replace(config, iterations=2))
    return one_run(deblur, problem, dataclasses.replace(config, iterations=iterations)).seconds / iterations


def write_bench(name: str, device: Any, **content: Any) -> Path:
    """Results/bench/<name>.json: the rows and settings, with what produced them (environment, code revision,
    command line: dipkit.runs.run_record)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    write_json(path, dict(content, device=str(device), **run_record(device)))
    return path


FLOAT32 = dict(precision="float32", memory_format="contiguous")  # the reference every speed-up is measured against


def speed_switches(device: Any, cpu_compile: bool = False) -> dict[str, dict[str, bool]]:
    """The speed switches every network benchmark reports, float32 (the baseline, measured first) included. On a
    CPU without bfloat16 arithmetic, bf16 autocast is emulated and very slow (on the 2-core Xeon VM six DIP
    iterations at 256² did not finish in 8 minutes, against 3 s each in float32): it is measured there only with
    BENCH_CPU_BF16=1. torch.compile on a GPU, and on a CPU where `cpu_compile` (its compilation takes minutes there:
    bench_dip.py --cpu_compile reports it apart, as a warm-up run)."""
    switches = {"float32": dict(FLOAT32), "channels-last": dict(FLOAT32, memory_format="channels_last")}
    cuda = _on_gpu(device)
    if cuda or os.environ.get("BENCH_CPU_BF16") == "1":
        switches["bf16 autocast"] = dict(FLOAT32, precision="bf16")
    if not cuda and cpu_compile:
        switches["compile"] = dict(FLOAT32, compile=True)
    if cuda:
        switches.update({"compile": dict(FLOAT32, compile=True),
                         "bf16 + channels-last + compile": dict(precision="bf16", memory_format="channels_last",
                                                                compile=True)})
    return switches


def switch_rows(deblur, problem, config, iterations: int, device: Any) -> list[dict[str, Any]]:
    """Each speed switch on a blind-deblurring run of `iterations` steps: seconds per iteration (after a 2-step
    warm-up), speed-up over float32 in this process, and PSNR-GT after the budget beside float32's."""
    from dipkit.metrics import psnr

    rows = []
    for name, switches in speed_switches(device).items():
        variant = dataclasses.replace(config, **switches)
        seconds = seconds_per_iteration(deblur, problem, variant, iterations)
        estimate = one_run(deblur, problem, dataclasses.replace(variant, iterations=iterations))
        rows.append(dict(variant=name, seconds_per_iteration=seconds, psnr_gt=psnr(estimate.image, problem.truth)))
        rows[-1]["speedup"] = rows[0]["seconds_per_iteration"] / seconds
        rows[-1]["psnr_change"] = rows[-1]["psnr_gt"] - rows[0]["psnr_gt"]
        print(f"  {name:<32} {seconds:8.4f} s/iteration  x{rows[-1]['speedup']:.2f}  PSNR-GT {rows[-1]['psnr_gt']:.2f} "
              f"dB ({rows[-1]['psnr_change']:+.2f}) after {iterations} iterations", flush=True)
    return rows


def packing_row(deblur, problem, config, runs: int, iterations: int, device: Any) -> dict[str, Any]:
    """`runs` runs of `iterations` steps at once in a pool of spawned processes (`--workers runs`: they share this
    machine's GPU, or its cores), against one run alone in a pool of one (with all the cores): the wall-clock time
    of the whole pack over that of the one run (the GPU target: at most 3 for 8 runs), and the same ratio of the
    runs' own optimisation times (process start and imports left out)."""
    from dipkit.blind_loop import BlindRun
    from dipkit.engine import Unit, pool_runner

    timings = {}
    for count in (1, runs):
        units = [[Unit(f"seed{seed}", BlindRun(problem, dataclasses.replace(config, iterations=iterations), seed))]
                 for seed in range(count)]
        start = time.perf_counter()
        seconds = [estimate.seconds for _, estimate in pool_runner(count)(units, deblur)]
        timings[count] = (time.perf_counter() - start, max(seconds))
    (alone_wall, alone_run), (pack_wall, pack_run) = timings[1], timings[runs]
    row = dict(runs=runs, iterations=iterations, alone_wall_seconds=alone_wall, packed_wall_seconds=pack_wall,
               wall_ratio=pack_wall / alone_wall, alone_run_seconds=alone_run, packed_run_seconds=pack_run,
               run_ratio=pack_run / alone_run, throughput_gain=runs * alone_wall / pack_wall)
    print(f"  {runs} runs packed on {device}, {iterations} iterations each: {pack_wall:.1f} s against {alone_wall:.1f} s "
          f"for one (x{row['wall_ratio']:.2f}; the runs' own time x{row['run_ratio']:.2f}); "
          f"{row['throughput_gain']:.2f}x the runs per hour", flush=True)
    return row


def switches_and_packing(name: str, deblur, problem, config, args: argparse.Namespace, device: Any,
                         rows: dict[str, Any], what: str = "") -> Path:
    """The end every blind-deblurring benchmark shares: the speed switches on `config` (switch_rows), then
    --pack runs at once against one alone (packing_row; 8 by default on a GPU, none elsewhere), then
    Results/bench/<name>.json with `rows` beside them. `what` names the steps timed in the header."""
    print(f"speed switches{what}, {args.switch_iterations} iterations each, against float32 in this process:")
    switches = switch_rows(deblur, problem, config, args.switch_iterations, device)
    runs = args.pack if args.pack is not None else 8 * _on_gpu(device)
    packing = None
    if runs:
        print("runs packed at once (--workers), against one alone:")
        packing = packing_row(deblur, problem, config, runs, args.pack_iterations, device)
    path = write_bench(name, device, rows=rows, switches=switches, packing=packing, iterations=args.iterations,
                       kernel=args.kernel)
    print(f"wrote {path}")
    return path


def _on_gpu(device: Any) -> bool:
    return getattr(device, "type", str(device)) == "cuda"
