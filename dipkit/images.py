"""Image loading: a bundled image by name (see images/SOURCES) or any image path.

Reads grey, RGB, RGBA (alpha dropped), palette and 16-bit images, applies the EXIF orientation of photos,
optionally centre-crops to the aspect ratio of a requested size and resizes (antialiased bicubic; an image more
than twice smaller than the size asked for is refused, an enlarged one noted), and returns a
float tensor of shape (1, C, H, W) with values in [0, 1].
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import RunError

IMAGES_DIR = Path(__file__).resolve().parent.parent / "images"


def bundled_images() -> list[str]:
    """Names of the images shipped in images/."""
    return sorted(p.stem for p in IMAGES_DIR.glob("*.png"))


def resolve_image(name_or_path: str) -> Path:
    """A path that exists, or the bundled image of that name; anything else is a RunError."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    bundled = IMAGES_DIR / f"{name_or_path}.png"
    if bundled.is_file():
        return bundled
    raise RunError(
        f"image '{name_or_path}' not found: no such file, and not a bundled image ({', '.join(bundled_images())})"
    )


def source_name(path: Path | str) -> str:
    """How a run records an input file, so that its records mean the same on any machine: a bundled image by its
    name, any other file by its full path."""
    path = Path(path).resolve()
    return path.stem if path.parent == IMAGES_DIR and path.suffix == ".png" else str(path)


def read_image(path: Path) -> np.ndarray:
    """The image at `path` as float64 in [0, 1], shape (H, W) for grey or (H, W, 3) for colour."""
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                array = np.asarray(image, dtype=np.float64)
                return np.clip(array / (65535.0 if array.max() > 255 else 255.0), 0, 1)
            if image.mode == "F":
                array = np.asarray(image, dtype=np.float64)
                if not np.isfinite(array).all():
                    raise RunError(f"image '{path}' contains NaN or infinite values")
                return np.clip(array, 0, 1)
            grey = image.mode in ("1", "L", "LA") or (image.mode == "P" and _palette_is_grey(image))
            image = image.convert("L" if grey else "RGB")
            return np.asarray(image, dtype=np.float64) / 255.0
    except (UnidentifiedImageError, OSError) as error:
        raise RunError(f"cannot read image '{path}': {error}") from None


def _palette_is_grey(image: Image.Image) -> bool:
    rgb = np.asarray(image.convert("RGB"))
    return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())


def to_channels(array: np.ndarray, channels: int) -> np.ndarray:
    """(H, W) or (H, W, 3) -> (H, W, channels); colour to grey by ITU-R BT.601 luma."""
    if array.ndim == 2:
        array = array[..., None]
    if channels == array.shape[-1]:
        return array
    if channels == 3:
        return np.repeat(array, 3, axis=-1)
    if channels == 1:
        return (array @ np.array([0.299, 0.587, 0.114]))[..., None]
    raise RunError(f"channels must be 1 or 3, not {channels}")


def crop_to_aspect(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """Centre crop to the aspect ratio height:width (no distortion when resizing afterwards)."""
    h, w = array.shape[:2]
    if h * width > w * height:  # too tall
        new_h = round(w * height / width)
        top = (h - new_h) // 2
        return array[top : top + new_h]
    new_w = round(h * width / height)
    left = (w - new_w) // 2
    return array[:, left : left + new_w]


MAX_ENLARGEMENT = 2.0  # beyond this, resizing invents most of the detail that a result would be scored on
_told: set[tuple[str, tuple[int, int]]] = set()


def check_enlargement(name: str, shape: tuple[int, int], size: tuple[int, int]) -> None:
    """A RunError if an image (after the crop to the aspect ratio) is more than MAX_ENLARGEMENT times smaller than
    the size asked for; a one-line note on stderr (once) if it is enlarged at all."""
    factor = max(size[0] / shape[0], size[1] / shape[1])
    if factor > MAX_ENLARGEMENT:
        raise RunError(f"image '{name}' is {shape[0]}x{shape[1]}, too small for {size[0]}x{size[1]} (it would be "
                       f"enlarged {factor:.1f}x, at most {MAX_ENLARGEMENT:g}x); ask for a smaller size")
    if factor > 1 and (name, tuple(size)) not in _told:
        _told.add((name, tuple(size)))
        print(f"note: image '{name}' ({shape[0]}x{shape[1]}) is enlarged {factor:.2f}x to {size[0]}x{size[1]}",
              file=sys.stderr)


def load_image(
    name_or_path: str,
    size: tuple[int, int] | None = None,
    channels: int = 3,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Load an image as a (1, channels, H, W) tensor in [0, 1]; `size` = (H, W) crops and resizes to it."""
    array = to_channels(read_image(resolve_image(name_or_path)), channels)
    if size is not None:
        array = crop_to_aspect(array, *size)
        check_enlargement(name_or_path, array.shape[:2], size)
    tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)[None].to(torch.float64)
    if size is not None and tuple(tensor.shape[-2:]) != tuple(size):
        tensor = F.interpolate(tensor, size=size, mode="bicubic", antialias=True, align_corners=False)
    return tensor.clamp(0, 1).to(device=device, dtype=dtype)
