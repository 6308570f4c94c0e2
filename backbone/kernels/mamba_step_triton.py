"""Triton kernels of the one-token Mamba-2 decode step, between the mixer's in_proj and out_proj.

The reference step (`Mamba2Mixer.forward` with a state and one token) runs some forty small kernels per
layer; here it is three, each reading the mixer's split views of the in_proj output in place:

1. `conv_step_silu`: the causal depthwise conv over the stored K-1 inputs and the new one, plus bias and
   SiLU, in fp32; the conv state is shifted by one and the new input appended, in place.
2. `ssd_step_discretized`: the SSD step kernel of `ssd_triton` forming dt = softplus(dt_raw + dt_bias)
   (limited to `time_step_limit`) and A = -exp(A_log) itself,
   then the recurrence step with the skip D, updating the fp32 SSM state in place.
3. `gated_group_rmsnorm`: y * silu(gate), RMS-normalised per group of channels, times the weight.

All arithmetic is fp32 and follows the reference's order of operations; no step synchronises with the
host, so `mamba_decode_step` can be recorded in a CUDA graph.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import triton
import triton.language as tl

from .ssd_triton import _ssd_step_kernel

if TYPE_CHECKING:
    from ..cache import MambaState
    from ..mamba2 import Mamba2Mixer

# Channels per program of the conv kernel, and the (head channels x state) elements per program of the
# SSD kernel: small enough that a single row still spreads over many programs.
_CONV_BLOCK = 64
_SSD_TILE = 2048


@triton.jit
def _conv_step_silu_kernel(
    x_ptr, state_ptr, w_ptr, bias_ptr, out_ptr,
    channels,
    sx_b, sx_c,
    ss_b, ss_c, ss_k,
    sw_c, sw_k,
    so_b,
    K: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(0)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    offs_k = tl.arange(0, BLOCK_K)
    mask_c = offs_c < channels
    col = offs_k[None, :]
    in_state = mask_c[:, None] & (col < K - 1)

    x = tl.load(x_ptr + b * sx_b + offs_c * sx_c, mask=mask_c, other=0.0)
    state_row = state_ptr + b * ss_b + offs_c[:, None] * ss_c
    past = tl.load(state_row + col * ss_k, mask=in_state, other=0.0).to(x.dtype)
    # Column K-1 holds the new input: padded = cat(state, x) along time, in the input dtype.
    padded = tl.where(col == K - 1, x[:, None], past).to(tl.float32)
    w = tl.load(w_ptr + offs_c[:, None] * sw_c + col * sw_k, mask=mask_c[:, None] & (col < K), other=0.0)
    acc = tl.sum(padded * w.to(tl.float32), axis=1)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_c, mask=mask_c, other=0.0).to(tl.float32)
    out = acc * tl.sigmoid(acc)
    tl.store(out_ptr + b * so_b + offs_c, out.to(out_ptr.dtype.element_ty), mask=mask_c)

    # Shift left by one: new[k] = old[k + 1] for k < K-2, new[K-2] = x.
    later = tl.load(state_row + (col + 1) * ss_k, mask=mask_c[:, None] & (col + 1 < K - 1), other=0.0)
    shifted = tl.where(col == K - 2, x[:, None], later.to(x.dtype))
    tl.store(state_row + col * ss_k, shifted.to(state_ptr.dtype.element_ty), mask=in_state)


@triton.jit
def _gated_group_rmsnorm_kernel(
    y_ptr, gate_ptr, w_ptr, out_ptr,
    group_size, eps,
    sy_b, sg_b, so_b,
    BLOCK: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(0)
    offs = tl.program_id(1) * group_size + tl.arange(0, BLOCK)
    mask = tl.arange(0, BLOCK) < group_size
    y = tl.load(y_ptr + b * sy_b + offs, mask=mask, other=0.0).to(tl.float32)
    gate = tl.load(gate_ptr + b * sg_b + offs, mask=mask, other=0.0).to(tl.float32)
    x = y * (gate * tl.sigmoid(gate))
    scale = tl.rsqrt(tl.sum(x * x, axis=0) / group_size + eps)
    w = tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + b * so_b + offs, (w * (x * scale)).to(out_ptr.dtype.element_ty), mask=mask)


def conv_step_silu(
    xbc: torch.Tensor, conv_state: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """One causal depthwise conv step + SiLU. xbc [b, c] (unit stride along c), conv_state [b, c, K-1]
    (shifted in place, the new input appended), weight [c, K], bias [c]. Returns [b, c] in xbc's dtype."""
    batch, channels = xbc.shape
    kernel = weight.shape[1]
    out = torch.empty(batch, channels, dtype=xbc.dtype, device=xbc.device)
    block_c = min(_CONV_BLOCK, triton.next_power_of_2(channels))
    grid = (batch, triton.cdiv(channels, block_c))
    _conv_step_silu_kernel[grid](
        xbc, conv_state, weight, bias if bias is not None else weight, out,
        channels,
        *xbc.stride(), *conv_state.stride(), *weight.stride(), out.stride(0),
        K=kernel, HAS_BIAS=bias is not None, BLOCK_C=block_c, BLOCK_K=max(2, triton.next_power_of_2(kernel)),
        num_warps=2,
    )  # fmt: skip
    return out


def ssd_step_discretized(
    state: torch.Tensor,
    x: torch.Tensor,
    dt_raw: torch.Tensor,
    dt_bias: torch.Tensor,
    A_log: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor,
    time_step_limit: tuple[float, float] = (0.0, math.inf),
) -> torch.Tensor:
    """One SSD step from raw inputs, updating `state` [b, h, p, n] (fp32) in place.

    dt = softplus(dt_raw + dt_bias) clamped to `time_step_limit` (when it limits anything), A = -exp(A_log).
    x [b, h, p], dt_raw [b, h], dt_bias, A_log and D [h], B and C [b, g, n]. Returns y [b, h, p] in fp32.
    """
    batch, heads, head_dim = x.shape
    groups, dstate = B.shape[1], B.shape[2]
    if state.dtype != torch.float32:
        raise ValueError(f"the SSM state must be float32, got {state.dtype}")
    low, high = time_step_limit
    y = torch.empty(batch, heads, head_dim, dtype=torch.float32, device=x.device)
    block_n = triton.next_power_of_2(dstate)
    block_p = min(triton.next_power_of_2(head_dim), max(1, _SSD_TILE // block_n))
    grid = (batch * heads, triton.cdiv(head_dim, block_p))
    _ssd_step_kernel[grid](
        state, x, dt_raw, dt_bias, A_log, B, C, D, y,
        heads, heads // groups, head_dim, dstate, float(low), float(min(high, 3.0e38)),
        *state.stride(), *x.stride(), *dt_raw.stride(), *B.stride(), *C.stride(),
        HAS_D=True, DISCRETIZE=True, HAS_LIMIT=low > 0.0 or high < math.inf, BLOCK_P=block_p,
        BLOCK_N=block_n, num_warps=4,
    )  # fmt: skip
    return y


def gated_group_rmsnorm(
    y: torch.Tensor,
    gate: torch.Tensor,
    weight: torch.Tensor,
    n_groups: int,
    eps: float,
    out_dtype: torch.dtype,
) -> torch.Tensor:
    """`GatedGroupRMSNorm` of one token: y and gate [b, inner] (unit stride along inner), weight [inner].
    Returns [b, inner] in `out_dtype`."""
    batch, inner = y.shape
    group_size = inner // n_groups
    out = torch.empty(batch, inner, dtype=out_dtype, device=y.device)
    block = triton.next_power_of_2(group_size)
    # a warp per 256 elements: the released 512-wide groups on 2 warps took 24.0 / 49.8 / 101.5 µs on an
    # H200 at 3,344 / 7,517 / 16,144 rows, against 27.6 / 56.3 / 116.2 on 4 (a copy of the same bytes: 22.6
    # / 46.6 / 95.8)
    _gated_group_rmsnorm_kernel[(batch, n_groups)](
        y, gate, weight, out,
        group_size, eps,
        y.stride(0), gate.stride(0), out.stride(0),
        BLOCK=block, num_warps=max(1, min(8, block // 256)),
    )  # fmt: skip
    return out


def mamba_decode_step(mixer: Mamba2Mixer, hidden: torch.Tensor, state: MambaState) -> torch.Tensor:
    """`mixer(hidden, None, state)` for one token per row on the fused kernels: hidden [b, 1, d] -> [b, 1, d].

    Updates `state.conv` and `state.ssm` (fp32) in place, as the reference step does.
    """
    batch = hidden.shape[0]
    inner, conv_dim, heads = mixer.inner, mixer.conv_dim, mixer.num_heads
    groups, dstate = mixer.n_groups, mixer.state_size
    proj = mixer.in_proj(hidden)[:, 0]
    gate, xbc, dt_raw = proj.split([inner, conv_dim, heads], dim=-1)
    xbc = conv_step_silu(xbc, state.conv, mixer.conv1d.weight[:, 0], mixer.conv1d.bias)
    x = xbc[:, :inner].unflatten(-1, (heads, mixer.head_dim))
    B = xbc[:, inner : inner + groups * dstate].unflatten(-1, (groups, dstate))
    C = xbc[:, inner + groups * dstate :].unflatten(-1, (groups, dstate))
    y = ssd_step_discretized(
        state.ssm, x, dt_raw, mixer.dt_bias, mixer.A_log, B, C, mixer.D, mixer.time_step_limit
    )
    norm = mixer.norm
    y = gated_group_rmsnorm(y.view(batch, inner), gate, norm.weight, norm.n_groups, norm.eps, hidden.dtype)
    return mixer.out_proj(y)[:, None]
