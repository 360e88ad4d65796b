"""The measured results the docs quote, regenerated: each entry runs one documented command and keeps its small
files (tables, summaries, metrics.json and the config.json that names the script, its arguments, the git revision
and the device) under docs/results/<entry>/, which is what the docs link to.

    python bench/docs_results.py --list                     # the entries, with their commands
    python bench/docs_results.py adp_1d/paper ADP/astronaut # run these entries
    python bench/docs_results.py --all                      # every entry (hours on a 2-core CPU)
    python bench/docs_results.py ADP/photos --original ~/src/Analytical-Deep-Priors   # needs that checkout
    python bench/docs_results.py dip_denoise/paper_f16 --dip_repo ~/src/deep-image-prior --resume   # hours: resumable
    python bench/docs_results.py selfdeblur/levin_paper_batched --levin DIR --resume  # a cut study goes on
    python bench/docs_results.py dip_denoise/heldout_64_sigma10_seed0 --resume --keep_other_code  # across code
                                                    # changes that leave the results alone (the quick presets agree)

A script's run happens in a scratch results folder (Results/docs_results/) and its own config.json is kept; for
a command that writes no run folder (a benchmark, a merge, dipkit.levin) this writes a config.json with the same
record (environment, git revision, the command). An entry whose folder already exists is skipped unless --force:
a long list of entries killed halfway keeps every entry it finished.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dipkit.cli import run_main  # noqa: E402
from dipkit.errors import RunError  # noqa: E402
from dipkit.runs import code_revision, environment, write_json  # noqa: E402

DOCS_RESULTS = ROOT / "docs" / "results"
FIGURES = ROOT / "docs" / "figures"
SCRATCH = ROOT / "Results" / "docs_results"
LEVIN = "LEVIN"  # stands for --levin in a command
ORIGINAL = "ORIGINAL"  # stands for --original (a checkout of the ADP paper's repository)
DIP_REPO = "DIP_REPO"  # stands for --dip_repo (a clone of DmitryUlyanov/deep-image-prior: its F16_GT.png)
SMALL = 2_000_000  # bytes: larger files (long curves) are not copied

TABLES = ("table.csv", "summary.csv", "metrics.json", "config.json")


@dataclass(frozen=True)
class Entry:
    command: tuple[str, ...]  # a script and its arguments, or "-m module ...", or "bench/...py ..."
    keep: tuple[str, ...] = TABLES  # files of the run folder to keep (those that exist)
    threads: int | None = None  # OMP_NUM_THREADS (None: the machine's default)
    produces: tuple[str, ...] = ()  # for a command without a run folder: the files it writes (relative to ROOT)
    after: tuple[str, ...] = field(default_factory=tuple)  # entries whose runs it reads (a merge)
    figures: tuple[tuple[str, str], ...] = ()  # (a figure it writes, its name in docs/figures/): what the docs show

    @property
    def script_run(self) -> bool:
        return self.command[0].endswith(".py") and not self.command[0].startswith("bench/")


ADP_FILES = TABLES + ("curve.csv",)
HELD_OUT_IMAGES = ("brick", "grass", "gravel", "moon", "immunohistochemistry", "hubble_deep_field")
HELD_OUT = (  # size, noise levels (/255), seeds, images, iterations
    (64, (10, 15, 25), (0, 1), HELD_OUT_IMAGES, 4000),
    (128, (15, 25), (0,), ("brick", "moon", "immunohistochemistry"), 2500))
BLIND_STUDY = ("--images", "camera", "coffee", "chelsea", "--kernel_sizes", "13", "--size", "128", "--iterations",
               "2000", "--milestones", "800", "1200", "1600", "--channels", "32", "--skip_channels", "8", "--seeds",
               "0", "1", "--max_shift", "10", "--wide_shift", "0", "--workers", "2")
STOPPING_IMAGES = ("astronaut", "camera", "chelsea", "coffee", "rocket")
VDIP_SCHEDULE = ("--pretrain_iterations", "200", "--loss_switch", "800", "--prior_decay_every", "400")
# Brožová's study at the CPU study's scale: its three 128² problems, every schedule at 0.4 of the paper's (2000 of
# 5000 iterations: the CPU study's own), three seeds; her variants on SelfDeblur's side and VDIP's
BROZOVA = ("--images", "camera", "coffee", "chelsea", "--kernel_sizes", "13", "--size", "128", "--schedule_scale", "0.4",
           "--channels", "32", "--skip_channels", "8", "--max_shift", "10", "--wide_shift", "0", "--workers", "2")
BROZOVA_SELFDEBLUR = ("SelfDeblur", "SimplerSDB", "SimplerSDB-b0.95", "SimplerSDB-b0.99", "SelfDeblur+pre",
                      "SelfDeblur+pre-SSIM2000")
BROZOVA_REPEAT = ("--only", "camera_k13", "--seeds", "0", "--variants", "SelfDeblur", "SimplerSDB")
BROZOVA_RUNS = ("SCRATCH/selfdeblur/selfdeblur-brozova", "SCRATCH/vdip/vdip-brozova")

ENTRIES: dict[str, Entry] = {
    # ADP.py
    "ADP/astronaut": Entry(("ADP.py",), ADP_FILES, threads=1),
    "ADP/coffee": Entry(("ADP.py", "--images", "coffee", "--seed", "1"), ADP_FILES, threads=1),
    "ADP/rocket": Entry(("ADP.py", "--images", "rocket", "--seed", "2"), ADP_FILES, threads=1),
    "ADP/astronaut_300_iterations": Entry(("ADP.py", "--upper_iterations", "300"), ADP_FILES, threads=1),
    "ADP/original_code": Entry(("ADP.py", "--original_code", "--images", "astronaut", "coffee", "rocket"),
                               ADP_FILES, threads=1),
    "ADP/photos": Entry(("ADP.py", "--original_code", "--images", f"{ORIGINAL}/images/nessy.JPG",
                         f"{ORIGINAL}/images/cc1.jpg", f"{ORIGINAL}/images/bath.jpg"), threads=1),
    "ADP/original_fixes": Entry(("bench/bench_adp_original.py",), threads=1,
                                produces=("Results/bench/adp_original.json",)),
    "ADP/speed": Entry(("bench/bench_adp.py",), produces=("Results/bench/adp.json",)),
    # adp_1d.py
    "adp_1d/paper": Entry(("adp_1d.py",), TABLES + ("grid.csv",), threads=1),
    # dip_denoise.py
    "dip_denoise/quick4": Entry(("dip_denoise.py", "--quick", "--images", "astronaut", "coffee", "chelsea", "rocket"),
                                threads=1),
    # the stopping rules side by side: five bundled images, two sizes, two noise levels, two seeds (each rule's
    # constants as the quick preset and the official codes set them, fixed before any of these runs)
    **{f"dip_denoise/stopping_{size}_sigma{level}_seed{seed}": Entry(
        ("dip_denoise.py", "--quick", "--images", *STOPPING_IMAGES, "--size", str(size), "--noise_level",
         repr(level / 255), "--seed", str(seed), "--workers", "2"))
       for size in (64, 128) for level in (25, 50) for seed in (0, 1)},
    **{f"dip_denoise/stopping_study{suffix}": Entry(
        ("bench/stopping_study.py", *(f"SCRATCH/dip_denoise/dip_denoise-stopping_{size}_sigma{level}_seed{seed}"
                                      for size in sizes for level in (25, 50) for seed in (0, 1)),
         "--out", f"SCRATCH/stopping_study{suffix}"),
        produces=tuple(f"SCRATCH/stopping_study{suffix}/{name}" for name in ("rules.csv", "runs.csv", "rules.md")),
        after=tuple(f"dip_denoise/stopping_{size}_sigma{level}_seed{seed}"
                    for size in sizes for level in (25, 50) for seed in (0, 1)))
       for suffix, sizes in (("_64", (64,)), ("", (64, 128)))},
    # the held-out test of the stopping rules (docs/results/dip_denoise/heldout_protocol.md, committed before
    # these runs): images no rule was developed on, centre crops at their own resolution, every curve kept
    **{f"dip_denoise/heldout_{size}_sigma{level}_seed{seed}": Entry(
        ("dip_denoise.py", "--quick", "--images", *images, "--crop", str(size), "--noise_level", repr(level / 255),
         "--seed", str(seed), "--iterations", str(iterations), "--workers", "2"), TABLES + tuple(f"{i}/curve.csv" for i in images))
       for size, levels, seeds, images, iterations in HELD_OUT for level in levels for seed in seeds},
    # the SURE rule (added after the held-out protocol) on the earlier study's images: its runs with --sure (a twin
    # run beside each image), every other rule as in dip_denoise/stopping_64_*
    **{f"dip_denoise/sure_64_sigma{level}_seed{seed}": Entry(
        ("dip_denoise.py", "--quick", "--images", *STOPPING_IMAGES, "--size", "64", "--noise_level", repr(level / 255),
         "--seed", str(seed), "--workers", "2", "--sure"), TABLES + tuple(f"{i}/curve.csv" for i in STOPPING_IMAGES))
       for level in (25, 50) for seed in (0, 1)},
    "dip_denoise/sure_study_64": Entry(
        ("bench/stopping_study.py", *(f"SCRATCH/dip_denoise/dip_denoise-sure_64_sigma{level}_seed{seed}"
                                      for level in (25, 50) for seed in (0, 1)), "--out", "SCRATCH/sure_study_64"),
        produces=tuple(f"SCRATCH/sure_study_64/{name}" for name in ("rules.csv", "runs.csv", "rules.md", "tau.csv")),
        after=tuple(f"dip_denoise/sure_64_sigma{level}_seed{seed}" for level in (25, 50) for seed in (0, 1))),
    # the paper's setting at 512x512 (3000 iterations, σ 25/255; hours on a CPU, cut and resumed): F16 from a clone
    # of the Deep Image Prior repository (never bundled), and the bundled astronaut
    **{f"dip_denoise/paper_{name}": Entry(
        ("dip_denoise.py", "--images", image, "--save_every", "250"), TABLES + (f"{stem}/curve.csv",),
        figures=((f"SCRATCH/dip_denoise/dip_denoise-paper_{name}/{stem}/curve.png", f"dip_paper_{name}_curve.png"),))
       for name, image, stem in (("f16", f"{DIP_REPO}/data/denoising/F16_GT.png", "F16_GT"),
                                 ("astronaut", "astronaut", "astronaut"))},
    "dip_denoise/sigma_estimates": Entry(("bench/sigma_estimates.py",),
                                         produces=("Results/bench/sigma_estimates.json",)),
    "dip_denoise/heldout_study": Entry(
        ("bench/stopping_study.py", *(f"SCRATCH/dip_denoise/dip_denoise-heldout_{size}_sigma{level}_seed{seed}"
                                      for size, levels, seeds, _, _ in HELD_OUT for level in levels for seed in seeds),
         "--out", "SCRATCH/heldout_study"),
        produces=tuple(f"SCRATCH/heldout_study/{name}" for name in ("rules.csv", "runs.csv", "rules.md", "tau.csv")),
        after=tuple(f"dip_denoise/heldout_{size}_sigma{level}_seed{seed}"
                    for size, levels, seeds, _, _ in HELD_OUT for level in levels for seed in seeds)),
    # selfdeblur.py and vdip.py: the reduced CPU study, merged
    "selfdeblur/cpu_study": Entry(("selfdeblur.py", *BLIND_STUDY, "--variants", "SelfDeblur")),
    "vdip/cpu_study": Entry(("vdip.py", *BLIND_STUDY, *VDIP_SCHEDULE, "--variants", "VDIP-Sparse", "VDIP-Extreme",
                             "VDIP-Sparse-orig", "VDIP-Extreme-orig")),
    "vdip/cpu_comparison": Entry(("-m", "dipkit.compare", "SCRATCH/selfdeblur/selfdeblur-cpu_study",
                                  "SCRATCH/vdip/vdip-cpu_study", "--out", "SCRATCH/vdip/cpu_comparison"),
                                 produces=("SCRATCH/vdip/cpu_comparison/table.csv",
                                           "SCRATCH/vdip/cpu_comparison/summary.csv"),
                                 after=("selfdeblur/cpu_study", "vdip/cpu_study")),
    # Brožová's study regenerated (about 3.5 hours on a 2-core CPU): the runs, the same runs made again (as run
    # and deterministic), the variants' curves merged, her figures and conclusions
    "selfdeblur/brozova": Entry(("selfdeblur.py", *BROZOVA, "--seeds", "0", "1", "2", "--variants",
                                 *BROZOVA_SELFDEBLUR), TABLES + ("curve.csv",)),
    "vdip/brozova": Entry(("vdip.py", *BROZOVA, "--seeds", "0", "1", "2", "--variants", "VDIP-Sparse", "VDIP-Extreme"),
                          TABLES + ("curve.csv",)),
    "selfdeblur/brozova_repeat": Entry(("selfdeblur.py", *BROZOVA, *BROZOVA_REPEAT)),
    "selfdeblur/brozova_repeat_deterministic": Entry(("selfdeblur.py", *BROZOVA, *BROZOVA_REPEAT, "--deterministic")),
    "selfdeblur/brozova_comparison": Entry(
        ("-m", "dipkit.compare", *BROZOVA_RUNS, "--out", "SCRATCH/brozova_comparison"),
        produces=tuple(f"SCRATCH/brozova_comparison/{name}" for name in ("table.csv", "summary.csv", "compare.md")),
        after=("selfdeblur/brozova", "vdip/brozova"),
        figures=(("SCRATCH/brozova_comparison/compare.png", "brozova_curves.png"),)),
    "selfdeblur/brozova_study": Entry(
        ("bench/brozova_study.py", *BROZOVA_RUNS, "--repeats", "SCRATCH/selfdeblur/selfdeblur-brozova_repeat",
         "SCRATCH/selfdeblur/selfdeblur-brozova_repeat_deterministic",
         # the reduced CPU study's SelfDeblur and VDIP runs: seeds 0 and 1 with the same settings, another machine
         "docs/results/selfdeblur/cpu_study", "docs/results/vdip/cpu_study", "--out", "SCRATCH/brozova_study"),
        produces=tuple(f"SCRATCH/brozova_study/{name}" for name in ("runs.csv", "variants.csv", "stochasticity.csv",
                                                                    "claims.md")),
        after=("selfdeblur/brozova", "vdip/brozova", "selfdeblur/brozova_repeat",
               "selfdeblur/brozova_repeat_deterministic"),
        figures=(("SCRATCH/brozova_study/scatter.png", "brozova_scatter.png"),
                 ("SCRATCH/brozova_study/beta1.png", "brozova_beta1.png"))),
    # the same study at the papers' scale on Levin's 32 images (a GPU's commands: seeds batched, not yet measured)
    "selfdeblur/brozova_levin": Entry(("selfdeblur.py", "--levin_dir", LEVIN, "--seeds", "0", "1", "2", "--variants",
                                       *BROZOVA_SELFDEBLUR, "--batch", "3", "--workers", "4"),
                                      TABLES + ("curve.csv",)),
    "vdip/brozova_levin": Entry(("vdip.py", "--levin_dir", LEVIN, "--seeds", "0", "1", "2", "--variants",
                                 "VDIP-Sparse", "VDIP-Extreme", "--batch", "3", "--workers", "4"),
                                TABLES + ("curve.csv",)),
    "vdip/quick_bugs_sparse": Entry(("vdip.py", "--quick", "--variants", "VDIP-Sparse", "VDIP-Sparse-orig",
                                     "--seeds", "0", "1"), threads=1),
    "vdip/quick_bugs_extreme": Entry(("vdip.py", "--quick", "--variants", "VDIP-Extreme", "VDIP-Extreme-twice",
                                      "VDIP-Extreme-mixed", "VDIP-Extreme-bright", "VDIP-Extreme-nan",
                                      "VDIP-Extreme-orig", "VDIP-Extreme-pre5", "VDIP-Extreme-lai-uniform-orig",
                                      "--seeds", "0", "1"), threads=1),
    # Levin's known-kernel row (needs Levin's folder)
    "selfdeblur/levin_known_kernel": Entry(("-m", "dipkit.levin", LEVIN, "--csv", "SCRATCH/levin_known_kernel.csv"),
                                           produces=("SCRATCH/levin_known_kernel.csv",)),
    "selfdeblur/levin_known_kernel_levin_setting": Entry(
        ("-m", "dipkit.levin", LEVIN, "--weight", "0.0068", "--iterations", "70", "--csv",
         "SCRATCH/levin_known_kernel_levin_setting.csv"), produces=("SCRATCH/levin_known_kernel_levin_setting.csv",)),
    "selfdeblur/levin_known_kernel_tv": Entry(
        ("-m", "dipkit.levin", LEVIN, "--method", "tv", "--csv", "SCRATCH/levin_known_kernel_tv.csv"),
        produces=("SCRATCH/levin_known_kernel_tv.csv",)),
    # generative_prior.py: the reduced run
    "generative_prior/cpu_reduced": Entry(("generative_prior.py", "--test_images", "10", "--restarts", "3",
                                           "--alg1_steps", "2000", "--alg1_decay", "500", "--range_steps", "2000",
                                           "--alg2_steps", "2000", "--alg3_iterations", "300",
                                           "--tv_blind_iterations", "500", "--kernel_count", "20000",
                                           "--kernel_epochs", "5", "--noise_levels", "0.01", "0.1"),
                                          TABLES + ("noise.csv",), threads=1),
    # speed benchmarks, at one and two threads
    **{f"bench/{name}_{threads}thread": Entry((f"bench/bench_{name}.py", *arguments), threads=threads,
                                               produces=(f"Results/bench/{name}.json",))
       for name, arguments in (("selfdeblur", ("--iterations", "3", "--switch_iterations", "5")),
                               ("vdip", ("--iterations", "3", "--switch_iterations", "5")), ("dip", ()))
       for threads in (1, 2)},
    # torch.compile on the CPU (two threads): its compilation time and its steps, against float32 in one process
    "bench/dip_compile": Entry(("bench/bench_dip.py", "--cpu_compile"), produces=("Results/bench/dip.json",)),
    "bench/selfdeblur_packing": Entry(("bench/bench_selfdeblur.py", "--iterations", "3", "--switch_iterations", "5",
                                       "--pack", "2", "--pack_iterations", "20"),
                                      produces=("Results/bench/selfdeblur.json",)),
    # batched runs: three quick seeds batched and one after another (same machine, one after the other), and the
    # runs-per-hour benchmark at the quick size and at the papers' sizes (as far as a 2-core CPU goes)
    "selfdeblur/quick_seeds_alone": Entry(("selfdeblur.py", "--quick", "--seeds", "0", "1", "2"),
                                          TABLES + ("curve.csv",)),
    "selfdeblur/quick_seeds_batch3": Entry(("selfdeblur.py", "--quick", "--seeds", "0", "1", "2", "--batch", "3"),
                                           TABLES + ("curve.csv",)),
    # SelfDeblur's Levin table at the paper's setting, batched (a GPU's command: about 83 hours of one CPU core)
    "selfdeblur/levin_paper_batched": Entry(("selfdeblur.py", "--levin_dir", LEVIN, "--batch", "8", "--workers", "4"),
                                            TABLES + ("curve.csv", "error_ratio.csv")),
    "bench/batch_quick": Entry(("bench/bench_batch.py", "--tiny", "--runs", "1", "2", "4", "--iterations", "20",
                                "--modes", "loop", "vmap"), produces=("Results/bench/batch.json",)),
    "bench/batch_selfdeblur_paper": Entry(("bench/bench_batch.py", "--method", "selfdeblur", "--runs", "1", "2", "4",
                                           "--iterations", "3", "--modes", "loop", "vmap"),
                                          produces=("Results/bench/batch.json",)),
    "bench/batch_selfdeblur_packed": Entry(("bench/bench_batch.py", "--method", "selfdeblur", "--runs", "2",
                                            "--iterations", "3", "--modes", "loop", "--pack", "2",
                                            "--pack_iterations", "10"), produces=("Results/bench/batch.json",)),
    "bench/batch_dip_512": Entry(("bench/bench_batch.py", "--method", "dip", "--runs", "1", "2", "--iterations", "2",
                                  "--modes", "loop", "vmap"), produces=("Results/bench/batch.json",)),
    # a batch's optimiser step: StackedAdam (foreach) against each run's torch.optim.Adam
    "bench/stacked_adam": Entry(("bench/bench_stacked_adam.py",), produces=("Results/bench/stacked_adam.json",)),
    # every network script's step in each precision and memory format, auto's choice; ADP on one thread and two
    "bench/speed": Entry(("bench/bench_speed.py",), produces=("Results/bench/speed.json",)),
    # bf16 against float32 over five seeds (docs/results/speed/bf16_quality_protocol.md): where bf16 is emulated,
    # at the quick shape; on a CPU with native bfloat16, at the paper's shape for a fifth of its schedule
    **{f"speed/{script}_{shape}_{precision}": Entry(
        (f"{script}.py", *arguments, "--seeds", "0", "1", "2", "3", "4", "--precision", precision),
        TABLES + ("curve.csv",))
       for script in ("selfdeblur", "vdip") for precision in ("float32", "bf16")
       for shape, arguments in (("quick", ("--quick",)),
                                ("paper", ("--images", "camera", "--kernel_sizes", "27", "--schedule_scale", "0.2")))},
    **{f"speed/dip_256_{precision}": Entry(("dip_denoise.py", "--size", "256", "--images", "astronaut", "coffee",
                                            "chelsea", "rocket", "--iterations", "1500", "--precision", precision))
       for precision in ("float32", "bf16")},
}


def resolve(text: str, levin: str, original: str, dip_repo: str = "") -> str:
    """A command's placeholders: SCRATCH, the Levin folder, the original checkout, the DIP repository's clone."""
    if LEVIN in text and not levin:
        raise RunError("this entry needs Levin's folder: --levin DIR")
    if ORIGINAL in text and not original:
        raise RunError("this entry needs a checkout of the ADP paper's repository: --original DIR")
    if DIP_REPO in text and not dip_repo:
        raise RunError("this entry needs a clone of the Deep Image Prior repository: --dip_repo DIR")
    return text.replace("SCRATCH", str(SCRATCH)).replace(LEVIN, levin).replace(ORIGINAL, original).replace(
        DIP_REPO, dip_repo)


def command_of(name: str, entry: Entry, levin: str, original: str, resume: bool = False,
               keep_other_code: bool = False, dip_repo: str = "") -> list[str]:
    words = [resolve(word, levin, original, dip_repo) for word in entry.command]
    if entry.script_run:
        slug = name.replace("/", "-")
        words += ["--results_dir", str(SCRATCH), "--run_name", slug, "--no-progress"] + (["--resume"] if resume else [])
        words += ["--keep_other_code"] if resume and keep_other_code else []
    first = words[0] if words[0] == "-m" else str(ROOT / words[0])
    return [sys.executable, first, *words[1:]]


def run_entry(name: str, entry: Entry, levin: str, original: str, force: bool, resume: bool = False,
              keep_other_code: bool = False, dip_repo: str = "") -> None:
    """Run the entry's command and keep its small files in docs/results/<name>/. With `resume`, a script's run
    that was cut (its scratch folder exists) goes on where it stopped (the script's --resume) instead of anew;
    with `keep_other_code` too, it keeps the units other code computed (units.json names that code)."""
    target = DOCS_RESULTS / name
    if target.exists() and not force:
        print(f"{name}: kept ({target} exists; --force runs it again)")
        return
    script_name = Path(entry.command[0]).stem
    run_folder = SCRATCH / script_name / name.replace("/", "-")
    resume = resume and entry.script_run and run_folder.exists()
    command = command_of(name, entry, levin, original, resume, keep_other_code, dip_repo)
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(entry.threads)} if entry.threads else {}))
    if entry.script_run and run_folder.exists() and not resume:
        shutil.rmtree(run_folder)  # a fresh run of this entry, under the entry's own name
    print(f"{name}: {' '.join(command[1:])}" + (f" (OMP_NUM_THREADS={entry.threads})" if entry.threads else ""),
          flush=True)
    for produced in entry.produces:  # an earlier run's output is never taken for this one's
        path = Path(resolve(produced, levin, original, dip_repo))
        path = path if path.is_absolute() else ROOT / path
        if path.parent.parent == SCRATCH / script_name or path.parent.parent == SCRATCH / "vdip":
            shutil.rmtree(path.parent, ignore_errors=True)
        path.unlink(missing_ok=True)
        path.parent.mkdir(parents=True, exist_ok=True)  # the command writes its file there
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env)
    if done.returncode:
        raise RunError(f"{name}: the command ended with exit code {done.returncode}; nothing was kept")
    seconds = time.perf_counter() - start
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    if entry.script_run:
        for file in entry.keep:
            if (run_folder / file).is_file() and (run_folder / file).stat().st_size <= SMALL:
                (partial / file).parent.mkdir(parents=True, exist_ok=True)  # an image's curve.csv
                shutil.copy2(run_folder / file, partial / file)
    else:
        for produced in entry.produces:
            path = Path(resolve(produced, levin, original, dip_repo))
            path = path if path.is_absolute() else ROOT / path
            shutil.copy2(path, partial / path.name)
        import torch  # only for the device name in the record

        write_json(partial / "config.json", dict(
            config=dict(entry=name, threads=entry.threads), environment=environment(torch.device("cpu")),
            code=code_revision(), command=["python", *command[1:]], seconds=seconds))
    if target.exists():
        shutil.rmtree(target)
    partial.rename(target)
    for figure, name in entry.figures:  # the figures the docs show
        FIGURES.mkdir(parents=True, exist_ok=True)
        shutil.copy2(Path(resolve(figure, levin, original, dip_repo)), FIGURES / name)
    print(f"{name}: kept in {os.path.relpath(target, ROOT)} ({seconds:.0f} s)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("entries", nargs="*", help="entries to run (see --list)")
    parser.add_argument("--all", action="store_true", help="every entry (those needing --levin or --original only "
                        "when given)")
    parser.add_argument("--list", action="store_true", help="print the entries and their commands")
    parser.add_argument("--force", action="store_true", help="run entries whose folder exists again")
    parser.add_argument("--resume", action="store_true", help="a script's run that was cut goes on where it stopped")
    parser.add_argument("--keep_other_code", action="store_true", help="with --resume: keep the units that other code "
                        "computed (the script's --keep_other_code; only where the change leaves the results alone)")
    parser.add_argument("--levin", default="", help="Levin's folder (SelfDeblur's layout)")
    parser.add_argument("--dip_repo", default="", help="a clone of DmitryUlyanov/deep-image-prior (F16_GT.png)")
    parser.add_argument("--original", default="", help="a checkout of MohammadSadeghSalehi/Analytical-Deep-Priors")
    args = parser.parse_args()
    if args.list:
        for name, entry in ENTRIES.items():
            threads = f"OMP_NUM_THREADS={entry.threads} " if entry.threads else ""
            print(f"{name:>32}: {threads}python {' '.join(entry.command)}")
        return
    unknown = [name for name in args.entries if name not in ENTRIES]
    if unknown:
        raise RunError(f"unknown entr{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)} (see --list)")
    names = list(ENTRIES) if args.all else args.entries
    if args.all:
        names = [n for n in names if (LEVIN not in " ".join(ENTRIES[n].command) or args.levin)
                 and (ORIGINAL not in " ".join(ENTRIES[n].command) or args.original)
                 and (DIP_REPO not in " ".join(ENTRIES[n].command) or args.dip_repo)]
    if not names:
        raise RunError("name entries to run, or --all (see --list)")
    for name in names:
        missing = [before for before in ENTRIES[name].after if not (DOCS_RESULTS / before).is_dir()]
        if missing:
            raise RunError(f"{name} merges the runs of {', '.join(missing)}: run those first")
        run_entry(name, ENTRIES[name], str(Path(args.levin).expanduser()) if args.levin else "",
                  str(Path(args.original).expanduser()) if args.original else "", args.force, args.resume,
                  args.keep_other_code, str(Path(args.dip_repo).expanduser()) if args.dip_repo else "")


if __name__ == "__main__":
    run_main(main)
