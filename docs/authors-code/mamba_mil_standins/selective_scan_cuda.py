"""Stand-in for the compiled ``selective_scan_cuda`` extension of mamba_ssm, written here.

The authors' ``SelectiveScanFn`` and ``MambaInnerFn(NoOutProj)`` (their vendored
``mamba/mamba_ssm/ops/selective_scan_interface.py``) call, with their own hand-written backward:

- ``fwd(u [b, d, L], delta [b, d, L], A [d, n], B, C ([b, n, L] or [b, 1, n, L]), D [d] | None,
  z [b, d, L] | None, delta_bias [d] | None, delta_softplus: bool)`` -> ``[out, x]`` plus
  ``out_z = out * silu(z)`` when ``z`` is given. ``out`` is the selective scan
  ``h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t``, ``out_t = C_t h_t + D u_t`` (with
  ``delta <- softplus(delta + delta_bias)``), the function of ``selective_scan_ref`` in the
  authors' vendored file (Apache-2.0, Tri Dao and Albert Gu; ``repo/mamba/LICENSE``), written
  here as one multiply-add per position. ``x`` is the kernel's chunk intermediates
  ``[b, d, chunks, 2n]`` with one position a chunk: its odd entries hold the state after each
  position, so ``x[:, :, -1, 1::2]`` (what ``SelectiveScanFn`` reads as ``last_state``) is the
  last state, as in the kernel, and the backward reads the states instead of recomputing them.
- ``bwd(u, delta, A, B, C, D, z, delta_bias, dout, x, out, dz | None, delta_softplus,
  recompute_out_z)`` -> ``[du, ddelta, dA, dB, dC, dD, ddelta_bias]`` plus ``dz`` (and
  ``out_z`` if ``recompute_out_z``) when ``z`` is given: the gradients of that function, written
  out (the reverse recurrence ``g_t = C_t dy_t + exp(delta_{t+1} A) g_{t+1}``), ``dout`` being
  the gradient of ``out_z`` (of ``out`` without ``z``). Like the kernel, a ``dz`` passed in is
  written in place (the authors pass a view into their ``dxz``).

Real ``A`` and one group of ``B``/``C`` only (what SRMamba passes); anything else raises.
``../check_gradients.py`` and ``../check_scan.py`` check this against autograd through
``selective_scan_ref`` itself.
"""

import torch
import torch.nn.functional as F


def _per_position(M: torch.Tensor, name: str) -> torch.Tensor:
    """``B``/``C`` ``[b, n, L]`` or ``[b, 1, n, L]`` -> ``[b, 1, L, n]`` (float32)."""
    if M.dim() == 4:
        if M.shape[1] != 1:
            raise NotImplementedError(f"stand-in scan: {name} with {M.shape[1]} groups")
        M = M[:, 0]
    if M.dim() != 3:
        raise NotImplementedError(f"stand-in scan: {name} of shape {tuple(M.shape)}")
    return M.float().transpose(1, 2)[:, None]


def _steps(delta, A, delta_bias, delta_softplus):
    raw = delta.float()
    if delta_bias is not None:
        raw = raw + delta_bias.float()[:, None]
    dt = F.softplus(raw) if delta_softplus else raw
    decay = torch.exp(dt[..., None] * A.float()[:, None, :])  # [b, d, L, n]
    return raw, dt, decay


def fwd(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    if A.is_complex():
        raise NotImplementedError("stand-in scan: complex A")
    b, d, L = u.shape
    n = A.shape[1]
    _, dt, decay = _steps(delta, A, delta_bias, delta_softplus)
    push = (dt * u.float())[..., None] * _per_position(B, "B")  # [b, d, L, n]
    x = u.new_zeros(b, d, L, 2 * n, dtype=torch.float32)
    h = x[..., 1::2]
    h[:, :, 0] = push[:, :, 0]
    for t in range(1, L):
        torch.addcmul(push[:, :, t], decay[:, :, t], h[:, :, t - 1], out=h[:, :, t])
    out = (h * _per_position(C, "C")).sum(-1)
    if D is not None:
        out = out + D.float()[:, None] * u.float()
    out = out.to(u.dtype)
    if z is None:
        return [out, x]
    return [out, x, out * F.silu(z)]


def bwd(u, delta, A, B, C, D, z, delta_bias, dout, x, out, dz=None, delta_softplus=False,
        recompute_out_z=False):
    b, d, L = u.shape
    raw, dt, decay = _steps(delta, A, delta_bias, delta_softplus)
    h = x[..., 1::2]  # [b, d, L, n]
    Bp, Cp = _per_position(B, "B"), _per_position(C, "C")
    uf, dout = u.float(), dout.float()
    if z is not None:
        gate = torch.sigmoid(z.float())
        dy = dout * z.float() * gate  # silu(z)
        grad_z = dout * out.float() * gate * (1 + z.float() * (1 - gate))
    else:
        dy = dout
    # g_t: the gradient of the state h_t, through out_t and through h_{t+1}.
    g = dy[..., None] * Cp  # [b, d, L, n]
    for t in range(L - 2, -1, -1):
        g[:, :, t].addcmul_(decay[:, :, t + 1], g[:, :, t + 1])
    dC = (dy[..., None] * h).sum(1).transpose(1, 2)  # [b, n, L]
    h_prev = torch.cat([h.new_zeros(b, d, 1, h.shape[-1]), h[:, :, :-1]], 2)
    through_decay = g * h_prev * decay  # gradient of dt * A, per state
    gB = (g * Bp).sum(-1)  # [b, d, L]
    ddt = (through_decay * A.float()[:, None, :]).sum(-1) + gB * uf
    dA = (through_decay * dt[..., None]).sum((0, 2))
    dB = (g * (dt * uf)[..., None]).sum(1).transpose(1, 2)  # [b, n, L]
    du = gB * dt
    dD = None
    if D is not None:
        du = du + D.float()[:, None] * dy
        dD = (dy * uf).sum((0, 2)).to(D.dtype)
    draw = ddt * torch.sigmoid(raw) if delta_softplus else ddt
    ddelta_bias = draw.sum((0, 2)).to(delta_bias.dtype) if delta_bias is not None else None
    result = [du.to(u.dtype), draw.to(delta.dtype), dA.to(A.dtype),
              dB.reshape(B.shape).to(B.dtype), dC.reshape(C.shape).to(C.dtype), dD, ddelta_bias]
    if z is not None:
        grad_z = grad_z.to(z.dtype)
        if dz is not None:
            dz.copy_(grad_z)
            grad_z = dz
        result.append(grad_z)
        if recompute_out_z:
            result.append(out * F.silu(z))
    return result
