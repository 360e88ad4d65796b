"""Levin's evaluation protocol, as SelfDeblur's MATLAB statistic scripts apply it.

Scores follow SelfDeblur's MATLAB statistic scripts (Levin's comp_upto_shift): the reference is cropped by
`crop` = 15 pixels, the estimate by crop − max_shift, every sub-pixel translation in −max_shift : 0.25 : max_shift
on both axes (bilinear, as interp2) is tried and the smallest sum of squared differences kept; PSNR (peak 1, the
same as 255 on 8-bit values) and Wang's SSIM with automatic downsampling are taken on the aligned crop. The error
ratio is the ratio of the spectral norms (MATLAB's norm of a matrix) of the error images of the estimate and of
the known-kernel deconvolution, as SelfDeblur computes it; Levin's own definition, the ratio of the sums of
squares, is reported beside it. The known-kernel deconvolution is Levin's sparse deconvolution (deconvSps,
dipkit.sparse, weight 0.003 and 200 CG steps: the setting that reproduces SelfDeblur's "known k" row), or a TV
deconvolution as a switch (KnownKernel). `error_ratio_curve` gives the cumulative error-ratio figure of Levin's
and SelfDeblur's papers: the fraction of runs whose ratio is at most r.

max_shift is 5 by default: the comp_upto_shift.m of August 2019, which scored the paper's table, hard-codes
shifts = -5:0.25:5; the February 2020 version takes maxshift as an argument and statistic_levin.m sets 10 ("usually
5 is enough"). A wider search can only raise PSNR, so the scripts report the ±10 scores beside the ±5 ones
(`wide_shift`). The scripts' psnr.m takes the peak as 255 when the estimate's maximum exceeds 2 (on 0..255
values) and as 1 otherwise, a switch that only a near-black estimate (every pixel below 2/255) would trip; the
peak here is always 255 (1 on [0, 1]).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .blind import Problem, levin_problems
from .blur import blur_valid, pad_to_latent
from .errors import RunError
from .metrics import ssim
from .sparse import deconv_sps
from .tv import tv_deconvolution


def _shifted(image: torch.Tensor, offset: float, length: int, dim: int) -> torch.Tensor:
    """Bilinear samples of `image` at a + offset, a = 0..length−1, along `dim` (offset ≥ 0)."""
    a = math.floor(offset)
    f = offset - a
    low = image.narrow(dim, a, length)
    return low if f == 0 else (1 - f) * low + f * image.narrow(dim, a + 1, length)


def _window_sums(values: torch.Tensor, length: int) -> torch.Tensor:
    """Sums of `length` consecutive entries along the last axis, for every start."""
    cumulative = F.pad(values.cumsum(-1), (1, 0))
    return cumulative[..., length:] - cumulative[..., :-length]


def check_scoring(image_size: tuple[int, int], crop: int, max_shift: float, name: str = "") -> None:
    """What Levin's protocol needs: shifts within the crop, and at least 11 pixels (SSIM's window) left after it."""
    prefix = f"{name}: " if name else ""
    if max_shift > crop:
        raise RunError(f"{prefix}max_shift ({max_shift}) cannot exceed the crop ({crop})")
    h, w = image_size
    if min(h, w) - 2 * crop < 11:
        raise RunError(f"{prefix}a {h}x{w} image is too small for a {crop}-pixel crop and SSIM")


def align_up_to_shift(estimate: torch.Tensor, reference: torch.Tensor, crop: int = 15, max_shift: float = 5,
                      step: float = 0.25) -> tuple[torch.Tensor, torch.Tensor, tuple[float, float]]:
    """Levin's comp_upto_shift: (aligned estimate, cropped reference, (row shift, column shift)).

    Both are (H, W) or (1, 1, H, W) images of one size. The reference loses `crop` pixels on each side; the
    estimate is sampled at (r + s_r, c + s_c) for every shift pair of the grid, bilinearly (as interp2), and the
    pair with the smallest sum of squared differences is kept.

    The 81 x 81 sums are not formed image by image. Bilinear sampling is separable: once the column shifts are
    applied (a stack of S images c_j), a row shift a + f (integer a, fraction f) gives (1 − f)·c_j[a + t] +
    f·c_j[a + 1 + t], whose SSD against r expands into windowed sums of c_j², c_j[t]·c_j[t + 1] and c_j·r, all
    read off cumulative sums: exact, and several times faster than sampling every pair (bench/bench_selfdeblur.py).
    """
    e, r = estimate.detach().double().squeeze(), reference.detach().double().squeeze()
    h, w = r.shape
    check_scoring((h, w), crop, max_shift)
    inner = r[crop : h - crop, crop : w - crop]
    n_r, n_c = inner.shape
    margin = math.ceil(max_shift)
    e = e[crop - margin : h - crop + margin, crop - margin : w - crop + margin]
    steps = round(max_shift / step)
    shifts = [k * step for k in range(-steps, steps + 1)]
    columns = torch.stack([_shifted(e, s + margin, n_c, dim=-1) for s in shifts])  # (S, n_r + 2 margin, n_c)
    squares = _window_sums(columns.pow(2).sum(-1), n_r)  # Σ c[a + t]² for a = 0..2 margin
    pairs = _window_sums((columns[:, :-1] * columns[:, 1:]).sum(-1), n_r)  # Σ c[a + t]·c[a + 1 + t]
    pairs = F.pad(pairs, (0, 1))  # a = 2 margin only comes with f = 0
    cross = torch.stack([(columns[:, a : a + n_r] * inner).sum((-2, -1)) for a in range(2 * margin + 1)], -1)
    offsets = torch.tensor(shifts, dtype=torch.float64, device=e.device) + margin
    low = offsets.floor().long()
    f = offsets - low
    high = (low + 1).clamp(max=2 * margin)  # f = 0 where the clamp acts
    ssd = ((1 - f) ** 2 * squares[:, low] + 2 * f * (1 - f) * pairs[:, low] + f**2 * squares[:, high]
           - 2 * ((1 - f) * cross[:, low] + f * cross[:, high]) + inner.pow(2).sum())  # (column j, row i)
    j, i = divmod(int(ssd.argmin()), len(shifts))
    aligned = _shifted(columns[j], shifts[i] + margin, n_r, dim=-2)
    return aligned, inner, (shifts[i], shifts[j])


def _align_by_sampling(estimate, reference, crop=15, max_shift=10.0, step=0.25):
    """The direct form of align_up_to_shift (every pair sampled), kept for the tests."""
    e, r = estimate.double().squeeze(), reference.double().squeeze()
    h, w = r.shape
    inner = r[crop : h - crop, crop : w - crop]
    margin = math.ceil(max_shift)
    e = e[crop - margin : h - crop + margin, crop - margin : w - crop + margin]
    steps = round(max_shift / step)
    shifts = [k * step for k in range(-steps, steps + 1)]
    ssd = torch.tensor([[(_shifted(_shifted(e, sc + margin, inner.shape[1], -1), sr + margin, inner.shape[0], -2)
                          - inner).pow(2).sum().item() for sc in shifts] for sr in shifts])
    i, j = divmod(int(ssd.argmin()), len(shifts))
    return ssd, (shifts[i], shifts[j])


def wang_ssim(estimate: torch.Tensor, reference: torch.Tensor) -> float:
    """Z. Wang's ssim.m ("SSIM index with automatic downsampling"): images of M x N pixels are box-filtered and
    subsampled by f = max(1, round(min(M, N)/256)) first, then the Gaussian SSIM (11x11, σ 1.5, 'valid')."""
    x, y = (t.detach().double().reshape(1, 1, *t.shape[-2:]) for t in (estimate, reference))
    f = max(1, round(min(x.shape[-2:]) / 256))
    if f > 1:  # imfilter(·, ones(f)/f², 'symmetric', 'same'), then every f-th pixel from the first
        before, after = (f - 1) // 2, f // 2  # MATLAB's 'same' centre for even f
        box = torch.full((1, 1, f, f), 1.0 / f**2, dtype=x.dtype, device=x.device)
        x, y = (F.conv2d(_pad_symmetric(t, before, after), box)[..., ::f, ::f] for t in (x, y))
    return ssim(x, y)


def _pad_symmetric(image: torch.Tensor, before: int, after: int) -> torch.Tensor:
    """MATLAB's 'symmetric' padding of the last two axes: mirrored with the border pixel repeated (c b a | a b c)."""
    for dim in (-2, -1):
        n = image.shape[dim]
        index = torch.arange(-before, n + after, device=image.device)
        index = torch.where(index < 0, -index - 1, torch.where(index >= n, 2 * n - index - 1, index))
        image = image.index_select(dim, index)
    return image


def psnr_of(aligned: torch.Tensor, reference: torch.Tensor) -> float:
    """PSNR with peak 1 (the MATLAB scripts' 255 on 8-bit values), no clipping beyond what the images have."""
    return (10 * torch.log10(1 / (aligned - reference).pow(2).mean())).item()


def kernel_error(estimate: torch.Tensor, truth: torch.Tensor, orientation_known: bool = True) -> float:
    """‖k̂ − k‖ / ‖k‖ at the best integer translation of k̂ against k (zero outside the frames), and with k̂
    rotated by 180° too when the truth's orientation is not known: a kernel and its image can trade a shift."""
    k = truth.detach().double().reshape(1, 1, *truth.shape[-2:])
    candidates = [estimate.detach().double().reshape(1, 1, *estimate.shape[-2:])]
    if not orientation_known:
        candidates.append(candidates[0].flip(-2, -1))
    kh, kw = candidates[0].shape[-2:]
    padded = F.pad(k, (kw - 1, kw - 1, kh - 1, kh - 1))
    best = max(F.conv2d(padded, c).max().item() for c in candidates)  # the largest ⟨translated k̂, k⟩
    squared = candidates[0].pow(2).sum().item() + k.pow(2).sum().item() - 2 * best
    return math.sqrt(max(squared, 0.0)) / k.pow(2).sum().sqrt().item()


@dataclass(frozen=True)
class KnownKernel:
    """How the known-kernel row, the error ratio's denominator, is made: Levin's sparse deconvolution ("sparse":
    deconvSps with weight `sparse_weight` and `sparse_iterations` CG steps per solve, dipkit.sparse), as Levin's
    benchmark and SelfDeblur's table, or a TV deconvolution ("tv", weight `tv_weight`)."""

    method: str = "sparse"
    sparse_weight: float = 3e-3
    sparse_iterations: int = 200
    tv_weight: float = 1e-3

    def __call__(self, blurred: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        if self.method == "sparse":
            return deconv_sps(blurred, kernel, self.sparse_weight, self.sparse_iterations).float()
        if self.method == "tv":
            return tv_deconvolution(blurred, kernel, self.tv_weight, "valid", tolerance=1e-7).float()
        raise RunError(f"unknown known-kernel deconvolution '{self.method}' (use sparse or tv)")

    @property
    def label(self) -> str:
        return "known kernel (deconvSps)" if self.method == "sparse" else "known kernel (TV)"


def known_kernel_baseline(problem: Problem, deconvolve: KnownKernel = KnownKernel(), crop: int = 15,
                          max_shift: float = 5) -> torch.Tensor:
    """The known-kernel deconvolution (`deconvolve`) with the problem's true kernel. When its orientation is not
    known (Levin's PNGs, some of which are stored rotated by 180°), both orientations are tried and the one whose
    deconvolution scores the higher PSNR against the truth under the protocol (`crop`, `max_shift`) is kept: the
    reference row uses the truth anyway, and the residual ‖k ⋆ x − y‖ cannot tell (a TV deconvolution explains y
    about as well with the rotated kernel, and picked it on im1_kernel5 and im3_kernel6, about 10 dB low). Without
    a truth the residual decides."""
    kernels = [problem.true_kernel]
    if not problem.kernel_orientation_known:
        kernels.append(problem.true_kernel.flip(-2, -1))
    best, best_badness = None, math.inf
    for kernel in kernels:
        x = deconvolve(problem.blurred, kernel)
        if len(kernels) == 1:
            return x
        if problem.truth is not None:
            badness = -psnr_of(*align_up_to_shift(quantise_8bit(x), problem.truth, crop, max_shift)[:2])
        else:
            badness = (blur_valid(pad_to_latent(x, kernel.shape), kernel) - problem.blurred).pow(2).sum().item()
        if badness < best_badness:
            best, best_badness = x, badness
    return best


def quantise_8bit(image: torch.Tensor) -> torch.Tensor:
    """As written to and read back from an 8-bit PNG (the MATLAB protocol scores 8-bit images)."""
    return (image.detach().float().clamp(0, 1) * 255).round() / 255


class Scorer:
    """Scores of estimates of one problem, with what does not depend on the estimate computed once: the blurred
    input's PSNR-GT (for ISNR) and the aligned error of the known-kernel deconvolution (for the error ratio).

    Shifts up to `max_shift` are searched (5 px: SelfDeblur's 2019 comp_upto_shift.m, which made the paper's
    table); with `wide_shift` > 0, PSNR-GT, SSIM and the error ratio under a search up to `wide_shift` are added
    as `<score>_shift<wide_shift>` (10 px: the later scripts). A wider search never lowers PSNR.
    """

    def __init__(self, problem: Problem, known: torch.Tensor | None = None, crop: int = 15,
                 max_shift: float = 5, wide_shift: float = 0):
        self.problem, self.crop, self.max_shift, self.wide_shift = problem, crop, max_shift, wide_shift
        self.blurred_scores, self.known_error = {}, {}
        if problem.truth is not None:
            self.blurred_scores = self(problem.blurred)
        if known is not None and problem.truth is not None:
            for shift in self._shifts():
                aligned, inner, _ = align_up_to_shift(known, problem.truth, crop, shift)
                self.known_error[shift] = aligned - inner

    def _shifts(self) -> list[float]:
        return [self.max_shift] + ([self.wide_shift] if self.wide_shift > 0 else [])

    def __call__(self, estimate: torch.Tensor, kernel: torch.Tensor | None = None, full: bool = True) -> dict:
        """psnr_nb (against y); with a truth also psnr_gt, and when `full` ssim, isnr, shift, the error ratios,
        the kernel error, and the scores under the wider shift search."""
        p = self.problem
        estimate = estimate.to(p.blurred.device)
        aligned, inner, _ = align_up_to_shift(estimate, p.blurred, self.crop, self.max_shift)
        scores = dict(psnr_nb=psnr_of(aligned, inner))
        if p.truth is None:
            return scores
        aligned, inner, shift = align_up_to_shift(estimate, p.truth, self.crop, self.max_shift)
        scores["psnr_gt"] = psnr_of(aligned, inner)
        if not full:
            return scores
        scores.update(ssim=wang_ssim(aligned, inner), shift_rows=shift[0], shift_columns=shift[1])
        if self.blurred_scores:
            scores["isnr"] = scores["psnr_gt"] - self.blurred_scores["psnr_gt"]
        if self.max_shift in self.known_error:
            scores.update(self._error_ratios(aligned - inner, self.known_error[self.max_shift]))
        if kernel is not None and p.true_kernel is not None:
            scores["kernel_error"] = kernel_error(kernel, p.true_kernel, p.kernel_orientation_known)
        if self.wide_shift > 0:
            aligned, inner, _ = align_up_to_shift(estimate, p.truth, self.crop, self.wide_shift)
            wide = dict(psnr_gt=psnr_of(aligned, inner), ssim=wang_ssim(aligned, inner))
            if self.wide_shift in self.known_error:
                wide["error_ratio"] = self._error_ratios(aligned - inner, self.known_error[self.wide_shift])["error_ratio"]
            scores.update({f"{key}_shift{self.wide_shift:g}": value for key, value in wide.items()})
        return scores

    @staticmethod
    def _error_ratios(error: torch.Tensor, known_error: torch.Tensor) -> dict[str, float]:
        """SelfDeblur's (spectral norms, MATLAB's norm of a matrix) and Levin's (sums of squares) error ratios."""
        spectral = lambda e: torch.linalg.matrix_norm(e, ord=2).item()  # noqa: E731
        return dict(error_ratio=spectral(error) / spectral(known_error),
                    error_ratio_ssd=error.pow(2).sum().item() / known_error.pow(2).sum().item())


ERROR_RATIOS = tuple(1 + 0.05 * i for i in range(61))  # r from 1 to 4, the range of Levin's and SelfDeblur's figures


def error_ratio_curve(ratios: list[float], thresholds: tuple[float, ...] = ERROR_RATIOS) -> list[float]:
    """The cumulative error-ratio curve: for each r, the fraction of `ratios` at most r (Levin et al., CVPR 2009,
    Fig. 5; SelfDeblur's Fig. 4)."""
    return [sum(ratio <= r for ratio in ratios) / len(ratios) for r in thresholds] if ratios else []


def known_kernel_table(folder: str, crop: int = 15, shifts: tuple[float, ...] = (5, 10),
                       deconvolve: KnownKernel = KnownKernel()) -> list[dict]:
    """The known-kernel reference row of a Levin-layout folder, problem by problem: PSNR-GT and SSIM of the
    known-kernel deconvolution (`deconvolve`: deconvSps by default) with the kernel PNG as stored and rotated by
    180°, under each shift search, and which orientation `known_kernel_baseline` keeps (the higher PSNR under the
    first shift)."""
    rows = []
    for problem in levin_problems(folder):
        row: dict = dict(problem=problem.name)
        psnrs = {}
        for label, kernel in (("as_stored", problem.true_kernel), ("rotated", problem.true_kernel.flip(-2, -1))):
            x = quantise_8bit(deconvolve(problem.blurred, kernel))
            for shift in shifts:
                aligned, inner, _ = align_up_to_shift(x, problem.truth, crop, shift)
                row[f"psnr_{label}_shift{shift:g}"] = psnrs.setdefault((label, shift), psnr_of(aligned, inner))
                row[f"ssim_{label}_shift{shift:g}"] = wang_ssim(aligned, inner)
        first = shifts[0]
        row["kept"] = max(("as_stored", "rotated"), key=lambda label: psnrs[(label, first)])
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    """python -m dipkit.levin DIR: the known-kernel rows of a Levin-layout folder; every option is checked before
    anything is computed (one line, exit code 2), and --csv never overwrites a file."""
    import argparse
    import statistics

    from .runs import write_csv

    parser = argparse.ArgumentParser(description="The known-kernel reference row of a Levin-layout folder: each "
                                     "kernel orientation's PSNR-GT under shift searches of ±5 and ±10 pixels.")
    parser.add_argument("levin_dir", help="a folder in Levin's layout (im<i>_kernel<j>_img.png, gt/)")
    parser.add_argument("--csv", default="", help="also write the rows to this new CSV file")
    parser.add_argument("--method", choices=("sparse", "tv"), default="sparse",
                        help="Levin's sparse deconvolution (deconvSps, the default) or a TV deconvolution")
    parser.add_argument("--weight", type=float, default=None, help="the prior's weight, > 0 (default: 3e-3 for "
                        "sparse, 1e-3 for tv; Levin's own scripts call deconvSps with 0.0068)")
    parser.add_argument("--iterations", type=int, default=200, help="sparse: CG steps per solve, ≥ 1 (Levin's: 70)")
    parser.add_argument("--shifts", type=float, nargs="+", default=[5, 10], help="shift searches (pixels, ≥ 0)")
    arguments = parser.parse_args(argv)
    if arguments.weight is not None and not arguments.weight > 0:
        raise RunError(f"--weight must be positive, not {arguments.weight}")
    if arguments.iterations < 1:
        raise RunError(f"--iterations must be at least 1, not {arguments.iterations}")
    if not all(shift >= 0 for shift in arguments.shifts):
        raise RunError(f"--shifts must be at least 0, not {min(arguments.shifts)}")
    csv = Path(arguments.csv).expanduser() if arguments.csv else None
    if csv is not None and (csv.exists() or csv.is_symlink()):
        raise RunError(f"--csv {csv} exists; give a new file")
    if csv is not None and not csv.parent.is_dir():
        raise RunError(f"--csv {csv}: its folder {csv.parent} does not exist")
    method = KnownKernel(arguments.method, sparse_iterations=arguments.iterations,
                         **({} if arguments.weight is None else
                            {"sparse_weight" if arguments.method == "sparse" else "tv_weight": arguments.weight}))
    for problem in levin_problems(arguments.levin_dir):  # read and checked before anything is computed
        for shift in arguments.shifts:
            check_scoring(problem.blurred.shape[-2:], 15, shift, problem.name)
    rows = known_kernel_table(arguments.levin_dir, shifts=tuple(arguments.shifts), deconvolve=method)
    first = arguments.shifts[0]
    for row in rows:
        print(f"{row['problem']:>12}: as stored {row[f'psnr_as_stored_shift{first:g}']:.2f} dB, rotated "
              f"{row[f'psnr_rotated_shift{first:g}']:.2f} dB (±{first:g} px); kept {row['kept']}")
    for shift in arguments.shifts:
        kept = [row[f"psnr_{row['kept']}_shift{shift:g}"] for row in rows]
        ssim_kept = [row[f"ssim_{row['kept']}_shift{shift:g}"] for row in rows]
        print(f"{method.label}, kept orientation, ±{shift:g} px: mean PSNR-GT {statistics.fmean(kept):.2f} dB, "
              f"SSIM {statistics.fmean(ssim_kept):.4f} over {len(rows)} images")
    if csv is not None:
        write_csv(csv, rows)


if __name__ == "__main__":
    from .cli import run_main

    run_main(main)
