"""dipkit.batch: stacked networks and the per-run Adam against runs alone."""

import torch

from dipkit.batch import Clock, StackedAdam, StackedNetworks, _slices, learning_rate, run_generator
from dipkit.engine import group_runs
from dipkit.networks import KernelGenerator, SkipNetwork


def test_stacked_adam_is_torch_adam_per_run_with_skipped_steps():
    """Three runs with their own learning rates and β1: each slice follows torch.optim.Adam of that run alone,
    including a run whose step 2 is skipped (its moments and step count stay) and a learning-rate change."""
    torch.manual_seed(0)
    start = torch.randn(3, 4, 5)
    lrs, beta1s = [1e-2, 3e-3, 1e-1], [0.9, 0.99, 0.5]
    stacked = start.clone().requires_grad_()
    adam = StackedAdam([([stacked], lrs, beta1s)])
    alone = [start[r].clone().requires_grad_() for r in range(3)]
    torch_adams = [torch.optim.Adam([alone[r]], lr=lrs[r], betas=(beta1s[r], 0.999)) for r in range(3)]
    for step in range(6):
        grads = torch.randn(3, 4, 5) * (step + 1)
        take = [0, 2] if step == 2 else [0, 1, 2]
        if step == 4:
            adam.set_lr(0, [lr / 2 for lr in lrs])
            for opt in torch_adams:
                opt.param_groups[0]["lr"] /= 2
        stacked.grad = grads.clone()
        adam.step(take)
        for r in take:
            alone[r].grad = grads[r].clone()
            torch_adams[r].step()
    for r in range(3):  # the same float32 operations in the same order: equal to the last bit
        assert torch.equal(stacked[r], alone[r])
    assert adam.steps == [6, 5, 6]


def test_stacked_adam_on_many_tensors_is_torch_adam_on_each_run_alone():
    """Several tensors of different shapes (one foreach update for all of them), every run taking every step with
    the same scalars, then the runs' learning rates apart: each run's slices as torch.optim.Adam leaves them."""
    torch.manual_seed(2)
    shapes = [(3, 4, 5), (3, 7), (3, 2, 2, 3)]
    starts = [torch.randn(shape) for shape in shapes]
    stacked = [s.clone().requires_grad_() for s in starts]
    adam = StackedAdam([(stacked, [1e-2] * 3, [0.9] * 3)])
    alone = [[s[r].clone().requires_grad_() for s in starts] for r in range(3)]
    torch_adams = [torch.optim.Adam(alone[r], lr=1e-2) for r in range(3)]
    for step in range(5):
        grads = [torch.randn(shape) for shape in shapes]
        if step == 3:
            adam.set_lr(0, [1e-2, 2e-2, 1e-2])
            torch_adams[1].param_groups[0]["lr"] = 2e-2
        for p, g in zip(stacked, grads):
            p.grad = g.clone()
        adam.step()
        for r in range(3):
            for p, g in zip(alone[r], grads):
                p.grad = g[r].clone()
            torch_adams[r].step()
    for r in range(3):
        for p, q in zip(stacked, alone[r]):
            assert torch.equal(p[r], q)


def test_slices_cover_the_runs_in_consecutive_blocks():
    assert _slices([0, 1, 2]) == [slice(0, 3)]
    assert _slices([0, 2, 3, 5]) == [slice(0, 1), slice(2, 4), slice(5, 6)]
    assert _slices([4]) == [slice(4, 5)]


def test_the_clock_shares_the_time_among_the_runs_going_and_leaves_out_the_scoring(monkeypatch):
    """Two runs for 4 s (2 s each), one stops; the other goes on alone for 3 s, 1 s of which is scoring: 2 + 2."""
    import dipkit.batch

    now = [0.0]
    monkeypatch.setattr(dipkit.batch.time, "perf_counter", lambda: now[0])
    clock = Clock(2, torch.device("cpu"))
    now[0] = 4.0
    assert clock.stop(0) == 2.0 and clock.seconds(1) == 2.0
    now[0] = 5.0
    with clock.scoring():
        now[0] = 6.0
    now[0] = 7.0
    assert clock.stop(1) == 4.0 and clock.seconds(0) == 2.0
    assert clock.stop(0) + clock.stop(1) == 7.0 - 1.0  # the runs' seconds add up to the wall time less the scoring


def test_stacked_adam_checkpoint_restores_one_run():
    torch.manual_seed(1)
    p = torch.randn(2, 3).requires_grad_()
    adam = StackedAdam([([p], [0.1, 0.1], [0.9, 0.9])])
    p.grad = torch.randn(2, 3)
    adam.step([0, 1])
    saved, weights = adam.state_of(1), p[1].detach().clone()
    p.grad = torch.randn(2, 3)
    adam.step([0, 1])
    after_one = p[0].detach().clone()
    adam.load_state_of(1, saved)
    with torch.no_grad():
        p[1] = weights
    assert adam.steps == [2, 1]
    torch.testing.assert_close(p[0], after_one)  # run 0 untouched by run 1's restore
    torch.testing.assert_close(adam.state[p][0][1], saved["moments"][0][0])


def _nets(seeds, make):
    nets = []
    for seed in seeds:
        torch.manual_seed(seed)
        nets.append(make())
    return nets


def test_stacked_networks_give_each_run_its_own_output_and_gradient():
    """Looped and vectorised (vmap: grouped convolutions, per-run BatchNorm statistics) against each network alone:
    the outputs and the gradients of Σ_r ⟨w_r, f_r(z_r)⟩ with respect to each run's weights."""
    nets = _nets([0, 1, 2], lambda: SkipNetwork(4, 1, (8, 8), (8, 8), (4, 4), (False, True)))
    z = torch.rand(3, 1, 4, 32, 32)
    weights = torch.randn(3, 1, 1, 32, 32)
    alone, grads = [], []
    for r, net in enumerate(nets):
        out = net(z[r])
        (out * weights[r]).sum().backward()
        alone.append(out.detach())
        grads.append({k: p.grad.clone() for k, p in net.named_parameters()})
    for vectorise in (False, True):
        stacked = StackedNetworks(nets, torch.device("cpu"), vectorise)
        out = stacked(z)
        (out * weights).sum().backward()
        torch.testing.assert_close(out.detach(), torch.stack(alone), rtol=1e-4, atol=1e-5)
        for k, p in stacked.params.items():
            for r in range(3):  # against the run's largest gradient: biases before a BatchNorm have a gradient of ~0
                scale = max(g.abs().max().item() for g in grads[r].values())
                assert (p.grad[r] - grads[r][k]).abs().max().item() <= 1e-4 * scale, (vectorise, k, r)
        # a subset of the runs: only their slices get gradients
        for p in stacked.params.values():
            p.grad.zero_()
        out = stacked(z[[0, 2]], runs=[0, 2])
        torch.testing.assert_close(out.detach(), torch.stack(alone)[[0, 2]], rtol=1e-4, atol=1e-5)
        out.sum().backward()
        assert all(p.grad[1].abs().max() == 0 for p in stacked.params.values())


def test_stacked_kernel_generators_batch_their_vectors():
    nets = _nets([3, 4], lambda: KernelGenerator((5, 7), 20, 30))
    z = torch.rand(2, 20)
    for vectorise in (False, True):
        out = StackedNetworks(nets, torch.device("cpu"), vectorise)(z)
        assert out.shape == (2, 1, 1, 5, 7)
        for r in range(2):
            torch.testing.assert_close(out[r].detach(), nets[r](z[r]).detach())


def test_run_generator_continues_the_global_stream():
    torch.manual_seed(5)
    torch.rand(10)
    generator, other = run_generator(torch.device("cpu"), 5), run_generator(torch.device("cpu"), 5)
    expected = torch.randn(2, 3)
    torch.manual_seed(0)  # the global stream moves on; the runs' generators do not follow it
    torch.testing.assert_close(torch.randn(2, 3, generator=generator), expected)
    torch.testing.assert_close(torch.randn(2, 3, generator=other), expected)


def test_learning_rate_is_multistep_lr():
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.Adam([p], lr=0.1)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(opt, [3, 5], 0.5)
    for step in range(8):
        assert abs(opt.param_groups[0]["lr"] - learning_rate(0.1, step, (3, 5), 0.5)) < 1e-15
        opt.step()
        scheduler.step()


def test_group_runs_keeps_keys_apart_and_order():
    items = ["a1", "b1", "a2", "a3", "b2", "a4"]
    assert group_runs(items, lambda s: s[0], 3) == [["a1", "a2", "a3"], ["a4"], ["b1", "b2"]]
    assert group_runs(items, lambda s: s[0], 1) == [[i] for i in ["a1", "a2", "a3", "a4", "b1", "b2"]]


def test_skip_network_stack_of_one_architecture_only():
    nets = [SkipNetwork(2, 1, (4,), (4,), (2,), (False,)), KernelGenerator((3, 3), 4, 4)]
    try:
        StackedNetworks(nets, torch.device("cpu"), False)
    except ValueError as error:
        assert "one architecture" in str(error)
    else:
        raise AssertionError("networks of two architectures were stacked")
