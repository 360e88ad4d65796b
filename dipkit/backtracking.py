"""The Deep Image Prior's safeguard (the official code's backtracking): each run of a batch (a run alone: of a batch
of one) is checkpointed on the device, its slice of the stacked networks and of Adam, its running average, its step
count and what its trackers read off its outputs (dipkit.stopping); when the PSNR of its output against the noisy
image drops by more than a few dB within a block, the run goes back to its checkpoint and redoes the block, so
that the discarded iterations leave no trace. The last checkpoint, with what a run needs besides (its input noise's
stream, its time), can go to disk, so that a run cut halfway goes on from it (write_whole, read_checkpoint)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from .batch import StackedAdam, StackedNetworks
from .device import to_cpu, to_device
from .errors import RunError
from .stopping import Trackers


class RunState:
    """Run `run` of a batch (a run alone: of a batch of one): its slice of the stacked networks and of Adam, its
    input z0, its running average and its step count, checkpointed and restored on the device."""

    def __init__(self, networks: StackedNetworks, adam: StackedAdam, run: int, z0: torch.Tensor, noisy: torch.Tensor):
        self.networks, self.adam, self.run, self.z0 = networks, adam, run, z0
        self.average = torch.zeros_like(noisy)
        self.steps = 0  # steps taken since the start (the iteration index)

    def net(self, z: torch.Tensor) -> torch.Tensor:
        return self.networks(z[None], [self.run])[0]

    def checkpoint(self) -> dict[str, Any]:
        return dict(net=self.networks.state_of(self.run), optimiser=self.adam.state_of(self.run),
                    average=self.average.clone(), steps=self.steps)

    def restore(self, checkpoint: dict[str, Any]) -> None:
        self.networks.load_state_of(self.run, checkpoint["net"])
        self.adam.load_state_of(self.run, checkpoint["optimiser"])
        self.average.copy_(checkpoint["average"])
        self.steps = checkpoint["steps"]


class Backtracking:
    """The official code's safeguard, read once per checkpoint: if the PSNR of the output against y fell by more
    than `drop` dB since the last checkpoint, go back to it (the network, Adam, the average and the trackers) and
    redo the block, at most `max_restores` times; after that, drops are accepted with a warning."""

    def __init__(self, state: RunState, trackers: Trackers, drop: float, max_restores: int):
        self.drop, self.max_restores = drop, max_restores
        self.restores, self.exhausted, self.reference = 0, False, -float("inf")
        self.save(state, trackers)

    def save(self, state: RunState, trackers: Trackers) -> None:
        self.saved = None  # the last checkpoint let go first: a run never holds two (ES-WMV's window is in each)
        self.saved = (state.checkpoint(), trackers.checkpoint())

    def restored(self, state: RunState, trackers: Trackers) -> int:
        """At a checkpoint: the number of iterations undone (0: none), after one device-to-host transfer of the
        block's PSNRs; a non-finite output stops the run."""
        start = self.saved[0]["steps"]
        block = trackers.curves["psnr_noisy"][start:state.steps].cpu()
        if not len(block):  # nothing since the checkpoint (a twin its run took back)
            return 0
        if not torch.isfinite(block).all():
            raise RunError(f"the DIP output became NaN near iteration {state.steps - 1}: try a smaller learning_rate")
        if block.min().item() < self.reference - self.drop:
            if self.restores < self.max_restores:
                self.go_back(state, trackers)
                self.restores += 1
                return len(block)
            if not self.exhausted:
                tqdm.write(f"warning: PSNR against the noisy image fell by more than {self.drop} dB again after "
                           f"{self.restores} restores; accepting it from now on (iteration {state.steps - 1}); a "
                           "smaller learning_rate may help")
            self.exhausted = True
        self.reference = block[-1].item()
        return 0

    def go_back(self, state: RunState, trackers: Trackers) -> None:
        """Back to the last checkpoint: the network, Adam, the average and the trackers."""
        state.restore(self.saved[0])
        trackers.restore(self.saved[1])

    def on_disk(self, **besides: Any) -> dict[str, Any]:
        """The last checkpoint and this safeguard's state (its count, whether it gave up, its reference PSNR), on
        the CPU, with `besides` (what else the run needs to go on from it)."""
        return dict(saved=to_cpu(self.saved), restores=self.restores, exhausted=self.exhausted,
                    reference=self.reference, **besides)

    def take_up(self, content: dict[str, Any], state: RunState, trackers: Trackers, device: torch.device) -> None:
        """Go on from a checkpoint on_disk gave: the run's state and trackers restored from it, this safeguard's
        state as it was."""
        self.saved = tuple(to_device(part, device) for part in content["saved"])
        state.restore(self.saved[0])
        trackers.restore(self.saved[1])
        self.restores, self.exhausted, self.reference = content["restores"], content["exhausted"], content["reference"]


def write_whole(path: Path, content: dict[str, Any]) -> None:
    """`content` to `path`, replaced whole: a file cut while written never takes the place of the last one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".writing")
    torch.save(content, temporary)
    temporary.replace(path)


def read_checkpoint(path: Path | None, key: str) -> dict[str, Any] | None:
    """What write_whole left at `path` for the run of `key`; None where there is none, it is damaged or foreign,
    or it belongs to another key."""
    if path is None or not path.is_file():
        return None
    try:
        content = torch.load(path, weights_only=True)
    except Exception:  # a foreign or damaged file: the run starts afresh
        return None
    return content if isinstance(content, dict) and content.get("key") == key else None
