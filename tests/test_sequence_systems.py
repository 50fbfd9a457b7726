"""Cheap self-tests of the parts of RRT-MIL, MambaMIL, INS and PackMIL that the contract
check cannot see: the selective scan, the SR order, R-MSA's regions, PackMIL's packing
and INS's prototype, queue and stage updates."""

from __future__ import annotations

import pytest
import torch

from mil_assert.models import mamba_mil
from mil_assert.models.ins import INS
from mil_assert.models.mamba_mil import linear_scan_, selective_scan, sr_order, sr_place
from mil_assert.models.pack_mil import PackMIL, pack
from mil_assert.models.rrt_mil import RegionAttention, RegionGrid
from mil_assert.procedure import TrainingProgress

DIM = 6


def naive_scan(u, delta, A, B, C, D):
    """The recurrence written out, one position at a time, with autograd throughout."""
    state = torch.zeros(u.shape[0], u.shape[2], A.shape[-1], dtype=u.dtype)
    outputs = []
    for t in range(u.shape[1]):
        state = (torch.exp(delta[:, t, :, None] * A) * state
                 + (delta[:, t] * u[:, t])[..., None] * B[:, t, None, :])
        outputs.append((state * C[:, t, None, :]).sum(-1) + D * u[:, t])
    return torch.stack(outputs, 1)


def test_selective_scan_equals_the_naive_recurrence_and_its_gradients():
    g = torch.Generator().manual_seed(0)
    b, L, d, n = 3, 9, 5, 4
    inputs = [torch.randn(b, L, d, generator=g), torch.rand(b, L, d, generator=g),
              -torch.rand(d, n, generator=g) - 0.1, torch.randn(b, L, n, generator=g),
              torch.randn(b, L, n, generator=g), torch.randn(d, generator=g)]
    inputs = [t.double().requires_grad_() for t in inputs]
    fast, slow = selective_scan(*inputs), naive_scan(*inputs)
    torch.testing.assert_close(fast, slow)
    weights = torch.randn(fast.shape, generator=g).double()
    fast_grads = torch.autograd.grad((fast * weights).sum(), inputs)
    slow_grads = torch.autograd.grad((slow * weights).sum(), inputs)
    for a, b_ in zip(fast_grads, slow_grads, strict=True):
        torch.testing.assert_close(a, b_)


def test_a_step_with_zero_delta_and_input_passes_the_state_through():
    g = torch.Generator().manual_seed(1)
    u, delta = torch.randn(1, 5, 3, generator=g), torch.rand(1, 5, 3, generator=g)
    A, B, C = -torch.rand(3, 2, generator=g), torch.randn(1, 5, 2, generator=g), torch.ones(1, 5, 2)
    u[:, 2], delta[:, 2] = 0.0, 0.0
    y = selective_scan(u, delta, A, B, C, torch.zeros(3))
    skipped = selective_scan(u[:, [0, 1, 3, 4]], delta[:, [0, 1, 3, 4]], A, B[:, [0, 1, 3, 4]],
                             C[:, [0, 1, 3, 4]], torch.zeros(3))
    torch.testing.assert_close(y[:, [0, 1, 3, 4]], skipped)


@pytest.mark.parametrize("n", [1, 7, 10, 13, 30])
def test_sr_order_reads_every_instance_once_with_stride_rate_and_places_it_back(n):
    rate, N = 10, 32
    source, valid = sr_order(torch.tensor([n]), rate, N)
    order = source[0][valid[0]].tolist()
    assert sorted(order) == list(range(n))
    assert order == sorted(range(n), key=lambda i: (i % rate, i // rate))
    place = sr_place(torch.tensor([n]), rate, N)[0, :n]
    assert source[0, place].tolist() == list(range(n))


def test_region_attention_stays_inside_regions_and_ignores_padding():
    torch.manual_seed(0)
    attention = RegionAttention(8, heads=2, epeg_k=15, dropout=0.0).eval()
    n, N = 9, 12  # a 3 x 3 grid rounded up to 4 x 4: 4 regions of 2 x 2 cells
    x = torch.randn(1, N, 8)
    grid = RegionGrid(torch.tensor([n]), N, region_num=2)
    base = attention(x, grid)[0, :n]
    padded = x.clone()
    padded[0, n:] = 1e3
    torch.testing.assert_close(attention(padded, grid)[0, :n], base)
    changed = x.clone()
    region = grid.region[0, :n]
    changed[0, (region == 1).nonzero().squeeze(1)] += 5.0  # only region 1's instances
    out = attention(changed, grid)[0, :n]
    torch.testing.assert_close(out[region != 1], base[region != 1])
    assert not torch.allclose(out[region == 1], base[region == 1])


def test_packing_keeps_each_bag_whole_and_in_order():
    select = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]).bool()
    source, segment = pack(select, pack_len=5)
    assert segment.tolist() == [[0, 0, 0, 1, 1], [2, 2, 2, 2, 3]]
    assert source[0].tolist() == [0, 1, 2, 4, 5]


def test_packed_logits_equal_one_bag_at_a_time_at_inference():
    torch.manual_seed(0)
    model = PackMIL(DIM, pack_len=20).eval()
    g = torch.Generator().manual_seed(2)
    X = torch.randn(7, 9, DIM, generator=g)
    mask = torch.arange(9) < torch.tensor([9, 3, 5, 1, 8, 9, 4])[:, None]
    with torch.no_grad():
        packed = model.packed_logits(X, mask)
        alone = torch.cat([model(X[b:b + 1, :int(mask[b].sum())],
                                 torch.ones(1, int(mask[b].sum()), dtype=torch.bool))
                           for b in range(7)])
    assert pack(mask, 20)[0].shape[0] > 1  # several packs, several bags in each
    torch.testing.assert_close(packed[:, 1] - packed[:, 0], alone, rtol=1e-5, atol=1e-5)


def test_ins_updates_prototypes_queue_and_stage_only_after_the_step():
    torch.manual_seed(0)
    model = INS(DIM, width=8, low_dim=4, queue=16, prot_start=2).train()
    g = torch.Generator().manual_seed(3)
    X, mask = torch.randn(4, 5, DIM, generator=g), torch.ones(4, 5, dtype=torch.bool)
    y = torch.tensor([0.0, 1.0, 0.0, 1.0])
    queue = model.queue.clone()
    torch.manual_seed(5)  # the same noisy key view in both calls
    first = model.batch_loss(X, mask, y)
    torch.manual_seed(5)
    torch.testing.assert_close(model.batch_loss(X, mask, y), first)  # no update inside the loss
    assert model.prototypes.abs().sum() == 0 and torch.equal(model.queue, queue)
    key_before = [p.clone() for p in model.key_net.parameters()]
    with torch.no_grad():
        for p in model.net.parameters():
            p.add_(1.0)
    progress = TrainingProgress(epoch=0, epochs=3, step=0, steps_per_epoch=1)
    model.on_train_batch_end(progress)
    assert torch.allclose(model.prototypes.norm(dim=1), torch.ones(2))  # both classes seen
    assert (model.queue != queue).any(1).sum() == 16  # 20 keys wrapped around 16 slots
    assert int(model.queue_next) == 20 % 16
    moved = zip(key_before, model.key_net.parameters(), strict=True)
    assert all(not torch.equal(a, b) for a, b in moved)
    model.on_train_epoch_end(progress)
    assert not bool(model.prototype_stage)
    model.on_train_epoch_end(TrainingProgress(epoch=1, epochs=3, step=1, steps_per_epoch=1))
    assert bool(model.prototype_stage)
    model.on_train_epoch_start(TrainingProgress(epoch=2, epochs=3, step=2, steps_per_epoch=1))
    assert model.conf_m == pytest.approx(0.95 - 0.15 * 2 / 3)
    negative = y.repeat_interleave(5) == 0
    rows, confidence = model.confidence_rows(X[mask], torch.ones(20, 2))
    torch.testing.assert_close(confidence[negative], torch.tensor([[1.0, 0.0]]).expand(10, 2))
    torch.testing.assert_close(confidence[~negative], torch.full((10, 2), 0.5))
    assert torch.equal(rows, torch.arange(20))  # one row per instance, found by its values
    torch.manual_seed(5)
    assert torch.isfinite(model.batch_loss(X, mask, y))
    model.on_train_batch_end(progress)
    moved = model.confidence_rows(X[mask], torch.ones(20, 2))[1][~negative]
    assert not torch.allclose(moved, torch.full((10, 2), 0.5))  # towards the prototypes


def step_loop(a, b, reverse=False):
    """``b_t <- a_t b_{t-1} + b_t`` (reverse: ``a_t b_{t+1}``), one position at a time."""
    b = b.clone()
    steps = range(b.shape[0] - 2, -1, -1) if reverse else range(1, b.shape[0])
    for t in steps:
        b[t] = a[t] * b[t + 1 if reverse else t - 1] + b[t]
    return b


@pytest.mark.parametrize("reverse", [False, True])
def test_the_parallel_scan_equals_the_step_loop_at_every_length(reverse):
    g = torch.Generator().manual_seed(5)
    for L in [*range(1, 34), 64, 100]:
        a = torch.rand(L, 3, 2, generator=g, dtype=torch.float64)
        b = torch.randn(L, 3, 2, generator=g, dtype=torch.float64)
        expected = step_loop(a, b, reverse)
        torch.testing.assert_close(linear_scan_(a.clone(), b.clone(), reverse), expected,
                                   msg=f"L = {L}")


@pytest.mark.parametrize("L", [1, 2, 7, 16, 33])
def test_selective_scan_equals_the_step_loop_in_float32_with_per_sequence_parameters(L):
    """The model's own call: ``A [b, d, n]`` and ``D [b, 1, d]`` per sequence, float32, a
    decay range as trained (``delta A`` down to about -40), against the float64 loop."""
    g = torch.Generator().manual_seed(L)
    b, d, n = 4, 6, 5
    inputs = [torch.randn(b, L, d, generator=g), torch.rand(b, L, d, generator=g) * 3,
              -torch.rand(b, d, n, generator=g) * 16, torch.randn(b, L, n, generator=g),
              torch.randn(b, L, n, generator=g), torch.randn(b, 1, d, generator=g)]
    inputs = [t.requires_grad_() for t in inputs]
    doubles = [t.detach().double().requires_grad_() for t in inputs]
    fast, slow = selective_scan(*inputs), naive_scan(*doubles[:5], doubles[5][:, 0])
    torch.testing.assert_close(fast, slow.float(), rtol=1e-5, atol=1e-5)
    weights = torch.randn(fast.shape, generator=g)
    fast_grads = torch.autograd.grad((fast * weights).sum(), inputs)
    slow_grads = torch.autograd.grad((slow * weights.double()).sum(), doubles)
    for a, b_ in zip(fast_grads, slow_grads, strict=True):
        # A's gradient is 0 at L = 1; the states minus their pushes give it as float32
        # rounding of the pushes' size there.
        scale = max(1.0, float(b_.abs().max()))
        torch.testing.assert_close(a, b_.float(), rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.parametrize("block", [1, 10**9])
def test_selective_scan_is_the_same_step_by_step_and_in_parallel(block, monkeypatch):
    """On a CPU large positions are scanned step by step (``STEP_LOOP_BLOCK``): both paths
    give the float64 loop's values and gradients."""
    monkeypatch.setattr(mamba_mil, "STEP_LOOP_BLOCK", block)
    g = torch.Generator().manual_seed(11)
    b, L, d, n = 3, 13, 4, 5
    inputs = [torch.randn(b, L, d, generator=g), torch.rand(b, L, d, generator=g) * 3,
              -torch.rand(b, d, n, generator=g) * 16, torch.randn(b, L, n, generator=g),
              torch.randn(b, L, n, generator=g), torch.randn(b, 1, d, generator=g)]
    inputs = [t.double().requires_grad_() for t in inputs]
    fast, slow = selective_scan(*inputs), naive_scan(*inputs[:5], inputs[5][:, 0])
    torch.testing.assert_close(fast, slow)
    weights = torch.randn(fast.shape, generator=g, dtype=torch.float64)
    for a, b_ in zip(torch.autograd.grad((fast * weights).sum(), inputs),
                     torch.autograd.grad((slow * weights).sum(), inputs), strict=True):
        torch.testing.assert_close(a, b_)
