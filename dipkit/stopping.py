"""What a Deep Image Prior run reads off its stream of outputs, on the device, without a host synchronisation per
iteration: the PSNR curves, the oracle (the best PSNR of the averaged output against the clean image, which needs
that image) and the stopping rules that need no clean image, each a small object with one idea observing the same
stream:

  es_wmv       ES-WMV (Wang et al., "Early stopping for deep image prior", TMLR 2023): the variance of the last W
               outputs; its minimum, frozen once P iterations bring no new one (the official EarlyStop.check_stop).
               Its image: the network's output at the minimum (what the official code reports).
  es_emv       ES-EMV (the same paper; its official notebook ES_EMV.ipynb): an exponential moving average of the
               outputs (weight α = 0.1 of the new one, clipped to [0, 1]) and their exponential moving variance
               v ← (1 − α)(v + α‖δ‖²), δ the output minus the average (here ‖δ‖² per value); its minimum after the
               first W iterations (the notebook: after 100), frozen after P without a new one. Its image: that
               moving average at the minimum (the curve the notebook reads its detection off).
  discrepancy  Morozov's discrepancy principle: the first iteration where the mean squared residual ‖y − x̄‖²/n of
               the averaged output x̄ falls to τσ², σ given or estimated from the noisy image (`estimate_sigma`).
  whiteness    the whiteness of the residual y − x̄: the mean over channels of the squared lag-1 correlations
               (across and down) of the centred residual, which is 0 for white noise; its minimum, frozen after P.

Every rule keeps its choice (its iteration, -1 while it has none), where it fired (-1: not) and the images at its
choice. All of it is checkpointed with the network, so that a run that backtracks forgets what it undid."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

RULES = ("es_wmv", "es_emv", "discrepancy", "whiteness")


class Rule:
    """A stopping rule: reads a statistic off each output (`value`), chooses an iteration by it (`choose`: here the
    statistic's minimum, frozen once `patience` iterations bring no new one), and keeps its image and the run's
    average at its choice. `AVERAGE_TOO`: its own image is not the run's average, whose value at the choice is
    reported beside it (as <name>_average)."""

    name: ClassVar[str]
    AVERAGE_TOO: ClassVar[bool] = False
    TENSORS: ClassVar[tuple[str, ...]] = ("choice", "fired_at", "best", "wait", "image", "average")
    COUNTERS: ClassVar[tuple[str, ...]] = ()  # host-side state, known without a synchronisation

    def __init__(self, image: torch.Tensor, patience: int = 0):
        device = image.device
        self.patience = patience
        self.choice = torch.tensor(-1, device=device)  # -1: no choice yet
        self.fired_at = torch.tensor(-1, device=device)  # -1: not fired
        self.best = torch.tensor(float("inf"), device=device)
        self.wait = torch.tensor(0, device=device)  # iterations since the minimum
        self.image, self.average = image.clone(), image.clone()

    def value(self, i: int, out: torch.Tensor, average: torch.Tensor, noisy: torch.Tensor) -> torch.Tensor | None:
        """The rule's statistic at iteration i (a 0-d tensor), or None while it has none."""
        raise NotImplementedError

    def own_image(self, out: torch.Tensor, average: torch.Tensor) -> torch.Tensor:
        return out

    def observe(self, i: int, out: torch.Tensor, average: torch.Tensor, noisy: torch.Tensor) -> torch.Tensor | None:
        value = self.value(i, out, average, noisy)
        if value is not None:
            self.choose(i, value, self.own_image(out, average), average)
        return value

    def choose(self, i: int, value: torch.Tensor, image: torch.Tensor, average: torch.Tensor) -> None:
        """A new minimum resets the patience count; once the count reaches P the rule fires and its choice is
        frozen (the official EarlyStop.check_stop)."""
        active = self.fired_at < 0
        lower = active & (value < self.best)
        self.keep(lower, i, image, average)
        self.best.copy_(torch.where(lower, value, self.best))
        self.wait.copy_(torch.where(lower, 0, torch.where(active, self.wait + 1, self.wait)))
        self.fired_at.copy_(torch.where(active & (self.wait >= self.patience), i, self.fired_at))

    def keep(self, chosen: torch.Tensor, i: int, image: torch.Tensor, average: torch.Tensor) -> None:
        self.choice.copy_(torch.where(chosen, i, self.choice))
        self.image.copy_(torch.where(chosen, image, self.image))
        self.average.copy_(torch.where(chosen, average, self.average))

    @property
    def fired(self) -> bool:
        return self.fired_at.item() >= 0  # one synchronisation: asked once per checkpoint

    def chosen(self, last: int, output: torch.Tensor, average: torch.Tensor) -> "Choice":
        """The rule's choice at the end of a run; a rule without one gives the run's end (its last iteration, the
        final output or average)."""
        iteration, fired = self.choice.item(), self.fired_at.item()
        fired_iteration = None if fired < 0 else fired
        if iteration < 0:
            return Choice(last, fired_iteration, output if self.AVERAGE_TOO else average.clone(), average.clone())
        return Choice(iteration, fired_iteration, self.image.clone(), self.average.clone())

    def checkpoint(self) -> dict[str, Any]:
        return dict({name: getattr(self, name).clone() for name in self.TENSORS},
                    **{name: getattr(self, name) for name in self.COUNTERS})

    def restore(self, checkpoint: dict[str, Any]) -> None:
        for name in self.TENSORS:
            getattr(self, name).copy_(checkpoint[name])
        for name in self.COUNTERS:
            setattr(self, name, checkpoint[name])


class WindowVariance(Rule):
    """ES-WMV: the mean over pixels of the variance of the last W outputs (a ring: output k at k % W)."""

    name = "es_wmv"
    AVERAGE_TOO = True
    TENSORS = Rule.TENSORS + ("ring",)
    COUNTERS = ("filled",)

    def __init__(self, image: torch.Tensor, window: int, patience: int):
        super().__init__(image, patience)
        self.window, self.filled = window, 0
        self.ring = torch.zeros((window, *image.shape[1:]), device=image.device)

    def value(self, i, out, average, noisy):
        self.ring[i % self.window] = out[0]
        self.filled += 1
        return window_variance(self.ring) if self.filled >= self.window else None


class ExponentialVariance(Rule):
    """ES-EMV: the exponential moving variance of the outputs about their (clipped) exponential moving average."""

    name = "es_emv"
    AVERAGE_TOO = True
    TENSORS = Rule.TENSORS + ("moving", "variance")
    COUNTERS = ("seen",)

    def __init__(self, image: torch.Tensor, alpha: float, start: int, patience: int):
        super().__init__(image, patience)
        self.alpha, self.start, self.seen = alpha, start, 0
        self.moving = image.clone()
        self.variance = torch.tensor(0.0, device=image.device)

    def value(self, i, out, average, noisy):
        if self.seen == 0:  # the notebook's initialisation at its first output
            self.moving.copy_(out)
            self.variance.zero_()
        else:
            delta = out - self.moving
            self.moving.copy_((self.moving + self.alpha * delta).clamp(0, 1))
            self.variance.copy_((1 - self.alpha) * (self.variance + self.alpha * delta.square().mean()))
        self.seen += 1
        return self.variance.clone() if i > self.start else None

    def own_image(self, out, average):
        return self.moving


class Discrepancy(Rule):
    """The discrepancy principle: the first iteration where ‖y − x̄‖²/n ≤ τσ² (x̄ the run's average)."""

    name = "discrepancy"

    def __init__(self, image: torch.Tensor, sigma: float, tau: float):
        super().__init__(image)
        self.threshold = tau * sigma ** 2

    def value(self, i, out, average, noisy):
        return F.mse_loss(average, noisy)

    def own_image(self, out, average):
        return average

    def choose(self, i, value, image, average):
        fires = (self.fired_at < 0) & (value <= self.threshold)
        self.keep(fires, i, image, average)
        self.fired_at.copy_(torch.where(fires, i, self.fired_at))


class Whiteness(Rule):
    """The residual's whiteness: mean over channels of (ρ_across² + ρ_down²)/2, ρ the lag-1 correlation of the
    centred residual y − x̄; its minimum, frozen after P iterations without a new one."""

    name = "whiteness"

    def value(self, i, out, average, noisy):
        return residual_correlation(noisy - average)

    def own_image(self, out, average):
        return average


class Trackers:
    """What the run reads off its outputs, kept on the device (no host synchronisation per iteration) and
    checkpointed with the network: the curves (entry k: iteration k: the PSNRs and each rule's statistic), the
    rules, and the oracle (best PSNR of the average against the clean image)."""

    TENSORS = ("best_oracle", "oracle_iteration", "oracle_image")
    PSNR_CURVES = ("psnr_noisy", "psnr_clean", "psnr_clean_average")
    STATISTICS = dict(es_wmv="variance", es_emv="emv", discrepancy="residual", whiteness="whiteness")

    def __init__(self, image: torch.Tensor, rules: list[Rule], iterations: int):
        device = image.device
        self.rules = {rule.name: rule for rule in rules}
        names = self.PSNR_CURVES + tuple(self.STATISTICS[name] for name in self.rules)
        self.curves = {key: torch.full((iterations,), float("nan"), device=device) for key in names}
        self.best_oracle = torch.tensor(-float("inf"), device=device)
        self.oracle_iteration = torch.tensor(-1, device=device)
        self.oracle_image = image.clone()

    def checkpoint(self) -> dict[str, Any]:
        return dict({name: getattr(self, name).clone() for name in self.TENSORS},
                    rules={name: rule.checkpoint() for name, rule in self.rules.items()},
                    curves={key: curve.clone() for key, curve in self.curves.items()})

    def restore(self, checkpoint: dict[str, Any]) -> None:
        for name in self.TENSORS:
            getattr(self, name).copy_(checkpoint[name])
        for name, rule in self.rules.items():
            rule.restore(checkpoint["rules"][name])
        for key, curve in self.curves.items():
            curve.copy_(checkpoint["curves"][key])  # NaN again from the checkpoint on

    def observe(self, i: int, out: torch.Tensor, average: torch.Tensor, noisy: torch.Tensor,
                clean: torch.Tensor | None) -> None:
        """Everything read off output i and the average after it: the PSNRs, the oracle and every rule."""
        self.curves["psnr_noisy"][i] = psnr_on_device(out, noisy)
        if clean is not None:
            self.curves["psnr_clean"][i] = psnr_on_device(out, clean)
            self.curves["psnr_clean_average"][i] = psnr_on_device(average, clean)
            better = self.curves["psnr_clean_average"][i] > self.best_oracle
            self.best_oracle.copy_(torch.where(better, self.curves["psnr_clean_average"][i], self.best_oracle))
            self.oracle_iteration.copy_(torch.where(better, i, self.oracle_iteration))
            self.oracle_image.copy_(torch.where(better, average, self.oracle_image))
        for name, rule in self.rules.items():
            value = rule.observe(i, out, average, noisy)
            if value is not None:
                self.curves[self.STATISTICS[name]][i] = value


def make_rules(image: torch.Tensor, window: int, patience: int, emv_alpha: float, sigma: float | None,
               tau: float) -> list[Rule]:
    """Every rule, in RULES's order; the discrepancy principle only with a σ."""
    rules = [WindowVariance(image, window, patience), ExponentialVariance(image, emv_alpha, window, patience)]
    if sigma is not None:
        rules.append(Discrepancy(image, sigma, tau))
    return rules + [Whiteness(image, patience)]


def candidates(rules: list[str]) -> list[str]:
    """The images the rules give, by name: each rule's own and, where that is not the average, the average at its
    choice (es_wmv, es_wmv_average, es_emv, es_emv_average, discrepancy, whiteness)."""
    averaged = {rule.name for rule in (WindowVariance, ExponentialVariance, Discrepancy, Whiteness) if rule.AVERAGE_TOO}
    return [name for rule in rules for name in ((rule, f"{rule}_average") if rule in averaged else (rule,))]


CANDIDATES = tuple(candidates(list(RULES)))


def rule_of(candidate: str) -> str:
    return candidate.removesuffix("_average")


TITLES = dict(es_wmv="ES-WMV", es_wmv_average="ES-WMV, averaged", es_emv="ES-EMV", es_emv_average="ES-EMV, averaged",
              discrepancy="discrepancy", whiteness="whiteness")


@dataclass
class Choice:
    """What one rule chose: its iteration (the run's end if it has none), whether and where it fired, its image
    and the exponential average there."""

    iteration: int
    fired_iteration: int | None
    image: torch.Tensor
    average: torch.Tensor

    @property
    def fired(self) -> bool:
        return self.fired_iteration is not None


def rule_summary(choice: Choice, iterations: int) -> str:
    """'it. 412, fired at it. 1412' or 'it. 2990, did not fire in 3000 iterations' (iterations from 0)."""
    if choice.fired:
        return f"it. {choice.iteration}, fired at it. {choice.fired_iteration}"
    return f"it. {choice.iteration}, did not fire in {iterations} iterations"


def estimate_sigma(noisy: torch.Tensor) -> float:
    """σ of Gaussian noise estimated from one noisy image (1, C, H, W) by scikit-image's estimate_sigma (Donoho's
    median absolute deviation of the finest wavelet detail coefficients), averaged over the channels."""
    from skimage.restoration import estimate_sigma as skimage_estimate  # imported only here: it pulls in PyWavelets

    image = noisy[0].permute(1, 2, 0).double().cpu().numpy()
    return float(skimage_estimate(image, channel_axis=-1, average_sigmas=True))


def psnr_on_device(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """PSNR in dB as a 0-d tensor on the device (no host synchronisation)."""
    return -10 * torch.log10(F.mse_loss(x.detach().clamp(0, 1).float(), reference.float()))


def window_variance(ring: torch.Tensor) -> torch.Tensor:
    """ES-WMV's variance: the mean over pixels of the variance of the window's outputs (a 0-d tensor)."""
    return ring.var(dim=0, unbiased=False).mean()


def residual_correlation(residual: torch.Tensor) -> torch.Tensor:
    """The mean over channels of (ρ_across² + ρ_down²)/2 for a residual (1, C, H, W), ρ the lag-1 correlation
    coefficient of the residual centred per channel (0 for white noise, near 1 for a smooth residual)."""
    r = residual[0] - residual[0].mean(dim=(1, 2), keepdim=True)
    energy = r.square().sum(dim=(1, 2))
    across = (r[:, :, 1:] * r[:, :, :-1]).sum(dim=(1, 2)) / energy
    down = (r[:, 1:, :] * r[:, :-1, :]).sum(dim=(1, 2)) / energy
    return ((across.square() + down.square()) / 2).mean()
