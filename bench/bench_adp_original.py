"""What each of the paper code's behaviours changes: its two columns with every behaviour kept, with one fixed at a
time, and with all fixed, on the same data (dipkit/adp_original.py; ADP.py's data and constants).

    python bench/bench_adp_original.py                          # astronaut, the paper's setting (minutes each row)
    python bench/bench_adp_original.py --quick                  # 96×72, seconds
    python bench/bench_adp_original.py --rows all tv_step       # only these rows (names of ORIGINAL_BUGS, all, none)
    python bench/bench_adp_original.py --images coffee --seed 1 # any ADP.py constant after the bench's own options
Prints a table and writes Results/bench/adp_original[_<tag>].json (one row per variant: the paper TV and ADP
columns' PSNR/SSIM, the upper iterations, accepted steps and lower-level iterations, the seconds taken).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ADP  # noqa: E402
from dipkit.adp_original import ORIGINAL_BUGS, paper_columns  # noqa: E402
from dipkit.cli import parse_config, run_main  # noqa: E402
from dipkit.device import choose_device, keep_freed_memory, seed_everything  # noqa: E402
from dipkit.metrics import psnr  # noqa: E402
from dipkit.runs import run_record, write_json  # noqa: E402


def variants(names: list[str]) -> list[tuple[str, tuple[str, ...]]]:
    """(row name, behaviours kept): 'all' keeps every behaviour, a bug name fixes that one, 'none' fixes all."""
    rows = []
    for name in names:
        if name == "all":
            rows.append(("as coded", tuple(ORIGINAL_BUGS)))
        elif name == "none":
            rows.append(("all fixed", ()))
        else:
            rows.append((f"fix {name}", tuple(b for b in ORIGINAL_BUGS if b != name)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="+", default=["all", *ORIGINAL_BUGS, "none"],
                        choices=["all", *ORIGINAL_BUGS, "none"], help="which variants to run")
    parser.add_argument("--tag", default="", help="suffix of the JSON file (to run row groups in parallel)")
    own, rest = parser.parse_known_args()
    config = parse_config(ADP.Config, rest)
    ADP.check_config(config)
    device = choose_device(config.device)
    keep_freed_memory()
    seed_everything(config.seed)
    dtype = getattr(torch, config.dtype)
    table = []
    for index, name in enumerate(config.images):
        x_true, b0, _, y = ADP.image_problem(name, index, config, device, dtype)
        for label, bugs in variants(own.rows):
            tic = time.perf_counter()
            varied = dataclasses.replace(config, original_bugs=bugs)
            result = paper_columns(y, b0, ADP.original_settings(varied), config.seed + index)
            row = dict(image=Path(name).stem, variant=label, bugs_kept=list(bugs),
                       paper_tv_psnr=psnr(result.tv_column, x_true), paper_tv_ssim=ADP.ssim(result.tv_column, x_true),
                       paper_adp_psnr=psnr(result.adp_column, x_true),
                       paper_adp_ssim=ADP.ssim(result.adp_column, x_true),
                       tv_lipschitz=result.tv_column_lipschitz, upper_iterations=len(result.log),
                       accepted=sum(r["accepted"] for r in result.log),
                       lower_iterations=result.counts["fista_iterations"], seconds=time.perf_counter() - tic,
                       stop_reason=result.stop_reason)
            table.append(row)
            print(f"{row['image']:>10} {label:>22}: TV {row['paper_tv_psnr']:.2f}  ADP {row['paper_adp_psnr']:.2f} dB"
                  f"  ({row['accepted']}/{row['upper_iterations']} accepted, {row['lower_iterations']} FISTA"
                  f" iterations, {row['seconds']:.0f} s)", flush=True)
    out = Path(config.results_dir) / "bench" / f"adp_original{'_' + own.tag if own.tag else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, dict(rows=table, **run_record(device)))
    print(f"wrote {out}")


if __name__ == "__main__":
    run_main(main)
