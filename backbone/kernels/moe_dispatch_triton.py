"""Triton kernels that lay a prefill's routed rows out by expert for the grouped matmuls, in two launches.

The reference sorts the flat expert indices (a radix sort: eight launches and scratch buffers on CUDA),
divides the order by k, counts the rows per expert, gathers the token rows, takes a cumulative sum for
the segment ends, and inverts the order for the combine: about seventeen small kernels per MoE layer,
each a host launch, in a prefill whose MoE layers are short. Here:

* count: the rows each expert receives, by atomic adds into a zeroed [E] buffer;
* place: one program per token works out each expert's segment start from those counts (a prefix sum of
  E numbers, in registers), takes its slot in the segment with an atomic add on that expert's cursor,
  records the position of each (token, choice) and writes the token's row to each of its k positions
  (the row is read once). Program 0 also writes the segment bounds [E + 1] for the grouped matmuls.

Rows of one expert land in the order their atomics ran, so the layout within a segment varies from run
to run. The results do not: every row of a matmul is computed from that row alone, with the same
reduction order wherever it sits, and the combine reads each token's rows by position in choice order.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

COUNT_BLOCK = 1024


@triton.jit
def _count_kernel(indices_ptr, counts_ptr, entries, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < entries
    expert = tl.load(indices_ptr + offs, mask=mask, other=0)
    tl.atomic_add(counts_ptr + expert, tl.full((BLOCK,), 1, tl.int32), mask=mask)


@triton.jit
def _place_kernel(
    x_ptr, indices_ptr, counts_ptr, cursor_ptr, routed_ptr, position_ptr, bounds_ptr,
    width, experts,
    sx_t, sr_r,
    TOP_K: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    token = tl.program_id(0)
    offs_e = tl.arange(0, BLOCK_E)
    mask_e = offs_e < experts
    counts = tl.load(counts_ptr + offs_e, mask=mask_e, other=0)
    if token == 0:
        tl.store(bounds_ptr + 1 + offs_e, tl.cumsum(counts, 0), mask=mask_e)
        tl.store(bounds_ptr, 0)
    offs_k = tl.arange(0, BLOCK_K)
    mask_k = offs_k < TOP_K
    chosen = tl.load(indices_ptr + token * TOP_K + offs_k, mask=mask_k, other=0).to(tl.int32)
    # segment start of each chosen expert: the rows of all lower experts
    starts = tl.sum(tl.where(offs_e[None, :] < chosen[:, None], counts[None, :], 0), axis=1)
    slots = tl.atomic_add(cursor_ptr + chosen, tl.full((BLOCK_K,), 1, tl.int32), mask=mask_k)
    positions = starts + slots
    tl.store(position_ptr + token * TOP_K + offs_k, positions, mask=mask_k)
    rows = positions.to(tl.int64) * sr_r
    source = x_ptr + token.to(tl.int64) * sx_t
    start = 0
    while start < width:  # a while loop also runs under TRITON_INTERPRET with numpy 2
        offs_d = start + tl.arange(0, BLOCK_D)
        mask_d = offs_d < width
        values = tl.load(source + offs_d, mask=mask_d, other=0.0)
        block = tl.broadcast_to(values[None, :], (BLOCK_K, BLOCK_D))
        tl.store(routed_ptr + rows[:, None] + offs_d[None, :], block, mask=mask_k[:, None] & mask_d[None, :])
        start += BLOCK_D


def dispatch_rows(
    x: torch.Tensor, indices: torch.Tensor, num_experts: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The routed rows of x [T, d] (unit stride along d) laid out by expert.

    indices [T, k] (each token's chosen experts, all below ``num_experts``). Returns ``routed``
    [T * k, d] (expert e's rows in ``routed[bounds[e]:bounds[e + 1]]``), ``position`` [T * k] int32
    (the row of (token t, choice j) at ``t * k + j``) and ``bounds`` [E + 1] int32.
    """
    tokens, top_k = indices.shape
    width = x.shape[1]
    if x.stride(1) != 1:
        x = x.contiguous()
    indices = indices.contiguous()
    entries = tokens * top_k
    tallies = torch.zeros(2, num_experts, dtype=torch.int32, device=x.device)  # counts, cursors
    routed = torch.empty(entries, width, dtype=x.dtype, device=x.device)
    position = torch.empty(entries, dtype=torch.int32, device=x.device)
    bounds = torch.empty(num_experts + 1, dtype=torch.int32, device=x.device)
    if tokens == 0:
        bounds.zero_()
        return routed, position, bounds
    _count_kernel[(triton.cdiv(entries, COUNT_BLOCK),)](indices, tallies[0], entries, BLOCK=COUNT_BLOCK)
    _place_kernel[(tokens,)](
        x, indices, tallies[0], tallies[1], routed, position, bounds,
        width, num_experts,
        x.stride(0), routed.stride(0),
        TOP_K=top_k, BLOCK_K=triton.next_power_of_2(top_k), BLOCK_E=triton.next_power_of_2(num_experts),
        BLOCK_D=min(1024, triton.next_power_of_2(width)), num_warps=4,
    )  # fmt: skip
    return routed, position, bounds
