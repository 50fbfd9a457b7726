"""Every built-in model honours the contract; the MIL-respecting ones are set-monotone."""

from __future__ import annotations

import math

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


# TransMIL's optimised forward and backward (hand-written in models/transmil.py) against the
# model's function written plainly, with autograd throughout and each bag's PPEG grid
# convolved on its own: the algorithm of the implementation before the optimisation.


def _reference_pinv(A: torch.Tensor, iterations: int = 6) -> torch.Tensor:
    eye = torch.eye(A.shape[-1], dtype=A.dtype)
    norms = A.abs().sum(-1).amax(-1) * A.abs().sum(-2).amax(-1)
    Z = A.transpose(-1, -2) / norms[..., None, None]
    for _ in range(iterations):
        AZ = A @ Z
        Z = 0.25 * Z @ (13 * eye - AZ @ (15 * eye - AZ @ (7 * eye - AZ)))
    return Z


def _reference_attention(attention, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    from mil_assert.models._pooling import masked_softmax

    B, L, C = x.shape
    h, m = attention.heads, attention.landmarks
    q, k, v = attention.qkv(x).view(B, L, 3, h, C // h).permute(2, 0, 3, 1, 4)
    q = q * (C // h) ** -0.5
    segment = torch.arange(L) * m // mask.sum(1, keepdim=True).clamp(min=1)
    member = (segment[..., None] == torch.arange(m)) & mask[..., None]
    valid = member.any(1)  # [B, m]
    means = member.to(x.dtype) / member.sum(1).clamp(min=1)[:, None, :]
    q_land = torch.einsum("blm,bhld->bhmd", means, q)
    k_land = torch.einsum("blm,bhld->bhmd", means, k)
    rows = valid[:, None, :, None].to(x.dtype)
    kernel_1 = masked_softmax(q @ k_land.transpose(-1, -2), valid[:, None, None, :])
    kernel_2 = (masked_softmax(q_land @ k_land.transpose(-1, -2), valid[:, None, None, :]) * rows
                + torch.diag_embed((~valid).to(x.dtype))[:, None])
    kernel_3 = masked_softmax(q_land @ k.transpose(-1, -2), mask[:, None, None, :]) * rows
    out = kernel_1 @ (_reference_pinv(kernel_2) @ (kernel_3 @ v))
    return attention.out(out.transpose(1, 2).reshape(B, L, C)) * mask[..., None]


def _reference_ppeg(ppeg, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    C = tokens.shape[-1]
    bags = []
    for b, n in enumerate(lengths.tolist()):
        side = math.ceil(math.sqrt(n))
        grid = tokens.new_zeros(C, side * side)
        grid[:, :n] = tokens[b, :n].T
        grid = grid.view(1, C, side, side)
        out = grid + sum(torch.nn.functional.conv2d(grid, k[0][:, None], bias[0],
                                                    padding=k.shape[-1] // 2, groups=C)
                         for k, bias in zip(ppeg.kernels, ppeg.biases, strict=True))
        bags.append(torch.cat([out.view(C, -1)[:, :n].T, tokens.new_zeros(len(tokens[b]) - n, C)]))
    return torch.stack(bags)


def _reference_transmil(model, X: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    B, N, _ = X.shape
    order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)
    X = X.gather(1, order[..., None].expand(-1, -1, X.shape[-1]))
    lengths = mask.sum(1)
    real = torch.arange(N) < lengths[:, None]
    h = model.embed(torch.where(real[..., None], X, 0.0)) * real[..., None]
    x = torch.cat([model.cls_token(B), h], dim=1)
    seq_mask = torch.cat([real.new_ones(B, 1), real], dim=1)
    for i, layer in enumerate((model.layer_1, model.layer_2)):
        x = x + _reference_attention(layer.attention, layer.norm(x), seq_mask)
        x = x * seq_mask[..., None]
        if i == 0:
            x = torch.cat([x[:, :1], _reference_ppeg(model.ppeg, x[:, 1:], lengths)], dim=1)
    return model.head(model.norm(x[:, 0])).squeeze(-1)


@pytest.mark.parametrize("sizes", [(13, 9, 1, 5, 12, 7, 2, 13), (40, 3, 17, 280, 64)])
def test_transmil_computes_its_reference_function_and_gradients(sizes):
    """Logits and every parameter's gradient equal the plain implementation's in float64,
    on bags with scattered padding, bags shorter than the 8 landmarks (empty landmarks) and
    a bag past the dense PPEG canvas (280 instances: a 17 x 17 grid, the convolution)."""
    torch.manual_seed(3)
    model = MODELS["transmil"].factory(DIM).double()
    g = torch.Generator().manual_seed(4)
    N = max(sizes) + 2
    X = torch.randn(len(sizes), N, DIM, generator=g, dtype=torch.float64)
    mask = torch.zeros(len(sizes), N, dtype=torch.bool)
    for b, n in enumerate(sizes):  # real instances scattered among the padding
        mask[b, torch.randperm(N, generator=g)[:n]] = True
    weights = torch.randn(len(sizes), generator=g, dtype=torch.float64)
    logits, grads = {}, {}
    for name in ("fast", "reference"):
        model.zero_grad()
        logits[name] = model(X, mask) if name == "fast" else _reference_transmil(model, X, mask)
        (logits[name] * weights).sum().backward()
        grads[name] = {p: t.grad.clone() for p, t in model.named_parameters()}
    torch.testing.assert_close(logits["fast"], logits["reference"], rtol=1e-9, atol=1e-10)
    for p in grads["reference"]:
        torch.testing.assert_close(grads["fast"][p], grads["reference"][p], rtol=1e-8, atol=1e-10,
                                   msg=p)
