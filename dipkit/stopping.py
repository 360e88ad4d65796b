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
  sure         Stein's unbiased estimate of the averaged output's mean squared error, by Monte Carlo (Ramani, Blu
               and Unser, IEEE TIP 2008): ‖y − x̄‖²/n − σ² + 2σ²·div/n, the divergence of the whole run's map
               y ↦ x̄_t(y) read off a twin run on y + εb (b ~ N(0, I), the same network, input and input noise):
               div ≈ bᵀ(x̄'_t − x̄_t)/ε; its minimum, frozen after P. It needs σ and the twin (a second run).

Every rule keeps its choice (its iteration, -1 while it has none), where it fired (-1: not) and the images at its
choice: its own, the run's exponential average there (<rule>_average) and the exponential average centred on its
choice (<rule>_centred): the average β/(1 − β) iterations later (β = 0.99: 99), the mean age of an exponential
average's weights, so that the outputs it averages lie around the chosen iteration rather than before it. All of
it is checkpointed with the network, so that a run that backtracks forgets what it undid."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

class Rule:
    """A stopping rule: reads a statistic off each output (`value`), chooses an iteration by it (`choose`: here the
    statistic's minimum, frozen once `patience` iterations bring no new one), and keeps its image and the run's
    average at its choice, and the average `lag` iterations after its choice (centred on it). `AVERAGE_TOO`: its
    own image is not the run's average, whose value at the choice is reported beside it (as <name>_average)."""

    name: ClassVar[str]
    STATISTIC: ClassVar[str]  # its statistic's curve in curve.csv
    IMAGE: ClassVar[str] = "average at its choice"  # what its own image is
    AVERAGE_TOO: ClassVar[bool] = False
    TENSORS: ClassVar[tuple[str, ...]] = ("choice", "fired_at", "best", "wait", "image", "average", "centred",
                                          "centred_for")
    COUNTERS: ClassVar[tuple[str, ...]] = ()  # host-side state, known without a synchronisation

    def __init__(self, image: torch.Tensor, patience: int = 0, lag: int = 0):
        device = image.device
        self.patience, self.lag = patience, lag
        self.choice = torch.tensor(-1, device=device)  # -1: no choice yet
        self.fired_at = torch.tensor(-1, device=device)  # -1: not fired
        self.best = torch.tensor(float("inf"), device=device)
        self.wait = torch.tensor(0, device=device)  # iterations since the minimum
        self.image, self.average, self.centred = image.clone(), image.clone(), image.clone()
        self.centred_for = torch.tensor(-1, device=device)  # the choice `centred` was taken for (-1: none)

    def value(self, i: int, out: torch.Tensor, average: torch.Tensor, noisy: torch.Tensor,
              fit: torch.Tensor) -> torch.Tensor | None:
        """The rule's statistic at iteration i (a 0-d tensor), or None while it has none. `fit` is the average as
        measured, A x̄ (x̄ itself in denoising), what the residual y − A x̄ is taken of."""
        raise NotImplementedError

    def own_image(self, out: torch.Tensor, average: torch.Tensor) -> torch.Tensor:
        return out

    def observe(self, i: int, out: torch.Tensor, average: torch.Tensor, noisy: torch.Tensor,
                fit: torch.Tensor | None = None) -> torch.Tensor | None:
        value = self.value(i, out, average, noisy, average if fit is None else fit)
        if value is not None:
            self.choose(i, value, self.own_image(out, average), average)
        at = self.choice + self.lag == i  # the average centred on the choice (a later choice takes it anew)
        self.centred.copy_(torch.where(at, average, self.centred))
        self.centred_for.copy_(torch.where(at, self.choice, self.centred_for))
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

    def settled(self, steps: int, centred: bool) -> bool:
        """Whether a run may end after `steps` iterations: the rule fired and, for its centred average, the run
        reached the iteration that average is taken at (two synchronisations: asked once per checkpoint)."""
        return self.fired and (not centred or steps > self.choice.item() + self.lag)

    def chosen(self, last: int, output: torch.Tensor, average: torch.Tensor) -> "Choice":
        """The rule's choice at the end of a run; a rule without one gives the run's end (its last iteration, the
        final output or average), and a centred average the run did not reach gives the final average."""
        iteration, fired = self.choice.item(), self.fired_at.item()
        fired_iteration = None if fired < 0 else fired
        if iteration < 0:
            return Choice(last, fired_iteration, output if self.AVERAGE_TOO else average.clone(), average.clone(),
                          average.clone(), last)
        reached = self.centred_for.item() == iteration
        return Choice(iteration, fired_iteration, self.image.clone(), self.average.clone(),
                      self.centred.clone() if reached else average.clone(), iteration + self.lag if reached else last)

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

    name, STATISTIC, IMAGE = "es_wmv", "variance", "output at its choice"
    AVERAGE_TOO = True
    TENSORS = Rule.TENSORS + ("ring",)
    COUNTERS = ("filled",)

    def __init__(self, image: torch.Tensor, window: int, patience: int, lag: int = 0):
        super().__init__(image, patience, lag)
        self.window, self.filled = window, 0
        self.ring = torch.zeros((window, *image.shape[1:]), device=image.device)

    def value(self, i, out, average, noisy, fit):
        self.ring[i % self.window] = out[0]
        self.filled += 1
        return window_variance(self.ring) if self.filled >= self.window else None


class ExponentialVariance(Rule):
    """ES-EMV: the exponential moving variance of the outputs about their (clipped) exponential moving average."""

    name, STATISTIC, IMAGE = "es_emv", "emv", "its own moving average"
    AVERAGE_TOO = True
    TENSORS = Rule.TENSORS + ("moving", "variance")
    COUNTERS = ("seen",)

    def __init__(self, image: torch.Tensor, alpha: float, start: int, patience: int, lag: int = 0):
        super().__init__(image, patience, lag)
        self.alpha, self.start, self.seen = alpha, start, 0
        self.moving = image.clone()
        self.variance = torch.tensor(0.0, device=image.device)

    def value(self, i, out, average, noisy, fit):
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

    name, STATISTIC = "discrepancy", "residual"

    def __init__(self, image: torch.Tensor, sigma: float, tau: float, lag: int = 0):
        super().__init__(image, lag=lag)
        self.threshold = tau * sigma ** 2

    def value(self, i, out, average, noisy, fit):
        return F.mse_loss(fit, noisy)

    def own_image(self, out, average):
        return average

    def choose(self, i, value, image, average):
        fires = (self.fired_at < 0) & (value <= self.threshold)
        self.keep(fires, i, image, average)
        self.fired_at.copy_(torch.where(fires, i, self.fired_at))


class Whiteness(Rule):
    """The residual's whiteness: mean over channels of (ρ_across² + ρ_down²)/2, ρ the lag-1 correlation of the
    centred residual y − x̄; its minimum, frozen after P iterations without a new one."""

    name, STATISTIC = "whiteness", "whiteness"

    def value(self, i, out, average, noisy, fit):
        return residual_correlation(noisy - fit)

    def own_image(self, out, average):
        return average


class Sure(Rule):
    """Monte-Carlo SURE of the run's average x̄_t as an estimate of its mean squared error against the clean image:
    ‖y − x̄_t‖²/n − σ² + 2σ²·bᵀ(x̄'_t − x̄_t)/(εn), x̄'_t the average of a twin run on y + εb that steps in
    lockstep (`twin_average`, updated before this rule reads it); its minimum, frozen after P."""

    name, STATISTIC = "sure", "sure"

    def __init__(self, image: torch.Tensor, sigma: float, probe: torch.Tensor, epsilon: float,
                 twin_average: torch.Tensor, patience: int, lag: int = 0):
        super().__init__(image, patience, lag)
        self.sigma, self.probe, self.epsilon, self.twin_average = sigma, probe, epsilon, twin_average

    def value(self, i, out, average, noisy, fit):  # denoising only: fit is the average
        divergence = (self.probe * (self.twin_average - average)).sum() / self.epsilon
        return F.mse_loss(average, noisy) - self.sigma ** 2 + 2 * self.sigma ** 2 * divergence / average.numel()

    def own_image(self, out, average):
        return average


class Trackers:
    """What the run reads off its outputs, kept on the device (no host synchronisation per iteration) and
    checkpointed with the network: the curves (entry k: iteration k: the PSNRs and each rule's statistic), the
    rules, and the oracle (best PSNR of the average against the clean image)."""

    TENSORS = ("best_oracle", "oracle_iteration", "oracle_image")
    PSNR_CURVES = ("psnr_noisy", "psnr_clean", "psnr_clean_average")

    def __init__(self, image: torch.Tensor, rules: list[Rule], iterations: int):
        device = image.device
        self.rules = {rule.name: rule for rule in rules}
        names = self.PSNR_CURVES + tuple(rule.STATISTIC for rule in rules)
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
                clean: torch.Tensor | None, seen: torch.Tensor | None = None, fit: torch.Tensor | None = None) -> None:
        """Everything read off output i and the average after it: the PSNRs, the oracle and every rule. With a
        forward model A other than the identity, `seen` = A(output) and `fit` = A(average): the PSNR against the
        measurement y and the residual rules read those (the clean image's PSNRs and the oracle the outputs)."""
        self.curves["psnr_noisy"][i] = psnr_on_device(out if seen is None else seen, noisy)
        if clean is not None:
            self.curves["psnr_clean"][i] = psnr_on_device(out, clean)
            self.curves["psnr_clean_average"][i] = psnr_on_device(average, clean)
            better = self.curves["psnr_clean_average"][i] > self.best_oracle
            self.best_oracle.copy_(torch.where(better, self.curves["psnr_clean_average"][i], self.best_oracle))
            self.oracle_iteration.copy_(torch.where(better, i, self.oracle_iteration))
            self.oracle_image.copy_(torch.where(better, average, self.oracle_image))
        for name, rule in self.rules.items():
            value = rule.observe(i, out, average, noisy, fit)
            if value is not None:
                self.curves[rule.STATISTIC][i] = value


def make_rules(image: torch.Tensor, window: int, patience: int, emv_alpha: float, sigma: float | None,
               tau: float, ema: float) -> list[Rule]:
    """Every rule, in RULES's order, each with the lag of the run's exponential average (weight `ema` on the
    average so far); the discrepancy principle only with a σ."""
    lag = average_lag(ema)
    rules = [WindowVariance(image, window, patience, lag), ExponentialVariance(image, emv_alpha, window, patience, lag)]
    if sigma is not None:
        rules.append(Discrepancy(image, sigma, tau, lag))
    return rules + [Whiteness(image, patience, lag)]


def average_lag(ema: float) -> int:
    """The mean age, in iterations, of the outputs in an exponential average that keeps `ema` of itself at each
    step: Σ_k k(1 − β)β^k = β/(1 − β), rounded (β = 0.99: 99)."""
    return round(ema / (1 - ema))


def candidates(rules: list[str]) -> list[str]:
    """The images the rules give, by name: each rule's own, the average at its choice where that is not its own
    (<rule>_average), and the average centred on its choice (<rule>_centred)."""
    return [name for rule in rules for name in ((rule, f"{rule}_average") if RULE_TYPES[rule].AVERAGE_TOO else (rule,))
            + (f"{rule}_centred",)]


RULE_TYPES: dict[str, type[Rule]] = {rule.name: rule for rule in (WindowVariance, ExponentialVariance, Discrepancy,
                                                                   Whiteness, Sure)}
RULES = tuple(RULE_TYPES)
CANDIDATES = tuple(candidates(list(RULES)))


def rule_of(candidate: str) -> str:
    return candidate.removesuffix("_average").removesuffix("_centred")


TITLES = dict(es_wmv="ES-WMV", es_emv="ES-EMV", discrepancy="discrepancy", whiteness="whiteness", sure="SURE")
TITLES.update({f"{rule}_average": f"{title}, averaged" for rule, title in list(TITLES.items())},
              **{f"{rule}_centred": f"{title}, centred average" for rule, title in list(TITLES.items())})


@dataclass
class Choice:
    """What one rule chose: its iteration (the run's end if it has none), whether and where it fired, its image,
    the exponential average there and the one centred on it."""

    iteration: int
    fired_iteration: int | None
    image: torch.Tensor
    average: torch.Tensor
    centred: torch.Tensor  # the average centred on the choice (the final one if the run ended first)
    centred_iteration: int  # where that average was taken

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
