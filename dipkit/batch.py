"""Many runs of one shape stepped together: N networks of one architecture, each with its own weights, optimiser
state, learning rates, random stream and stop, taken through one forward and one backward pass per iteration.

The mechanism. The N networks' parameters (and BatchNorm buffers) are stacked, run first (torch.func's
stack_module_state), and the network is called functionally (functional_call) on each run's slice:

  vectorised (GPUs)   torch.func.vmap over the run dimension: every convolution of the N networks becomes one
                      grouped convolution (groups = N) and every BatchNorm one call whose statistics are taken per
                      run and channel, so a run's BatchNorm sees its own activations only. One kernel per layer
                      for N runs: what makes a batch cheap where a single run leaves most of a GPU idle.
  looped (CPUs)       each run's own module (its parameters views of the stacked ones), one run's forward and
                      backward passes after another (forward_backward): on a CPU the convolutions of one run
                      already use every core, and oneDNN's grouped convolutions are slower than N plain ones
                      (measured in docs/selfdeblur.md#speed), so a batch there costs what its runs cost in turn.

Either way the gradient of Σ_r loss_r with respect to run r's slice is the gradient of loss_r alone (the runs share
no parameter), and the update is StackedAdam: Adam's element-wise step with run r's own learning rate, β1 and step
count, taken only for the runs asked (a run that has stopped or failed is left as it is). Random numbers come from
one generator per run, started where a run alone would have its stream (run_generator), so a run in a batch draws
the numbers it would draw alone.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Hashable, Iterable, Sequence, TypeVar

import torch
from torch.func import functional_call, stack_module_state, vmap

T = TypeVar("T")


class StackedNetworks:
    """N networks of one architecture as one callable: call(inputs) with inputs (n, *one run's input shape) for the
    runs `runs` (default: all N) gives (n, *one run's output shape). `vectorise`: vmap (one grouped kernel per
    layer) or the runs in turn (see the module's docstring). `params` holds the stacked parameters, with their
    gradients in `.grad` after a backward pass (what StackedAdam updates). `bf16` runs the networks in bfloat16
    (autocast where the runs go in turn; under vmap, which autocast does not reach, the weights and the input cast
    to bfloat16, their float32 copies kept and updated), the output returned in the inputs' precision."""

    def __init__(self, networks: Sequence[torch.nn.Module], device: torch.device, vectorise: bool,
                 bf16: bool = False, compile: bool = False, channels_last: bool = False):
        if len({type(n) for n in networks}) != 1:
            raise ValueError("a batch stacks networks of one architecture")
        params, buffers = stack_module_state(list(networks))
        self.params = {k: v.detach().to(device) for k, v in params.items()}
        self.buffers = {k: v.to(device) for k, v in buffers.items()}
        self.count, self.device, self.vectorise, self.bf16 = len(networks), device, vectorise, bf16
        # channels-last applies to the runs in turn (an input of one run is 4-D there)
        self.memory_format = torch.channels_last if channels_last and not vectorise else torch.contiguous_format
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

    def __call__(self, inputs: torch.Tensor, runs: Sequence[int] | None = None) -> torch.Tensor:
        everyone = runs is None or list(runs) == list(range(self.count))
        runs = range(self.count) if runs is None else runs
        if self.vectorise:
            if everyone:
                out = self._vectorised(self.params, self.buffers, inputs)
            else:  # the stopped runs are left out: their slices gathered (the gradient scattered back)
                index = torch.as_tensor(list(runs), device=self.device)
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


class StackedAdam:
    """Adam (Kingma & Ba; torch.optim.Adam's arithmetic, no weight decay) on stacked parameters, run first:

        m ← β1_r m + (1 − β1_r) g,   v ← β2 v + (1 − β2) g²,   t_r ← t_r + 1
        θ ← θ − lr_r / (1 − β1_r^t_r) · m / (√v / √(1 − β2^t_r) + ε)

    per run r, for the runs of step(take) only: a run not taken keeps its θ, m, v and t (a skipped step, or a run
    that has stopped). `groups`: (parameters, lr per run, β1 per run); set_lr changes a group's learning rates."""

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
        """Gradients zeroed in place (the runs' own gradients may share their memory: StackedNetworks)."""
        for group in self.groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad.zero_()

    @torch.no_grad()
    def step(self, take: Iterable[int]) -> None:
        take = sorted(set(take))
        for r in take:
            self.steps[r] += 1
        for group in self.groups:
            # the runs that share their scalars (all of them, for the seeds of one variant) are updated by
            # torch.optim.Adam's own operations on their slices at once, so a run steps exactly as it would alone
            scalars: dict[tuple[float, float, float], list[int]] = {}
            for r in take:
                step, beta1 = self.steps[r], group["beta1"][r]
                step_size = group["lr"][r] / (1 - beta1**step)
                scalars.setdefault((beta1, step_size, (1 - self.beta2**step) ** 0.5), []).append(r)
            for (beta1, step_size, correction), runs in scalars.items():
                everyone = len(runs) == self.count
                index = None if everyone else torch.as_tensor(runs, device=group["params"][0].device)
                for p in group["params"]:
                    if p.grad is not None:
                        self._update(p, index, beta1, step_size, correction)

    def _moments(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """p's first and second moments, zero until its first step."""
        if p not in self.state:
            self.state[p] = (torch.zeros_like(p), torch.zeros_like(p))
        return self.state[p]

    def _update(self, p: torch.Tensor, index: torch.Tensor | None, beta1: float, step_size: float,
                correction: float) -> None:
        m, v = self._moments(p)
        g = p.grad if index is None else p.grad[index]
        m_r, v_r, p_r = (m, v, p) if index is None else (m[index], v[index], p[index])  # the runs' slices (copies)
        m_r.lerp_(g, 1 - beta1)
        v_r.mul_(self.beta2).addcmul_(g, g, value=1 - self.beta2)
        denom = (v_r.sqrt() / correction).add_(self.eps)
        p_r.addcdiv_(m_r, denom, value=-step_size)
        if index is not None:
            m[index], v[index], p[index] = m_r, v_r, p_r

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


def forward_backward(runs: Sequence[int], vectorise: bool, forward: Callable[[list[int]], tuple[torch.Tensor, ...]],
                     loss: Callable[[int, int, tuple[torch.Tensor, ...]], torch.Tensor]
                     ) -> tuple[tuple[torch.Tensor, ...], list[torch.Tensor]]:
    """One step's forward and backward passes for the runs `runs`: forward(runs) gives the networks' outputs, run
    first, and loss(i, r, outputs) run r's loss from row i. Vectorised: one forward of all the runs, then the
    backward of the sum of their losses. In turn: each run's forward and backward before the next run's, so that
    only one run's activations are held at a time (on a CPU, holding every run's activations until one backward
    pass makes large images far slower). Either way run r's parameters get the gradient of its loss alone. Returns
    the outputs and the losses, detached."""
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
    """The random stream a run alone draws its per-step noise from, as its own generator: on the CPU the global
    generator's state as it is now (after the run has built its networks and inputs from it), elsewhere the
    device's generator seeded by `seed` (what torch.manual_seed(seed) gave the device)."""
    if device.type == "cpu":
        generator = torch.Generator()
        generator.set_state(torch.get_rng_state())
        return generator
    return torch.Generator(device=device).manual_seed(seed)


def stacker(mode: str, device: torch.device, bf16: bool = False, compile: bool = False,
            channels_last: bool = False) -> Callable[[Sequence[torch.nn.Module]], StackedNetworks]:
    """What stacks a batch's networks: mode "vmap", "loop" or "auto" (vmap on GPUs, the runs in turn on a CPU),
    with the speed switches."""
    vectorise = device.type != "cpu" if mode == "auto" else mode == "vmap"
    return lambda networks: StackedNetworks(networks, device, vectorise, bf16, compile, channels_last)


def group_runs(items: Sequence[T], key: Callable[[T], Hashable], most: int) -> list[list[T]]:
    """The items in batches of at most `most`: items of one key together, in their order of first appearance."""
    groups: dict[Hashable, list[T]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return [group[i : i + most] for group in groups.values() for i in range(0, len(group), most)]
