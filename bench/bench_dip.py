"""Speed of DIP denoising: seconds per iteration of dip_denoise's loop (forward, backward, Adam, EMA, PSNR on the
device), at 256x256 and 512x512, for float32 (the baseline, measured first in the same process), channels-last,
bf16 autocast, and on a GPU also torch.compile (on a CPU with --cpu_compile); the PSNR after the measured
iterations is reported beside each so that a faster variant that changes the result shows it. Each variant first
runs a 2-iteration warm-up, whose wall time is reported (`warm_up_seconds`: torch.compile's compilation), then a
2-iteration run and the timed run: the seconds per iteration are the difference of the two over the difference of
their lengths, so that what each run costs once (a new network compiled again from the cache: `start_up_seconds`)
cancels.

    python bench/bench_dip.py                  # CPU: about 2 minutes on 2 cores
    python bench/bench_dip.py --iterations 200 --sizes 512   (on a GPU)
    python bench/bench_dip.py --cpu_compile    # torch.compile on the CPU too: its compilation, then its steps
Prints a table and writes Results/bench/dip.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import dip_denoise  # noqa: E402
from common import speed_switches, write_bench  # noqa: E402  (bench/, the script's folder)
from dipkit.cli import make_config  # noqa: E402
from dipkit.device import choose_device  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--iterations", type=int, default=0, help="per variant (default: 8 on a CPU, 200 on a GPU)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--cpu_compile", action="store_true", help="measure torch.compile on a CPU too (minutes)")
    args = parser.parse_args()
    device = choose_device(args.device)
    iterations = args.iterations or (200 if device.type == "cuda" else 8)
    variants = speed_switches(device, args.cpu_compile)
    rows = []
    for size in args.sizes:
        clean = dip_denoise.load_clean("astronaut", make_config(dip_denoise.Config, size=size))
        for name, options in variants.items():
            config = make_config(dip_denoise.Config, size=size, iterations=iterations, checkpoint_every=iterations,
                                 device=str(device), progress=False, **options)
            run = dip_denoise.DIPRun(dip_denoise.add_noise(clean, config, 1), config, clean)
            two = run._replace(config=dataclasses.replace(config, iterations=2, checkpoint_every=2))
            tic = time.perf_counter()
            dip_denoise.denoise([two])  # the warm-up: torch.compile's compilation, the allocator's first requests
            warm_up = time.perf_counter() - tic
            (short,) = dip_denoise.denoise([two])  # warm: what a run costs once, and two steps
            (result,) = dip_denoise.denoise([run])
            # the difference of two run lengths: what a run costs once (a network compiled anew) cancels
            per_iteration = (result.seconds - short.seconds) / (result.iterations_run - short.iterations_run)
            rows.append(dict(size=size, variant=name, iterations=result.iterations_run, seconds_per_iteration=per_iteration,
                             psnr_average=result.metrics["final_average"]["psnr"], warm_up_seconds=warm_up,
                             start_up_seconds=short.seconds - 2 * per_iteration))
            baseline = next(r for r in rows if r["size"] == size and r["variant"] == "float32")
            rows[-1]["speedup"] = baseline["seconds_per_iteration"] / per_iteration
            print(f"{size:>4}  {name:<32} {per_iteration:8.4f} s/iteration  x{rows[-1]['speedup']:.2f}  "
                  f"PSNR {rows[-1]['psnr_average']:.2f} dB after {iterations} iterations (warm-up {warm_up:.1f} s)",
                  flush=True)
    print(f"wrote {write_bench('dip', device, rows=rows, iterations=iterations)}")


if __name__ == "__main__":
    main()
