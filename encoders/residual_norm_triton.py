"""Triton kernel of a ViT block's seam: the scaled residual add and the LayerNorm that follows it, in one pass.

    new = x + (gamma * y)          rounded to bf16 after the product and after the sum, as the
                                   separate tensor operations round;
    normed = LayerNorm(new)        statistics in fp32, result in bf16.

Separately these are three passes over the residual stream (a product, a sum, a norm) and a tensor written
and read back between each; fused, ``x`` and ``y`` are read once and ``new`` and ``normed`` written once.
A program takes `ROW_ELEMENTS // width` rows (rounded to powers of two), each held whole in registers, so
the width is bounded by `MAX_WIDTH`. On an H200 (the ViT's 1,280-wide rows, four timings each, interleaved)
4 rows a program took 131-139 µs for a video pass's 32,576 rows against 153-156 µs with one row a program
(2 rows: 142-143, 8 rows: 139-159), and 81-99 µs against 88-108 µs for an image's 13,322 rows.

Activations are bf16 only (the ViT's inference dtype). The roundings are done on the bits: on the GPU the
compiler drops a plain fp32 → bf16 → fp32 round trip and contracts the product into the sum (one FMA), which
gave a different sum than PyTorch's in about 16% of the elements; fp32 would need the product kept out of
an FMA, which Triton gives no portable way to ask for.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

MAX_WIDTH = 8192
ROW_ELEMENTS = 8192  # elements (padded row width x rows) a program holds: 4 of the ViT's 1,280-wide rows
PARAM_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@triton.jit
def _round_to_bf16(value):
    """fp32 ``value`` rounded to the nearest bf16 (ties to even), kept in fp32; NaN stays NaN."""
    bits = value.to(tl.uint32, bitcast=True)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return tl.where(value != value, value, bits.to(tl.float32, bitcast=True))


@triton.jit
def _scaled_residual_norm_kernel(
    x_ptr, y_ptr, gamma_ptr, w_ptr, b_ptr, new_ptr, normed_ptr,
    n_rows, width, sx_row, sy_row, sn_row, sm_row, eps,
    HAS_BIAS: tl.constexpr, ROWS: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    rows = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    offs = tl.arange(0, BLOCK)
    in_width = offs < width
    mask = (rows < n_rows)[:, None] & in_width[None, :]
    x = tl.load(x_ptr + rows[:, None] * sx_row + offs[None, :], mask=mask, other=0.0).to(tl.float32)
    y = tl.load(y_ptr + rows[:, None] * sy_row + offs[None, :], mask=mask, other=0.0).to(tl.float32)
    gamma = tl.load(gamma_ptr + offs, mask=in_width, other=0.0).to(tl.float32)
    value = _round_to_bf16(x + _round_to_bf16(gamma[None, :] * y))
    tl.store(new_ptr + rows[:, None] * sn_row + offs[None, :], value.to(tl.bfloat16), mask=mask)

    mean = tl.sum(value, axis=1) / width
    centred = tl.where(mask, value - mean[:, None], 0.0)
    variance = tl.sum(centred * centred, axis=1) / width
    weight = tl.load(w_ptr + offs, mask=in_width, other=0.0).to(tl.float32)
    out = centred * tl.math.rsqrt(variance + eps)[:, None] * weight[None, :]
    if HAS_BIAS:
        out += tl.load(b_ptr + offs, mask=in_width, other=0.0).to(tl.float32)[None, :]
    tl.store(
        normed_ptr + rows[:, None] * sm_row + offs[None, :], out.to(normed_ptr.dtype.element_ty), mask=mask
    )


def scaled_residual_norm_usable(
    x: torch.Tensor, y: torch.Tensor, gamma: torch.Tensor, norm: torch.nn.LayerNorm
) -> bool:
    """Whether `scaled_residual_norm_triton` takes these operands (the device is the caller's check)."""
    width = x.shape[-1]
    params = [gamma, norm.weight] + ([norm.bias] if norm.bias is not None else [])
    return (
        0 < width <= MAX_WIDTH
        and y.shape == x.shape
        and x.dtype == y.dtype == gamma.dtype == torch.bfloat16
        and norm.normalized_shape == (width,)
        and norm.weight is not None
        and all(p.shape == (width,) and p.dtype in PARAM_DTYPES for p in params)
    )


def scaled_residual_norm_triton(
    x: torch.Tensor, y: torch.Tensor, gamma: torch.Tensor, norm: torch.nn.LayerNorm
) -> tuple[torch.Tensor, torch.Tensor]:
    """``new = x + gamma * y`` and ``norm(new)`` over the last dimension, both bf16 (x, y, gamma: bf16)."""
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
        rows = max(1, ROW_ELEMENTS // block)
        bias = norm.bias if norm.bias is not None else norm.weight
        _scaled_residual_norm_kernel[(triton.cdiv(new.shape[0], rows),)](
            x_rows, y_rows, gamma.contiguous(), norm.weight.contiguous(), bias.contiguous(), new, normed,
            new.shape[0], width, x_rows.stride(0), y_rows.stride(0), new.stride(0), normed.stride(0), norm.eps,
            HAS_BIAS=norm.bias is not None, ROWS=rows, BLOCK=block, num_warps=8,
        )  # fmt: skip
    return new.view(x.shape), normed.view(x.shape)
