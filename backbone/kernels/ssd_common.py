"""Pieces shared by the Triton SSD kernels of `ssd_triton` and `ssd_parallel_triton` and their wrappers.

The `@triton.jit` helpers are inlined into the kernels that call them. Tiles are [rows, columns] blocks
of a strided tensor; masked-out elements load as 0.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def program_coords(
    pid_bh, pid_p, heads, heads_per_group, head_dim, dstate,
    BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """Batch, head and group of a (batch * head) program id, and the head-channel and state offsets of
    channel block `pid_p` with their masks: (b, h, g, offs_p, offs_n, mask_p, mask_n)."""
    b = pid_bh // heads
    h = pid_bh % heads
    g = h // heads_per_group
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_n = tl.arange(0, BLOCK_N)
    mask_p = offs_p < head_dim
    mask_n = offs_n < dstate
    return b, h, g, offs_p, offs_n, mask_p, mask_n


@triton.jit
def state_tile(b, h, offs_p, offs_n, mask_p, mask_n, s_b, s_h, s_p, s_n):
    """Offsets and mask of one program's [p, n] tile of a state [b, h, p, n]."""
    offs = b * s_b + h * s_h + offs_p[:, None] * s_p + offs_n[None, :] * s_n
    mask = mask_p[:, None] & mask_n[None, :]
    return offs, mask


@triton.jit
def load_tile(ptr, rows, cols, s_row, s_col, mask_rows, mask_cols):
    """The tile ptr[rows, cols] (strides s_row, s_col), 0 where a row or column is masked out."""
    return tl.load(
        ptr + rows[:, None] * s_row + cols[None, :] * s_col,
        mask=mask_rows[:, None] & mask_cols[None, :],
        other=0.0,
    )


@triton.jit
def store_tile(ptr, rows, cols, s_row, s_col, mask_rows, mask_cols, value):
    """Stores `value` to ptr[rows, cols] (strides s_row, s_col) where both row and column are in range."""
    tl.store(
        ptr + rows[:, None] * s_row + cols[None, :] * s_col,
        value,
        mask=mask_rows[:, None] & mask_cols[None, :],
    )


@triton.jit
def dot16(a, b, acc, WIDEN: tl.constexpr):
    """acc + a @ b for 16-bit tiles a and b, summed in fp32 on tensor cores. WIDEN (for Triton's CPU
    interpreter, whose 16-bit product is wrong) multiplies the same values widened to fp32, exactly."""
    if WIDEN:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc=acc, input_precision="ieee")
    return tl.dot(a, b, acc=acc)


@triton.jit
def discretized_dt(dt_raw, dt_bias, dt_low, dt_high, HAS_LIMIT: tl.constexpr):
    """softplus(dt_raw + dt_bias) in fp32 with torch's threshold (x > 20 -> x), clamped to [dt_low, dt_high]
    with HAS_LIMIT. log1p(u) is evaluated as log(1 + u) * u / ((1 + u) - 1), which keeps full precision
    for small u."""
    v = dt_raw + dt_bias
    u = tl.exp(tl.minimum(v, 20.0))
    w = 1.0 + u
    d = w - 1.0
    log1p = tl.where(d == 0.0, u, tl.log(w) * (u / tl.where(d == 0.0, 1.0, d)))
    dt = tl.where(v > 20.0, v, log1p)
    if HAS_LIMIT:
        dt = tl.minimum(tl.maximum(dt, dt_low), dt_high)
    return dt


def block_size(size: int, floor: int = 16) -> int:
    """The power-of-two tile covering `size`, at least `floor`."""
    return max(floor, triton.next_power_of_2(size))


def sixteen_bit(*tensors: torch.Tensor) -> bool:
    """Whether the tensors share one 16-bit dtype, so their products can run on 16-bit tensor cores."""
    dtype = tensors[0].dtype
    return dtype in (torch.bfloat16, torch.float16) and all(t.dtype == dtype for t in tensors)


def dot_precision(x: torch.Tensor) -> str:
    """`input_precision` of the kernels' products: exact fp32 for fp32 inputs, TF32 otherwise."""
    return "ieee" if x.dtype == torch.float32 else "tf32"


def scan_outputs(
    x: torch.Tensor, dstate: int, out_dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Uninitialised outputs of a scan of x [b, L, h, p]: y [b, L, h, p] in `out_dtype` and the fp32 final
    state [b, h, p, n]."""
    batch, length, heads, head_dim = x.shape
    y = torch.empty(batch, length, heads, head_dim, dtype=out_dtype, device=x.device)
    final = torch.empty(batch, heads, head_dim, dstate, dtype=torch.float32, device=x.device)
    return y, final
