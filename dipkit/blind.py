"""Blind deblurring problems: where they come from.

The blur model is SelfDeblur's: y = k ⋆ x + n, a 'valid' cross-correlation (PyTorch's conv2d) of a latent image x
larger than y by the kernel size minus one, so that nothing depends on a boundary rule.

Problems come from three places:
  * a folder in the layout of Levin et al.'s benchmark as SelfDeblur ships it (`levin_problems`);
  * the built-in synthetic benchmark: grey 255x255 crops of the bundled images, each blurred by seeded random
    camera-shake kernels of the chosen sizes, 1% Gaussian noise, quantised to 8 bits (`synthetic_problems`);
  * a user's own blurred photo with only a kernel size (`photo_problem`): no metrics then.

How estimates are scored (Levin's protocol) is dipkit/levin.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import RunError
from .images import load_image, resolve_image, source_name
from .sources import item_names
from .blur import blur_valid, centre_of
from .kernels import motion_kernel

# SelfDeblur's estimated-kernel size per Levin kernel (selfdeblur_levin.py): the GT size minus 2, except kernel 4
LEVIN_KERNEL_SIZES = {1: 17, 2: 15, 3: 13, 4: 27, 5: 11, 6: 19, 7: 21, 8: 21}


@dataclass
class Problem:
    name: str
    blurred: torch.Tensor  # y, (1, 1, H, W) in [0, 1]
    kernel_size: tuple[int, int]  # the size of the kernel to estimate
    truth: torch.Tensor | None = None  # the sharp image, (1, 1, H, W)
    true_kernel: torch.Tensor | None = None  # (K_h, K_w), sums to one
    kernel_orientation_known: bool = True  # False for Levin's PNG kernels (some are stored flipped)
    colour: torch.Tensor | None = None  # a colour photo, (1, 3, H, W): its chroma goes back onto the estimate
    source: str = ""  # its file: a bundled image's name, a photo's path, a Levin PNG's name within levin_dir


def check_kernel_size(name: str, image_size: tuple[int, int], kernel_size: tuple[int, int]) -> None:
    h, w = image_size
    if min(kernel_size) < 1 or kernel_size[0] > h // 2 or kernel_size[1] > w // 2:
        raise RunError(f"{name}: a {kernel_size[0]}x{kernel_size[1]} kernel does not fit a {h}x{w} image "
                       "(at most half the image size)")
    if h + kernel_size[0] - 1 < 64 or w + kernel_size[1] - 1 < 64:
        raise RunError(f"{name}: the image plus the kernel size must be at least 64 pixels (five scales), "
                       f"not {h}x{w} with a {kernel_size[0]}x{kernel_size[1]} kernel")


def levin_problems(folder: str, kernel_size: int = 0) -> list[Problem]:
    """Every im{i}_kernel{j}_img.png of a Levin-layout folder with gt/im{i}.png and gt/kernel{j}.png.

    The kernel PNGs are scaled to a maximum of 255; they are normalised by their sum. The size estimated is
    `kernel_size` if given, else SelfDeblur's for that kernel, else the size of the kernel PNG.
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise RunError(f"Levin folder '{folder}' does not exist")
    pattern = re.compile(r"im(\d+)_kernel(\d+)_img\.png$")
    found = sorted((int(m[1]), int(m[2]), p) for p in root.iterdir() if (m := pattern.match(p.name)))
    if not found:
        raise RunError(f"Levin folder '{folder}' holds no im<i>_kernel<j>_img.png")
    problems = []
    for i, j, path in found:
        truth_path, kernel_path = root / "gt" / f"im{i}.png", root / "gt" / f"kernel{j}.png"
        for needed in (truth_path, kernel_path):
            if not needed.is_file():
                raise RunError(f"Levin folder '{folder}': {path.name} needs {needed.relative_to(root)}, missing")
        blurred, truth, kernel = (load_image(str(p), channels=1) for p in (path, truth_path, kernel_path))
        kernel = kernel[0, 0]
        if blurred.shape != truth.shape:
            raise RunError(f"Levin folder '{folder}': {path.name} and gt/im{i}.png differ in size")
        if not kernel.sum() > 0:
            raise RunError(f"Levin folder '{folder}': gt/kernel{j}.png is all zero")
        size = kernel_size or LEVIN_KERNEL_SIZES.get(j, 0)
        size = (size, size) if size else tuple(kernel.shape)
        name = f"im{i}_kernel{j}"
        check_kernel_size(f"{name} (gt/kernel{j}.png)", blurred.shape[-2:], tuple(kernel.shape))
        check_kernel_size(name, blurred.shape[-2:], size)
        problems.append(Problem(name, blurred, size, truth, kernel / kernel.sum(), kernel_orientation_known=False,
                                source=path.name))
    return problems


def synthetic_problems(images: tuple[str, ...], kernel_sizes: tuple[int, ...], size: int = 255,
                       noise_level: float = 0.01, seed: int = 0) -> list[Problem]:
    """Grey size x size crops of the named images blurred by one random motion kernel per size (seed + size),
    shared by the images as Levin's kernels are; Gaussian noise of σ noise_level, then 8-bit quantisation."""
    for k in kernel_sizes:
        check_kernel_size(f"kernel size {k}", (size, size), (k, k))
    largest = max(kernel_sizes)
    generator = torch.Generator().manual_seed(seed)
    problems = []
    paths = [resolve_image(image) for image in images]
    for image, path, name in zip(images, paths, item_names(paths)):
        scene = load_image(image, (size + largest - 1, size + largest - 1), channels=1)
        for k in kernel_sizes:
            margin = (largest - k) // 2
            latent = scene[..., margin : margin + size + k - 1, margin : margin + size + k - 1]
            kernel = motion_kernel(k, seed + k)
            noise = torch.randn((1, 1, size, size), generator=generator)
            blurred = ((blur_valid(latent, kernel) + noise_level * noise).clamp(0, 1) * 255).round() / 255
            truth = centre_of(latent, (k, k)).clone()
            problems.append(Problem(f"{name}_k{k}", blurred, (k, k), truth, kernel, source=source_name(path)))
    return problems


def photo_problem(path: str, kernel_size: int, name: str = "") -> Problem:
    """A user's blurred photo, deblurred in luma (BT.601 Y, as SelfDeblur's selfdeblur_ycbcr.py); a colour photo
    keeps its chroma for `with_chroma`. There is no truth to score against. `name`: the problem's (default: the
    file's stem)."""
    if kernel_size <= 0:
        raise RunError("a blurred photo needs --kernel_size (the size of the kernel to estimate)")
    colour = load_image(path, channels=3)
    blurred = load_image(path, channels=1)
    check_kernel_size(Path(path).name, blurred.shape[-2:], (kernel_size, kernel_size))
    is_grey = bool((colour[:, 0] == colour[:, 1]).all() and (colour[:, 1] == colour[:, 2]).all())
    return Problem(name or Path(path).stem, blurred, (kernel_size, kernel_size), colour=None if is_grey else colour,
                   source=source_name(resolve_image(path)))


def problems_of(*, levin_dir: str = "", blurred: tuple[str, ...] = (), kernel_size: int | None = None,
                images: tuple[str, ...] = (), kernel_sizes: tuple[int, ...] = (), size: int = 255,
                noise_level: float = 0.01, data_seed: int = 0, only: tuple[str, ...] = ()) -> list[Problem]:
    """The problems of a blind-deblurring study: the Levin-layout folder `levin_dir`, the photos `blurred` (with
    `kernel_size`), else the synthetic benchmark (`images` x `kernel_sizes` at `size`, `noise_level`, `data_seed`;
    `kernel_size`, if set, overrides the true size); `only` keeps the problems of those names. Problems have
    unique names: photos or images of the same stem are told apart by their paths (dipkit.sources), the same
    file twice is refused."""
    kernel_size = kernel_size or 0  # 0: the true size (synthetic), SelfDeblur's (Levin), none (photos: an error)
    if levin_dir and blurred:
        raise RunError("give levin_dir or blurred, not both")
    if levin_dir:
        problems = levin_problems(levin_dir, kernel_size)
    elif blurred:
        names = item_names([resolve_image(path) for path in blurred])
        problems = [photo_problem(path, kernel_size, name) for path, name in zip(blurred, names)]
    else:
        if not images or not kernel_sizes:
            raise RunError("the synthetic benchmark needs at least one image and one kernel size")
        problems = synthetic_problems(images, kernel_sizes, size, noise_level, data_seed)
        if kernel_size:  # estimate a kernel of another size than the true one
            for p in problems:
                check_kernel_size(p.name, p.blurred.shape[-2:], (kernel_size,) * 2)
                p.kernel_size = (kernel_size,) * 2
    if only:
        missing = set(only) - {p.name for p in problems}
        if missing:
            raise RunError(f"no problem named {', '.join(sorted(missing))} (have {', '.join(p.name for p in problems)})")
        problems = [p for p in problems if p.name in only]
    return problems


def with_chroma(luma: torch.Tensor, colour: torch.Tensor) -> torch.Tensor:
    """The colour image whose BT.601 luma is `luma` and whose chroma (B − Y, R − Y) is that of `colour`."""
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=colour.dtype).view(1, 3, 1, 1)
    chroma = colour - (colour * weights).sum(1, keepdim=True)  # R − Y, G − Y, B − Y
    return (luma.to(colour.dtype) + chroma).clamp(0, 1)
