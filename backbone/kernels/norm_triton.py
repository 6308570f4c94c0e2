"""Triton RMSNorm: one program per row, the same arithmetic as `backbone.norms.RMSNorm`.

    y = (weight.float() * (x * rsqrt(mean(x^2) + eps))).to(x.dtype), statistics in fp32.

`residual_rms_norm_triton` is the seam between two blocks: the residual add ``new = x + y`` (rounded to
the activations' dtype, as the separate add rounds) and the next block's RMSNorm of ``new``, in one pass
that reads x and y once and writes ``new`` and the norm once; separately the add and the norm are two
launches and ``new`` is written and read back in between.

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


@triton.jit
def round_to_bf16(value):
    """fp32 ``value`` rounded to the nearest bf16 (ties to even), kept in fp32; NaN stays NaN. Done on the
    bits: the compiler drops a plain fp32 -> bf16 -> fp32 round trip."""
    bits = value.to(tl.uint32, bitcast=True)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return tl.where(value != value, value, bits.to(tl.float32, bitcast=True))


@triton.jit
def _residual_rms_norm_kernel(
    x_ptr, y_ptr, w_ptr, new_ptr, out_ptr,
    width, sx_row, sy_row, sn_row, so_row, eps,
    ROUND_BF16: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    mask = offs < width
    x = tl.load(x_ptr + row * sx_row + offs, mask=mask, other=0.0).to(tl.float32)
    y = tl.load(y_ptr + row * sy_row + offs, mask=mask, other=0.0).to(tl.float32)
    new = x + y
    if ROUND_BF16:
        new = round_to_bf16(new)
    tl.store(new_ptr + row * sn_row + offs, new.to(new_ptr.dtype.element_ty), mask=mask)
    mean_square = tl.sum(new * new, axis=0) / width
    normed = new * tl.math.rsqrt(mean_square + eps)
    w = tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * so_row + offs, (w * normed).to(out_ptr.dtype.element_ty), mask=mask)


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


# Activations the residual seam takes: bf16 (its sum rounded on the bits) and fp32 (no rounding to do).
RESIDUAL_DTYPES = (torch.float32, torch.bfloat16)


def residual_rms_norm_usable(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether `residual_rms_norm_triton` takes these operands (the device is the caller's check)."""
    return (
        rms_norm_usable(x, weight)
        and x.dtype in RESIDUAL_DTYPES
        and y.dtype == x.dtype
        and y.shape == x.shape
    )


def residual_rms_norm_triton(
    x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``new = x + y`` and the RMSNorm of ``new`` with `weight` [d] over the last dimension: (new, normed),
    both contiguous in x's dtype (x, y [..., d] of one dtype of `RESIDUAL_DTYPES`)."""
    width = x.shape[-1]
    x_rows, y_rows = x.reshape(-1, width), y.reshape(-1, width)
    if x_rows.stride(-1) != 1:
        x_rows = x_rows.contiguous()
    if y_rows.stride(-1) != 1:
        y_rows = y_rows.contiguous()
    new = torch.empty(x_rows.shape, dtype=x.dtype, device=x.device)
    normed = torch.empty_like(new)
    if new.shape[0]:
        block = triton.next_power_of_2(width)
        _residual_rms_norm_kernel[(new.shape[0],)](
            x_rows, y_rows, weight if weight.stride(0) == 1 else weight.contiguous(), new, normed,
            width, x_rows.stride(0), y_rows.stride(0), new.stride(0), normed.stride(0), eps,
            ROUND_BF16=x.dtype == torch.bfloat16, BLOCK=block,
            num_warps=min(max(block // 256, 1), 8),
        )  # fmt: skip
    return new.view(x.shape), normed.view(x.shape)
