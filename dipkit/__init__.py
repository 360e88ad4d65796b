"""dipkit: the building blocks the deep-image-prior scripts share (one module per idea).

errors       RunError, the error a user can fix (one line, exit code 2); Failed, a run that failed in a batch
cli          constants dataclass <-> command line, presets, one-line errors with exit code 2, Ctrl-C as one line
device       device choice (CUDA, MPS, CPU), seeding, deterministic kernels
images       image loading (bundled name or path; grey, RGBA, 16-bit, EXIF-rotated)
kernels      every kernel source: diagonal motion, Gaussian, disc, random motion (deepinv's Gaussian-process paths;
             motion_kernel, the synthetic blind benchmark's), Boracchi–Foi camera shake (camera_shake_kernels)
blur         every forward model, each with its exact adjoint: the convolution with replicate padding, the 'valid'
             cross-correlation (also by FFT), the circular (FFT) convolution
metrics      PSNR and SSIM
tv           finite differences, smoothed total variation with its gradient and Hessian-vector product, the plain
             anisotropic TV, and TV-FISTA deconvolution for any operator and its adjoint
solvers      certified FISTA (with an optional prox), L-BFGS, conjugate gradients, the simplex projection
maid         MAID, adaptive inexact bilevel descent, generic in the problem (MAIDSettings, BilevelProblem)
adp_original the ADP paper's code, reproduced (ADP.py --original_code)
generative   the generative priors' data, observation, generators, their training and the trained files on disk
             (GeneratorSettings, trained_generator), latent search helpers and the TV baselines
networks     the DIP skip network (and non-local blocks)
runs         run folders: plain run names, config.json (constants, environment, git revision, command line),
             metrics.json in one shape for every script, CSV tables, the lock of a folder in use, reading back what
             a resumed run kept (a damaged file is redone)
sources      the input files of a run: unique item names for same-stem files, the digest a resume checks
memory       what a run needs in memory, estimated before it starts, against what the device has free
figures      image grids, kernel panels, curves, the PSNR-GT against PSNR-NB scatter, 8-bit PNGs
blind        blind-deblurring problems: the synthetic benchmark, a folder in Levin's layout, a user's photos
levin        Levin's evaluation protocol: the shift search, PSNR and Wang's SSIM, error ratios and their cumulative
             curve, kernel error, the known-kernel baseline (python -m dipkit.levin DIR: the known-kernel rows)
sparse       Levin's sparse deconvolution (deconvSps), the error ratio's denominator
loop         the pieces of one blind-deblurring run's loop: device and seeds, two-rate Adam, Progress, Estimate,
             BatchProgress (the runs of a batch)
batch        runs of one shape stepped together: stacked networks (vmap or in turn), StackedAdam (each run's own
             learning rates, β1, steps), each run's random stream, grouping runs into batches
engines      where a study's units run (one run, or a batch): here, a process pool, Ray (local or a cluster)
study        a study of problems x variants x seeds: its jobs, resume and kept runs, and what selfdeblur.py and
             vdip.py share (StudyConstants, study_problems, run_study_script)
report       a study's tables, figures and printed lines, and merging runs made apart (python -m dipkit.study)
compare      any runs of any script side by side: curves and a table of final and best values
             (python -m dipkit.compare RUN ...)
"""
