"""Triton kernels of the Mamba-2 SSD scan: a chunked prefill scan and the fused one-token state update.

Same contract as `backbone.ssd.ssd_chunked` / `ssd_step` (inputs already discretised: dt after softplus
and the time-step limit; padded positions carry dt = 0 and x = 0), with the state kept in fp32.

Prefill: one program per (batch, head, block of head channels) walks the sequence chunk by chunk and
keeps its slice of the state [BLOCK_P, N] in registers. Inside a chunk of length L it evaluates the
quadratic (dual) form

    y_i = sum_{j <= i} (C_i . B_j) exp(c_i - c_j) dt_j x_j  +  exp(c_i) C_i . S_start  +  D x_i

with c the running sum of dt * A inside the chunk, then carries the state to the chunk's end:

    S_end = exp(c_L) S_start + sum_j exp(c_L - c_j) dt_j x_j (outer) B_j.

Rows past the sequence end are loaded as x = 0, dt = 0, so they change nothing.

The serial chunk walk leaves the GPU mostly idle when batch * heads is small, so `ssd_chunked_triton`
hands sequences of several chunks to the chunk-parallel kernels of `ssd_parallel_triton`, which work on all
chunks at once and carry the state between chunks in a separate light pass.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .ssd_common import (
    block_size,
    discretized_dt,
    dot_precision,
    load_tile,
    program_coords,
    scan_outputs,
    state_tile,
    store_tile,
)
from .ssd_parallel_triton import ssd_chunked_parallel_triton

# Chunk length of the parallel path, and the chunk count from which it runs by itself. The one-pass
# kernel's time grows with the chunks it walks serially; the parallel path costs about 0.2 ms whatever the
# length (three launches and an fp32 state per chunk). On an H200 at 64 heads, p 64, n 128 (bf16) the
# one-pass kernel was faster up to 768 tokens (0.21 against 0.24 ms) and slower from 1,024 (0.21
# against 0.17 ms; at 16,144 tokens 2.43 against 1.29 ms).
PARALLEL_CHUNK = 128
PARALLEL_MIN_CHUNKS = 8


@triton.jit
def _ssd_chunk_scan_kernel(
    x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, init_ptr, y_ptr, final_ptr,
    length, num_chunks, heads_per_group, head_dim, dstate,
    sx_b, sx_l, sx_h, sx_p,
    sdt_b, sdt_l, sdt_h,
    sB_b, sB_l, sB_g, sB_n,
    sC_b, sC_l, sC_g, sC_n,
    sy_b, sy_l, sy_h, sy_p,
    ss_b, ss_h, ss_p, ss_n,
    heads,
    HAS_D: tl.constexpr, HAS_INIT: tl.constexpr,
    CHUNK: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    b, h, g, offs_p, offs_n, mask_p, mask_n = program_coords(
        tl.program_id(0), tl.program_id(1), heads, heads_per_group, head_dim, dstate, BLOCK_P, BLOCK_N
    )
    offs_l = tl.arange(0, CHUNK)

    A = tl.load(A_ptr + h).to(tl.float32)
    if HAS_D:
        Dh = tl.load(D_ptr + h).to(tl.float32)

    state_offs, state_mask = state_tile(b, h, offs_p, offs_n, mask_p, mask_n, ss_b, ss_h, ss_p, ss_n)
    if HAS_INIT:
        state = tl.load(init_ptr + state_offs, mask=state_mask, other=0.0).to(tl.float32)
    else:
        state = tl.zeros((BLOCK_P, BLOCK_N), dtype=tl.float32)

    causal = offs_l[:, None] >= offs_l[None, :]
    # A while loop (rather than range over a runtime bound) also runs under TRITON_INTERPRET with numpy 2.
    chunk_index = 0
    while chunk_index < num_chunks:
        rows = chunk_index * CHUNK + offs_l
        mask_l = rows < length
        dt = tl.load(dt_ptr + b * sdt_b + rows * sdt_l + h * sdt_h, mask=mask_l, other=0.0).to(tl.float32)
        x = load_tile(x_ptr + b * sx_b + h * sx_h, rows, offs_p, sx_l, sx_p, mask_l, mask_p).to(tl.float32)
        Bm = load_tile(B_ptr + b * sB_b + g * sB_g, rows, offs_n, sB_l, sB_n, mask_l, mask_n).to(tl.float32)
        Cm = load_tile(C_ptr + b * sC_b + g * sC_g, rows, offs_n, sC_l, sC_n, mask_l, mask_n).to(tl.float32)

        cum = tl.cumsum(dt * A, axis=0)  # [L], non-increasing
        total = tl.sum(dt * A, axis=0)
        # exp of a masked difference: the upper triangle would overflow, so it is zeroed before exp.
        diff = tl.where(causal, cum[:, None] - cum[None, :], float("-inf"))
        weights = tl.dot(Cm, tl.trans(Bm), input_precision=PRECISION) * tl.exp(diff) * dt[None, :]
        y = tl.dot(weights, x, input_precision=PRECISION)
        y += tl.dot(Cm, tl.trans(state), input_precision=PRECISION) * tl.exp(cum)[:, None]
        if HAS_D:
            y += Dh * x
        y_rows = y_ptr + b * sy_b + h * sy_h
        store_tile(y_rows, rows, offs_p, sy_l, sy_p, mask_l, mask_p, y.to(y_ptr.dtype.element_ty))

        to_end = tl.exp(total - cum) * dt  # [L]
        state = state * tl.exp(total) + tl.dot(tl.trans(x), Bm * to_end[:, None], input_precision=PRECISION)
        chunk_index += 1

    tl.store(final_ptr + state_offs, state, mask=state_mask)


@triton.jit
def _ssd_step_kernel(
    state_ptr, x_ptr, dt_ptr, dt_bias_ptr, A_ptr, B_ptr, C_ptr, D_ptr, y_ptr,
    heads, heads_per_group, head_dim, dstate, dt_low, dt_high,
    ss_b, ss_h, ss_p, ss_n,
    sx_b, sx_h, sx_p,
    sdt_b, sdt_h,
    sB_b, sB_g, sB_n,
    sC_b, sC_g, sC_n,
    HAS_D: tl.constexpr, DISCRETIZE: tl.constexpr, HAS_LIMIT: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    # One recurrence step. With DISCRETIZE, dt_ptr holds raw dt and A_ptr A_log: dt = softplus(dt +
    # dt_bias) (clamped with HAS_LIMIT) and A = -exp(A_log) are formed here; otherwise both are final.
    b, h, g, offs_p, offs_n, mask_p, mask_n = program_coords(
        tl.program_id(0), tl.program_id(1), heads, heads_per_group, head_dim, dstate, BLOCK_P, BLOCK_N
    )
    dt = tl.load(dt_ptr + b * sdt_b + h * sdt_h).to(tl.float32)
    A = tl.load(A_ptr + h).to(tl.float32)
    if DISCRETIZE:
        dt = discretized_dt(dt, tl.load(dt_bias_ptr + h).to(tl.float32), dt_low, dt_high, HAS_LIMIT)
        A = -tl.exp(A)
    x = tl.load(x_ptr + b * sx_b + h * sx_h + offs_p * sx_p, mask=mask_p, other=0.0).to(tl.float32)
    Bv = tl.load(B_ptr + b * sB_b + g * sB_g + offs_n * sB_n, mask=mask_n, other=0.0).to(tl.float32)
    Cv = tl.load(C_ptr + b * sC_b + g * sC_g + offs_n * sC_n, mask=mask_n, other=0.0).to(tl.float32)

    offs, smask = state_tile(b, h, offs_p, offs_n, mask_p, mask_n, ss_b, ss_h, ss_p, ss_n)
    state = tl.load(state_ptr + offs, mask=smask, other=0.0)
    state = state * tl.exp(dt * A) + (dt * x)[:, None] * Bv[None, :]
    tl.store(state_ptr + offs, state, mask=smask)
    y = tl.sum(state * Cv[None, :], axis=1)
    if HAS_D:
        y += tl.load(D_ptr + h).to(tl.float32) * x
    tl.store(y_ptr + (b * heads + h) * head_dim + offs_p, y, mask=mask_p)


def uses_parallel_path(length: int, chunk: int | None = None) -> bool:
    """Whether `ssd_chunked_triton` runs a sequence of this length on the parallel (chunk-parallel) kernels."""
    return triton.cdiv(length, chunk or PARALLEL_CHUNK) >= PARALLEL_MIN_CHUNKS


def ssd_chunked_triton(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    chunk: int | None = None,
    *,
    parallel: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunked SSD scan. x [b, L, h, p], dt [b, L, h], A [h], B and C [b, L, g, n], D [h],
    initial_state [b, h, p, n]. Returns y [b, L, h, p] and the final state [b, h, p, n] (fp32).

    y comes in x's dtype for 16-bit inputs, rounded once from its fp32 sums as mamba-ssm's kernels give
    it (the gated norm after the scan reads it in fp32), and in fp32 for fp32 inputs. On the chunk-parallel
    path the chunks' start states are read in that dtype too; every sum and the final state stay fp32.
    On an H200 (bf16, 64 heads, 16,144 tokens) the two roundings took the scan and the norm after it
    from 1.182 to 1.102 ms, and from 0.634 to 0.582 ms at 7,517 tokens.

    `chunk` is the kernels' own tile length (the result does not depend on it); fp32 inputs use exact
    fp32 products. For 16-bit inputs the one-pass kernel multiplies in TF32 (exact for their operands),
    the chunk-parallel kernels on 16-bit tensor cores (see `ssd_chunked_parallel_triton`). `parallel`
    forces the chunk-parallel kernels (True) or the one-pass kernel (False); None picks by
    `uses_parallel_path`.
    """
    batch, length, heads, head_dim = x.shape
    groups, dstate = B.shape[2], B.shape[3]
    out_dtype = x.dtype if x.dtype in (torch.bfloat16, torch.float16) else torch.float32
    if parallel is None:
        parallel = uses_parallel_path(length, chunk)
    if parallel:
        return ssd_chunked_parallel_triton(
            x, dt, A, B, C, D, initial_state, chunk=chunk or PARALLEL_CHUNK,
            out_dtype=out_dtype, start_dtype=out_dtype,
        )  # fmt: skip
    y, final = scan_outputs(x, dstate, out_dtype)
    block_n = block_size(dstate)
    block_p = min(block_size(head_dim), 32 if block_n >= 128 else 64)
    if chunk is None:
        chunk = 64 if block_n <= 128 else 32
    # The initial state is read with the final state's (contiguous) strides.
    init = initial_state.float().contiguous() if initial_state is not None else final
    Dt = D if D is not None else A
    precision = dot_precision(x)
    grid = (batch * heads, triton.cdiv(head_dim, block_p))
    _ssd_chunk_scan_kernel[grid](
        x, dt, A, B, C, Dt, init, y, final,
        length, triton.cdiv(length, chunk), heads // groups, head_dim, dstate,
        *x.stride(), *dt.stride(), *B.stride(), *C.stride(), *y.stride(), *final.stride(),
        heads,
        HAS_D=D is not None, HAS_INIT=initial_state is not None,
        CHUNK=chunk, BLOCK_P=block_p, BLOCK_N=block_n, PRECISION=precision,
        num_warps=8 if block_n >= 128 else 4,
    )  # fmt: skip
    return y, final


def ssd_step_triton(
    state: torch.Tensor,
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
) -> torch.Tensor:
    """One recurrence step updating `state` [b, h, p, n] (fp32) in place. x [b, h, p], dt [b, h], A [h],
    B and C [b, g, n], D [h]. Returns y [b, h, p] in fp32."""
    batch, heads, head_dim = x.shape
    groups, dstate = B.shape[1], B.shape[2]
    if state.dtype != torch.float32:
        raise ValueError(f"the SSM state must be float32, got {state.dtype}")
    y = torch.empty(batch, heads, head_dim, dtype=torch.float32, device=x.device)
    block_n = triton.next_power_of_2(dstate)
    block_p = min(triton.next_power_of_2(head_dim), max(1, 4096 // block_n))
    grid = (batch * heads, triton.cdiv(head_dim, block_p))
    _ssd_step_kernel[grid](
        state, x, dt, dt, A, B, C, D if D is not None else A, y,
        heads, heads // groups, head_dim, dstate, 0.0, 0.0,
        *state.stride(), *x.stride(), *dt.stride(), *B.stride(), *C.stride(),
        HAS_D=D is not None, DISCRETIZE=False, HAS_LIMIT=False, BLOCK_P=block_p, BLOCK_N=block_n,
        num_warps=4,
    )  # fmt: skip
    return y
