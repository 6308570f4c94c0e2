"""Triton kernels of the Mamba-2 mixer's prefill (more than one token): the causal conv and the time steps.

The reference (`Mamba2Mixer._causal_conv`) runs the depthwise conv as K shifted multiply-adds over an
fp32, channels-first copy of the sequence, about ten passes over [length, channels] plus the copies
that undo the transposition. `causal_conv_silu` does the conv, bias and SiLU in one pass over the
in_proj output's xBC view, channels last, accumulating in fp32 in the reference's order; each program
walks its positions in turn and keeps the last three input rows in registers, so every row is read
once. The token mask is applied to the inputs it reads and to the outputs, as the reference masks
before and after the conv. With a conv state, the positions before the first token are read from
it, and it is then replaced by the last K-1 (masked) inputs.

`discretize` forms dt = softplus(dt_raw + dt_bias) (clamped to the time-step limit, zero on masked
tokens) and A = -exp(A_log) in one launch, where the reference takes six to eight small kernels (casts,
the sum, softplus, the clamp, the mask; exp and negation). The mixer runs the rest of its prefill on the
Triton scan and on the gated-norm kernel of `mamba_step_triton`.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .ssd_common import discretized_dt

# the conv's tile: on an H200 (6,144 channels of in_proj's strided output) 8 positions x 256 channels
# with 2 warps was the fastest of 48 tiles at 7,517 and 16,144 tokens and within 0.3 µs of the fastest
# (8 x 128) at 3,344 (BENCHMARKS.md)
_BLOCK_L = 8
_BLOCK_C = 256
_CONV_WARPS = 2
_DT_ROWS = 64  # token rows per program of the time-step kernel


@triton.jit
def _conv_input_row(
    x_ptr, mask_ptr, state_ptr, b, src, offs_c, mask_c, length,
    sx_b, sx_l, sx_c, sm_b, sm_l, ss_b, ss_c, ss_k,
    K: tl.constexpr, HAS_MASK: tl.constexpr, HAS_STATE: tl.constexpr,
):  # fmt: skip
    """Input row ``src`` of the conv as fp32 [BLOCK_C]: masked by the token mask, read from the conv
    state before the first position (zero there without one) and past the end."""
    inside = (src >= 0) & (src < length)
    v = tl.load(x_ptr + b * sx_b + src * sx_l + offs_c * sx_c, mask=mask_c & inside, other=0.0)
    if HAS_MASK:
        v = v * tl.load(mask_ptr + b * sm_b + src * sm_l, mask=inside, other=0).to(v.dtype)
    if HAS_STATE:
        before = (src < 0) & (src + (K - 1) >= 0)
        past = tl.load(
            state_ptr + b * ss_b + offs_c * ss_c + (src + (K - 1)) * ss_k, mask=mask_c & before, other=0.0
        )
        v = tl.where(before, past.to(v.dtype), v)
    return v.to(tl.float32)


@triton.jit
def _tap_weight(w_ptr, offs_c, mask_c, sw_c, sw_k, k):
    """Tap ``k`` of the conv's weight [c, K] for the program's channels, fp32 [BLOCK_C]."""
    return tl.load(w_ptr + offs_c * sw_c + k * sw_k, mask=mask_c, other=0.0).to(tl.float32)


@triton.jit
def _causal_conv_silu_kernel(
    x_ptr, w_ptr, bias_ptr, mask_ptr, state_ptr, out_ptr,
    length, channels,
    sx_b, sx_l, sx_c,
    sw_c, sw_k,
    sm_b, sm_l,
    ss_b, ss_c, ss_k,
    so_b, so_l,
    K: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_MASK: tl.constexpr, HAS_STATE: tl.constexpr,
    BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    # One program: BLOCK_L positions of BLOCK_C channels, a position at a time. The three inputs before
    # the current one stay in registers (p1 the last, p3 three back), so with K <= 4 (the family's 4)
    # every input row is loaded once, not once per tap; the first three turns only fill them. Taps are
    # summed first to last, as the reference's loop over them sums.
    b = tl.program_id(0)
    first = tl.program_id(1) * BLOCK_L
    offs_c = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < channels
    w_last = _tap_weight(w_ptr, offs_c, mask_c, sw_c, sw_k, K - 1)
    if K >= 2:
        w1 = _tap_weight(w_ptr, offs_c, mask_c, sw_c, sw_k, K - 2)
    if K >= 3:
        w2 = _tap_weight(w_ptr, offs_c, mask_c, sw_c, sw_k, K - 3)
    if K >= 4:
        w3 = _tap_weight(w_ptr, offs_c, mask_c, sw_c, sw_k, K - 4)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_c, mask=mask_c, other=0.0).to(tl.float32)
    p1 = tl.zeros((BLOCK_C,), dtype=tl.float32)
    p2 = tl.zeros((BLOCK_C,), dtype=tl.float32)
    p3 = tl.zeros((BLOCK_C,), dtype=tl.float32)
    for i in tl.static_range(-3, BLOCK_L):
        pos = first + i
        current = _conv_input_row(
            x_ptr, mask_ptr, state_ptr, b, pos, offs_c, mask_c, length,
            sx_b, sx_l, sx_c, sm_b, sm_l, ss_b, ss_c, ss_k, K, HAS_MASK, HAS_STATE,
        )  # fmt: skip
        if i >= 0:
            acc = tl.zeros((BLOCK_C,), dtype=tl.float32)
            if K > 4:  # taps further back than the kept rows load their rows again
                for k in tl.static_range(K - 4):
                    far = _conv_input_row(
                        x_ptr, mask_ptr, state_ptr, b, pos - (K - 1) + k, offs_c, mask_c, length,
                        sx_b, sx_l, sx_c, sm_b, sm_l, ss_b, ss_c, ss_k, K, HAS_MASK, HAS_STATE,
                    )  # fmt: skip
                    acc += far * _tap_weight(w_ptr, offs_c, mask_c, sw_c, sw_k, k)
            if K >= 4:
                acc += p3 * w3
            if K >= 3:
                acc += p2 * w2
            if K >= 2:
                acc += p1 * w1
            acc += current * w_last
            if HAS_BIAS:
                acc += bias
            out = (acc * tl.sigmoid(acc)).to(out_ptr.dtype.element_ty)
            if HAS_MASK:
                out = out * tl.load(mask_ptr + b * sm_b + pos * sm_l, mask=pos < length, other=0).to(
                    out.dtype
                )
            tl.store(out_ptr + b * so_b + pos * so_l + offs_c, out, mask=mask_c & (pos < length))
        p3 = p2
        p2 = p1
        p1 = current


def causal_conv_silu(
    xbc: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    token_mask: torch.Tensor | None = None,
    conv_state: torch.Tensor | None = None,
) -> torch.Tensor:
    """Depthwise causal conv + SiLU over xbc [b, L, c] (any strides), weight [c, K], bias [c].

    token_mask [b, L] (1 = real token) zeroes masked inputs and outputs; conv_state [b, c, K-1] holds the
    inputs before the first position and is replaced, in place, by the last K-1 masked inputs.
    Returns a contiguous [b, L, c] in xbc's dtype.
    """
    batch, length, channels = xbc.shape
    kernel = weight.shape[1]
    out = torch.empty(batch, length, channels, dtype=xbc.dtype, device=xbc.device)
    new_state = None
    if conv_state is not None and kernel > 1:
        tail = xbc[:, -(kernel - 1) :]
        if token_mask is not None:
            tail = tail * token_mask[:, -(kernel - 1) :, None].to(xbc.dtype)
        new_state = torch.cat([conv_state.to(xbc.dtype), tail.transpose(1, 2)], dim=-1)[..., -(kernel - 1) :]
    mask = token_mask if token_mask is not None else xbc
    state = conv_state if conv_state is not None else xbc
    grid = (batch, triton.cdiv(length, _BLOCK_L), triton.cdiv(channels, _BLOCK_C))
    _causal_conv_silu_kernel[grid](
        xbc, weight, bias if bias is not None else weight, mask, state, out,
        length, channels,
        *xbc.stride(), *weight.stride(), mask.stride(0), mask.stride(1),
        state.stride(0), state.stride(1), state.stride(-1), out.stride(0), out.stride(1),
        K=kernel, HAS_BIAS=bias is not None, HAS_MASK=token_mask is not None,
        HAS_STATE=conv_state is not None and kernel > 1, BLOCK_L=_BLOCK_L, BLOCK_C=_BLOCK_C,
        num_warps=_CONV_WARPS,
    )  # fmt: skip
    if new_state is not None:
        conv_state.copy_(new_state)  # after the kernel read the old state (same stream)
    return out


@triton.jit
def _discretize_kernel(
    dt_ptr, bias_ptr, a_log_ptr, mask_ptr, dt_out_ptr, a_out_ptr,
    rows, length, heads, dt_low, dt_high,
    sd_b, sd_l, sd_h,
    sm_b, sm_l,
    HAS_MASK: tl.constexpr, HAS_LIMIT: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_H: tl.constexpr,
):  # fmt: skip
    offs_r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)  # flat (batch, position) rows
    offs_h = tl.arange(0, BLOCK_H)
    mask_r = offs_r < rows
    mask_h = offs_h < heads
    b = (offs_r // length).to(tl.int64)
    pos = (offs_r % length).to(tl.int64)
    both = mask_r[:, None] & mask_h[None, :]
    raw = tl.load(dt_ptr + (b * sd_b + pos * sd_l)[:, None] + offs_h[None, :] * sd_h, mask=both, other=0.0)
    bias = tl.load(bias_ptr + offs_h, mask=mask_h, other=0.0).to(tl.float32)
    dt = discretized_dt(raw.to(tl.float32), bias[None, :], dt_low, dt_high, HAS_LIMIT)
    if HAS_MASK:
        keep = tl.load(mask_ptr + b * sm_b + pos * sm_l, mask=mask_r, other=0).to(tl.float32)
        dt = dt * keep[:, None]
    tl.store(dt_out_ptr + offs_r[:, None].to(tl.int64) * heads + offs_h[None, :], dt, mask=both)
    a_log = tl.load(a_log_ptr + offs_h, mask=mask_h & (tl.program_id(0) == 0), other=0.0).to(tl.float32)
    tl.store(a_out_ptr + offs_h, -tl.exp(a_log), mask=mask_h & (tl.program_id(0) == 0))


def discretize(
    dt_raw: torch.Tensor,
    dt_bias: torch.Tensor,
    A_log: torch.Tensor,
    time_step_limit: tuple[float, float] = (0.0, math.inf),
    token_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The scan's time steps and decay rates from the mixer's raw ones, in one launch.

    dt_raw [b, L, h] (any strides, e.g. the in_proj output's view), dt_bias and A_log [h], token_mask
    [b, L] (1 = real token) or None. Returns dt = softplus(dt_raw + dt_bias), clamped to
    `time_step_limit` where it limits anything and zero on masked tokens, as a contiguous fp32 [b, L, h],
    and A = -exp(A_log) as fp32 [h]: `Mamba2Mixer.discretize_dt` and the mixer's A, with the same
    arithmetic in fp32.
    """
    batch, length, heads = dt_raw.shape
    low, high = time_step_limit
    dt = torch.empty(batch, length, heads, dtype=torch.float32, device=dt_raw.device)
    A = torch.empty(heads, dtype=torch.float32, device=dt_raw.device)
    rows = batch * length
    mask = token_mask if token_mask is not None else dt_raw
    grid = (max(1, triton.cdiv(rows, _DT_ROWS)),)
    _discretize_kernel[grid](
        dt_raw, dt_bias, A_log, mask, dt, A,
        rows, max(length, 1), heads, float(low), float(min(high, 3.0e38)),
        *dt_raw.stride(), mask.stride(0), mask.stride(1),
        HAS_MASK=token_mask is not None, HAS_LIMIT=low > 0.0 or high < math.inf,
        BLOCK_R=_DT_ROWS, BLOCK_H=triton.next_power_of_2(heads),
        num_warps=4,
    )  # fmt: skip
    return dt, A
