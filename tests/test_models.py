"""Every built-in model honours the contract; the MIL-respecting ones are set-monotone."""

from __future__ import annotations

import pytest
import torch

from mil_assert.contract import check_contract
from mil_assert.harness import build_model
from mil_assert.registry import builtin_models

DIM = 6
MODELS = builtin_models()
ORDER_DEPENDENT = {
    "transmil": "PPEG is a convolutional position encoding over instance order",
    "rrt_mil": "R-MSA's regions and EPEG read each instance's place on the bag's grid",
    "mamba_mil": "selective scans read the instances in sequence (and reordered by stride)",
}


def bag(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, DIM, generator=torch.Generator().manual_seed(seed))


def test_every_spec_is_complete():
    for name, spec in MODELS.items():
        assert spec.citation, name
        assert set(spec.expected) <= {"single_concept", "threshold_poisoned", "false_frequency",
                                      "label_swap"}, name


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_honours_the_contract(name):
    """The one contract check the harness runs before training (mil_assert/contract.py):
    shape, finiteness on bags of 1-16 instances, padding, bag independence in eval and
    training mode, determinism and the loss hook; instance order only where by design."""
    outcome = check_contract(build_model(MODELS[name], 0, DIM), DIM)
    assert outcome.ok, outcome.message
    if name in ORDER_DEPENDENT:
        assert not outcome.order_invariant, ORDER_DEPENDENT[name]
    else:
        assert outcome.order_invariant, f"{name}: order changes logits by {outcome.order_change}"


RESPECTING = [name for name, spec in MODELS.items() if spec.respects]


@pytest.mark.parametrize("name", RESPECTING)
@torch.no_grad()
def test_mil_respecting_models_are_set_monotone_and_count_free(name):
    """Adding an instance never lowers the score; duplicating one never changes it."""
    torch.manual_seed(1)
    model = MODELS[name].factory(DIM).eval()
    for seed in range(20):
        x = bag(5, 100 + seed) * 2
        extra = bag(1, 200 + seed) * 3
        base = model(x[None], torch.ones(1, 5, dtype=torch.bool))
        added = model(torch.cat([x, extra])[None], torch.ones(1, 6, dtype=torch.bool))
        assert added >= base - 1e-5
        duplicated = torch.cat([x, x[:2], x[:1]])
        torch.testing.assert_close(model(duplicated[None], torch.ones(1, 8, dtype=torch.bool)),
                                   base, rtol=1e-5, atol=1e-5)
