"""Runs of one shape stepped together: N networks of one architecture, each with its own weights, optimiser state,
learning rates, random stream and stop, taken through their forward and backward passes at each iteration. A run
alone is a batch of one: the network scripts have one loop, and these are its pieces.

The mechanism. The N networks' parameters (and BatchNorm buffers) are stacked, run first (torch.func's
stack_module_state), and either

  looped (batch_mode loop, the default)  each run's own module (its parameters views of the stacked ones), one
                      run's forward and backward passes after another (forward_backward): a run computes exactly
                      what it computes alone, and only one run's activations are held at a time. On a CPU the
                      convolutions of one run already use every core, and oneDNN's grouped convolutions are slower
                      than N plain ones (docs/selfdeblur.md#speed), so a batch there costs what its runs cost in turn;
  vectorised (batch_mode vmap)  torch.func.vmap over the run dimension: every convolution of the N networks becomes
                      one grouped convolution and every BatchNorm one call with per-run statistics; one kernel per
                      layer for N runs, what should make a batch cheap where one run leaves most of a GPU idle (not
                      yet measured on a GPU: `auto` picks the looped networks everywhere until it is).

Either way the gradient of Σ_r loss_r with respect to run r's slice is the gradient of loss_r alone (the runs share
no parameter), and the update is StackedAdam: Adam's element-wise step with run r's own learning rate, β1 and step
count, for the runs asked only. Random numbers come from one generator per run, started where a run alone would
have its stream (run_generator). The speed switches (channels-last, bfloat16, torch.compile) apply to the networks
they are asked for, alone or batched alike. NetworkConstants are the constants of all this that the network
scripts share; Clock gives each run its share of the batch's time.
"""

from __future__ import annotations

import copy
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterator, Literal, Sequence

import torch
from torch.func import functional_call, stack_module_state, vmap

from . import speed
from .device import synchronize
from .engine import EngineConstants


@dataclass
class NetworkConstants(EngineConstants):
    """What the network scripts (selfdeblur.py, vdip.py, dip_denoise.py) share beyond the engine: batches and the
    speed switches, which mean the same for a run alone and in a batch."""

    batch: int = 1  # most runs of one shape (seeds, variants, same-size images) stepped together in one process
    batch_mode: Literal["auto", "loop", "vmap"] = "auto"  # loop: the runs in turn; vmap: grouped kernels (GPUs; not yet measured); auto: loop
    precision: Literal["auto", "float32", "bf16"] = "auto"  # image network; auto: bf16 if native and large (dipkit.speed)
    memory_format: Literal["auto", "contiguous", "channels_last"] = "auto"  # its input; auto: what measured faster
    compile: bool = False  # torch.compile the image network (pays a compilation first; measured slower on CPUs)

    LIMITS: ClassVar[dict[str, str]] = dict(batch="[1, inf)")
    BF16_MEMORY_FORMAT: ClassVar[str] = "contiguous"  # the memory format of bf16, measured faster (dipkit.speed)
    AUTO_BF16: ClassVar[bool] = True  # whether auto may take bf16 (False: its quality failed the protocol)


def vectorised(batch_mode: str) -> bool:
    """Whether a batch's networks are vectorised (vmap). `auto` chooses what a measurement supports: the looped
    networks, which cost what their runs cost alone on the 2-core CPUs measured (docs/results/bench/batch_*); vmap
    has not been measured on a GPU yet."""
    return batch_mode == "vmap"


class StackedNetworks:
    """N networks of one architecture as one callable: call(inputs) with inputs (n, *one run's input shape) for the
    runs `runs` (default: all N) gives (n, *one run's output shape). `vectorise`: vmap or the runs in turn (see the
    module's docstring). `params` holds the stacked parameters, with their gradients in `.grad` after a backward
    pass (what StackedAdam updates). The speed switches: `bf16` runs the networks in bfloat16 (autocast where the
    runs go in turn; under vmap, which autocast does not reach, the weights and the input cast to bfloat16, their
    float32 copies kept and updated), the output returned in the inputs' precision; `channels_last` the input's
    memory format (the runs in turn); `compile` torch.compile."""

    def __init__(self, networks: Sequence[torch.nn.Module], device: torch.device, vectorise: bool,
                 bf16: bool = False, compile: bool = False, channels_last: bool = False):
        if len({type(n) for n in networks}) != 1:
            raise ValueError("a batch stacks networks of one architecture")
        params, buffers = stack_module_state(list(networks))
        self.params = {k: v.detach().to(device) for k, v in params.items()}
        self.buffers = {k: v.to(device) for k, v in buffers.items()}
        self.count, self.device, self.vectorise, self.bf16 = len(networks), device, vectorise, bf16
        self.memory_format = torch.channels_last if channels_last and not vectorise else torch.contiguous_format
        self._index: dict[tuple[int, ...], torch.Tensor] = {}
        if vectorise:  # vmap takes the stacked tensors themselves: their gradients arrive stacked
            for v in self.params.values():
                v.requires_grad_()
            self.base = copy.deepcopy(networks[0]).to("meta")
            self._vectorised = vmap(self._one, in_dims=(0, 0, 0), randomness="error")
            if compile:
                self._vectorised = torch.compile(self._vectorised)
        else:  # each run is its own module, whose parameters, buffers and gradients are its slices of the stacked
            # tensors (shared memory): a run's forward is the plain module call of a run alone, and no run's
            # backward touches the others' slices
            self.modules = [self._alias(copy.deepcopy(net).to(device), r) for r, net in enumerate(networks)]
            if compile:
                self.modules = [torch.compile(module) for module in self.modules]

    def _alias(self, module: torch.nn.Module, run: int) -> torch.nn.Module:
        for name, stacked in self.params.items():
            owner, _, attribute = name.rpartition(".")
            if stacked.grad is None:
                stacked.grad = torch.zeros_like(stacked)
            parameter = torch.nn.Parameter(stacked[run].detach())  # a view: the stacked tensor's memory
            parameter.grad = stacked.grad[run]
            module.get_submodule(owner)._parameters[attribute] = parameter
        for name, stacked in self.buffers.items():
            owner, _, attribute = name.rpartition(".")
            module.get_submodule(owner)._buffers[attribute] = stacked[run]
        return module

    def _one(self, params: dict, buffers: dict, z: torch.Tensor) -> torch.Tensor:
        if self.bf16:  # autocast does not reach vmap's grouped convolutions: cast by hand
            low = lambda values: {k: v.to(torch.bfloat16) if v.is_floating_point() else v  # noqa: E731
                                  for k, v in values.items()}  # (BatchNorm's running statistics: not used)
            return functional_call(self.base, (low(params), low(buffers)), (z.to(torch.bfloat16),))
        return functional_call(self.base, (params, buffers), (z,))

    def parameters(self) -> list[torch.Tensor]:
        return list(self.params.values())

    def index(self, runs: Sequence[int]) -> torch.Tensor:
        """The runs as an index on the device, made once per set of runs (the set changes only when a run stops)."""
        key = tuple(runs)
        if key not in self._index:
            self._index[key] = torch.tensor(key, device=self.device)
        return self._index[key]

    def __call__(self, inputs: torch.Tensor, runs: Sequence[int] | None = None) -> torch.Tensor:
        everyone = runs is None or len(runs) == self.count
        runs = range(self.count) if runs is None else runs
        if self.vectorise:
            if everyone:
                out = self._vectorised(self.params, self.buffers, inputs)
            else:  # the stopped runs are left out: their slices gathered (the gradient scattered back)
                index = self.index(runs)
                out = self._vectorised({k: v[index] for k, v in self.params.items()},
                                       {k: v[index].clone() for k, v in self.buffers.items()}, inputs)
        else:
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                out = torch.stack([self.modules[r](z.contiguous(memory_format=self.memory_format) if z.dim() == 4
                                                   else z) for r, z in zip(runs, inputs)])
        return out.to(inputs.dtype)

    def state_of(self, run: int) -> dict[str, torch.Tensor]:
        """Run `run`'s parameters and buffers (copies), named as in the network's state_dict."""
        return {k: v[run].detach().clone() for k, v in {**self.params, **self.buffers}.items()}

    def load_state_of(self, run: int, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for k, v in {**self.params, **self.buffers}.items():
                v[run].copy_(state[k])


def stack(networks: Sequence[torch.nn.Module], device: torch.device, constants: Any,
          switches: bool = True) -> StackedNetworks:
    """A batch's networks stacked as `constants.batch_mode` asks, with the speed switches of its resolved precision
    and memory format (dipkit.speed; `switches`: the image networks; a kernel network runs in float32, contiguous)."""
    on = speed.switches(constants) if switches else {}
    return StackedNetworks(networks, device, vectorised(constants.batch_mode), **on)


class StackedAdam:
    """Adam (Kingma & Ba; torch.optim.Adam's arithmetic, no weight decay) on stacked parameters, run first:

        m ← β1_r m + (1 − β1_r) g,   v ← β2 v + (1 − β2) g²,   t_r ← t_r + 1
        θ ← θ − lr_r / (1 − β1_r^t_r) · m / (√v / √(1 − β2^t_r) + ε)

    per run r, for the runs of step(take) only: a run not taken keeps its θ, m, v and t (a skipped step, or a run
    that has stopped). `groups`: (parameters, lr per run, β1 per run); set_lr changes a group's learning rates.
    The update is torch.optim.Adam's foreach one: a few kernels for all the tensors of a group, on the stacked
    tensors where every run takes the same step, on the runs' slices (views) where they differ; the learning rates
    and step counts are numbers of the host, so a step never waits for the device."""

    def __init__(self, groups: Sequence[tuple[list[torch.Tensor], Sequence[float], Sequence[float]]],
                 beta2: float = 0.999, eps: float = 1e-8):
        self.groups = [dict(params=list(params), lr=list(lr), beta1=list(beta1)) for params, lr, beta1 in groups]
        self.count = len(self.groups[0]["lr"])
        self.beta2, self.eps = beta2, eps
        self.steps = [0] * self.count
        self.state: dict[torch.Tensor, tuple[torch.Tensor, torch.Tensor]] = {}

    def set_lr(self, group: int, lr: Sequence[float]) -> None:
        self.groups[group]["lr"] = list(lr)

    def zero_grad(self) -> None:
        """Gradients zeroed in place (the runs' own gradients share their memory: StackedNetworks)."""
        grads = [p.grad for group in self.groups for p in group["params"] if p.grad is not None]
        if grads:
            torch._foreach_zero_(grads)

    @torch.no_grad()
    def step(self, take: Sequence[int] | None = None) -> None:
        take = range(self.count) if take is None else sorted(set(take))
        for r in take:
            self.steps[r] += 1
        for group in self.groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            moments = [self._moments(p) for p in params]
            # runs that share their scalars (all of them, for the seeds of one variant) are updated together
            scalars: dict[tuple[float, float, float], list[int]] = {}
            for r in take:
                step, beta1 = self.steps[r], group["beta1"][r]
                step_size = group["lr"][r] / (1 - beta1**step)
                scalars.setdefault((beta1, step_size, (1 - self.beta2**step) ** 0.5), []).append(r)
            for (beta1, step_size, correction), runs in scalars.items():
                slices = _slices(runs)
                views = lambda tensors: [t[s] for t in tensors for s in slices]  # noqa: E731
                self._update(views(params), views([p.grad for p in params]), views([m for m, _ in moments]),
                             views([v for _, v in moments]), beta1, step_size, correction)

    def _update(self, p: list[torch.Tensor], g: list[torch.Tensor], m: list[torch.Tensor], v: list[torch.Tensor],
                beta1: float, step_size: float, correction: float) -> None:
        torch._foreach_lerp_(m, g, 1 - beta1)
        torch._foreach_mul_(v, self.beta2)
        torch._foreach_addcmul_(v, g, g, 1 - self.beta2)
        denom = torch._foreach_sqrt(v)
        torch._foreach_div_(denom, correction)
        torch._foreach_add_(denom, self.eps)
        torch._foreach_addcdiv_(p, m, denom, -step_size)

    def _moments(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """p's first and second moments, zero until its first step."""
        if p not in self.state:
            self.state[p] = (torch.zeros_like(p), torch.zeros_like(p))
        return self.state[p]

    def state_of(self, run: int) -> dict[str, Any]:
        """Run `run`'s moments and step count (copies): a checkpoint of its optimiser."""
        moments = []
        for group in self.groups:
            for p in group["params"]:
                kept = self.state.get(p)
                moments.append(None if kept is None else (kept[0][run].clone(), kept[1][run].clone()))
        return dict(moments=moments, step=self.steps[run])

    def load_state_of(self, run: int, state: dict[str, Any]) -> None:
        params = [p for group in self.groups for p in group["params"]]
        with torch.no_grad():
            for p, moments in zip(params, state["moments"]):
                if moments is None:
                    if p in self.state:
                        self.state[p][0][run].zero_(), self.state[p][1][run].zero_()
                    continue
                m, v = self._moments(p)
                m[run].copy_(moments[0]), v[run].copy_(moments[1])
        self.steps[run] = state["step"]


def _slices(runs: list[int]) -> list[slice]:
    """Sorted runs as slices of consecutive runs (all N runs: one slice, the stacked tensor's whole view)."""
    slices, first = [], 0
    for i in range(1, len(runs) + 1):
        if i == len(runs) or runs[i] != runs[i - 1] + 1:
            slices.append(slice(runs[first], runs[i - 1] + 1))
            first = i
    return slices


def forward_backward(runs: Sequence[int], vectorise: bool, forward: Callable[[list[int]], tuple[torch.Tensor, ...]],
                     loss: Callable[[int, int, tuple[torch.Tensor, ...]], torch.Tensor]
                     ) -> tuple[tuple[torch.Tensor, ...], list[torch.Tensor]]:
    """One step's forward and backward passes for the runs `runs`: forward(runs) gives the networks' outputs, run
    first, and loss(i, r, outputs) run r's loss from row i. Vectorised: one forward of all the runs, then the
    backward of the sum of their losses. In turn: each run's forward and backward before the next run's, so that
    only one run's activations are held at a time. Either way run r's parameters get the gradient of its loss
    alone. Returns the outputs and the losses, detached."""
    if vectorise:
        outputs = forward(list(runs))
        losses = [loss(i, r, outputs) for i, r in enumerate(runs)]
        torch.stack(losses).sum().backward()
        return tuple(o.detach() for o in outputs), [value.detach() for value in losses]
    rows, losses = [], []
    for r in runs:
        outputs = forward([r])
        value = loss(0, r, outputs)
        value.backward()
        rows.append(tuple(o.detach() for o in outputs))
        losses.append(value.detach())
    return tuple(torch.cat(parts) for parts in zip(*rows)), losses


def learning_rate(base: float, step: int, milestones: Sequence[int], gamma: float) -> float:
    """MultiStepLR's learning rate at (0-based) step `step`: base × gamma^(milestones passed, m ≤ step)."""
    return base * gamma ** sum(1 for m in milestones if m <= step)


def run_generator(device: torch.device, seed: int) -> torch.Generator:
    """The random stream a run draws its per-step noise from, as its own generator: on the CPU the global
    generator's state as it is now (after the run has built its networks and inputs from it), elsewhere the
    device's generator seeded by `seed` (what torch.manual_seed(seed) gives the device)."""
    if device.type == "cpu":
        generator = torch.Generator()
        generator.set_state(torch.get_rng_state())
        return generator
    return torch.Generator(device=device).manual_seed(seed)


class Clock:
    """Each run's time in a batch: the wall-clock time since the start, less the scoring (`with clock.scoring():`),
    shared at every moment among the runs still going, so that the runs' seconds add up to the batch's time (a run
    alone: its wall-clock time less its scoring). `stop(r)` freezes run r's time."""

    def __init__(self, runs: int, device: torch.device):
        self.device, self.going, self.share, self.stopped = device, runs, 0.0, {}
        synchronize(device)
        self.last = time.perf_counter()

    def _advance(self) -> None:
        now = time.perf_counter()
        if self.going:
            self.share += (now - self.last) / self.going
        self.last = now

    @contextmanager
    def scoring(self) -> Iterator[None]:
        self._advance()
        try:
            yield
        finally:
            self.last = time.perf_counter()  # the scoring's time is no run's

    def stop(self, run: int) -> float:
        if run not in self.stopped:
            synchronize(self.device)
            self._advance()
            self.stopped[run] = self.share
            self.going -= 1
        return self.stopped[run]

    def seconds(self, run: int) -> float:
        """Run r's time so far (frozen once it stopped)."""
        if run in self.stopped:
            return self.stopped[run]
        self._advance()
        return self.share
