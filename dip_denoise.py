"""Deep Image Prior denoising, as published, with backtracking done right and a stopping rule that needs no clean image.

Ulyanov, Vedaldi, Lempitsky, "Deep Image Prior", CVPR 2018 (arXiv 1711.10925): a randomly initialised
encoder-decoder f_θ maps a fixed noise input z0 to an image, and θ is fitted to the noisy image y alone,

    min_θ ‖f_θ(z0 + σ_r·n_k) − y‖²      (fresh n_k ~ N(0, I) each step, σ_r = 1/30; Adam, lr 0.01)

The network fits the image before the noise, so the output is a denoised image at some iteration; an exponential
average (0.99) of the outputs is better still. Which iteration? With a clean image one can read off the best
one (an oracle, reported as such). Without one, this script uses the windowed moving variance of the outputs
(ES-WMV, Wang et al., "Early stopping for deep image prior", TMLR 2023): the variance of the last W outputs
falls while the image is being fitted and rises once the noise is; the rule returns the averaged output at the
variance's minimum and stops when no new minimum has come for P iterations.

Backtracking (the official code's safeguard): if the PSNR of the output against y falls by more than 5 dB since
the last checkpoint, the parameters, BatchNorm statistics, Adam state and average are restored from the
checkpoint (kept on the device, refreshed every `checkpoint_every` iterations) and the iterations are redone.

Run   python dip_denoise.py                          the paper's setting on a bundled 512x512 image (GPU: seconds)
      python dip_denoise.py --quick                  64x64, 1000 iterations: about a minute on a CPU
      python dip_denoise.py --images my_noisy_photo.png --no-add_noise   a real noisy photo: no clean image
      python dip_denoise.py --folder path/to/images   every image of a folder, one table
      python dip_denoise.py --help
Writes Results/dip_denoise/<run>/: per image <name>/DIP.png, <name>/curve.png, <name>/curve.csv and
<name>/denoised.png; table.csv, config.json, metrics.json. From Python: `denoise(image, config) -> result`.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from dipkit import figures
from dipkit.cli import RunError, parse_config, require_positive, run_main
from dipkit.device import choose_device, seed_everything, synchronize
from dipkit.images import load_image, resolve_image
from dipkit.metrics import psnr, ssim
from dipkit.networks import SkipNetwork
from dipkit.runs import start_run, write_csv, write_json

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")


@dataclass
class Config:
    # data
    images: tuple[str, ...] = ("astronaut",)  # bundled image names or image paths
    folder: str = ""  # if set, every image in this folder instead of `images`
    size: int = 512  # centre-crop to a square and resize to size x size; 0 keeps the full image
    add_noise: bool = True  # the images are clean: add the noise and measure PSNR; --no-add_noise for noisy photos
    noise_level: float = 25 / 255  # standard deviation σ of the added Gaussian noise (clipped to [0, 1] after)
    # DIP, the paper's denoising settings
    iterations: int = 3000  # optimisation steps
    learning_rate: float = 0.01  # Adam learning rate
    reg_noise_std: float = 1 / 30  # σ_r of the fresh perturbation of the input at each step
    ema: float = 0.99  # weight of the exponential average of the outputs
    input_depth: int = 32  # channels of the input noise z0
    input_scale: float = 0.1  # z0 ~ U[0, 1) times this
    # backtracking
    backtrack_drop: float = 5.0  # restore the checkpoint when PSNR(output, y) falls by more than this (dB)
    checkpoint_every: int = 100  # iterations between checkpoints (and between device-to-host transfers)
    # stopping rule without a clean image (ES-WMV)
    stop_window: int = 100  # W: outputs in the moving-variance window
    stop_patience: int = 1000  # P: stop after this many iterations without a new variance minimum
    stop_early: bool = False  # end the run when the rule stops (always on when there is no clean image)
    # speed
    channels_last: bool = False  # channels-last memory format for the network
    bf16: bool = False  # bfloat16 autocast for the network's forward and backward (fast on GPUs)
    compile: bool = False  # torch.compile the network (pays a compilation first)
    # run
    seed: int = 0  # seeds the noise, the network and its input
    deterministic: bool = False  # ask torch for deterministic kernels
    device: str = "auto"  # auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps
    results_dir: str = "Results"  # outputs go to <results_dir>/dip_denoise/<run_name>/
    run_name: str = ""  # folder name of this run (default: a time stamp); never overwrites an existing one
    progress: bool = True  # show a progress bar
    quick: bool = False  # the QUICK preset: a 64x64 crop, 1000 iterations (about a minute on a CPU)

    QUICK: ClassVar[dict[str, Any]] = dict(size=64, iterations=1000, checkpoint_every=50, stop_window=50,
                                           stop_patience=200)


def image_list(config: Config) -> list[str]:
    if not config.folder:
        return list(config.images)
    folder = Path(config.folder).expanduser()
    if not folder.is_dir():
        raise RunError(f"folder '{config.folder}' does not exist")
    files = sorted(str(p) for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise RunError(f"folder '{config.folder}' holds no image ({', '.join(IMAGE_SUFFIXES)})")
    return files


def check_config(config: Config) -> list[str]:
    names = image_list(config)
    for name in names:
        resolve_image(name)
    if config.size and (config.size < 64 or config.size % 32):
        raise RunError(f"size must be 0 or a multiple of 32 of at least 64 (five scales), not {config.size}")
    require_positive(config, "iterations", "learning_rate", "checkpoint_every", "stop_window", "stop_patience",
                     "input_depth")
    if not 0 <= config.ema < 1:
        raise RunError(f"ema must be in [0, 1), not {config.ema}")
    return names


def load_clean(name: str, config: Config) -> torch.Tensor:
    """The image at the configured size; with size 0, centre-cropped to a multiple of 32 (as the original)."""
    if config.size:
        return load_image(name, (config.size, config.size), channels=3)
    image = load_image(name, channels=3)
    (h, w), (full_h, full_w) = ((s // 32) * 32 for s in image.shape[-2:]), image.shape[-2:]
    if h < 64 or w < 64:
        raise RunError(f"image '{name}' is smaller than 64 x 64, the least the five-scale network takes")
    top, left = (full_h - h) // 2, (full_w - w) // 2
    return image[..., top : top + h, left : left + w]


# ---------------------------------------------------------------------------------------------------------------
# The DIP loop


@dataclass
class DenoiseResult:
    denoised: torch.Tensor  # the averaged output where the stopping rule stopped (the final one if it never did)
    final_output: torch.Tensor  # f_θ(z0) at the end, the official code's shown image
    final_average: torch.Tensor  # the exponential average at the end
    curves: dict[str, list[float]]  # per iteration: psnr_noisy, psnr_clean, psnr_clean_average, variance
    stop_iteration: int | None  # where the rule chose its image (None: no minimum yet)
    stop_fired: bool  # whether the rule's patience ran out before the last iteration
    oracle_iteration: int | None = None  # best PSNR of the average against the clean image (needs it)
    oracle_image: torch.Tensor | None = None
    backtracks: int = 0  # checkpoint restorations
    iterations_run: int = 0  # optimisation steps taken, redone ones included
    seconds: float = 0.0
    device: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)


class DIPState:
    """Network, optimiser and running average, with checkpoints kept on the device."""

    def __init__(self, noisy: torch.Tensor, config: Config, generator: torch.Generator):
        device = noisy.device
        memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        self.net = SkipNetwork(config.input_depth, noisy.shape[1]).to(device, memory_format=memory_format)
        self.forward = torch.compile(self.net) if config.compile else self.net
        z0 = torch.rand((1, config.input_depth, *noisy.shape[-2:]), generator=generator) * config.input_scale
        self.z0 = z0.to(device).contiguous(memory_format=memory_format)
        self.optimiser = torch.optim.Adam(self.net.parameters(), lr=config.learning_rate)
        self.average = torch.zeros_like(noisy)
        self.steps = 0  # steps taken since the start (the iteration index)

    def checkpoint(self) -> dict[str, Any]:
        return dict(
            net={k: v.detach().clone() for k, v in self.net.state_dict().items()},
            optimiser=copy.deepcopy(self.optimiser.state_dict()),
            average=self.average.clone(), steps=self.steps,
        )

    def restore(self, checkpoint: dict[str, Any]) -> None:
        self.net.load_state_dict(checkpoint["net"])
        self.optimiser.load_state_dict(copy.deepcopy(checkpoint["optimiser"]))  # never alias the checkpoint
        self.average.copy_(checkpoint["average"])
        self.steps = checkpoint["steps"]


def _psnr_device(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """PSNR in dB as a 0-d tensor on the device (no host synchronisation)."""
    return -10 * torch.log10(F.mse_loss(x.detach().clamp(0, 1).float(), reference.float()))


def denoise(image: torch.Tensor | str, config: Config, clean: torch.Tensor | None = None) -> DenoiseResult:
    """Denoise a noisy image (a (1, C, H, W) tensor in [0, 1], or a path/bundled name) by DIP.

    With `clean`, PSNR curves against it and the oracle best iteration are reported too. The rule that needs no
    clean image always runs; with `config.stop_early` or without `clean` the run ends when it stops.
    """
    device = choose_device(config.device)
    noisy = load_image(image, channels=3) if isinstance(image, str) else image
    noisy = noisy.to(device=device, dtype=torch.float32)
    clean = None if clean is None else clean.to(device=device, dtype=torch.float32)
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    state = DIPState(noisy, config, generator)
    n, window = config.iterations, config.stop_window
    curve_noisy = torch.full((n,), float("nan"), device=device)
    curve_clean, curve_clean_average = curve_noisy.clone(), curve_noisy.clone()
    curve_variance = curve_noisy.clone()
    ring = torch.zeros((window, *noisy.shape[1:]), device=device)
    filled = 0
    best_variance = torch.tensor(float("inf"), device=device)
    stop_image = state.average.clone()
    best_oracle = torch.tensor(-float("inf"), device=device)
    oracle_image = state.average.clone()
    last_checkpoint = state.checkpoint()
    reference_psnr = -float("inf")
    stop_early = config.stop_early or clean is None
    variance_min, variance_argmin, fired = float("inf"), None, False
    backtracks, steps_run = 0, 0
    bar = tqdm(total=n, disable=not config.progress, leave=False, desc="DIP")
    synchronize(device)
    start = time.perf_counter()
    while state.steps < n:
        i = state.steps
        z = state.z0 + config.reg_noise_std * torch.randn_like(state.z0)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.bf16):
            out = state.forward(z)
        out = out.float()
        loss = F.mse_loss(out, noisy)
        state.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        state.optimiser.step()
        with torch.no_grad():
            out = out.detach()
            if i == 0:
                state.average.copy_(out)
            else:
                state.average.mul_(config.ema).add_(out, alpha=1 - config.ema)
            curve_noisy[i] = _psnr_device(out, noisy)
            if clean is not None:
                curve_clean[i] = _psnr_device(out, clean)
                curve_clean_average[i] = _psnr_device(state.average, clean)
                better = curve_clean_average[i] > best_oracle
                best_oracle = torch.where(better, curve_clean_average[i], best_oracle)
                oracle_image = torch.where(better, state.average, oracle_image)
            ring[i % window] = out
            filled += 1
            if filled >= window:
                curve_variance[i] = ring.var(dim=0, unbiased=False).mean()
                lower = curve_variance[i] < best_variance
                best_variance = torch.where(lower, curve_variance[i], best_variance)
                stop_image = torch.where(lower, state.average, stop_image)
        state.steps += 1
        steps_run += 1
        bar.update(1)
        if state.steps % config.checkpoint_every and state.steps < n:
            continue
        # checkpoint: one device-to-host transfer for the whole block
        block_start = last_checkpoint["steps"]
        block = curve_noisy[block_start:state.steps].cpu()
        if not torch.isfinite(block).all():
            raise RunError(f"the DIP output became NaN near iteration {state.steps}: try a smaller learning_rate")
        if block.min().item() < reference_psnr - config.backtrack_drop:
            state.restore(last_checkpoint)
            backtracks += 1
            filled = 0  # the variance window restarts with the redone iterations
            bar.update(-len(block))
            continue
        reference_psnr = block[-1].item()
        variances = curve_variance[block_start:state.steps].cpu()
        for offset, value in enumerate(variances.tolist()):
            if value < variance_min:
                variance_min, variance_argmin = value, block_start + offset
        bar.set_postfix(psnr_y=f"{reference_psnr:.2f}", loss=f"{loss.item():.2e}")
        if variance_argmin is not None and state.steps - 1 - variance_argmin >= config.stop_patience:
            fired = True
            if stop_early:
                break
        last_checkpoint = state.checkpoint()
    synchronize(device)
    seconds = time.perf_counter() - start
    bar.close()
    with torch.no_grad():
        final_output = state.net(state.z0)
    curves = dict(psnr_noisy=curve_noisy.tolist(), psnr_clean=curve_clean.tolist(),
                  psnr_clean_average=curve_clean_average.tolist(), variance=curve_variance.tolist())
    result = DenoiseResult(
        denoised=stop_image if variance_argmin is not None else state.average.clone(),
        final_output=final_output, final_average=state.average.clone(), curves=curves,
        stop_iteration=variance_argmin, stop_fired=fired, backtracks=backtracks, iterations_run=steps_run,
        seconds=seconds, device=str(device),
    )
    if clean is not None:
        psnrs = curve_clean_average.tolist()
        result.oracle_iteration = max(range(state.steps), key=lambda k: psnrs[k])
        result.oracle_image = oracle_image
        result.metrics = dict(
            noisy=dict(psnr=psnr(noisy, clean), ssim=ssim(noisy, clean)),
            final_output=dict(psnr=psnr(final_output, clean), ssim=ssim(final_output, clean)),
            final_average=dict(psnr=psnr(state.average, clean), ssim=ssim(state.average, clean)),
            stopping_rule=dict(psnr=psnr(result.denoised, clean), ssim=ssim(result.denoised, clean),
                               iteration=variance_argmin, fired=fired),
            oracle=dict(psnr=psnr(oracle_image, clean), ssim=ssim(oracle_image, clean),
                        iteration=result.oracle_iteration),
        )
    return result


# ---------------------------------------------------------------------------------------------------------------
# Outputs and the command line


def add_noise(clean: torch.Tensor, config: Config, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(clean.shape, generator=generator, dtype=torch.float32)
    return (clean + config.noise_level * noise).clamp(0, 1)


def save_png(path: Path, image: torch.Tensor) -> None:
    array = (figures.to_display(image) * 255).round().astype("uint8")
    Image.fromarray(array).save(path)


def write_image_outputs(folder: Path, name: str, noisy: torch.Tensor, clean: torch.Tensor | None,
                        result: DenoiseResult) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    save_png(folder / "denoised.png", result.denoised)
    caption = lambda x: "" if clean is None else f"{psnr(x, clean):.2f} dB / {ssim(x, clean):.3f}"  # noqa: E731
    panels = ([(clean, "PSNR / SSIM")] if clean is not None else []) + [
        (noisy, caption(noisy)), (result.final_output, caption(result.final_output)),
        (result.final_average, caption(result.final_average)),
        (result.denoised, caption(result.denoised) + f" (it. {result.stop_iteration})"),
    ]
    titles = (["clean"] if clean is not None else []) + ["noisy", "DIP", "averaged DIP", "averaged, ES-WMV stop"]
    figures.image_grid(folder / "DIP.png", [panels], titles, [name])
    its = list(range(1, len(result.curves["psnr_noisy"]) + 1))
    lines = [(its, result.curves["psnr_noisy"], "output vs noisy")]
    if clean is not None:
        lines += [(its, result.curves["psnr_clean"], "output vs clean"),
                  (its, result.curves["psnr_clean_average"], "average vs clean")]
    panels = [dict(lines=lines, xlabel="iteration", ylabel="PSNR (dB)", marks=_marks(result)),
              dict(lines=[(its, result.curves["variance"], "windowed variance")], xlabel="iteration",
                   ylabel="moving variance of the outputs", logy=True, marks=_marks(result))]
    figures.curves(folder / "curve.png", panels, n_cols=2)
    write_csv(folder / "curve.csv", [dict(iteration=k, **{key: values[k - 1] for key, values in result.curves.items()})
                                     for k in its])


def _marks(result: DenoiseResult) -> list[tuple[float, str]]:
    marks = []
    if result.oracle_iteration is not None:
        marks.append((result.oracle_iteration + 1, "oracle best (uses the clean image)"))
    if result.stop_iteration is not None:
        marks.append((result.stop_iteration + 1, "ES-WMV choice (no clean image)"))
    return marks


def run(config: Config) -> dict[str, Any]:
    """Denoise every image of the config; write the run folder; return the results and the table."""
    names = check_config(config)
    device = choose_device(config.device)
    seed_everything(config.seed, config.deterministic)
    print(f"DIP denoising on {device}: {len(names)} image(s), {config.iterations} iterations")
    folder = start_run(config, "dip_denoise", device)
    table, results = [], {}
    for index, name in enumerate(names):
        stem = Path(name).stem
        if config.add_noise:
            clean = load_clean(name, config)
            noisy = add_noise(clean, config, config.seed + 1 + index)
        else:
            clean = None
            noisy = load_clean(name, config)
        result = denoise(noisy, config, clean)
        results[stem] = result
        write_image_outputs(folder / stem, stem, noisy, clean, result)
        m = result.metrics
        row = dict(image=stem, height=noisy.shape[-2], width=noisy.shape[-1], seconds=result.seconds,
                   seconds_per_iteration=result.seconds / max(result.iterations_run, 1),
                   backtracks=result.backtracks, stop_iteration=result.stop_iteration, stop_fired=result.stop_fired)
        if clean is not None:
            row.update(psnr_noisy=m["noisy"]["psnr"], psnr_final=m["final_output"]["psnr"],
                       psnr_final_average=m["final_average"]["psnr"], psnr_stop=m["stopping_rule"]["psnr"],
                       psnr_oracle=m["oracle"]["psnr"], oracle_iteration=result.oracle_iteration)
        table.append(row)
        summary = "" if clean is None else (
            f": noisy {m['noisy']['psnr']:.2f}, final average {m['final_average']['psnr']:.2f}, ES-WMV "
            f"{m['stopping_rule']['psnr']:.2f} (it. {result.stop_iteration}), oracle {m['oracle']['psnr']:.2f} dB "
            f"(it. {result.oracle_iteration})")
        print(f"{stem:>12}{summary}; {result.seconds:.1f} s, {result.backtracks} backtracks")
    write_csv(folder / "table.csv", table)
    write_json(folder / "metrics.json", dict(images={k: dict(r.metrics, seconds=r.seconds, backtracks=r.backtracks,
                                                             stop_iteration=r.stop_iteration, device=r.device)
                                                     for k, r in results.items()}))
    print(f"wrote {folder}")
    return dict(folder=folder, results=results, table=table)


def main(argv: list[str] | None = None) -> None:
    run(parse_config(Config, argv, description=__doc__))


if __name__ == "__main__":
    run_main(main)
