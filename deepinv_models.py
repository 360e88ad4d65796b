"""The collection's methods as deepinv models: `x_hat = model(y, physics)` (deepinv's Reconstructor), each a thin
wrapper around its script's one loop, so that a deepinv user reaches them in one line:

    from deepinv_models import DIP
    x_hat = DIP(iterations=3000)(y, physics)      # any deepinv LinearPhysics: denoising, inpainting, ...
    model.history                                 # per image: every stopping rule's choice, the curves, the oracle

deepinv is imported here only: importing dipkit or a script never needs it.
"""

from __future__ import annotations

from typing import Any

import torch
from deepinv.models import Reconstructor
from deepinv.physics import Denoising, GaussianNoise, Physics

import dip_denoise
from dipkit.cli import make_config
from dipkit.errors import Failed, RunError


def gaussian_sigma(physics: Physics) -> float | None:
    """σ of the physics' noise model when it is Gaussian with one σ (None otherwise: estimated or given)."""
    noise = getattr(physics, "noise_model", None)
    if isinstance(noise, GaussianNoise):
        sigma = torch.as_tensor(noise.sigma)
        if sigma.numel() == 1:
            return float(sigma)
    return None


class DIP(Reconstructor):
    """Deep Image Prior (Ulyanov, Vedaldi and Lempitsky, CVPR 2018) for any deepinv linear physics, by
    dip_denoise.py's loop (`dip_denoise.denoise`): min_θ ‖A f_θ(z0 + σ_r n_k) − y‖², the paper's network and
    constants by default (any constant of `dip_denoise.Config` as a keyword: `DIP(iterations=1000, seed=3)`), a
    seeded input, backtracking, and every stopping rule on the measurement residual y − A x̄ (the discrepancy
    principle with σ from the physics' Gaussian noise model, else given as `sigma=` or estimated from y; the
    residual's whiteness; ES-WMV and ES-EMV on the outputs). Without a clean image the stop rule (`stop_rule`,
    default the discrepancy principle's centred average) ends each run; with `x` given, each run goes to its
    budget and the oracle (the best averaged output against x) is reported beside. Returns the stop rule's image;
    `history` keeps, per image of the batch, the loop's whole result (dip_denoise.DenoiseResult). The images of a
    batch share the physics; each gets its own network, run as a batch of the loop. On deepinv's `Denoising`, the
    model is dip_denoise.py's denoising exactly (tested)."""

    def __init__(self, device: str | torch.device = "cpu", **constants: Any):
        super().__init__(device)
        self.config = make_config(dip_denoise.Config, **{"progress": False, "device": str(device), **constants})
        self.history: list[dip_denoise.DenoiseResult] = []

    def forward(self, y: torch.Tensor, physics: Physics, x: torch.Tensor | None = None, sigma: float | None = None,
                **kwargs: Any) -> torch.Tensor:
        sigma = sigma if sigma is not None else gaussian_sigma(physics)
        denoising = type(physics) is Denoising
        forward = None if denoising else physics.A
        shape = None if denoising else tuple(physics.A_adjoint(y[:1]).shape)
        runs = [dip_denoise.DIPRun(y[b : b + 1].detach(), self.config, None if x is None else x[b : b + 1].detach(),
                                   sigma, forward=forward, image_shape=shape) for b in range(y.shape[0])]
        results = dip_denoise.denoise(runs)
        failed = [result.message for result in results if isinstance(result, Failed)]
        if failed:
            raise RunError(f"DIP failed on {len(failed)} image(s) of the batch: {failed[0]}")
        self.history = results
        return torch.cat([result.denoised for result in results]).to(y.device)
