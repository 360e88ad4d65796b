"""Speed of DIP denoising: seconds per iteration of dip_denoise's loop (forward, backward, Adam, EMA, PSNR on the
device), at 256x256 and 512x512, for float32 (the baseline, measured first in the same process), channels-last,
bf16 autocast, and on a GPU also torch.compile; the PSNR after the measured iterations is reported beside each
so that a faster variant that changes the result shows it.

    python bench/bench_dip.py                  # CPU: about 2 minutes on 2 cores
    python bench/bench_dip.py --iterations 200 --sizes 512   (on a GPU)
Prints a table and writes Results/bench/dip.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import dip_denoise  # noqa: E402
from common import speed_switches, write_bench  # noqa: E402  (bench/, the script's folder)
from dipkit.cli import make_config  # noqa: E402
from dipkit.device import choose_device  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--iterations", type=int, default=0, help="per variant (default: 6 on a CPU, 200 on a GPU)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = choose_device(args.device)
    iterations = args.iterations or (200 if device.type == "cuda" else 6)
    variants = speed_switches(device)
    rows = []
    for size in args.sizes:
        clean = dip_denoise.load_clean("astronaut", make_config(dip_denoise.Config, size=size))
        for name, options in variants.items():
            config = make_config(dip_denoise.Config, size=size, iterations=iterations, checkpoint_every=iterations,
                                 device=str(device), progress=False, **options)
            (result,) = dip_denoise.denoise([dip_denoise.DIPRun(dip_denoise.add_noise(clean, config, 1), config, clean)])
            per_iteration = result.seconds / result.iterations_run
            rows.append(dict(size=size, variant=name, iterations=result.iterations_run, seconds_per_iteration=per_iteration,
                             psnr_average=result.metrics["final_average"]["psnr"]))
            baseline = next(r for r in rows if r["size"] == size and r["variant"] == "float32")
            rows[-1]["speedup"] = baseline["seconds_per_iteration"] / per_iteration
            print(f"{size:>4}  {name:<32} {per_iteration:8.4f} s/iteration  x{rows[-1]['speedup']:.2f}  "
                  f"PSNR {rows[-1]['psnr_average']:.2f} dB after {iterations} iterations", flush=True)
    print(f"wrote {write_bench('dip', device, rows=rows, iterations=iterations)}")


if __name__ == "__main__":
    main()
