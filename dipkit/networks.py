"""The deep-image-prior networks: the encoder-decoder "skip" network of Ulyanov et al. (CVPR 2018).

At each scale i the input (d_in channels) goes two ways:
    skip:   1x1 conv d_in -> s_i, BN, LeakyReLU(0.2)                       (absent when s_i = 0)
    deeper: 3x3 conv stride 2 d_in -> c_i, BN, LReLU, 3x3 conv c_i -> c_i, BN, LReLU,
            [the next scale], x2 upsampling (with an optional non-local block after the strided conv)
then [skip, deeper] are concatenated (centre-cropped to a common size if they differ), and
    BN(s_i + k), 3x3 conv s_i + k -> u_i, BN, LReLU, 1x1 conv u_i -> u_i, BN, LReLU
with k = u_{i+1} (or c_i at the deepest scale). A 1x1 conv u_0 -> out and a sigmoid end the network. Every
conv with a k x k kernel, k > 1, is preceded by a reflection (or zero) padding of (k − 1)/2; convs have biases.
With 32 input channels, c = u = (128,)*5, s = (4,)*5 and 3 outputs it has 2,217,831 parameters.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


def conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, pad: str = "reflection") -> nn.Module:
    layers: list[nn.Module] = []
    padding = (kernel_size - 1) // 2
    if padding and pad == "reflection":
        layers.append(nn.ReflectionPad2d(padding))
        padding = 0
    layers.append(nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=padding, bias=True))
    return nn.Sequential(*layers) if len(layers) > 1 else layers[0]


def conv_bn_act(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, pad: str = "reflection"):
    return nn.Sequential(
        conv(in_channels, out_channels, kernel_size, stride, pad), nn.BatchNorm2d(out_channels), nn.LeakyReLU(0.2)
    )


class NonLocalBlock(nn.Module):
    """The embedded dot-product non-local block of Wang et al. (CVPR 2018) as SelfDeblur uses it:

        y_i = (1/N) Σ_j θ(x_i)ᵀφ(x_j) g(x_j),    z = BN(W y) + x

    θ, φ, g are 1x1 convs to half the channels (64 of 128); φ and g are max-pooled by 2, so N is a quarter of the
    pixels; there is no softmax. The output BN starts at zero weight and bias, so the block starts as the identity.
    """

    def __init__(self, channels: int):
        super().__init__()
        inner = max(channels // 2, 1)
        self.theta, self.phi, self.g = (nn.Conv2d(channels, inner, 1) for _ in range(3))
        self.out = nn.Sequential(nn.Conv2d(inner, channels, 1), nn.BatchNorm2d(channels))
        nn.init.zeros_(self.out[1].weight)
        nn.init.zeros_(self.out[1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        query = self.theta(x).flatten(2).transpose(1, 2)  # (n, hw, inner)
        key = F.max_pool2d(self.phi(x), 2).flatten(2)  # (n, inner, N)
        value = F.max_pool2d(self.g(x), 2).flatten(2).transpose(1, 2)  # (n, N, inner)
        # (θᵀφ/N) g computed as θᵀ(φ g)/N: the same product, without the (hw x N) affinity matrix
        attended = query @ (key @ value) / key.shape[-1]
        return x + self.out(attended.transpose(1, 2).reshape(n, -1, h, w))


def centre_crop_to(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    h = min(t.shape[-2] for t in tensors)
    w = min(t.shape[-1] for t in tensors)
    return [t[..., (t.shape[-2] - h) // 2 : (t.shape[-2] - h) // 2 + h, (t.shape[-1] - w) // 2 : (t.shape[-1] - w) // 2 + w]
            for t in tensors]


class _Scale(nn.Module):
    def __init__(self, d_in, down, up, skip, deeper_out, inner: nn.Module | None, non_local, upsample_mode, pad):
        super().__init__()
        self.skip = conv_bn_act(d_in, skip, 1, pad=pad) if skip else None
        # SelfDeblur puts its non-local block between the strided conv and the second conv
        self.down = nn.Sequential(conv_bn_act(d_in, down, 3, 2, pad), *([NonLocalBlock(down)] if non_local else []),
                                  conv_bn_act(down, down, 3, pad=pad))
        self.inner = inner
        self.upsample = nn.Upsample(scale_factor=2, mode=upsample_mode)
        merged = skip + deeper_out
        self.merge = nn.Sequential(
            nn.BatchNorm2d(merged), conv_bn_act(merged, up, 3, pad=pad), conv_bn_act(up, up, 1, pad=pad)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        deeper = self.down(x)
        if self.inner is not None:
            deeper = self.inner(deeper)
        deeper = self.upsample(deeper)
        parts = [deeper] if self.skip is None else [self.skip(x), deeper]
        if len({p.shape[-2:] for p in parts}) > 1:
            parts = centre_crop_to(parts)
        return self.merge(torch.cat(parts, dim=1))


class SkipNetwork(nn.Module):
    """The DIP skip network; channel lists give one entry per scale, the first scale first."""

    def __init__(
        self,
        in_channels: int = 32,
        out_channels: int = 3,
        channels_down: Sequence[int] = (128,) * 5,
        channels_up: Sequence[int] = (128,) * 5,
        channels_skip: Sequence[int] = (4,) * 5,
        non_local: Sequence[bool] = (False,) * 5,
        upsample_mode: str = "bilinear",
        pad: str = "reflection",
        sigmoid: bool = True,
    ):
        super().__init__()
        scales = len(channels_down)
        if not (len(channels_up) == len(channels_skip) == len(non_local) == scales):
            raise ValueError("channels_down, channels_up, channels_skip and non_local need one entry per scale")
        inner = None
        for i in reversed(range(scales)):
            d_in = in_channels if i == 0 else channels_down[i - 1]
            deeper_out = channels_up[i + 1] if i + 1 < scales else channels_down[i]
            inner = _Scale(d_in, channels_down[i], channels_up[i], channels_skip[i], deeper_out, inner,
                           non_local[i], upsample_mode, pad)
        self.body = inner
        self.head = nn.Conv2d(channels_up[0], out_channels, 1)
        self.sigmoid = sigmoid

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.head(self.body(z))
        return torch.sigmoid(out) if self.sigmoid else out


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class KernelGenerator(nn.Module):
    """SelfDeblur's kernel generator: Linear(in → hidden), ReLU6, Linear(hidden → K_h·K_w), softmax over all
    K_h·K_w entries, so the kernel is non-negative and sums to one. Input: one vector of `in_features`."""

    def __init__(self, kernel_size: tuple[int, int], in_features: int = 200, hidden: int = 1000):
        super().__init__()
        self.kernel_size = tuple(kernel_size)
        self.mlp = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU6(),
                                 nn.Linear(hidden, self.kernel_size[0] * self.kernel_size[1]))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.mlp(z.flatten()), dim=0).view(1, 1, *self.kernel_size)
