"""Triton kernels of the Mamba-2 SSD prefill scan, parallel over chunks (four passes).

Same contract as `backbone.ssd.ssd_chunked` and `ssd_triton.ssd_chunked_triton`: inputs already
discretised, padded positions carrying dt = 0 and x = 0, state and accumulations in fp32. With c the
running sum of dt * A inside a chunk of length L (c_L its total):

1. `_chunk_state_kernel`, one program per (batch * head, chunk, block of head channels): the chunk's own
   contribution to the state at its end, S_c = sum_j exp(c_L - c_j) dt_j x_j (outer) B_j, and c_L;
2. `_state_passing_kernel`, one program per (batch * head, block of state elements), serial over groups
   of chunks and a scan inside each group: start_0 = initial (or 0), start_{k+1} = exp(c_L of chunk k)
   start_k + S_k, written over S_k in place; the state after the last chunk is the final state;
3. `_chunk_scores_kernel`, one program per (batch * group, chunk, block of rows): the scores C_i . B_j of
   the chunk's lower triangle, fp32, once for all the heads of a group;
4. `_chunk_output_kernel`, one program per (batch * head, block of rows of a chunk, block of head
   channels): y_i = sum_{j <= i} (C_i . B_j) exp(c_i - c_j) dt_j x_j + exp(c_i) C_i . start + D x_i,
   taking the columns j in blocks up to the diagonal and their scores from pass 3.

Pass 3 is what sharing B and C across a group's heads buys: before it, every head and every channel
block of the output pass formed the same scores again (16 times over at the released widths).

Only pass 2 is serial in the chunks, and it moves one fp32 state per chunk with no matrix products, so
the sequence length no longer sets the latency of the tensor-core work as it does in the one-pass kernel.
Rows past the sequence end are loaded as x = 0, dt = 0 and change nothing.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .ssd_common import (
    block_size,
    dot16,
    dot_precision,
    load_tile,
    program_coords,
    scan_outputs,
    sixteen_bit,
    store_tile,
)


@triton.jit
def _row_ptr(ptr, b, row, col, s_b, s_l, s_col):
    """Scalar pointer to (batch b, row, head or group col) of a [b, L, cols, ...] tensor, in 64 bits:
    large batches and long views pass 2**31 elements."""
    return ptr + b.to(tl.int64) * s_b + row.to(tl.int64) * s_l + col * s_col


@triton.jit
def _chunk_ptrs(
    x_ptr, dt_ptr, B_ptr, cum_ptr, pid_bh, b, h, g, chunk_index, num_chunks,
    sx_b, sx_l, sx_h, sdt_b, sdt_l, sdt_h, sB_b, sB_l, sB_g,
    CHUNK: tl.constexpr,
):  # fmt: skip
    """The chunk's first row and 64-bit pointers to that row of x, dt, B and the running sums c:
    (first, x_chunk, dt_chunk, B_chunk, cum_chunk). Offsets inside the chunk stay 32-bit."""
    first = chunk_index * CHUNK
    x_chunk = _row_ptr(x_ptr, b, first, h, sx_b, sx_l, sx_h)
    dt_chunk = _row_ptr(dt_ptr, b, first, h, sdt_b, sdt_l, sdt_h)
    B_chunk = _row_ptr(B_ptr, b, first, g, sB_b, sB_l, sB_g)
    cum_chunk = cum_ptr + (pid_bh * num_chunks + chunk_index).to(tl.int64) * CHUNK
    return first, x_chunk, dt_chunk, B_chunk, cum_chunk


@triton.jit
def _chunk_state_tile(
    states_ptr, b, h, chunk_index, num_chunks, heads, head_dim, dstate, offs_p, offs_n, mask_p, mask_n
):
    """Pointers and mask of one program's [p, n] tile of the chunk's state in `states`, [b, chunks, h, p, n]
    contiguous."""
    base = ((b * num_chunks + chunk_index) * heads + h).to(tl.int64) * (head_dim * dstate)
    return states_ptr + base + offs_p[:, None] * dstate + offs_n[None, :], mask_p[:, None] & mask_n[None, :]


@triton.jit
def _chunk_state_kernel(
    x_ptr, dt_ptr, A_ptr, B_ptr, states_ptr, cum_ptr, totals_ptr,
    length, num_chunks, heads, heads_per_group, head_dim, dstate,
    sx_b, sx_l, sx_h, sx_p,
    sdt_b, sdt_l, sdt_h,
    sB_b, sB_l, sB_g, sB_n,
    CHUNK: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
    PRECISION: tl.constexpr, NATIVE_DOTS: tl.constexpr, WIDEN: tl.constexpr,
):  # fmt: skip
    pid_bh = tl.program_id(0)
    chunk_index = tl.program_id(1)
    pid_p = tl.program_id(2)
    b, h, g, offs_p, offs_n, mask_p, mask_n = program_coords(
        pid_bh, pid_p, heads, heads_per_group, head_dim, dstate, BLOCK_P, BLOCK_N
    )
    offs_k = tl.arange(0, BLOCK_K)
    A = tl.load(A_ptr + h).to(tl.float32)
    first, x_chunk, dt_chunk, B_chunk, cum_chunk = _chunk_ptrs(
        x_ptr, dt_ptr, B_ptr, cum_ptr, pid_bh, b, h, g, chunk_index, num_chunks,
        sx_b, sx_l, sx_h, sdt_b, sdt_l, sdt_h, sB_b, sB_l, sB_g, CHUNK,
    )  # fmt: skip

    # Sweep 1: the running sum c of dt * A through the chunk (stored for pass 3) and its total.
    prefix = 0.0
    for k in range(0, CHUNK, BLOCK_K):
        local = k + offs_k
        dt = tl.load(dt_chunk + local * sdt_l, mask=first + local < length, other=0.0)
        dA = dt.to(tl.float32) * A
        # Every channel block computes the same c; the first one stores it.
        tl.store(cum_chunk + local, prefix + tl.cumsum(dA, axis=0), mask=(offs_k >= 0) & (pid_p == 0))
        prefix += tl.sum(dA, axis=0)
    total = prefix
    tl.store(totals_ptr + pid_bh * num_chunks + chunk_index, total, mask=pid_p == 0)

    # Sweep 2: S = sum_j exp(total - c_j) dt_j x_j (outer) B_j, with c_j recomputed as in sweep 1.
    contribution = tl.zeros((BLOCK_P, BLOCK_N), dtype=tl.float32)
    prefix = 0.0
    for k in range(0, CHUNK, BLOCK_K):
        local = k + offs_k
        mask_l = first + local < length
        dt = tl.load(dt_chunk + local * sdt_l, mask=mask_l, other=0.0).to(tl.float32)
        dA = dt * A
        to_end = tl.exp(total - (prefix + tl.cumsum(dA, axis=0))) * dt  # [K]
        prefix += tl.sum(dA, axis=0)
        x = load_tile(x_chunk, local, offs_p, sx_l, sx_p, mask_l, mask_p)
        Bm = load_tile(B_chunk, local, offs_n, sB_l, sB_n, mask_l, mask_n)
        scaled = x.to(tl.float32) * to_end[:, None]
        if NATIVE_DOTS:  # 16-bit operands (the scaled x rounded once), fp32 sums
            contribution = dot16(tl.trans(scaled.to(x.dtype)), Bm, contribution, WIDEN)
        else:
            contribution = tl.dot(
                tl.trans(scaled), Bm.to(tl.float32), acc=contribution, input_precision=PRECISION
            )

    state_ptrs, state_mask = _chunk_state_tile(
        states_ptr, b, h, chunk_index, num_chunks, heads, head_dim, dstate, offs_p, offs_n, mask_p, mask_n
    )
    tl.store(state_ptrs, contribution, mask=state_mask)


@triton.jit
def _linear_recurrence(decay_a, sum_a, decay_b, sum_b):
    """Two steps of s -> decay * s + sum, the first then the second, as one: the scan's combine."""
    return decay_a * decay_b, decay_b * sum_a + sum_b


@triton.jit
def _state_passing_kernel(
    states_ptr, starts_ptr, totals_ptr, init_ptr, final_ptr,
    num_chunks, heads, head_dim, dstate,
    si_b, si_h, si_p, si_n,
    HAS_INIT: tl.constexpr, BLOCK: tl.constexpr, GROUP: tl.constexpr,
):  # fmt: skip
    pid_bh = tl.program_id(0)
    b = pid_bh // heads
    h = pid_bh % heads
    size = head_dim * dstate
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)  # flat index into [p, n]
    mask = offs < size

    if HAS_INIT:
        init_offs = b * si_b + h * si_h + (offs // dstate) * si_p + (offs % dstate) * si_n
        state = tl.load(init_ptr + init_offs, mask=mask, other=0.0).to(tl.float32)
    else:
        state = tl.zeros((BLOCK,), dtype=tl.float32)

    chunk_stride = heads * size
    base = (b * num_chunks * heads + h).to(tl.int64) * size
    totals = totals_ptr + pid_bh * num_chunks
    rows = tl.arange(0, GROUP)
    first_start = starts_ptr + base + offs  # the group's first chunk; it advances a group a turn (64-bit)
    # GROUP chunks a turn: their contributions and totals are loaded at once and the recurrence
    # start_{k+1} = exp(total_k) start_k + S_k runs across them as a scan, so the serial chain pays the
    # memory latency once per group rather than once per chunk. Rows past the last chunk load as
    # decay 1 and contribution 0 and leave the state as it is.
    first = 0
    # A while loop (rather than range over a runtime bound) also runs under TRITON_INTERPRET with numpy 2.
    while first < num_chunks:
        index = first + rows
        valid = index < num_chunks
        tile = base + index.to(tl.int64)[:, None] * chunk_stride + offs[None, :]
        contribution = tl.load(states_ptr + tile, mask=valid[:, None] & mask[None, :], other=0.0)
        decay = tl.exp(tl.load(totals + index, mask=valid, other=0.0))
        scale, summed = tl.associative_scan(
            (tl.broadcast_to(decay[:, None], (GROUP, BLOCK)), contribution), 0, _linear_recurrence
        )
        ends = scale * state[None, :] + summed  # the state after each chunk of the group
        # Every store goes to a chunk this turn has already loaded (the starts may overwrite the
        # contributions in place): the group's first start is the carried state, the others the ends.
        tl.store(first_start, state.to(starts_ptr.dtype.element_ty), mask=mask)
        later = (rows + 1 < GROUP) & (index + 1 < num_chunks)
        tl.store(
            starts_ptr + tile + chunk_stride,
            ends.to(starts_ptr.dtype.element_ty),
            mask=later[:, None] & mask[None, :],
        )
        state = tl.sum(tl.where((rows == GROUP - 1)[:, None], ends, 0.0), axis=0)
        first_start += GROUP * chunk_stride
        first += GROUP

    tl.store(final_ptr + pid_bh.to(tl.int64) * size + offs, state, mask=mask)


@triton.jit
def _scores_tile(scores_ptr, b, chunk_index, num_chunks, groups, g, rows, cols, CHUNK: tl.constexpr):
    """Pointers to the [rows, cols] tile of one chunk's scores in `scores`, [b, chunks, g, CHUNK, CHUNK]
    contiguous."""
    base = ((b * num_chunks + chunk_index) * groups + g).to(tl.int64) * (CHUNK * CHUNK)
    return scores_ptr + base + rows[:, None] * CHUNK + cols[None, :]


@triton.jit
def _chunk_scores_kernel(
    B_ptr, C_ptr, scores_ptr,
    length, num_chunks, groups, dstate,
    sB_b, sB_l, sB_g, sB_n,
    sC_b, sC_l, sC_g, sC_n,
    NATIVE_DOTS: tl.constexpr, CHUNK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    PRECISION: tl.constexpr, WIDEN: tl.constexpr,
):  # fmt: skip
    # One program: rows [m, m + BLOCK_M) of a chunk against the columns up to the diagonal, in blocks of
    # BLOCK_M, the output pass's own blocks; the blocks above the diagonal are never read and are left
    # unwritten.
    pid_bg = tl.program_id(0)
    chunk_index = tl.program_id(1)
    m = tl.program_id(2) * BLOCK_M
    b = pid_bg // groups
    g = pid_bg % groups
    first = chunk_index * CHUNK
    offs_m = tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    mask_n = offs_n < dstate
    B_chunk = _row_ptr(B_ptr, b, first, g, sB_b, sB_l, sB_g)
    C_chunk = _row_ptr(C_ptr, b, first, g, sC_b, sC_l, sC_g)
    local_m = m + offs_m
    Cm = load_tile(C_chunk, local_m, offs_n, sC_l, sC_n, first + local_m < length, mask_n)
    k = 0
    while k <= m:
        local_k = k + offs_m
        Bm = load_tile(B_chunk, local_k, offs_n, sB_l, sB_n, first + local_k < length, mask_n)
        if NATIVE_DOTS:
            # 16-bit B and C: their products are exact in fp32, as with TF32 on the widened values.
            scores = dot16(Cm, tl.trans(Bm), tl.zeros((BLOCK_M, BLOCK_M), dtype=tl.float32), WIDEN)
        else:
            scores = tl.dot(Cm.to(tl.float32), tl.trans(Bm.to(tl.float32)), input_precision=PRECISION)
        tl.store(
            _scores_tile(scores_ptr, b, chunk_index, num_chunks, groups, g, local_m, local_k, CHUNK), scores
        )
        k += BLOCK_M


@triton.jit
def _chunk_output_kernel(
    x_ptr, dt_ptr, B_ptr, C_ptr, D_ptr, states_ptr, cum_ptr, scores_ptr, y_ptr,
    length, num_chunks, heads, heads_per_group, head_dim, dstate,
    sx_b, sx_l, sx_h, sx_p,
    sdt_b, sdt_l, sdt_h,
    sB_b, sB_l, sB_g, sB_n,
    sC_b, sC_l, sC_g, sC_n,
    sy_b, sy_l, sy_h, sy_p,
    HAS_D: tl.constexpr,
    CHUNK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
    PRECISION: tl.constexpr, NATIVE_DOTS: tl.constexpr, WIDEN: tl.constexpr,
):  # fmt: skip
    # One program: rows [m, m + BLOCK_M) of a chunk, one block of head channels. Columns are taken in
    # blocks of BLOCK_M up to the diagonal; blocks above it contribute nothing and are skipped.
    pid_bh = tl.program_id(0)
    chunk_index = tl.program_id(1) // (CHUNK // BLOCK_M)
    m = (tl.program_id(1) % (CHUNK // BLOCK_M)) * BLOCK_M
    b, h, g, offs_p, offs_n, mask_p, mask_n = program_coords(
        pid_bh, tl.program_id(2), heads, heads_per_group, head_dim, dstate, BLOCK_P, BLOCK_N
    )
    offs_m = tl.arange(0, BLOCK_M)
    first, x_chunk, dt_chunk, _, cum_chunk = _chunk_ptrs(  # B: its scores come from pass 3
        x_ptr, dt_ptr, B_ptr, cum_ptr, pid_bh, b, h, g, chunk_index, num_chunks,
        sx_b, sx_l, sx_h, sdt_b, sdt_l, sdt_h, sB_b, sB_l, sB_g, CHUNK,
    )  # fmt: skip
    C_chunk = _row_ptr(C_ptr, b, first, g, sC_b, sC_l, sC_g)
    y_chunk = _row_ptr(y_ptr, b, first, h, sy_b, sy_l, sy_h)

    local_m = m + offs_m
    mask_m = first + local_m < length
    cum_m = tl.load(cum_chunk + local_m)  # [M]
    Cm = load_tile(C_chunk, local_m, offs_n, sC_l, sC_n, mask_m, mask_n)
    state_ptrs, state_mask = _chunk_state_tile(
        states_ptr, b, h, chunk_index, num_chunks, heads, head_dim, dstate, offs_p, offs_n, mask_p, mask_n
    )
    start = tl.load(state_ptrs, mask=state_mask, other=0.0)
    # The chunk's start state: exp(c_i) C_i . start.
    if NATIVE_DOTS:
        y = dot16(Cm, tl.trans(start.to(Cm.dtype)), tl.zeros((BLOCK_M, BLOCK_P), dtype=tl.float32), WIDEN)
    else:
        y = tl.dot(Cm.to(tl.float32), tl.trans(start.to(tl.float32)), input_precision=PRECISION)
    y = y * tl.exp(cum_m)[:, None]

    groups = heads // heads_per_group
    k = 0
    # A while loop (rather than range over a runtime bound) also runs under TRITON_INTERPRET with numpy 2;
    # on the GPU it also beat the software-pipelined `for` (the loop has one or two turns).
    while k <= m:
        local_k = k + offs_m
        mask_k = first + local_k < length
        scores = tl.load(
            _scores_tile(scores_ptr, b, chunk_index, num_chunks, groups, g, local_m, local_k, CHUNK)
        )
        dt = tl.load(dt_chunk + local_k * sdt_l, mask=mask_k, other=0.0).to(tl.float32)
        cum_k = tl.load(cum_chunk + local_k)
        # exp of a masked difference: above the diagonal it would overflow, so it is zeroed before exp.
        diff = tl.where(local_m[:, None] >= local_k[None, :], cum_m[:, None] - cum_k[None, :], float("-inf"))
        weights = scores * tl.exp(diff) * dt[None, :]
        x = load_tile(x_chunk, local_k, offs_p, sx_l, sx_p, mask_k, mask_p)
        if NATIVE_DOTS:
            y = dot16(weights.to(x.dtype), x, y, WIDEN)
        else:
            y = tl.dot(weights, x.to(tl.float32), acc=y, input_precision=PRECISION)
        k += BLOCK_M

    if HAS_D:
        x = load_tile(x_chunk, local_m, offs_p, sx_l, sx_p, mask_m, mask_p)
        y += tl.load(D_ptr + h).to(tl.float32) * x.to(tl.float32)
    store_tile(y_chunk, local_m, offs_p, sy_l, sy_p, mask_m, mask_p, y.to(y_ptr.dtype.element_ty))


def ssd_chunked_parallel_triton(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    chunk: int = 128,
    block: int | None = None,
    block_p: int | None = None,
    state_block: int = 128,
    state_group: int = 32,
    num_warps: int | None = None,
    output_block_p: int | None = None,
    out_dtype: torch.dtype = torch.float32,
    start_dtype: torch.dtype = torch.float32,
    native_dots: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunked SSD scan in four passes, parallel over chunks. x [b, L, h, p], dt [b, L, h], A [h],
    B and C [b, L, g, n], D [h], initial_state [b, h, p, n]; inputs may be strided views. Returns
    y [b, L, h, p] in `out_dtype` and the final state [b, h, p, n] in fp32.

    `start_dtype` is the dtype the output pass reads each chunk's start state in: the states are summed
    in fp32 either way, and bf16 halves the traffic of the two passes that write and read them (as
    mamba-ssm's kernels do).

    Tile choices (the result does not depend on them beyond rounding): `chunk`, a power of two >= 16;
    `block`, the rows of a chunk one matrix product takes (a power of two >= 16 dividing `chunk`);
    `block_p`, head channels per program of pass 1; `output_block_p`, of the output pass; `state_block`,
    state elements per program of the serial pass and `state_group`, the chunks it takes a turn (a
    power of two); `num_warps`, of the chunk-parallel passes (unset, pass 1 of 16-bit products takes 2
    warps and 2 pipeline stages). On an H200 (bf16, 64 heads, p 64, n 128; the scan's four passes
    replayed from a CUDA graph) 32 chunks a turn in blocks of 128 took the scan from 145 to 140 µs at
    3,344 tokens, 306 to 297 at 7,517 and 613 to 595 at 16,144 against one chunk a turn in blocks of
    256; 16 a turn in blocks of 128 and 32 in blocks of 64 were as fast, 16 or 32 in blocks of 256 and
    64 in blocks of 128 slower than one a turn. Scratch: one fp32 state [p, n] per (batch, chunk,
    head), one more in `start_dtype` where that is not fp32, and one fp32 [chunk, chunk] block of scores
    per (batch, chunk, group).

    Products: fp32 inputs use exact fp32 ones (`native_dots=True` with them is a ValueError). With
    `native_dots` (the default where x, B and C share a 16-bit dtype) every product runs on 16-bit tensor
    cores with fp32 sums, as in mamba-ssm's kernels: the operands scaled in fp32 (x by its decay and dt,
    the scores by theirs) and the start states are rounded to that dtype once before they are
    multiplied. Without it they multiply in TF32, exact for 16-bit operands but at half the tensor-core
    rate. On an H200 (bf16, 64 heads, p 64, n 128;
    `benchmarks/bench_ssd.py`) the four passes took 0.143 against 0.202 ms of kernel time at 3,344
    tokens, 0.306 against 0.422 at 7,517 and 0.611 against 0.880 at 16,144; the largest error against
    the fp32 scan grew from 2.4e-3 to 3.9e-3 of the largest value at 7,517 tokens. mamba-ssm's forward
    kernels took about the same time there (0.305 ms) with the same output error. Pass 1 then takes at
    most 32 head channels a program: with 64, its compiled kernel (Triton 3.6.0, H200) returned wrong
    outputs now and then for strided inputs, which Triton's interpreter computes right.
    """
    batch, length, heads, head_dim = x.shape
    groups, dstate = B.shape[2], B.shape[3]
    device = x.device
    num_chunks = triton.cdiv(length, chunk)
    exact = x.dtype == torch.float32
    precision = dot_precision(x)
    if native_dots is None:
        native_dots = sixteen_bit(x, B, C)
    elif native_dots and not sixteen_bit(x, B, C):
        raise ValueError(
            f"native_dots: 16-bit products need x, B and C in one 16-bit dtype, got {x.dtype}, {B.dtype}, "
            f"{C.dtype} (fp32 inputs take exact fp32 products)"
        )
    # Triton's CPU interpreter multiplies 16-bit tiles wrongly: there they are widened first.
    widen = not x.is_cuda
    # Exact fp32 products run on CUDA cores and hold their operands in registers: smaller tiles keep
    # them from spilling. For bf16 on an H200 (p 64, n 128, 16,144 tokens), the whole scan with its
    # scores formed in the output pass: 64 rows x 32 channels took 1.21 ms, 64 x 64 1.30 ms, 128 x 64
    # with 8 warps 1.33 ms. With the scores read from pass 3 (`benchmarks/bench_ssd.py`'s sweep), 32
    # channels in pass 1 and all 64 in the output pass took 1.04 ms; 32 in the output pass 1.17 ms, 64 in
    # pass 1 1.26 ms.
    if block is None:
        block = min(chunk, 32 if exact else 64)
    if block_p is None:
        block_p = min(block_size(head_dim), 32)
    if output_block_p is None:
        output_block_p = min(block_size(head_dim), 32 if exact else 64)
    if num_warps is None:
        num_warps = 8 if exact else 4
        # pass 1 with 16-bit products on 2 warps and 2 pipeline stages: on an H200 45.5 against 51.9 µs
        # at 3,344 tokens and 193.8 against 217.6 at 16,144 (4 warps, Triton's default 3 stages), the
        # same outputs bit for bit; the output pass was fastest at 4 warps whatever its stages
        state_warps, state_stages = (2, 2) if native_dots else (num_warps, 3)
    else:
        state_warps, state_stages = num_warps, 3
    block_n = block_size(dstate)
    if chunk % block or block < 16:
        raise ValueError(f"block {block} must be >= 16 and divide chunk {chunk}")
    if native_dots and block_p > 32:
        raise ValueError(f"block_p {block_p} with 16-bit products: at most 32 (see the docstring)")

    y, final = scan_outputs(x, dstate, out_dtype)
    if num_chunks == 0:
        final.copy_(initial_state if initial_state is not None else torch.zeros_like(final))
        return y, final
    states = torch.empty(batch, num_chunks, heads, head_dim, dstate, dtype=torch.float32, device=device)
    cum = torch.empty(batch, heads, num_chunks * chunk, dtype=torch.float32, device=device)
    totals = torch.empty(batch, heads, num_chunks, dtype=torch.float32, device=device)

    _chunk_state_kernel[(batch * heads, num_chunks, triton.cdiv(head_dim, block_p))](
        x, dt, A, B, states, cum, totals,
        length, num_chunks, heads, heads // groups, head_dim, dstate,
        *x.stride(), *dt.stride(), *B.stride(),
        CHUNK=chunk, BLOCK_K=block, BLOCK_P=block_p, BLOCK_N=block_n, PRECISION=precision,
        NATIVE_DOTS=native_dots, WIDEN=widen, num_warps=state_warps, num_stages=state_stages,
    )  # fmt: skip
    init = initial_state if initial_state is not None else final
    # fp32 start states overwrite the chunks' own contributions in place
    starts = states if start_dtype == torch.float32 else torch.empty_like(states, dtype=start_dtype)
    _state_passing_kernel[(batch * heads, triton.cdiv(head_dim * dstate, state_block))](
        states, starts, totals, init, final,
        num_chunks, heads, head_dim, dstate,
        *init.stride(),
        HAS_INIT=initial_state is not None, BLOCK=state_block, GROUP=state_group,
        num_warps=max(1, min(8, state_block // 128)),
    )  # fmt: skip
    scores = torch.empty(batch, num_chunks, groups, chunk, chunk, dtype=torch.float32, device=device)
    _chunk_scores_kernel[(batch * groups, num_chunks, chunk // block)](
        B, C, scores,
        length, num_chunks, groups, dstate,
        *B.stride(), *C.stride(),
        NATIVE_DOTS=sixteen_bit(B, C), CHUNK=chunk, BLOCK_M=block, BLOCK_N=block_n, PRECISION=precision,
        WIDEN=widen, num_warps=num_warps,
    )  # fmt: skip
    _chunk_output_kernel[(batch * heads, num_chunks * (chunk // block), triton.cdiv(head_dim, output_block_p))](
        x, dt, B, C, D if D is not None else A, starts, cum, scores, y,
        length, num_chunks, heads, heads // groups, head_dim, dstate,
        *x.stride(), *dt.stride(), *B.stride(), *C.stride(), *y.stride(),
        HAS_D=D is not None,
        CHUNK=chunk, BLOCK_M=block, BLOCK_P=output_block_p, BLOCK_N=block_n, PRECISION=precision,
        NATIVE_DOTS=native_dots, WIDEN=widen, num_warps=num_warps,
    )  # fmt: skip
    return y, final
