"""dipkit: the building blocks the deep-image-prior scripts share (one module per idea).

cli      constants dataclass <-> command line, presets, one-line errors with exit code 2
device   device choice (CUDA, MPS, CPU), seeding, deterministic kernels
images   image loading (bundled name or path; grey, RGBA, 16-bit, EXIF-rotated)
kernels  blur kernels (diagonal motion, Gaussian, disc, random motion)
blur     blur operators (convolution with replicate padding and its exact adjoint)
metrics  PSNR and SSIM
tv       smoothed total variation with its gradient and Hessian-vector product
solvers  certified FISTA (with an optional prox) and conjugate gradients
maid     MAID, adaptive inexact bilevel descent, generic in the problem
networks the DIP skip network (and non-local blocks)
runs     run folders: config.json, metrics.json, CSV curves
figures  image grids, kernel panels, curves
"""
