"""Every built-in model honours the contract: logits [B], padding and order never matter."""

from __future__ import annotations

import pytest
import torch

from mil_assert.registry import builtin_models

DIM = 6
MODELS = builtin_models()


def bag(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, DIM, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(params=list(MODELS))
def model(request):
    torch.manual_seed(0)
    return MODELS[request.param].factory(DIM).eval()


def test_every_spec_is_complete():
    for name, spec in MODELS.items():
        assert spec.citation, name
        assert set(spec.expected) <= {"single_concept", "threshold_poisoned", "false_frequency",
                                      "label_swap"}, name


@torch.no_grad()
def test_logits_have_shape_batch(model):
    X = torch.randn(3, 5, DIM)
    mask = torch.ones(3, 5, dtype=torch.bool)
    out = model(X, mask)
    assert out.shape == (3,) and torch.isfinite(out).all()


@torch.no_grad()
def test_padding_never_changes_the_output(model):
    x = bag(4, 1)
    alone = model(x[None], torch.ones(1, 4, dtype=torch.bool))
    # Padded with garbage rows that the mask hides, inside a batch with a longer bag.
    X = torch.full((2, 9, DIM), 1e3)
    X[0, :4] = x
    X[1] = bag(9, 2)
    mask = torch.zeros(2, 9, dtype=torch.bool)
    mask[0, :4] = True
    mask[1] = True
    batched = model(X, mask)
    torch.testing.assert_close(batched[:1], alone, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_instance_order_never_changes_the_output(model):
    x = bag(7, 3)
    mask = torch.ones(1, 7, dtype=torch.bool)
    permuted = x[torch.randperm(7, generator=torch.Generator().manual_seed(4))]
    torch.testing.assert_close(model(x[None], mask), model(permuted[None], mask),
                               rtol=1e-5, atol=1e-5)
