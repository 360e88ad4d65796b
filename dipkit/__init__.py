"""dipkit: the building blocks the deep-image-prior scripts share (one module per idea).

errors       RunError, the error a user can fix (one line, exit code 2); Failed, a unit that failed while others go on
cli          constants dataclass <-> command line, presets, ranges and choices, one-line errors with exit code 2,
             Ctrl-C as one line
device       device choice (CUDA, MPS, CPU), seeding, deterministic kernels, native bfloat16, tensors moved
kernels      every kernel source: diagonal motion, Gaussian, disc, random motion (deepinv's Gaussian-process paths;
             motion_kernel, the synthetic blind benchmark's), Boracchi–Foi camera shake (camera_shake_kernels)
blur         every forward model, each with its exact adjoint: the convolution with replicate padding, the 'valid'
             cross-correlation (also by FFT; with its latent image's centre and padding), the circular (FFT)
             convolution
metrics      PSNR and SSIM
tv           finite differences, smoothed total variation with its gradient and Hessian-vector product, the plain
             anisotropic TV, and TV deconvolution by FISTA (any operator with its adjoint; a kernel, 'valid' or
             circular)
solvers      certified FISTA (with an optional prox), L-BFGS, conjugate gradients, the simplex projection
maid         MAID, adaptive inexact bilevel descent, and the fixed-step IFT it is measured against, generic in the
             problem (MAIDSettings, BilevelProblem)
signals      the 1-D ADP experiments' data: the grid, the three test signals, the two forward operators
adp_original the ADP paper's code, reproduced (ADP.py --original_code)
adp_report   the analytic deep prior experiments' outputs: ADP.py's reconstructions, kernels, MAID curves and table;
             adp_1d.py's solver comparison (loss curves, time to within 1% of the best loss, speed-ups, tuning grid)
generative   the generative priors' data, observation, generators, their training and the trained files on disk
             (GeneratorSettings, trained_generator), latent search helpers and the baselines (range images, blind TV)
generative_report  the generative priors' outputs: the deblurred digits and kernels, the per-image table, each
             method's summary at each noise level and the noise figure, the generators' samples
networks     the DIP skip network (and non-local blocks)
runs         run folders: plain run names, config.json (constants, environment, git revision, command line),
             metrics.json in one shape for every script, CSV tables, the lock of a folder in use, reading back what
             a resumed run kept (a damaged file is redone)
engine       the one engine every script runs its units on (an image, a problem x variant x seed, a noise level,
             a solver): each kept as it finishes under a key of its inputs and settings, with its code; --resume
             (what another key or other code made is done again); here / worker processes (a dead one costs only its
             batch) / Ray; batches of one shape, failed units named; the run constants every script shares
sources      the input files of a run: the images given (or a folder's), unique item names; digest_of, a unit's key
images       image loading (bundled name or path; grey, RGBA, 16-bit, EXIF-rotated), a source's portable name
memory       what a run needs in memory, estimated before it starts (and measured on a state's tensors), against
             what the device has free
figures      image grids, kernel panels, curves, the PSNR-GT against PSNR-NB scatter, 8-bit PNGs
blind        blind-deblurring problems: the synthetic benchmark, a folder in Levin's layout, a user's photos
levin        Levin's evaluation protocol: the shift search, PSNR and Wang's SSIM, error ratios and their cumulative
             curve, kernel error, the known-kernel baseline (python -m dipkit.levin DIR: the known-kernel rows)
sparse       Levin's sparse deconvolution (deconvSps), the error ratio's denominator
batch        runs of one shape stepped together, a run alone being a batch of one: stacked networks (in turn or
             vmap) with the speed switches, StackedAdam (each run's learning rates, β1, steps; foreach), each run's
             random stream and its share of the time; the constants the network scripts share
speed        the network scripts' precision (float32, bf16) and memory format (contiguous, channels-last), `auto`
             resolved per device and run shape from what the benchmarks measured
blind_loop   the blind-deblurring loop's pieces, shared by selfdeblur.py and vdip.py: a run (BlindRun), its result
             (Estimate), the runs of a batch under way (BlindRuns: networks, inputs, two-rate Adam, curves, checks)
study        a blind-deblurring study on the engine: problems x variants x seeds, scored and written; the constants
             selfdeblur.py and vdip.py share (StudyConstants)
report       a blind study's tables, figures and printed lines
stopping     what a DIP run reads off its outputs on the device: curves, the stopping rules, the oracle
dip_report   a DIP denoising run's outputs: each image's folder (denoised image, every rule's images, curves), its
             scores, table row and printed lines, metrics.json
backtracking DIP's safeguard: a run's checkpoints on the device and the restore after a PSNR drop; the last
             checkpoint on disk, so that a run cut halfway goes on from it
compare      any runs of any script side by side, and runs made apart merged: curves, a table of final and best
             values, one merged table (python -m dipkit.compare RUN ...)
"""
