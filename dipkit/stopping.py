"""What a Deep Image Prior run reads off its stream of outputs, on the device, without a host synchronisation per
iteration: the PSNR curves, the no-reference stopping rule ES-WMV (Wang et al., "Early stopping for deep image
prior", TMLR 2023: the windowed moving variance of the outputs, its minimum frozen once P iterations bring no new
one) and the oracle (the best PSNR of the averaged output against the clean image, which needs that image). All of
it is checkpointed with the network, so that a run that backtracks forgets what it undid."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


class Trackers:
    """What the run reads off its outputs, kept on the device (no host synchronisation per iteration) and
    checkpointed with the network: the curves (entry k: iteration k), the ES-WMV window and rule (minimum, its
    iteration and averaged image, the patience count, where it fired) and the oracle (best PSNR of the average
    against the clean image)."""

    TENSORS = ("ring", "best_variance", "best_iteration", "wait", "fired_iteration", "stop_image", "stop_output",
               "best_oracle", "oracle_iteration", "oracle_image")
    CURVES = ("psnr_noisy", "psnr_clean", "psnr_clean_average", "variance")

    def __init__(self, image: torch.Tensor, window: int, patience: int, iterations: int):
        device = image.device
        self.window, self.patience = window, patience
        self.curves = {key: torch.full((iterations,), float("nan"), device=device) for key in self.CURVES}
        self.ring = torch.zeros((window, *image.shape[1:]), device=device)  # output k sits at k % window
        self.filled = 0  # outputs in the window so far (host-side: known without a synchronisation)
        self.best_variance = torch.tensor(float("inf"), device=device)
        self.best_iteration = torch.tensor(-1, device=device)  # -1: no minimum yet
        self.wait = torch.tensor(0, device=device)  # iterations since the minimum
        self.fired_iteration = torch.tensor(-1, device=device)  # -1: not fired
        self.stop_image = image.clone()  # the average at the variance minimum
        self.stop_output = image.clone()  # the output at the variance minimum: the official ES-WMV image
        self.best_oracle = torch.tensor(-float("inf"), device=device)
        self.oracle_iteration = torch.tensor(-1, device=device)
        self.oracle_image = image.clone()

    def checkpoint(self) -> dict[str, Any]:
        return dict({name: getattr(self, name).clone() for name in self.TENSORS}, filled=self.filled,
                    curves={key: curve.clone() for key, curve in self.curves.items()})

    def restore(self, checkpoint: dict[str, Any]) -> None:
        for name in self.TENSORS:
            getattr(self, name).copy_(checkpoint[name])
        for key, curve in self.curves.items():
            curve.copy_(checkpoint["curves"][key])  # NaN again from the checkpoint on
        self.filled = checkpoint["filled"]

    def observe(self, i: int, out: torch.Tensor, average: torch.Tensor, noisy: torch.Tensor,
                clean: torch.Tensor | None) -> None:
        """Everything read off output i and the average after it: the PSNRs, the oracle, the window and the rule."""
        self.curves["psnr_noisy"][i] = psnr_on_device(out, noisy)
        if clean is not None:
            self.curves["psnr_clean"][i] = psnr_on_device(out, clean)
            self.curves["psnr_clean_average"][i] = psnr_on_device(average, clean)
            self.observe_oracle(self.curves["psnr_clean_average"][i], i, average)
        if self.observe_output(out, i):
            self.curves["variance"][i] = window_variance(self.ring)
            self.observe_variance(self.curves["variance"][i], i, out, average)

    @property
    def fired(self) -> bool:
        return self.fired_iteration.item() >= 0  # one synchronisation: asked once per checkpoint

    def observe_output(self, out: torch.Tensor, i: int) -> bool:
        """Put output i in the window; whether the window is full."""
        self.ring[i % self.window] = out[0]
        self.filled += 1
        return self.filled >= self.window

    def observe_variance(self, variance: torch.Tensor, i: int, out: torch.Tensor, average: torch.Tensor) -> None:
        """The ES-WMV rule at iteration i (as the official EarlyStop.check_stop): a new minimum resets the
        patience count; once the count reaches P the rule fires and nothing changes any more."""
        active = self.fired_iteration < 0
        lower = active & (variance < self.best_variance)
        self.best_variance.copy_(torch.where(lower, variance, self.best_variance))
        self.best_iteration.copy_(torch.where(lower, i, self.best_iteration))
        self.stop_image.copy_(torch.where(lower, average, self.stop_image))
        self.stop_output.copy_(torch.where(lower, out, self.stop_output))
        self.wait.copy_(torch.where(lower, 0, torch.where(active, self.wait + 1, self.wait)))
        self.fired_iteration.copy_(torch.where(active & (self.wait >= self.patience), i, self.fired_iteration))

    def observe_oracle(self, psnr_average: torch.Tensor, i: int, average: torch.Tensor) -> None:
        better = psnr_average > self.best_oracle
        self.best_oracle.copy_(torch.where(better, psnr_average, self.best_oracle))
        self.oracle_iteration.copy_(torch.where(better, i, self.oracle_iteration))
        self.oracle_image.copy_(torch.where(better, average, self.oracle_image))


def psnr_on_device(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """PSNR in dB as a 0-d tensor on the device (no host synchronisation)."""
    return -10 * torch.log10(F.mse_loss(x.detach().clamp(0, 1).float(), reference.float()))


def window_variance(ring: torch.Tensor) -> torch.Tensor:
    """ES-WMV's variance: the mean over pixels of the variance of the window's outputs (a 0-d tensor)."""
    return ring.var(dim=0, unbiased=False).mean()
