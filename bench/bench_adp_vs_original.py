"""The paper's two columns from the original repository's own code beside this project's re-statement of it, on
the same data (docs/ADP.md, "Checked against the original").

The original code (MohammadSadeghSalehi/Analytical-Deep-Priors: ADP.py, MAID.py, hg.py, TV.py, utils.py,
loader.py, FoE.py) runs in a temporary copy of a checkout you give, with the few textual patches listed in PATCHES
(and printed, and recorded in the JSON); the checkout itself is never written to, and nothing is downloaded. Both
runs see the same y: the bench builds it once with ADP.py's own data code (image, size, blur, noise, seed, as
`python ADP.py --original_code` does), hands it to the original's script in place of its image loader, and
checks that the original ran on exactly that y and that its b0 is ADP.py's. The re-statement is
`paper_columns` (dipkit/adp_original.py), run on the same y as `ADP.py --original_code` runs it. Both compute
in float32 on the CPU. PSNR/SSIM are this project's (dipkit.metrics), for both columns of both runs.

    python bench/bench_adp_vs_original.py PATH_TO_CHECKOUT            # astronaut, the paper's setting (minutes)
    python bench/bench_adp_vs_original.py PATH_TO_CHECKOUT --quick    # 96×72, 15 upper iterations: seconds
    python bench/bench_adp_vs_original.py PATH_TO_CHECKOUT --same_random_vectors   # see below
    python bench/bench_adp_vs_original.py PATH_TO_CHECKOUT --images coffee --seed 1  # ADP.py constants follow
Get a checkout with `git clone https://github.com/MohammadSadeghSalehi/Analytical-Deep-Priors` (the bench reads
its .py files only). ADP.py constants that the original's script holds as constants of its own (upper
iterations, α₀, ε₀, the ε threshold, β) are patched into it when they differ from its values (and listed);
constants it does not expose (the blur, the TV weight, the line search's factors, ...) must keep their defaults.
`--same_random_vectors` adds one patch: the original's torch.randn_like (the start vectors of its power method
and CG) draws from the same generator as the re-statement, so that the two can be followed step by step.

Prints a table and writes <out>/adp_vs_original.json (both runs' columns, counts, per-iteration logs, the patches,
the checkout's revision and file hashes, the environment) and <out>/config.json (the command line, the revisions,
the environment, the patches, ADP.py's constants), <out> being Results/bench/adp_vs_original/ unless --out says
otherwise, and the original's console output as <out>/original_<image>.log.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ADP  # noqa: E402
from dipkit.adp_original import paper_columns  # noqa: E402
from dipkit.cli import RunError, parse_config, run_main  # noqa: E402
from dipkit.device import keep_freed_memory, seed_everything  # noqa: E402
from dipkit.runs import run_record, write_json  # noqa: E402

REPOSITORY = "MohammadSadeghSalehi/Analytical-Deep-Priors"
SOURCES = ("ADP.py", "MAID.py", "hg.py", "TV.py", "utils.py", "loader.py", "FoE.py")  # what its ADP.py imports
DATA_FILE, RESULT_FILE, LOG_FILE = "bench_data.pt", "bench_result.pt", "Logs/final_logs_dict.pt"


@dataclasses.dataclass(frozen=True)
class Patch:
    file: str  # a file of the checkout (its copy is patched)
    old: str  # text that must occur exactly once in it
    new: str  # what replaces it
    why: str


# The patches every run gets: what the code needs to run here, on the data the bench gives it, and to hand its
# two columns back. Nothing in its arithmetic is touched.
PATCHES = (
    Patch("utils.py", "psnr = dinv.loss.PSNR(max_pixel=1, normalize=False)", "psnr = dinv.loss.PSNR(max_pixel=1)",
          "today's deepinv rejects `normalize` (False, the value given, asked for no rescaling, which is what it "
          "does now); used only for the code's printed and plotted PSNR"),
    Patch("ADP.py",
          'if torch.backends.mps.is_available():\n    device = torch.device("mps")\n'
          'elif torch.cuda.is_available():\n    device = torch.device("cuda")\nelse:\n'
          '    device = torch.device("cpu")',
          'device = torch.device("cpu")',
          "the CPU wherever the bench runs (float32, as the re-statement computes); what the paper's Apple MPS "
          "run did differently is emulated by the next patch"),
    Patch("ADP.py", "self.kernel_original = kernel_original.to(device)",
          "self.kernel_original = kernel_original.to(device).clone()",
          "the MPS copy: on Apple MPS, where the paper ran, .to(device) copies b0 away from the learned kernel; on a "
          "CPU it returns the kernel itself, which each SGD step then moves too: the Sobolev term is identically 0"),
    Patch("ADP.py", "load_image_and_add_noise(img_index, size_x, size_y, channels, operator, noise_level)",
          f'torch.load("{DATA_FILE}"); torch.randn(noisy_img.shape[1:])',
          "the bench's (x, y) in place of its loader (image 15 of its images/ folder, its own resize and noise); the "
          "randn call draws what the loader's noise drew, so the random start vectors of its power method and CG are "
          "those of an unpatched CPU run"),
    Patch("ADP.py",
          "main_solver(hypergrad, img, noisy_img, init, device, psnr, upper_iter, alpha, eps0, setting, mode, "
          "budget, threshold)",
          "main_solver(hypergrad, img, noisy_img, init, device, psnr, upper_iter, alpha, eps0, setting, mode, "
          "budget, threshold)\n"
          "torch.save(dict(tv_column=classic_solution.detach(), adp_column=hypergrad.x_init.detach(), "
          "b=operator.conv.weight.detach().clone(), b0=init_kernel, y=noisy_img, counts=hypergrad.logs), "
          f'"{RESULT_FILE}")',
          "hand back the two columns (its TV column `classic_solution`, its ADP column MAID's last accepted x), the "
          "learned kernel, its b0 and y (checked against the bench's) and its counters; the code only plots them"),
)
# Not a change of a file: the code saves to both Logs/ and logs/, one folder on macOS's case-insensitive disks.
FOLDER_SETUP = ("(working folder)", "Logs/ made a link to logs/",
                "macOS file systems are case-insensitive: the code's Logs/ and logs/ are one folder there, and "
                "Logs/ is never created, so on Linux its torch.save(..., 'Logs/...') fails")

# ADP.py constants the original's ADP.py holds too: its line, with its value as it writes it; patched only where the
# config's value differs.
CONSTANTS = {
    "upper_iterations": ("upper_iter = {}", "41"),
    "alpha0": ("alpha = {}", "1e-6"),
    "eps0": ("eps0 = {}", "1e0"),
    "eps_threshold": ("threshold = {}", "1e-6"),
    "sobolev_weight": ("hypergrad.upper_level_obj.reg_param = {}", "100"),
}
# ADP.py constants the original fixes in its code (or that choose data it cannot take): they must stay as they are.
FIXED = ("channels", "setting", "kernel_size", "mode", "tv_weight", "tv_smoothing", "rho", "rho_bar", "nu",
         "nu_bar", "armijo", "backtracking", "original_bugs")


def random_vectors_patch(seed: int) -> Patch:
    return Patch("ADP.py", "torch.manual_seed(0)\n",
                 f"torch.manual_seed(0)\n_generator = torch.Generator().manual_seed({seed})\n"
                 "torch.randn_like = lambda x: torch.randn(x.shape, generator=_generator, dtype=x.dtype)\n",
                 f"--same_random_vectors: the start vectors of its power method and CG drawn from "
                 f"torch.Generator().manual_seed({seed}) in the re-statement's order, not from the global generator")


NO_FIGURES = Patch("ADP.py", "import matplotlib.pyplot as plt\n",
                   "import matplotlib.pyplot as plt\nplt.savefig = lambda *args, **kwargs: None\n",
                   "--no_figures: its PNGs (7 at 300 dpi per upper iteration, about 6 s) are not written")


def patches_for(config: ADP.Config, same_random_vectors: bool, no_figures: bool, seed: int) -> list[Patch]:
    """PATCHES, the constants of the config that differ from the original's, and the optional patches."""
    patches = list(PATCHES)
    for name, (line, original) in CONSTANTS.items():
        value = getattr(config, name)
        if value != float(original):
            patches.append(Patch("ADP.py", line.format(original), line.format(repr(value)),
                                 f"ADP.py's {name} = {value!r} (the original's: {original})"))
    if same_random_vectors:
        patches.append(random_vectors_patch(seed))
    if no_figures:
        patches.append(NO_FIGURES)
    return patches


def check_checkout(checkout: Path) -> None:
    """A RunError unless `checkout` holds the original's sources and every patch finds its text exactly once."""
    if not checkout.is_dir():
        raise RunError(f"{checkout} is not a folder (give the path of a checkout of {REPOSITORY})")
    missing = [name for name in SOURCES if not (checkout / name).is_file()]
    if missing:
        raise RunError(f"{checkout} is not a checkout of {REPOSITORY}: it has no {', '.join(missing)}")
    patched(checkout, list(PATCHES) + [random_vectors_patch(0), NO_FIGURES] + [
        Patch("ADP.py", line.format(original), "", "") for line, original in CONSTANTS.values()])


def patched(checkout: Path, patches: list[Patch]) -> dict[str, str]:
    """The checkout's sources with the patches applied (in memory): {file name: text}."""
    texts = {name: (checkout / name).read_text() for name in SOURCES}
    for patch in patches:
        count = texts[patch.file].count(patch.old)
        if count != 1:
            first = patch.old.splitlines()[0]
            raise RunError(f"{checkout} is not the {REPOSITORY} code this bench patches: {patch.file} has "
                           f"{count} copies of '{first}', not one")
        texts[patch.file] = texts[patch.file].replace(patch.old, patch.new)
    return texts


def git(folder: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def checkout_record(checkout: Path) -> dict[str, Any]:
    """Where the original's code came from: its git revision (if a git checkout) and, per source file, its SHA-256
    and whether it is the file of that revision (unedited)."""
    revision = git(checkout, "rev-parse", "HEAD")
    files = {}
    for name in SOURCES:
        same = None
        if revision:
            same = git(checkout, "hash-object", name) == git(checkout, "rev-parse", f"HEAD:{name}")
        files[name] = dict(sha256=hashlib.sha256((checkout / name).read_bytes()).hexdigest(), same_as_revision=same)
    return dict(path=str(checkout.resolve()), repository=REPOSITORY, revision=revision, files=files)


def run_the_original(checkout: Path, patches: list[Patch], x_true: torch.Tensor, y: torch.Tensor,
                     log_path: Path) -> dict[str, Any]:
    """The original's ADP.py, patched in a temporary copy of its sources, run on (x_true, y) in float32 in a fresh
    Python process (its modules set global seeds and module state); its console output goes to log_path."""
    with tempfile.TemporaryDirectory(prefix="adp_original_") as folder:
        work = Path(folder)
        for name, text in patched(checkout, patches).items():
            (work / name).write_text(text)
        (work / "logs").mkdir()
        (work / "Logs").symlink_to("logs")
        torch.save((x_true.float().contiguous(), y.float().contiguous()), work / DATA_FILE)
        environment = dict(os.environ, MPLBACKEND="Agg", PYTHONDONTWRITEBYTECODE="1")
        tic = time.perf_counter()
        with log_path.open("w") as log:
            done = subprocess.run([sys.executable, "ADP.py"], cwd=work, env=environment, stdout=log,
                                  stderr=subprocess.STDOUT)
        seconds = time.perf_counter() - tic
        if done.returncode != 0:
            last = (log_path.read_text(errors="replace").strip().splitlines() or ["no output"])[-1]
            raise RunError(f"the original's code stopped (exit code {done.returncode}): {last[:300]} "
                           f"(its output: {log_path})")
        result = torch.load(work / RESULT_FILE)
        logs = torch.load(work / LOG_FILE)
    if not torch.equal(result["y"], y.float()):
        raise RunError("the original's code did not run on the bench's y")
    eps, lower = logs["eps"], logs["lower_iter"]
    accepted = [after > before for before, after in zip(eps, eps[1:])]  # ε grows ×1.05 on success, halves else
    return dict(tv_column=result["tv_column"], adp_column=result["adp_column"], b=result["b"].squeeze(1),
                b0=result["b0"].squeeze(1), seconds=seconds, upper_iterations=len(accepted),
                accepted=sum(accepted), fista_iterations=lower[-1] - lower[0], cg_iterations=logs["cg_iter"][-1],
                tv_column_iterations=lower[0], own_psnr=logs["psnr"][-1],
                log=[dict(iteration=k, accepted=a, fista_iterations=n - lower[0], eps=e, own_psnr=p)
                     for k, (a, n, e, p) in enumerate(zip(accepted, lower[1:], eps[1:], logs["psnr"][1:]))])


def run_the_restatement(y: torch.Tensor, b0: torch.Tensor, config: ADP.Config, seed: int) -> dict[str, Any]:
    """dipkit/adp_original.py on the same y, as `ADP.py --original_code` runs it."""
    tic = time.perf_counter()
    result = paper_columns(y, b0, ADP.original_settings(config), seed)
    return dict(tv_column=result.tv_column, adp_column=result.adp_column, b=result.b,
                seconds=time.perf_counter() - tic, upper_iterations=len(result.log),
                accepted=sum(row["accepted"] for row in result.log),
                fista_iterations=result.counts["fista_iterations"], cg_iterations=result.counts["cg_iterations"],
                tv_column_iterations=result.tv_column_iterations,
                log=[{key: row[key] for key in ("iteration", "accepted", "fista_iterations", "eps")}
                     for row in result.log])


def steps_in_step(a: list[dict[str, Any]], b: list[dict[str, Any]], keys=("accepted", "fista_iterations")) -> int:
    """How many first upper iterations the two logs agree on: the same acceptance and the same cumulative FISTA
    count (or whatever `keys` name)."""
    n = 0
    for row_a, row_b in zip(a, b):
        if any(row_a[key] != row_b[key] for key in keys):
            break
        n += 1
    return n


def check_config(config: ADP.Config) -> None:
    """What the original's script can be given: its hard-wired constants keep their values, the CPU."""
    default = ADP.Config()
    for name in FIXED:
        if getattr(config, name) != getattr(default, name):
            raise RunError(f"{name}: the original's code fixes it at {getattr(default, name)!r} (ADP.py's default); "
                           f"this bench compares only at that value")
    if config.device not in ("auto", "cpu"):
        raise RunError(f"device {config.device}: the bench runs both codes on the CPU (--device cpu or auto)")


def shown(text: str) -> str:
    """A patch's text on one line: its first line, and how many follow."""
    lines = text.splitlines() or [""]
    return repr(lines[0]) + (f" (+{len(lines) - 1} lines)" if len(lines) > 1 else "")


def describe(patches: list[Patch]) -> list[dict[str, str]]:
    return [dict(file=p.file, old=p.old, new=p.new, why=p.why) for p in patches] + [
        dict(file=FOLDER_SETUP[0], old="", new=FOLDER_SETUP[1], why=FOLDER_SETUP[2])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkout", type=Path, help=f"a checkout of {REPOSITORY} (read only)")
    parser.add_argument("--same_random_vectors", action="store_true",
                        help="the original's torch.randn_like draws from the re-statement's generator")
    parser.add_argument("--no_figures", action="store_true", help="the original's figures are not written (faster)")
    parser.add_argument("--out", type=Path, default=Path("Results/bench/adp_vs_original"), help="output folder")
    own, rest = parser.parse_known_args()
    check_checkout(own.checkout)
    config = parse_config(ADP.Config, rest)
    check_config(config)
    names = ADP.check_config(config)
    device = torch.device("cpu")
    keep_freed_memory()
    seed_everything(config.seed)

    patches_of = [patches_for(config, own.same_random_vectors, own.no_figures, config.seed + i)
                  for i in range(len(names))]
    print(f"the original's code from {own.checkout}, patched in a temporary copy (file: what is replaced -> by what; "
          f"why):")
    for p in describe(patches_of[0]):
        print(f"  {p['file']}: {shown(p['old'])} -> {shown(p['new'])}")
        print(textwrap.fill(p["why"], 116, initial_indent="    ", subsequent_indent="    "))
    own.out.mkdir(parents=True, exist_ok=True)
    rows, table = [], []
    for index, (name, item) in enumerate(zip(config.images, names)):
        x_true, b0, theta0, y = ADP.image_problem(name, index, config, device, torch.float64)
        seed = config.seed + index
        original = run_the_original(own.checkout, patches_of[index], x_true, y, own.out / f"original_{item}.log")
        if not torch.equal(original.pop("b0"), theta0.float()):
            raise RunError("the original's b0 is not ADP.py's (setting, kernel_size)")
        restated = run_the_restatement(y, b0, config, seed)
        score = lambda x: dict(psnr=ADP.psnr(x.double(), x_true), ssim=ADP.ssim(x.double(), x_true))  # noqa: E731
        row = dict(image=item, source=str(ADP.resolve_image(name)), seed=seed, blurry=score(y))
        for label, run in (("original", original), ("restatement", restated)):
            row[label] = dict(tv_column=score(run.pop("tv_column")), adp_column=score(run.pop("adp_column")),
                              kernel_change_max=(run.pop("b").double() - theta0).abs().max().item(), **run)
        row["iterations_in_step"] = steps_in_step(original["log"], restated["log"])
        row["acceptances_in_step"] = steps_in_step(original["log"], restated["log"], ("accepted",))
        rows.append(row)
        for label, run in (("the original's code", row["original"]), ("re-statement", row["restatement"])):
            table.append((item, label, row["blurry"], run))

    print(f"\n{'image':>10} {'code':<20} {'blurry + noisy':>15} {'TV column':>15} {'ADP column':>15} "
          f"{'accepted/upper':>14} {'FISTA':>6} {'seconds':>7}")
    pair = lambda s: f"{s['psnr']:.2f} / {s['ssim']:.3f}"  # noqa: E731
    for item, label, blurry, run in table:
        print(f"{item:>10} {label:<20} {pair(blurry):>15} {pair(run['tv_column']):>15} {pair(run['adp_column']):>15} "
              f"{run['accepted']:>6}/{run['upper_iterations']:<7} {run['fista_iterations']:>6} {run['seconds']:>7.0f}")
    for row in rows:
        print(f"{row['image']:>10}: the two agree on the first {row['iterations_in_step']} upper iterations "
              f"(acceptance and FISTA count), on the acceptances of the first {row['acceptances_in_step']}")

    record = run_record(device)
    checkout = checkout_record(own.checkout)
    config_record = dict(command=record["command"], code=record["code"], original=checkout,
                         environment=record["environment"], same_random_vectors=own.same_random_vectors,
                         no_figures=own.no_figures, constants=dataclasses.asdict(config),
                         patches={row["image"]: describe(p) for row, p in zip(rows, patches_of)})
    write_json(own.out / "config.json", config_record)
    write_json(own.out / "adp_vs_original.json", dict(rows=rows, **config_record))
    print(f"wrote {own.out / 'adp_vs_original.json'} and {own.out / 'config.json'}")


if __name__ == "__main__":
    run_main(main)
