"""Triton kernel for the last step of the routed experts over many tokens (prefill): the weighted top-k sum.

After the grouped matmuls, the expert outputs sit in expert order, one row per (token, choice). The
reference upcasts all of them to fp32, scales them, and `index_add_`s them into an fp32 [T, d] buffer,
then casts that back: four passes over the [T * k, d] rows plus atomics. Here each program takes one
token's k rows by their positions in expert order, sums w_j * row_j in fp32 registers in choice order,
and writes the result once in the output dtype: one read of the rows, no atomics, deterministic.

The MoE layer's shared expert output can be added in the same pass (``addend``): the sum is rounded to the
output dtype, then the addend added and the result rounded again, exactly as the separate add of two
rounded tensors, one launch and one [T, d] tensor less.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .norm_triton import round_to_bf16

# Dtypes whose fused addend rounds exactly as the separate add: bf16 (rounded on the bits) and fp32.
ADDEND_DTYPES = (torch.bfloat16, torch.float32)


@triton.jit
def _topk_combine_kernel(
    rows_ptr, position_ptr, w_ptr, add_ptr, out_ptr,
    width,
    sr_r, sw_t, sw_k, sa_t, so_t,
    TOP_K: tl.constexpr, HAS_ADDEND: tl.constexpr, ROUND_BF16: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    token = tl.program_id(0)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < width
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for j in tl.static_range(TOP_K):
        position = tl.load(position_ptr + token * TOP_K + j).to(tl.int64)
        weight = tl.load(w_ptr + token * sw_t + j * sw_k).to(tl.float32)
        row = tl.load(rows_ptr + position * sr_r + offs, mask=mask, other=0.0).to(tl.float32)
        acc += row * weight
    if HAS_ADDEND:
        if ROUND_BF16:
            acc = round_to_bf16(acc)
        acc += tl.load(add_ptr + token * sa_t + offs, mask=mask, other=0.0).to(tl.float32)
        if ROUND_BF16:
            acc = round_to_bf16(acc)
    tl.store(out_ptr + token * so_t + offs, acc.to(out_ptr.dtype.element_ty), mask=mask)


def positions_of(order: torch.Tensor) -> torch.Tensor:
    """The inverse of a permutation ``order`` [n]: ``position[order[i]] = i``."""
    position = torch.empty_like(order)
    position[order] = torch.arange(order.numel(), device=order.device, dtype=order.dtype)
    return position


def topk_combine_triton(
    rows: torch.Tensor,
    position: torch.Tensor,
    weights: torch.Tensor,
    addend: torch.Tensor | None = None,
) -> torch.Tensor:
    """sum_j weights[t, j] * rows[position[t * k + j]] for every token t, in rows' dtype, plus ``addend``.

    rows [T * k, d] (unit stride along d) in expert order; position [T * k] (any integer dtype): where the
    row of (token t, choice j) lies, as `positions_of` the `argsort` of the flat indices or as
    `moe_dispatch_triton.dispatch_rows` gives it; weights [T, k]; addend [T, d] or None, added to the
    rounded sum as a separate add would (in the kernel for the dtypes of `ADDEND_DTYPES`).
    """
    if addend is not None and not (addend.dtype == rows.dtype and rows.dtype in ADDEND_DTYPES):
        return topk_combine_triton(rows, position, weights) + addend
    tokens, top_k = weights.shape
    width = rows.shape[1]
    if rows.stride(1) != 1:
        rows = rows.contiguous()
    if addend is not None and addend.stride(-1) != 1:
        addend = addend.contiguous()
    out = torch.empty(tokens, width, dtype=rows.dtype, device=rows.device)
    block = min(1024, triton.next_power_of_2(width))
    _topk_combine_kernel[(tokens, triton.cdiv(width, block))](
        rows, position.contiguous(), weights, addend if addend is not None else rows, out,
        width,
        rows.stride(0), *weights.stride(), addend.stride(0) if addend is not None else 0, out.stride(0),
        TOP_K=top_k, HAS_ADDEND=addend is not None, ROUND_BF16=rows.dtype == torch.bfloat16,
        BLOCK=block, num_warps=4,
    )  # fmt: skip
    return out
