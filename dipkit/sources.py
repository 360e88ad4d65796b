"""The input files of a run: the images given (or a folder's), one unique item name per file, and a digest that
tells whether a file changed.

Items of a run (an image's folder, a problem's rows, a metrics.json entry) are named after their file's stem. Two
different files with the same stem (a/rgb.png and b/rgb.png, photo.png and photo.jpg) get names that tell them
apart, made from the end of their paths (a-rgb and b-rgb; photo-png and photo-jpg); the same file given twice
is refused. A resumed unit is kept only while its key is the one recorded when it was made: `digest_of` the
input tensors it sees (the noisy image, the blurred image: not the file, whose noise may depend on its place in the
list) and its resolved settings (dipkit.runs.unit_settings: a variant's values, not its name).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import RunError
from .images import resolve_image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")


@dataclass(frozen=True)
class Source:
    """One image of a run: how it was given, the file it is, and the item name its outputs go under."""

    given: str  # the bundled name or path as given
    path: Path  # the file read
    name: str  # unique within the run (a-rgb and b-rgb for a/rgb.png and b/rgb.png)


def image_sources(images: tuple[str, ...], folder: str = "") -> list[Source]:
    """The images given by name or path, or (if `folder` is set) every image file of that folder, each resolved to
    its file and named uniquely (`item_names`); a folder among the images is refused, pointing to `folder`."""
    if folder:
        directory = Path(folder).expanduser()
        if not directory.is_dir():
            raise RunError(f"folder '{folder}' does not exist")
        given = sorted(str(p) for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not given:
            raise RunError(f"folder '{folder}' holds no image ({', '.join(IMAGE_SUFFIXES)})")
    else:
        if not images:
            raise RunError("images: give at least one bundled image name or image path (or a folder)")
        folders = [name for name in images if Path(name).expanduser().is_dir()]
        if folders:
            raise RunError(f"images: '{folders[0]}' is a folder; give its images with --folder {folders[0]}")
        given = list(images)
    paths = [resolve_image(name) for name in given]
    return [Source(g, p, n) for g, p, n in zip(given, paths, item_names(paths))]


def item_names(paths: list[Path]) -> list[str]:
    """One name per file, in order: the stem where it is unique among `paths`, else the stem with as many parent
    folders in front as tell the files apart (and the suffix, where only that differs), joined by '-'. The same
    file twice (after resolving links and relative paths) is a RunError."""
    resolved = [Path(os.path.realpath(p)) for p in paths]
    for i, path in enumerate(resolved):
        if path in resolved[:i]:
            raise RunError(f"{paths[i]} is given twice (as {paths[resolved.index(path)]} too); give each image once")
    names = [p.stem for p in resolved]
    for stem in {n for n in names if names.count(n) > 1}:
        group = [i for i, n in enumerate(names) if n == stem]
        suffixes = {resolved[i].suffix for i in group}
        for depth in range(0, max(len(resolved[i].parts) for i in group)):
            candidate = {i: _tail(resolved[i], depth, with_suffix=len(suffixes) > 1) for i in group}
            if len(set(candidate.values())) == len(group):
                break
        for i in group:
            names[i] = candidate[i]
    return names


def _tail(path: Path, depth: int, with_suffix: bool) -> str:
    """The stem (and suffix) of `path` after its last `depth` parent folders, joined by '-'."""
    end = path.stem + (f"-{path.suffix.lstrip('.')}" if with_suffix and path.suffix else "")
    folders = [part for part in path.parent.parts if part not in ("/", "\\")][-depth:] if depth else []
    return "-".join([*folders, end])


def digest_of(*values: Any) -> str:
    """The SHA-256, in hex, of values: tensors and arrays by their dtype, shape and bytes (on the CPU), mappings
    by their sorted items, dataclasses as mappings, sequences item by item, anything else by its JSON (or repr).
    Two values with the same digest are the same to the last bit: what a resume compares."""
    digest = hashlib.sha256()

    def feed(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().contiguous()
            digest.update(f"tensor {value.dtype} {tuple(value.shape)}|".encode())
            digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes() if value.numel() else b"")
        elif isinstance(value, np.ndarray):
            digest.update(f"array {value.dtype} {value.shape}|".encode() + np.ascontiguousarray(value).tobytes())
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            feed(dataclasses.asdict(value))
        elif isinstance(value, dict):
            digest.update(f"dict {len(value)}|".encode())
            for key in sorted(value, key=str):
                feed(str(key))
                feed(value[key])
        elif isinstance(value, (list, tuple)):
            digest.update(f"seq {len(value)}|".encode())
            for item in value:
                feed(item)
        else:
            try:
                digest.update(json.dumps(value).encode() + b"|")
            except TypeError:
                digest.update(repr(value).encode() + b"|")

    for value in values:
        feed(value)
    return digest.hexdigest()
