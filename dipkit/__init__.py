"""dipkit: the building blocks the deep-image-prior scripts share (one module per idea).

errors       RunError, the error a user can fix (one line, exit code 2)
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
maid         MAID, adaptive inexact bilevel descent, generic in the problem
adp_original the ADP paper's code, reproduced (ADP.py --original_code)
generative   the generative priors' data, observation, generators and their training
networks     the DIP skip network (and non-local blocks)
runs         run folders: plain run names, config.json (constants, environment, git revision, command line),
             metrics.json in one shape for every script, CSV tables, the lock of a folder in use, reading back what
             a resumed run kept (a damaged file is redone)
sources      the input files of a run: unique item names for same-stem files, the digest a resume checks
memory       what a run needs in memory, estimated before it starts, against what the device has free
figures      image grids, kernel panels, curves, the PSNR-GT against PSNR-NB scatter, 8-bit PNGs
blind        blind-deblurring problems: the synthetic benchmark, a folder in Levin's layout, a user's photos
levin        Levin's evaluation protocol: the shift search, PSNR and Wang's SSIM, error ratios, kernel error, the
             known-kernel baseline (python -m dipkit.levin DIR: the known-kernel row of a folder)
study        a study of problems x variants x seeds: the optimiser and progress SelfDeblur and VDIP share, the run
             folder's tables and figures, and merging runs made apart (python -m dipkit.study)
"""
