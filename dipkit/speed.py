"""How a network script's networks run: the precision (float32, bf16) and the memory format (contiguous,
channels-last) asked for, or `auto` resolved per device and per run shape from what the benchmarks measured.

    float32         the reference: today's numbers, bit for bit
    bf16            the networks' forward and backward passes in bfloat16 (autocast), with float32 master weights,
                    Adam moments, losses and averages (dipkit.batch.StackedNetworks)
    auto            bf16 only where the device computes in bfloat16 natively (a CPU listing avx512_bf16 or amx_bf16)
                    and the step is large enough to repay it: h·w·c² at least that of a 256² image through 128
                    channels (BF16_WORK), the smallest shape at which bf16 was measured faster on such a CPU; below,
                    at the quick 64² SelfDeblur shape (32 channels), it was measured slower. Everywhere else float32:
                    a CPU without native bfloat16 emulates it, 3 to 62 times slower than float32 on the 2-core AVX2
                    EPYC (docs/results/bench/speed), and a GPU's bf16 is not yet measured here.

A script whose results bf16 was measured to move beyond their run-to-run noise keeps float32 under `auto`
(its constants' AUTO_BF16 False: SelfDeblur's and VDIP's, whose quick study moved by three standard errors in
bf16, docs/speed.md); `--precision bf16` still runs it in bf16.

The memory format under `auto`: contiguous in float32 (channels-last measured slower on the AVX2 EPYC at every paper
shape, x0.64 to x0.81, and it moves float32's last bits); in bf16 the one the network's script measured faster
(its constants' BF16_MEMORY_FORMAT: contiguous for DIP's network, channels-last for SelfDeblur's, also where bf16
is asked for).

A run's resolved choice is what its unit key holds (a resume on a machine where `auto` chooses otherwise computes
it again) and what config.json records; the console says it once.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from .device import BF16_CPU_FLAGS, native_bf16, warn_if_emulated_bf16

BF16_WORK = 256 * 256 * 128 * 128  # h·w·c² of the smallest step measured faster in bf16 (DIP at 256², 128 channels)


def step_work(height: int, width: int, channels: int) -> int:
    """A network step's size as auto weighs it: pixels times the square of the widest layer's channels (the
    convolutions' multiply-adds per tap grow so)."""
    return height * width * channels * channels


def widest(network: torch.nn.Module) -> int:
    """The most output channels of any of `network`'s convolutions."""
    return max(m.out_channels for m in network.modules() if isinstance(m, torch.nn.Conv2d))


def auto_precision(device: torch.device, height: int, width: int, channels: int) -> tuple[str, str]:
    """`auto`'s precision for a network of `channels` channels on a height x width grid on `device`, and why."""
    if device.type != "cpu":
        return "float32", f"bf16 not yet measured on {device.type}"
    if not native_bf16(device):
        return "float32", f"no native bfloat16 on this CPU ({' or '.join(BF16_CPU_FLAGS)})"
    if step_work(height, width, channels) < BF16_WORK:
        return "float32", "step too small for bf16 to repay its casts"
    return "bf16", "native bfloat16 and a large step"


def resolve(config: Any, device: torch.device, height: int, width: int, channels: int) -> tuple[Any, str]:
    """`config` with its precision and memory format resolved for a run on a height x width grid through a network
    of `channels` channels on `device` (nothing else changes), and one phrase saying what runs and why."""
    precision, why = (config.precision, "asked") if config.precision != "auto" else \
        auto_precision(device, height, width, channels)
    if config.precision == "auto" and precision == "bf16" and not type(config).AUTO_BF16:
        precision, why = "float32", "bf16 not shown to keep this method's results"
    if config.precision == "auto" and precision == "bf16" and getattr(config, "sure", False):
        precision, why = "float32", "the SURE twin's difference needs float32"
    if config.memory_format != "auto":
        memory_format = config.memory_format
    else:
        memory_format = type(config).BF16_MEMORY_FORMAT if precision == "bf16" else "contiguous"
    said = f"{precision}, {memory_format.replace('_', '-')}" + (f" (auto: {why})" if config.precision == "auto" else "")
    return dataclasses.replace(config, precision=precision, memory_format=memory_format), said


def announce(choices: dict[str, str], device: torch.device) -> None:
    """The resolved choices said once (one line, or one per shape where they differ), with the emulation warning
    where bf16 runs on a device without native bfloat16."""
    distinct = sorted(set(choices.values()))
    if len(distinct) == 1:
        print(f"networks in {distinct[0]}")
    else:
        for said in distinct:
            print(f"networks in {said}: {', '.join(shape for shape, s in choices.items() if s == said)}")
    warn_if_emulated_bf16(any(said.startswith("bf16") for said in distinct), device)


def switches(config: Any) -> dict[str, bool]:
    """A resolved config's switches as dipkit.batch.StackedNetworks takes them."""
    if config.precision == "auto" or config.memory_format == "auto":
        raise ValueError("resolve the precision and memory format (dipkit.speed.resolve) before stacking networks")
    return dict(bf16=config.precision == "bf16", channels_last=config.memory_format == "channels_last",
                compile=config.compile)
