"""Triton split-key attention for one new token over a fixed-capacity key/value buffer (graph decoding).

The query heads that share a key/value head are that head's query rows, so one program handles all of
them against a slice of the keys: scores [G, BLOCK_N] = q [G, D] @ k^T, masked by the buffer's key mask
(positions not yet written, padding), an online softmax over the slice, and a partial output with its
running max and sum. A second kernel merges the slices. Every launch has the same grid whatever the
current length, so the step can be captured in a CUDA graph; masked slices cost a read of the mask only.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

_SPLIT = 256  # keys per program
_BLOCK_N = 64  # keys per tile inside a program


@triton.jit
def _split_kernel(
    q_ptr, k_ptr, v_ptr, mask_ptr, part_ptr, stat_ptr,
    kv_heads, capacity, scale,
    sq_b, sq_h, sq_g,
    sk_b, sk_h, sk_n,
    sv_b, sv_h, sv_n,
    sm_b,
    GROUPS: tl.constexpr, HEAD_DIM: tl.constexpr, SPLITS: tl.constexpr,
    SPLIT: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
):  # fmt: skip
    pid_bh = tl.program_id(0)
    split = tl.program_id(1)
    b = pid_bh // kv_heads
    h = pid_bh % kv_heads
    offs_g = tl.arange(0, BLOCK_G)
    offs_d = tl.arange(0, BLOCK_D)
    mask_g = offs_g < GROUPS
    mask_d = offs_d < HEAD_DIM
    q = tl.load(
        q_ptr + b * sq_b + h * sq_h + offs_g[:, None] * sq_g + offs_d[None, :],
        mask=mask_g[:, None] & mask_d[None, :],
        other=0.0,
    )
    m = tl.full([BLOCK_G], -float("inf"), dtype=tl.float32)
    denom = tl.zeros([BLOCK_G], dtype=tl.float32)
    acc = tl.zeros([BLOCK_G, BLOCK_D], dtype=tl.float32)
    for start in range(0, SPLIT, BLOCK_N):
        offs_n = split * SPLIT + start + tl.arange(0, BLOCK_N)
        in_range = offs_n < capacity
        valid = tl.load(mask_ptr + b * sm_b + offs_n, mask=in_range, other=0) != 0
        kv_mask = valid[:, None] & mask_d[None, :]
        k = tl.load(
            k_ptr + b * sk_b + h * sk_h + offs_n[:, None] * sk_n + offs_d[None, :], mask=kv_mask, other=0.0
        )
        # 16-bit operands: tensor-core products, exact in the fp32 accumulator
        scores = tl.dot(q, tl.trans(k), input_precision=PRECISION) * scale  # [G, BLOCK_N]
        scores = tl.where(valid[None, :], scores, -float("inf"))
        new_m = tl.maximum(m, tl.max(scores, axis=1))
        # rows that have seen no valid key yet keep m = -inf: shift by 0 there to avoid inf - inf
        shift = tl.where(new_m == -float("inf"), 0.0, new_m)
        p = tl.exp(scores - shift[:, None])
        correction = tl.exp(m - shift)
        v = tl.load(
            v_ptr + b * sv_b + h * sv_h + offs_n[:, None] * sv_n + offs_d[None, :], mask=kv_mask, other=0.0
        )
        # probabilities in the values' dtype for the second product, as flash attention does
        acc = acc * correction[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        denom = denom * correction + tl.sum(p, axis=1)
        m = new_m
    base = (pid_bh * SPLITS + split) * BLOCK_G
    tl.store(part_ptr + (base + offs_g[:, None]) * BLOCK_D + offs_d[None, :], acc)
    tl.store(stat_ptr + (base + offs_g) * 2, m)
    tl.store(stat_ptr + (base + offs_g) * 2 + 1, denom)


@triton.jit
def _merge_kernel(
    part_ptr, stat_ptr, out_ptr,
    GROUPS: tl.constexpr, HEAD_DIM: tl.constexpr, SPLITS: tl.constexpr,
    BLOCK_G: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    pid_bh = tl.program_id(0)
    offs_g = tl.arange(0, BLOCK_G)
    offs_d = tl.arange(0, BLOCK_D)
    m = tl.full([BLOCK_G], -float("inf"), dtype=tl.float32)
    for split in range(0, SPLITS):
        base = (pid_bh * SPLITS + split) * BLOCK_G
        m = tl.maximum(m, tl.load(stat_ptr + (base + offs_g) * 2))
    shift = tl.where(m == -float("inf"), 0.0, m)
    acc = tl.zeros([BLOCK_G, BLOCK_D], dtype=tl.float32)
    denom = tl.zeros([BLOCK_G], dtype=tl.float32)
    for split in range(0, SPLITS):
        base = (pid_bh * SPLITS + split) * BLOCK_G
        weight = tl.exp(tl.load(stat_ptr + (base + offs_g) * 2) - shift)
        denom += weight * tl.load(stat_ptr + (base + offs_g) * 2 + 1)
        acc += weight[:, None] * tl.load(part_ptr + (base + offs_g[:, None]) * BLOCK_D + offs_d[None, :])
    out = acc / denom[:, None]
    mask = (offs_g[:, None] < GROUPS) & (offs_d[None, :] < HEAD_DIM)
    offs = (pid_bh * GROUPS + offs_g[:, None]) * HEAD_DIM + offs_d[None, :]
    tl.store(out_ptr + offs, out.to(out_ptr.dtype.element_ty), mask=mask)


def decode_attention_triton(
    q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, key_mask: torch.Tensor, scale: float
) -> torch.Tensor:
    """Attention of one token's query heads over a key/value buffer.

    q [B, kv_heads, G, D] (the G query heads sharing each key/value head), keys / values
    [B, kv_heads, capacity, D] (last dim contiguous), key_mask [B, capacity] bool (True: attend).
    Returns [B, kv_heads, G, D] in q's dtype, the same as masked softmax attention. Built for 16-bit
    inputs (tensor-core products); fp32 inputs get exact but slow fp32 products.
    """
    batch, kv_heads, groups, dim = q.shape
    capacity = keys.shape[2]
    if q.stride(-1) != 1:
        q = q.contiguous()
    if keys.stride(-1) != 1 or values.stride(-1) != 1:
        raise ValueError("decode attention: keys and values need a contiguous last dimension")
    mask = key_mask
    splits = triton.cdiv(capacity, _SPLIT)
    block_g = max(16, triton.next_power_of_2(groups))
    block_d = max(16, triton.next_power_of_2(dim))
    part = torch.empty(batch * kv_heads * splits * block_g * block_d, dtype=torch.float32, device=q.device)
    stat = torch.empty(batch * kv_heads * splits * block_g * 2, dtype=torch.float32, device=q.device)
    _split_kernel[(batch * kv_heads, splits)](
        q, keys, values, mask, part, stat,
        kv_heads, capacity, scale,
        q.stride(0), q.stride(1), q.stride(2),
        keys.stride(0), keys.stride(1), keys.stride(2),
        values.stride(0), values.stride(1), values.stride(2),
        mask.stride(0),
        GROUPS=groups, HEAD_DIM=dim, SPLITS=splits, SPLIT=_SPLIT,
        BLOCK_G=block_g, BLOCK_N=_BLOCK_N, BLOCK_D=block_d,
        PRECISION="ieee" if q.dtype == torch.float32 else "tf32", num_warps=4,
    )  # fmt: skip
    out = torch.empty(batch, kv_heads, groups, dim, dtype=q.dtype, device=q.device)
    _merge_kernel[(batch * kv_heads,)](
        part, stat, out,
        GROUPS=groups, HEAD_DIM=dim, SPLITS=splits, BLOCK_G=block_g, BLOCK_D=block_d, num_warps=4,
    )  # fmt: skip
    return out
