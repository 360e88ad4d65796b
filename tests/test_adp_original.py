"""The paper code's ADP path (dipkit/adp_original.py, ADP.py --original_code) against that code's known behaviour.

The reference numbers were produced by running the original repository's own ADP.py / hg.py / MAID.py / TV.py
(Analytical-Deep-Priors) on the 48×36 problem built below, in float32 on a CPU, with three changes that do not
touch its arithmetic: the data tensors read from a file instead of its image folder, the Apple-MPS copy
semantics emulated (b0 and the learned weight are distinct tensors, as `.to("mps")` made them), and its
`torch.randn_like` calls drawing from `torch.Generator().manual_seed(0)` in the same order as here.
"""

import json
import math

import pytest
import torch

import ADP
from dipkit.adp_original import ORIGINAL_BUGS, OriginalADP, OriginalSettings, run_original
from dipkit.cli import make_config
from dipkit.metrics import psnr
from dipkit.tv import SmoothedTV

# the original code on the problem below: its TV column, and its MAID's cumulative lower-level (FISTA)
# iterations and acceptances over the first 13 upper iterations
ORIGINAL_TV_LIPSCHITZ = 191.30088806152344
ORIGINAL_TV_PSNR = 19.968189239501953
ORIGINAL_LOWER_ITERATIONS = [2, 5, 44, 47, 98, 101, 169, 172, 265, 268, 380, 383, 536]
ORIGINAL_ACCEPTED = [True, False] * 6 + [True]
ORIGINAL_PSNR_AT_12 = 22.390413284301758


def small_problem():
    config = make_config(ADP.Config, height=48, width=36)
    x_true = ADP.load_image("astronaut", (48, 36), 3, "cpu", torch.float64)
    b0 = ADP.known_kernel(config).double()
    y = ADP.observe_data(x_true, b0, config, seed=0)
    return x_true, y.float(), b0.float().expand(3, -1, -1).clone()


def test_the_tv_column_reproduces_the_original_step_size_and_psnr():
    x_true, y, b0 = small_problem()
    result = run_original(y, b0, OriginalSettings(upper_iterations=0), seed=0)
    assert result.tv_column_lipschitz == pytest.approx(ORIGINAL_TV_LIPSCHITZ, rel=1e-5)
    assert result.tv_column_iterations == 100  # tolerance 1e-3 is never met: it stops at its cap
    assert psnr(result.tv_column.double(), x_true) == pytest.approx(ORIGINAL_TV_PSNR, abs=1e-4)


def test_the_adp_column_follows_the_original_iteration_by_iteration():
    x_true, y, b0 = small_problem()
    psnrs = []
    result = run_original(y, b0, OriginalSettings(upper_iterations=13), seed=0,
                          observe=lambda row, x: psnrs.append(psnr(x.double(), x_true)))
    assert [row["fista_iterations"] for row in result.log] == ORIGINAL_LOWER_ITERATIONS
    assert [row["accepted"] for row in result.log] == ORIGINAL_ACCEPTED
    assert psnrs[12] == pytest.approx(ORIGINAL_PSNR_AT_12, abs=0.02)


def test_the_codes_fista_step_is_about_ninety_times_too_small():
    _, y, b0 = small_problem()
    lipschitz = {}
    for bugs in (tuple(ORIGINAL_BUGS), tuple(b for b in ORIGINAL_BUGS if b != "tv_step")):
        problem = OriginalADP(y, b0, OriginalSettings(bugs=bugs), torch.Generator().manual_seed(0))
        lipschitz[len(bugs)] = problem.power_lipschitz(y, b0)
    ratio = lipschitz[len(ORIGINAL_BUGS)] / lipschitz[len(ORIGINAL_BUGS) - 1]
    assert 60 < ratio < 100, ratio
    # the fixed L is h's largest curvature: at most ‖B‖² + λ·16/ε (the doubled edges)
    assert lipschitz[len(ORIGINAL_BUGS) - 1] <= 1.0 + math.exp(-6) * 1600 + 1e-3


def test_the_fixed_tv_column_reaches_the_converged_tv():
    x_true, y, b0 = small_problem()
    fixed = tuple(b for b in ORIGINAL_BUGS if b != "tv_step")
    bug = run_original(y, b0, OriginalSettings(upper_iterations=0), seed=0).tv_column.double()
    fix = run_original(y, b0, OriginalSettings(upper_iterations=0, bugs=fixed), seed=0).tv_column.double()
    assert psnr(fix, x_true) > psnr(bug, x_true) + 2.0


def original_tv(x, smoothing):
    """TV.py's form: pad one replicated row and column, forward differences, zero-pad, √(d² + ε²) summed."""
    padded = torch.nn.functional.pad(x, (0, 1, 0, 1), mode="replicate")
    dx = padded[..., :, 1:] - padded[..., :, :-1]
    dy = padded[..., 1:, :] - padded[..., :-1, :]
    return sum(torch.sqrt(d * d + smoothing**2).sum() for d in (dx, dy))


def test_the_doubled_edge_tv_has_the_gradient_and_hessian_of_the_codes_padded_tv():
    x = torch.rand(1, 3, 7, 6, dtype=torch.float64, requires_grad=True)
    tv = SmoothedTV(0.01, double_last_edges=True)
    (grad,) = torch.autograd.grad(original_tv(x, 0.01), x, create_graph=True)
    v = torch.randn_like(x)
    (hv,) = torch.autograd.grad(grad, x, v)
    torch.testing.assert_close(tv.gradient(x.detach()), grad.detach())
    torch.testing.assert_close(tv.hessian_vector(x.detach(), v), hv)


def test_the_sobolev_pieces_as_coded_and_as_fixed():
    _, y, b0 = small_problem()
    b0, y = b0.double(), y.double()
    b = (b0 + 1e-3 * torch.randn_like(b0)).requires_grad_(True)
    for bugs in (tuple(ORIGINAL_BUGS), ()):
        problem = OriginalADP(y, b0, OriginalSettings(bugs=bugs), torch.Generator().manual_seed(0))
        u = b - b0
        d1, d2 = u[..., 1:, :] - u[..., :-1, :], u[..., :, 1:] - u[..., :, :-1]
        norms = [w.pow(2).sum() for w in (u, d1, d2)]
        if bugs:  # the code's "gradient": the sum of the three norms' gradients, not the gradient of its value
            (expected,) = torch.autograd.grad(100 * sum(n.sqrt() for n in norms), b)
            torch.testing.assert_close(problem.sobolev_value(b.detach()), 100 * sum(norms).sqrt().detach())
        else:
            (expected,) = torch.autograd.grad(50 * sum(norms), b)
        torch.testing.assert_close(problem.sobolev_gradient(b.detach()), expected)
    coded = OriginalADP(y, b0, OriginalSettings(), torch.Generator().manual_seed(0))
    assert coded.sobolev_gradient(b0).abs().max() == 0  # 0 at b0, as torch's norm gradient is there


def test_original_code_run_writes_both_paper_columns(tmp_path):
    config = make_config(ADP.Config, quick=True, original_code=True, height=24, width=20, upper_iterations=4,
                         results_dir=str(tmp_path), run_name="paper", progress=False)
    ADP.run(config)
    folder = tmp_path / "ADP" / "paper"
    for name in ("ADP.png", "kernel.png", "curve.png", "curve.csv", "table.csv", "metrics.json"):
        assert (folder / name).stat().st_size > 0, name
    metrics = json.loads((folder / "metrics.json").read_text())["items"]["astronaut"]
    for column in ("paper_tv", "paper_adp", "tv", "blurry"):
        assert set(metrics[column]) >= {"psnr", "ssim"}
    assert metrics["paper_tv"]["iterations"] == 100 and metrics["paper_tv"]["lipschitz"] > 50


def test_each_original_behaviour_can_be_fixed_alone():
    _, y, b0 = small_problem()
    for fixed in ORIGINAL_BUGS:
        bugs = tuple(b for b in ORIGINAL_BUGS if b != fixed)
        result = run_original(y, b0, OriginalSettings(upper_iterations=3, bugs=bugs), seed=0)
        assert torch.isfinite(result.adp_column).all() and len(result.log) == 3, fixed


def test_an_unknown_original_bug_is_refused(refused):
    refused("ADP.py", ["--original_code", "--original_bugs", "tv_step", "no_such_bug"], "no_such_bug")
