"""Triton kernel of the FastConformer's relative-position attention, for inference on the GPU.

The score of query ``i`` for key ``j`` is ``((q_i + u)·k_j + (q_i + v)·r_{i-j}) * scale``
(`encoders.parakeet_attention`). Through SDPA that needs the position scores skewed into a
``[B, H, T, T]`` additive mask, written and read in several passes, and SDPA then runs a kernel that
takes an arbitrary mask. Here:

- ``(q + v)·r`` for every query and distance is one batched matmul into ``[H, B·T, P]`` (``P``: the
  ``2T - 1`` distances, padded with zero rows to a multiple of 8 so every row is 16-byte aligned);
- one flash-attention kernel computes the content scores, adds the position scores for its tile straight
  from that table (row ``i`` of the tile reads distance column ``T-1-i+j``: a strided load, contiguous
  along the keys), and applies each clip's key limits from two lengths instead of a mask; the output is
  written ``[B, T, H, D]``, the layout the output projection reads.

Rows of a clip past its valid length (padding) average the values up to the clip's extent with
equal weights, as the reference computes for a clip encoded alone.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

HEAD_DIMS = (16, 32, 64, 128)  # head widths the kernel is built for (a power of two, tl.dot's minimum 16)
_LOG2E = 1.4426950408889634


@triton.jit
def _operand(x, like, NATIVE: tl.constexpr):
    """``x`` rounded to ``like``'s dtype for a tensor-core dot; widened back to fp32 off the GPU, where
    Triton's CPU interpreter gets 16-bit dots wrong."""
    rounded = x.to(like.dtype)
    if not NATIVE:
        rounded = rounded.to(tl.float32)
    return rounded


@triton.jit
def _rel_position_attention_kernel(
    q_ptr, k_ptr, v_ptr, uv_ptr, qr_ptr, o_ptr, valid_ptr, extent_ptr,
    B, T, H, P,
    sq_b, sq_t, sk_b, sk_t, sv_b, sv_t, so_b, so_t,
    scale_log2,
    D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, KEY_BLOCKS: tl.constexpr, NATIVE: tl.constexpr,
):  # fmt: skip
    block = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    valid = tl.load(valid_ptr + b)
    extent = tl.load(extent_ptr + b)
    rows = block * BM + tl.arange(0, BM)
    cols = tl.arange(0, D)
    in_rows = rows < T
    row_valid = rows < valid

    q = tl.load(
        q_ptr + b.to(tl.int64) * sq_b + rows[:, None] * sq_t + h * D + cols[None, :],
        mask=in_rows[:, None],
        other=0.0,
    )
    u_minus_v = tl.load(uv_ptr + h * D + cols)
    # q + u from q + v; padding rows: a zero query, so every score they may see is the same
    q = _operand(tl.where(row_valid[:, None], q.to(tl.float32) + u_minus_v[None, :], 0.0), q, NATIVE)
    limit = tl.where(row_valid, valid, extent)  # keys each row may see: [0, limit)
    qr_rows = qr_ptr + ((h.to(tl.int64) * B + b) * T + rows) * P  # [H, B, T, P]

    m_i = tl.full((BM,), float("-inf"), tl.float32)
    l_i = tl.zeros((BM,), tl.float32)
    acc = tl.zeros((BM, D), tl.float32)
    for key_block in range(KEY_BLOCKS):  # compile-time bound (interpreter-safe); keys past a limit are masked
        keys = key_block * BN + tl.arange(0, BN)
        in_keys = keys < T
        k = tl.load(
            k_ptr + b.to(tl.int64) * sk_b + keys[:, None] * sk_t + h * D + cols[None, :],
            mask=in_keys[:, None],
            other=0.0,
        )
        s = tl.dot(q, tl.trans(_operand(k, k, NATIVE)), input_precision="ieee")
        distance = (T - 1) - rows[:, None] + keys[None, :]  # column of r_{i-j}
        near = row_valid[:, None] & in_keys[None, :]
        s += tl.load(qr_rows[:, None] + distance, mask=near, other=0.0).to(tl.float32)
        s = tl.where(keys[None, :] < limit[:, None], s * scale_log2, float("-inf"))

        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp2(s - m_safe[:, None])
        alpha = tl.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(
            v_ptr + b.to(tl.int64) * sv_b + keys[:, None] * sv_t + h * D + cols[None, :],
            mask=in_keys[:, None],
            other=0.0,
        )
        acc = acc * alpha[:, None] + tl.dot(
            _operand(p, v, NATIVE), _operand(v, v, NATIVE), input_precision="ieee"
        )
        m_i = m_new

    out = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
    tl.store(
        o_ptr + b.to(tl.int64) * so_b + rows[:, None] * so_t + h * D + cols[None, :],
        out.to(o_ptr.dtype.element_ty),
        mask=in_rows[:, None],
    )


def usable(query: torch.Tensor, num_heads: int) -> bool:
    """Whether the kernel takes projections ``[B, T, heads · D]`` of this dtype and head width."""
    width = query.shape[-1]
    return (
        query.dim() == 3
        and width % num_heads == 0
        and width // num_heads in HEAD_DIMS
        and query.dtype in (torch.bfloat16, torch.float16)
    )


def default_tiles(length: int) -> tuple[int, int, int, int]:
    """(query rows, keys, warps, stages) of a program for clips of ``length`` positions. On an H200, 20 clips
    of 376 (30 s) with 8 heads of 128: 128 x 128 with 8 warps took 0.105 ms, 64 x 32 with 4 warps 0.122,
    64 x 64 0.156; shorter clips keep the smaller tile, which leaves fewer rows empty."""
    return (128, 128, 8, 2) if length >= 256 else (64, 32, 4, 2)


def rel_position_attention(
    q_v: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    r: torch.Tensor,
    u_minus_v: torch.Tensor,
    valid_lengths: torch.Tensor,
    extents: torch.Tensor,
    scale: float,
    heads: int,
    *,
    tiles: tuple[int, int, int, int] | None = None,
) -> torch.Tensor:
    """Relative-position attention of ``heads`` heads over projections ``q_v = q + bias_v``, ``k``, ``v``
    ``[B, T, H·D]`` (last dimension contiguous) against ``r [P, H·D]``: the projected embeddings of
    distances ``T-1 … -(T-1)``, then any zero rows (a multiple of 8 rows keeps the table's rows 16-byte
    aligned); ``u_minus_v
    [H·D]`` fp32 ``bias_u - bias_v``; ``valid_lengths, extents [B]`` int32, each clip's valid positions and
    its extent (the keys its padding rows average). ``tiles``: (query rows, keys, warps, stages) of a
    program, by default `default_tiles`. Returns ``[B, T, H·D]``.
    """
    batch, length, width = q_v.shape
    positions, dim = r.shape[0], width // heads
    for name, t in (("q_v", q_v), ("k", k), ("v", v)):
        if t.shape != q_v.shape or t.stride(-1) != 1 or t.dtype != q_v.dtype:
            raise ValueError(f"{name}: expected {tuple(q_v.shape)} {q_v.dtype} with contiguous rows")
    if positions < 2 * length - 1 or r.shape[1] != width:
        raise ValueError(f"r: expected [>= {2 * length - 1}, {width}], got {tuple(r.shape)}")
    if u_minus_v.shape != (width,) or u_minus_v.dtype != torch.float32:
        raise ValueError(
            f"u_minus_v: expected [{width}] float32, got {tuple(u_minus_v.shape)} {u_minus_v.dtype}"
        )
    # (q + v)·r for every query and distance: [H, B·T, D] x [H, D, P] -> [H, B·T, P]
    q_heads = q_v.reshape(batch * length, heads, dim).transpose(0, 1)
    r_heads = r.view(positions, heads, dim).transpose(0, 1)
    qr = torch.bmm(q_heads, r_heads.transpose(1, 2))
    out = torch.empty(batch, length, width, dtype=q_v.dtype, device=q_v.device)
    block_m, block_n, warps, stages = tiles or default_tiles(length)
    grid = (triton.cdiv(length, block_m), batch * heads)
    _rel_position_attention_kernel[grid](
        q_v, k, v, u_minus_v, qr, out, valid_lengths, extents,
        batch, length, heads, positions,
        q_v.stride(0), q_v.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        out.stride(0), out.stride(1),
        scale * _LOG2E,
        D=dim, BM=block_m, BN=block_n, KEY_BLOCKS=triton.cdiv(length, block_n), NATIVE=q_v.is_cuda,
        num_warps=warps, num_stages=stages,
    )  # fmt: skip
    return out
