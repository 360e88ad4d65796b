"""What a run needs in memory, estimated before it starts, against what its device has.

A network script's memory is mostly what autograd keeps for the backward pass, which grows with the pixel count:
a 6000 x 6000 photo asks for hundreds of gigabytes. `training_footprint` measures what one optimisation step keeps on
a small probe input (saved tensors, counted once per storage) and scales it by the pixels; `check_fits` refuses a
run, with one line and before anything is written, when the estimate exceeds the memory the device has free, and
`batch_that_fits` makes a batch smaller where its runs together would. A batch's runs each hold their weights; their
activations are held one run at a time where they take their passes in turn, all at once under vmap.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .errors import RunError

GIB = 1024**3


def available_bytes(device: torch.device) -> int | None:
    """Free memory of the device: CUDA's free memory, MPS's recommended working set less what is allocated, the
    CPU's available memory (Linux: MemAvailable); None where it cannot be known."""
    try:
        if device.type == "cuda":
            return torch.cuda.mem_get_info(device)[0]
        if device.type == "mps":
            return torch.mps.recommended_max_memory() - torch.mps.current_allocated_memory()
    except (AttributeError, RuntimeError):
        return None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


@dataclass(frozen=True)
class Footprint:
    """What one run of a network holds while it is trained: `weights` bytes (its parameters with their gradients
    and Adam's two moments: 4x), held by every run of a batch, and `per_pixel` bytes per input pixel (1.25x what
    autograd saves for the backward pass: the margin is the gradients of the activations during that pass), held
    by `at_once` runs of a batch at a time (one where the runs take their passes in turn, all under vmap)."""

    weights: int
    per_pixel: float

    def bytes(self, h: int, w: int, runs: int = 1, at_once: int = 1) -> int:
        return int(runs * self.weights + at_once * self.per_pixel * h * w)


def training_footprint(net: torch.nn.Module, in_channels: int, probe: int = 64) -> Footprint:
    """The memory one optimisation step of `net` on an input of in_channels x H x W holds, estimated (Footprint):
    what autograd saves is measured once on a probe x probe input on the CPU and scaled by the pixel count. `net`
    is only probed, never trained."""
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = net(torch.rand(1, in_channels, probe, probe))
    del out
    parameters = sum(p.numel() * p.element_size() for p in net.parameters())
    return Footprint(4 * parameters, 1.25 * sum(storages.values()) / probe**2)


def held_bytes(*objects: object) -> int:
    """The bytes of the tensors that `objects` hold (through their attributes, dicts, lists and tuples), each
    storage counted once: what a run's state keeps, measured on the state itself."""
    storages: dict[int, int] = {}
    seen: set[int] = set()
    stack = list(objects)
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, torch.Tensor):
            storages[item.untyped_storage().data_ptr()] = item.untyped_storage().nbytes()
        elif isinstance(item, dict):
            stack += item.values()
        elif isinstance(item, (list, tuple, set)):
            stack += item
        elif hasattr(item, "__dict__") and not isinstance(item, (type, torch.nn.Module, torch.Generator)):
            stack += vars(item).values()
    return sum(storages.values())


def check_fits(need: int, device: torch.device, what: str, advice: str) -> None:
    """A RunError when `need` bytes exceed what `device` has free (nothing is checked where that is unknown)."""
    free = available_bytes(device)
    if free is not None and need > free:
        raise RunError(f"{what} needs about {need / GIB:.1f} GiB of memory, and {device} has {free / GIB:.1f} GiB "
                       f"free; {advice}")


def batch_that_fits(need: Callable[[int], int], batch: int, device: torch.device, what: str) -> int:
    """The most runs, at most `batch`, whose `need(runs)` bytes the device's free memory holds (at least one: a
    single run that does not fit is check_fits's to refuse); a smaller batch than asked is said in one line."""
    free = available_bytes(device)
    fits = batch
    while free is not None and fits > 1 and need(fits) > free:
        fits -= 1
    if fits < batch:
        print(f"a batch of {batch} runs {what} needs about {need(batch) / GIB:.1f} GiB and {device} has "
              f"{free / GIB:.1f} GiB free: batches of {fits} instead")
    return fits
