"""The scripts' loops against independent plain loops, written as a reader of the papers would write them: SelfDeblur
(Ren et al., CVPR 2020; csdwren/SelfDeblur's selfdeblur_levin.py) with one torch.optim.Adam of two parameter groups
and torch's MultiStepLR, DIP denoising (Ulyanov et al., CVPR 2018) with one torch.optim.Adam. The networks are built
by the scripts' own constructors; everything else (seeding, inputs, perturbations, losses, the schedule, the
average) is written here. The script's run alone, and the same run inside a batch of runs with other seeds, must
follow the plain loop step by step. Last, the gradient aliasing that StackedAdam relies on (dipkit.batch).

What the plain loops draw, in this order (dipkit/blind_loop.py, dip_denoise.py):
  SelfDeblur  torch.manual_seed(seed); G_x, then G_k built; z_x = 0.1·U[0, 1) of the latent size, then z_k; each
              step's perturbation from the global stream as it then stands (the script copies that stream into the
              run's own generator, dipkit.batch.run_generator, so that a batched run draws what it draws alone).
  DIP         torch.manual_seed(seed); the network built; z0 = 0.1·U[0, 1) from a generator seeded by seed; each
              step's perturbation from the global stream after the network (copied the same way).

Tolerances. The script's runs in turn (batch_mode loop, the default) compute each run with the very float32
operations of the plain loop: the same modules, and StackedAdam is torch.optim.Adam's arithmetic (bit for bit,
tests/test_batch.py). They agree to the last bit, and FLOAT32 = 1e-6 (8 float32 ulps, eps = 1.19e-7) asks for that.
A looser tolerance would buy nothing: these loops amplify a last-bit difference within a few steps (Adam's first
steps move every parameter by about its learning rate whatever its gradient's size, and the non-local blocks'
max-pooling sends a gradient to another pixel when two values near a tie swap; in float32 the vectorised batch
below differs from the plain loop by 1e-3 to 1e-1 after 5 to 12 steps, a million times eps), so a reordered sum
fails any tolerance that a real discrepancy passes (a milestone one step off, another β1 or β2, a perturbation
drawn out of turn: 2e-3 to 1e1; checked by breaking the plain loop). The vectorised batch (vmap: grouped
convolutions, batched products) does sum in another order, so it is compared in float64 (eps 2.2e-16), where the
same amplification, up to ~1e8, leaves differences far below the 1e-3 of a discrepancy (measured over these few
steps: at most 6e-9, SelfDeblur with pretraining on another 32x32 crop, seeds 0-3; at most 5e-11 here, seeds 0-7;
1e-12 without the non-local blocks): VMAP_FLOAT64 = 1e-6. What DIP
keeps in float32 whatever the precision (its running average and its PSNR curves) is compared at FLOAT32.

The tests run on one thread: on these tiny problems a second one only adds synchronisation, which costs seconds per
run when another job holds the other core of a 2-core machine (a run: 0.13 s on one thread, 0.4 to 12 s on two)."""

import copy
import dataclasses
import functools

import pytest
import torch
import torch.nn.functional as F

import dip_denoise
import selfdeblur
from dipkit.batch import StackedAdam, StackedNetworks, forward_backward
from dipkit.blind import Problem
from dipkit.blind_loop import BlindRun
from dipkit.blur import blur_valid, centre_of
from dipkit.cli import make_config
from dipkit.images import load_image
from dipkit.metrics import ssim_loss  # SelfDeblur's SSIM.py, tested against scikit-image in test_selfdeblur.py
from dipkit.networks import SkipNetwork

FLOAT32 = 1e-6  # the same float32 operations (see the docstring)
VMAP_FLOAT64 = 1e-6  # float64 runs, the vectorised networks summing in another order
MODES = [("loop", torch.float32, FLOAT32), ("vmap", torch.float64, VMAP_FLOAT64)]


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def precision():
    """Sets torch's default dtype for the test (float64 for the vectorised runs), and back."""
    before = torch.get_default_dtype()
    yield torch.set_default_dtype
    torch.set_default_dtype(before)


# ---------------------------------------------------------------------------------------------------------------
# SelfDeblur


def plain_selfdeblur(y, kernel_size, config, seed):
    """SelfDeblur as selfdeblur_levin.py runs it, with Brožová's pretraining and β1 of G_x: each main step's loss and
    centre of x (before that step's update), then the final centre of x and kernel."""
    torch.manual_seed(seed)
    G_x, G_k = selfdeblur.networks(config, kernel_size)
    (h, w), (kh, kw) = y.shape[-2:], kernel_size
    z_x = torch.rand(1, config.input_channels, h + kh - 1, w + kw - 1) * config.input_scale
    z_k = torch.rand(config.kernel_input) * config.input_scale
    optimizer = torch.optim.Adam([dict(params=G_x.parameters(), lr=config.lr_image, betas=(config.beta1_image, 0.999)),
                                  dict(params=G_k.parameters(), lr=config.lr_kernel, betas=(0.9, 0.999))])
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(config.milestones), config.gamma)
    reg_noise, switch = 0.0 if config.simpler else config.reg_noise, config.loss_switch
    losses, images = [], []
    for step in range(-config.pretrain_iterations, config.iterations):  # negative: the pretraining
        z = z_x + reg_noise * torch.randn(z_x.shape) if reg_noise else z_x
        optimizer.zero_grad()
        x, k = G_x(z), G_k(z_k)
        y_hat = F.conv2d(x, k)  # 'valid' cross-correlation: H x W
        loss = ssim_loss(y_hat, y) if switch is not None and step >= switch else F.mse_loss(y_hat, y)
        if step < 0:  # α·L_blind + (1 − α)·L_no-blur: the centre of x pulled towards y
            loss = config.pretrain_alpha * loss + (1 - config.pretrain_alpha) * F.mse_loss(centre_of(x, kernel_size), y)
        loss.backward()
        optimizer.step()
        if step >= 0:  # the milestones count main iterations only
            scheduler.step()
            losses.append(loss.item())
            images.append(centre_of(x, kernel_size).detach().clone())
    with torch.no_grad():
        return losses, images, centre_of(G_x(z_x), kernel_size), G_k(z_k)[0, 0]


class Recorder:
    """A 'scorer' of BlindRuns that keeps every estimate it is shown."""

    def __init__(self):
        self.images = []

    def __call__(self, image, full=False):
        self.images.append(image.clone())
        return {}


@functools.lru_cache
def blurred_camera():
    """The camera image at 38x38 blurred by a 7x7 diagonal motion: y of 32x32 (a 38x38 latent image through G_x's
    five scales)."""
    kernel = torch.eye(7, dtype=torch.float32).flip(1) + 0.5 * torch.eye(7, dtype=torch.float32)
    return blur_valid(load_image("camera", (38, 38), channels=1), kernel / kernel.sum())


def tiny_problem(dtype=torch.float32):
    return Problem("camera", blurred_camera().to(dtype), (7, 7))


def tiny_selfdeblur(**overrides):
    return make_config(selfdeblur.Config, **{**dict(
        quick=True, progress=False, device="cpu", channels=8, skip_channels=4, kernel_input=20, kernel_hidden=24,
        iterations=8, milestones=(3, 6), gamma=0.5, curve_every=1), **overrides})


VARIANTS = {  # the paper's setting with milestones inside the run; pretraining, the SSIM switch and β1 of G_x
    "paper": dict(),
    "pretrain+ssim+beta1": dict(pretrain_iterations=2, loss_switch=4, beta1_image=0.99, milestones=(2, 5), gamma=0.3,
                                reg_noise=0.01, lr_kernel=1e-3),
}


def assert_follows(estimate, recorder, plain, rtol):
    """A script's run against the plain loop: each step's loss and estimate, then the final image and kernel."""
    losses, images, image, kernel = plain
    assert [point["iteration"] for point in estimate.curve] == list(range(1, len(losses) + 1))
    torch.testing.assert_close(torch.tensor([p["loss"] for p in estimate.curve]), torch.tensor(losses), rtol=rtol,
                               atol=0)
    assert len(recorder.images) == len(images)
    for step, (got, want) in enumerate(zip(recorder.images, images)):
        torch.testing.assert_close(got, want, rtol=rtol, atol=rtol, msg=lambda m: f"step {step}: {m}")
    torch.testing.assert_close(estimate.image, image, rtol=rtol, atol=rtol)
    torch.testing.assert_close(estimate.kernel, kernel, rtol=rtol, atol=rtol * kernel.max().item())


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_selfdeblur_alone_follows_the_plain_loop(variant):
    config, problem, recorder = tiny_selfdeblur(**VARIANTS[variant]), tiny_problem(), Recorder()
    (estimate,) = selfdeblur.deblur([BlindRun(problem, config, 3, recorder)])
    assert_follows(estimate, recorder, plain_selfdeblur(problem.blurred, problem.kernel_size, config, 3), FLOAT32)


@pytest.mark.parametrize("mode,dtype,rtol", MODES)
def test_selfdeblur_batch_of_three_seeds_follows_the_plain_loop_of_each(mode, dtype, rtol, precision):
    precision(dtype)
    config = tiny_selfdeblur(batch_mode=mode, **VARIANTS["pretrain+ssim+beta1"])
    problem, recorders = tiny_problem(dtype), [Recorder() for _ in range(3)]
    batched = selfdeblur.deblur([BlindRun(problem, config, seed, r) for seed, r in zip((0, 1, 2), recorders)])
    for seed, estimate, recorder in zip((0, 1, 2), batched, recorders):
        assert_follows(estimate, recorder, plain_selfdeblur(problem.blurred, problem.kernel_size, config, seed), rtol)


# ---------------------------------------------------------------------------------------------------------------
# DIP denoising


def small_skip_network(input_depth, channels):
    """DIP's skip network at three scales and 8-16 channels: a 32x32 image in milliseconds."""
    return SkipNetwork(input_depth, channels, (8, 16, 16), (8, 16, 16), (4, 4, 4), (False,) * 3)


def plain_dip(noisy, clean, config, counts):
    """DIP denoising, min_θ ‖f_θ(z0 + σ_r n_k) − y‖² with a fresh n_k each step, Adam, and the exponential average of
    the outputs: each step's PSNR of the output against y and of the average against the clean image, and after
    each count of steps in `counts` the output f_θ(z0) and the average."""
    torch.manual_seed(config.seed)
    net = small_skip_network(config.input_depth, noisy.shape[1])
    z0 = torch.rand((1, config.input_depth, *noisy.shape[-2:]),
                    generator=torch.Generator().manual_seed(config.seed)) * config.input_scale
    optimizer = torch.optim.Adam(net.parameters(), lr=config.learning_rate)

    def psnr(x, reference):  # in float32, as DIP's curves are kept
        return -10 * torch.log10(F.mse_loss(x.clamp(0, 1).float(), reference))

    average, curves, kept = None, dict(psnr_noisy=[], psnr_clean_average=[]), {}
    for k in range(max(counts)):
        optimizer.zero_grad()
        out = net(z0 + config.reg_noise_std * torch.randn(z0.shape))
        F.mse_loss(out, noisy).backward()
        optimizer.step()
        out = out.detach()
        average = out if average is None else config.ema * average + (1 - config.ema) * out
        curves["psnr_noisy"].append(psnr(out, noisy).item())
        curves["psnr_clean_average"].append(psnr(average, clean).item())
        if k + 1 in counts:
            with torch.no_grad():  # (in training mode, as the script: BatchNorm's statistics are the image's)
                kept[k + 1] = net(z0), average
    return curves, kept


@pytest.mark.parametrize("mode,dtype,rtol", MODES)
def test_dip_alone_and_batched_follows_the_plain_loop(mode, dtype, rtol, precision, monkeypatch):
    """After 1, 2 and 5 steps (no backtracking: the plain loop has none), the final output and average of an image
    alone and of the same image beside another in a batch; each step's PSNR curves of the 5-step runs."""
    precision(dtype)
    monkeypatch.setattr(dip_denoise, "SkipNetwork", small_skip_network)
    counts = (1, 2, 5)
    config = make_config(dip_denoise.Config, quick=True, progress=False, device="cpu", size=32, input_depth=8,
                         backtrack_drop=float("inf"), batch_mode=mode, seed=4)
    cleans = [dip_denoise.load_clean(name, config) for name in ("astronaut", "coffee")]
    runs = [dip_denoise.DIPRun(dip_denoise.add_noise(c, config, i), config, c) for i, c in enumerate(cleans)]
    plains = [plain_dip(run.noisy, run.clean, config, counts) for run in runs]
    for count in counts:
        at = dataclasses.replace(config, iterations=count)
        runs_at = [run._replace(config=at) for run in runs]
        alone = dip_denoise.denoise(runs_at[:1])
        batched = dip_denoise.denoise(runs_at)
        for result, (curves, kept) in [(alone[0], plains[0]), (batched[0], plains[0]), (batched[1], plains[1])]:
            output, average = kept[count]
            assert result.iterations_run == count and result.backtracks == 0
            torch.testing.assert_close(result.final_output, output, rtol=rtol, atol=rtol)
            torch.testing.assert_close(result.final_average, average.float(), rtol=FLOAT32, atol=FLOAT32)
            for key, curve in curves.items():
                torch.testing.assert_close(torch.tensor(result.curves[key]), torch.tensor(curve[:count]), rtol=FLOAT32,
                                           atol=0, msg=lambda m: f"{key}: {m}")


# ---------------------------------------------------------------------------------------------------------------
# The gradient aliasing StackedAdam relies on


def test_each_runs_gradient_is_its_slice_of_the_stacked_gradient_through_zero_grad_and_steps():
    """The runs in turn (batch_mode loop): each run's module has parameters and gradients that are views of the
    stacked tensors, so the backward pass of its forward writes where StackedAdam reads. Checked over three steps
    against torch.optim.Adam on copies of the networks: after zero_grad the gradients stay the same tensors (zeroed,
    not None, not replaced), the next backward pass fills them with that step's gradient (not accumulated onto the
    last), and StackedAdam's step moves each run as torch.optim.Adam moves it (it does not step on zeros)."""
    torch.manual_seed(0)
    nets = [SkipNetwork(4, 1, (8, 8), (8, 8), (4, 4), (False, True)) for _ in range(2)]
    copies = [copy.deepcopy(net) for net in nets]
    stacked = StackedNetworks(nets, torch.device("cpu"), vectorise=False)
    adam = StackedAdam([(stacked.parameters(), [1e-2, 3e-3], [0.9, 0.99])])
    torch_adams = [torch.optim.Adam(c.parameters(), lr=lr, betas=(beta1, 0.999))
                   for c, lr, beta1 in zip(copies, [1e-2, 3e-3], [0.9, 0.99])]
    z, targets = torch.rand(2, 1, 4, 16, 16), torch.rand(2, 1, 1, 16, 16)

    def loss(i, r, outputs):
        return F.mse_loss(outputs[0][i], targets[r])

    def assert_aliased():
        for r, module in enumerate(stacked.modules):
            for name, p in module.named_parameters():
                whole = stacked.params[name]
                assert p.data_ptr() == whole[r].data_ptr(), name
                assert p.grad is not None and p.grad.data_ptr() == whole.grad[r].data_ptr(), name
                assert p.grad.untyped_storage().data_ptr() == whole.grad.untyped_storage().data_ptr(), name

    for step in range(3):
        adam.zero_grad()
        assert_aliased()
        assert all(not p.grad.any() for p in stacked.parameters())
        forward_backward([0, 1], False, lambda chosen: (stacked(z[chosen], chosen),), loss)
        assert_aliased()
        for r, (c, torch_adam) in enumerate(zip(copies, torch_adams)):
            torch_adam.zero_grad()
            F.mse_loss(c(z[r]), targets[r]).backward()
            for name, p in c.named_parameters():  # the same operations: the same bits
                torch.testing.assert_close(stacked.params[name].grad[r], p.grad, rtol=0, atol=0, msg=name)
        adam.step()
        for r, (c, torch_adam) in enumerate(zip(copies, torch_adams)):
            torch_adam.step()
            for name, p in c.named_parameters():
                torch.testing.assert_close(stacked.params[name][r], p.detach(), rtol=0, atol=0, msg=name)
    name = "head.weight"  # and what is written into the stacked gradient is what the run's module sees
    stacked.params[name].grad[1].fill_(7.0)
    assert (dict(stacked.modules[1].named_parameters())[name].grad == 7.0).all()


def test_vectorised_gradients_are_each_runs_own_after_zero_grad():
    """The vectorised networks (vmap) have no per-run modules: the backward pass of the runs' summed losses fills the
    stacked gradients, which zero_grad zeroes in place (not None: StackedAdam skips a tensor without a gradient);
    at each step every run's slice is the gradient of its own loss at its current weights, not the sum with the
    last step's. float64: the grouped convolutions sum in another order (see the docstring)."""
    torch.manual_seed(1)
    nets = [SkipNetwork(4, 1, (8, 8), (8, 8), (4, 4), (False, True)).double() for _ in range(2)]
    stacked = StackedNetworks(nets, torch.device("cpu"), vectorise=True)
    adam = StackedAdam([(stacked.parameters(), [1e-2, 3e-3], [0.9, 0.99])])
    z, targets = torch.rand(2, 1, 4, 16, 16, dtype=torch.float64), torch.rand(2, 1, 1, 16, 16, dtype=torch.float64)
    for step in range(3):
        adam.zero_grad()
        assert all(p.grad is None if step == 0 else not p.grad.any() for p in stacked.parameters())
        forward_backward([0, 1], True, lambda chosen: (stacked(z[chosen], chosen),),
                         lambda i, r, outputs: F.mse_loss(outputs[0][i], targets[r]))
        for r, net in enumerate(nets):  # the run alone, at the stacked weights of now
            net.load_state_dict(stacked.state_of(r))
            net.zero_grad()
            F.mse_loss(net(z[r]), targets[r]).backward()
            for name, p in net.named_parameters():  # one backward pass, nothing amplified: float64's rounding
                # (1e-16 relative) with room; atol for the gradients that are zero but for rounding (biases before a
                # BatchNorm)
                torch.testing.assert_close(stacked.params[name].grad[r], p.grad, rtol=1e-9, atol=1e-12, msg=name)
        before = {name: p.detach().clone() for name, p in stacked.params.items()}
        adam.step()
        assert all(not torch.equal(before[name], p) for name, p in stacked.params.items() if p.grad.any())
