"""What each network script's step costs here in each precision and memory format, and whether `auto` (dipkit.speed)
picks the fastest; and whether one thread serves ADP.py and adp_1d.py as well as two.

For DIP (dip_denoise's loop) at 64, 128, 256 and 512², SelfDeblur and VDIP at their quick shape (64², 32 channels,
a 9² kernel) and the paper's (255², 128 channels, a 27² kernel): float32-contiguous first (the baseline, in the
same process), then channels-last, bf16 and bf16 with channels-last. Each variant runs a 2-step warm-up, a 2-step
run and the timed run; seconds per step are the difference of the two runs over the difference of their lengths
(what a run costs once cancels). On a CPU without native bfloat16 (emulated: tens of times slower) the bf16 rows
are measured at each script's smallest shape only, unless --all_bf16. Each row gives the step's floating-point
work (convolutions and matrix products, counted by torch.utils.flop_counter over one step), its GFLOP/s, and the
nominal peak of that precision on this CPU (cores × clock × FLOP per cycle from its vector flags; bf16 twice
float32's where native, float32's where emulated); each shape what `auto` resolves to and the fastest measured.

ADP.py and adp_1d.py (--quick runs, whole, in this process) with torch's threads set to 1, then 2.

    python bench/bench_speed.py                       # everything (about 15 minutes on the 2-core EPYC)
    python bench/bench_speed.py --only dip --sizes 512 --steps 3
Prints a table and writes Results/bench/speed.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ADP  # noqa: E402
import adp_1d  # noqa: E402
import dip_denoise  # noqa: E402
import selfdeblur  # noqa: E402
import vdip  # noqa: E402
from common import FLOAT32, one_run, write_bench  # noqa: E402  (bench/)
from dipkit import blind, speed  # noqa: E402
from dipkit.cli import make_config  # noqa: E402
from dipkit.device import choose_device, cpu_flags, keep_freed_memory, native_bf16  # noqa: E402
from dipkit.networks import SkipNetwork  # noqa: E402

VARIANTS = {"float32": FLOAT32, "channels-last": dict(FLOAT32, memory_format="channels_last"),
            "bf16": dict(precision="bf16", memory_format="contiguous"),
            "bf16 + channels-last": dict(precision="bf16", memory_format="channels_last")}
BLIND_SHAPES = {"quick": dict(size=64, kernel=9, quick=True), "paper": dict(size=255, kernel=27, quick=False)}


def nominal_peak(precision: str, threads: int) -> float | None:
    """GFLOP/s a CPU's `threads` cores reach at most in `precision`: cores × clock × FLOP per cycle (two FMA
    units of the widest vectors the flags list: 32 float32 FLOP per cycle with AVX2, 64 with AVX-512; bf16 twice
    that where native, float32's where emulated). Nominal: the clock is the one /proc/cpuinfo reports."""
    try:
        mhz = next(float(line.split(":")[1]) for line in open("/proc/cpuinfo") if line.startswith("cpu MHz"))
    except (OSError, StopIteration, ValueError):
        return None
    flags = cpu_flags()
    per_cycle = 64 if "avx512f" in flags else 32 if {"avx2", "fma"} <= flags else 8
    if precision == "bf16" and native_bf16(torch.device("cpu")):
        per_cycle *= 2
    return threads * mhz / 1e3 * per_cycle


def step_flops(run_steps) -> float:
    """Floating-point operations of one step: those of a 2-step run less those of a 1-step run."""
    counts = []
    for steps in (1, 2):
        with FlopCounterMode(display=False) as counter:
            run_steps(steps)
        counts.append(counter.get_total_flops())
    return float(counts[1] - counts[0])


def per_step(run_steps, steps: int) -> tuple[float, float]:
    """Seconds per step from the difference of two run lengths, after a warm-up; and the warm-up's seconds."""
    tic = time.perf_counter()
    run_steps(2)
    warm_up = time.perf_counter() - tic
    short, timed = run_steps(2), run_steps(2 + steps)
    return (timed - short) / steps, warm_up


def dip_runner(size: int, device, options: dict):
    clean = dip_denoise.load_clean("astronaut", make_config(dip_denoise.Config, size=size))
    base = make_config(dip_denoise.Config, size=size, device=str(device), progress=False,
                       backtrack_drop=float("inf"), **options)

    def run_steps(steps: int) -> float:
        config = dataclasses.replace(base, iterations=steps, checkpoint_every=steps)
        (result,) = dip_denoise.denoise([dip_denoise.DIPRun(dip_denoise.add_noise(clean, config, 1), config, clean)])
        return result.seconds

    return run_steps, base, (size, size), speed.widest(SkipNetwork(base.input_depth, 3))


def blind_runner(script, shape: str, device, options: dict):
    size, kernel, quick = BLIND_SHAPES[shape].values()
    problem = blind.synthetic_problems(("camera",), (kernel,), size=size)[0]
    base = make_config(script.Config, quick=quick, device=str(device), progress=False, curve_every=0,
                       pretrain_iterations=0, **options)
    deblur = getattr(script, "deblur")

    def run_steps(steps: int) -> float:
        return one_run(deblur, problem, dataclasses.replace(base, iterations=steps)).seconds

    return run_steps, base, (size + kernel - 1,) * 2, base.channels


def network_rows(name: str, shape: str, make, device, steps: int, bf16_here: bool, threads: int) -> list[dict]:
    rows = []
    for variant, options in VARIANTS.items():
        if options["precision"] == "bf16" and not bf16_here:
            continue
        run_steps, config, grid, channels = make(options)
        seconds, warm_up = per_step(run_steps, steps)
        flops = step_flops(run_steps)
        peak = nominal_peak(options["precision"], threads) if device.type == "cpu" else None
        rows.append(dict(script=name, shape=shape, variant=variant, seconds_per_step=seconds, warm_up_seconds=warm_up,
                         gflop_per_step=flops / 1e9, gflops=flops / 1e9 / seconds, nominal_peak_gflops=peak))
        rows[-1]["speedup"] = rows[0]["seconds_per_step"] / seconds
        rows[-1]["share_of_peak"] = rows[-1]["gflops"] / peak if peak else None
        print(f"{name:<11} {shape:<7} {variant:<21} {seconds:8.4f} s/step  x{rows[-1]['speedup']:.2f}  "
              f"{rows[-1]['gflops']:7.1f} GFLOP/s" + (f" of {peak:.0f} nominal" if peak else "")
              + f"  (warm-up {warm_up:.1f} s)", flush=True)
    auto = make_config(type(config), quick=config.quick)
    resolved, said = speed.resolve(auto, device, *grid, channels)
    chosen = "bf16" if resolved.precision == "bf16" else "float32"
    chosen += " + channels-last" if resolved.memory_format == "channels_last" else ""
    chosen = {"float32 + channels-last": "channels-last"}.get(chosen, chosen)
    fastest = min(rows, key=lambda r: r["seconds_per_step"])
    for row in rows:
        row.update(auto=chosen, auto_said=said, fastest=fastest["variant"])
    print(f"{'':<11} {shape:<7} auto: {said}; fastest measured: {fastest['variant']}", flush=True)
    return rows


def thread_rows(device) -> list[dict]:
    """ADP.py and adp_1d.py --quick, whole, with 1 then 2 threads (each after a warm-up run)."""
    rows = []
    before = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as scratch:
        for name, script in (("ADP", ADP), ("adp_1d", adp_1d)):
            for threads in (0, 1, 2):  # 0: the warm-up run (imports, first allocations), 1 thread
                torch.set_num_threads(max(threads, 1))
                config = make_config(script.Config, quick=True, progress=False, device=str(device),
                                     results_dir=scratch, run_name=f"{name}-{threads}")
                tic = time.perf_counter()
                script.run(config)
                if threads:
                    rows.append(dict(script=name, threads=threads, seconds=time.perf_counter() - tic))
            rows[-1]["speedup_over_one_thread"] = rows[-2]["seconds"] / rows[-1]["seconds"]
            print(f"{name:<11} quick run: {rows[-2]['seconds']:.1f} s on 1 thread, {rows[-1]['seconds']:.1f} s on 2 "
                  f"(x{rows[-1]['speedup_over_one_thread']:.2f})", flush=True)
    torch.set_num_threads(before)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", default=["dip", "selfdeblur", "vdip", "adp"],
                        choices=["dip", "selfdeblur", "vdip", "adp"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256, 512], help="DIP's image sizes")
    parser.add_argument("--shapes", nargs="+", default=list(BLIND_SHAPES), choices=list(BLIND_SHAPES),
                        help="SelfDeblur's and VDIP's shapes")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per variant")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--all_bf16", action="store_true", help="bf16 at every shape even where it is emulated")
    args = parser.parse_args()
    device = choose_device(args.device)
    keep_freed_memory()
    threads = torch.get_num_threads()
    native = native_bf16(device)
    print(f"{device}: {threads} threads, native bf16: {native}, torch's CPU kernels: "
          f"{torch.backends.cpu.get_cpu_capability()}", flush=True)
    rows = []
    if "dip" in args.only:
        for size in sorted(args.sizes):
            rows += network_rows("dip_denoise", f"{size}²", lambda o, s=size: dip_runner(s, device, o), device,
                                 args.steps, native or args.all_bf16 or size == min(args.sizes), threads)
    for name, script in (("selfdeblur", selfdeblur), ("vdip", vdip)):
        if name in args.only:
            for shape in args.shapes:
                bf16_here = native or args.all_bf16 or shape == args.shapes[0]
                rows += network_rows(name, shape, lambda o, s=script, h=shape: blind_runner(s, h, device, o),
                                     device, args.steps, bf16_here, threads)
    threads_rows = thread_rows(device) if "adp" in args.only else []
    flags = sorted(f for f in cpu_flags() if f.startswith(("avx", "amx", "fma")))
    print(f"wrote {write_bench('speed', device, rows=rows, threads_rows=threads_rows, steps=args.steps, cpu_flags=flags)}")


if __name__ == "__main__":
    main()
