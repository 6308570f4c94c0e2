"""Triton RMSNorm: one program per row, the same arithmetic as `backbone.norms.RMSNorm`.

    y = (weight.float() * (x * rsqrt(mean(x^2) + eps))).to(x.dtype), statistics in fp32.

A row is held whole in registers, so the width is bounded by `MAX_NORM_WIDTH`; any number of rows runs.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

MAX_NORM_WIDTH = 8192
NORM_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@triton.jit
def _rms_norm_kernel(
    x_ptr, w_ptr, out_ptr,
    width, sx_row, so_row, eps,
    BLOCK: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    mask = offs < width
    x = tl.load(x_ptr + row * sx_row + offs, mask=mask, other=0.0).to(tl.float32)
    mean_square = tl.sum(x * x, axis=0) / width
    x = x * tl.math.rsqrt(mean_square + eps)
    w = tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * so_row + offs, (w * x).to(out_ptr.dtype.element_ty), mask=mask)


def rms_norm_usable(hidden: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether `rms_norm_triton` takes these operands (width and dtypes; the device is the caller's check)."""
    width = hidden.shape[-1]
    return (
        0 < width <= MAX_NORM_WIDTH
        and weight.shape == (width,)
        and hidden.dtype in NORM_DTYPES
        and weight.dtype in NORM_DTYPES
    )


def rms_norm_triton(hidden: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm over the last dimension of `hidden` [..., d] with `weight` [d]; result in hidden's dtype."""
    width = hidden.shape[-1]
    rows = hidden.reshape(-1, width)
    if rows.stride(-1) != 1:
        rows = rows.contiguous()
    out = torch.empty(rows.shape, dtype=hidden.dtype, device=hidden.device)
    if rows.shape[0] == 0:
        return out.view(hidden.shape)
    weight = weight if weight.stride(0) == 1 else weight.contiguous()
    block = triton.next_power_of_2(width)
    _rms_norm_kernel[(rows.shape[0],)](
        rows, weight, out,
        width, rows.stride(0), out.stride(0), eps,
        BLOCK=block,
        num_warps=min(max(block // 256, 1), 8),
    )  # fmt: skip
    return out.view(hidden.shape)
