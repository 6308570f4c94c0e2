"""Triton kernels of the MoE router: `backbone.moe.TopKRouter` without groups.

Two launches, no host synchronisation (CUDA-graph capturable):

* logits, for a few tokens (decode): one program per (token, block of experts) accumulates fp32
  products of the hidden row and the expert rows, read in their own dtype (no fp32 copy of the weight
  is made). More tokens (prefill) bring their logits from one matmul (`backbone.moe.router_logits`);
* selection: one program per token takes s = sigmoid(logits), picks the top k of s + bias in k rounds of
  argmax (one integer maximum a round, over keys packing the score and the index), gathers the unbiased
  s of the chosen experts, optionally divides them by their sum (+1e-20) and scales them. Ties go to
  the lowest expert index; experts come out in order of decreasing biased score, as `torch.topk`
  returns them.

Group-limited selection (`topk_group < n_group`) is not handled here; callers keep the reference for it.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

MAX_ROUTER_TOKENS = 64


@triton.jit
def _router_logits_kernel(
    x_ptr, w_ptr, out_ptr,
    width, experts,
    sx_t, sx_d, sw_e, sw_d, so_t,
    BLOCK_E: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    token = tl.program_id(0).to(tl.int64)
    offs_e = tl.program_id(1) * BLOCK_E + tl.arange(0, BLOCK_E)
    mask_e = offs_e < experts
    acc = tl.zeros((BLOCK_E, BLOCK_D), dtype=tl.float32)
    # A while loop (rather than range over a runtime bound) also runs under TRITON_INTERPRET with numpy 2.
    start = 0
    while start < width:
        offs_d = start + tl.arange(0, BLOCK_D)
        mask_d = offs_d < width
        x = tl.load(x_ptr + token * sx_t + offs_d * sx_d, mask=mask_d, other=0.0).to(tl.float32)
        w = tl.load(
            w_ptr + offs_e[:, None] * sw_e + offs_d[None, :] * sw_d,
            mask=mask_e[:, None] & mask_d[None, :],
            other=0.0,
        ).to(tl.float32)
        acc += w * x[None, :]
        start += BLOCK_D
    tl.store(out_ptr + token * so_t + offs_e, tl.sum(acc, axis=1), mask=mask_e)


@triton.jit
def _router_select_kernel(
    logits_ptr, bias_ptr, weights_ptr, indices_ptr,
    experts, scaling,
    TOP_K: tl.constexpr, NORMALIZE: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    token = tl.program_id(0).to(tl.int64)
    offs_e = tl.arange(0, BLOCK_E)
    mask_e = offs_e < experts
    row = logits_ptr + token * experts
    logits = tl.load(row + offs_e, mask=mask_e, other=0.0)
    bias = tl.load(bias_ptr + offs_e, mask=mask_e, other=0.0).to(tl.float32)
    choice = 1.0 / (1.0 + tl.exp(-logits)) + bias
    # One int64 key per expert orders by choice, then by lower index: the float's bits made monotonic
    # (negative floats have their magnitude bits flipped) above the reversed index. The GPU's canonical
    # NaN ranks highest, as in torch.topk.
    bits = choice.to(tl.int32, bitcast=True)
    ordered = tl.where(bits >= 0, bits, bits ^ 0x7FFFFFFF).to(tl.int64)
    keys = (ordered << 32) | (BLOCK_E - 1 - offs_e).to(tl.int64)
    smallest = -9223372036854775807 - 1
    keys = tl.where(mask_e, keys, smallest)

    offs_k = tl.arange(0, BLOCK_K)
    chosen = tl.zeros((BLOCK_K,), dtype=tl.int32)
    for k in tl.static_range(TOP_K):
        best = tl.max(keys, axis=0)
        pick = BLOCK_E - 1 - (best & 0xFFFFFFFF).to(tl.int32)
        chosen = tl.where(offs_k == k, pick, chosen)
        keys = tl.where(offs_e == pick, smallest, keys)

    mask_k = offs_k < TOP_K
    weights = 1.0 / (1.0 + tl.exp(-tl.load(row + chosen, mask=mask_k, other=0.0)))
    if NORMALIZE:
        weights = weights / (tl.sum(tl.where(mask_k, weights, 0.0), axis=0) + 1e-20)
    weights = weights * scaling
    tl.store(weights_ptr + token * TOP_K + offs_k, weights, mask=mask_k)
    tl.store(indices_ptr + token * TOP_K + offs_k, chosen.to(tl.int64), mask=mask_k)


def router_usable(hidden: torch.Tensor, top_k: int, n_group: int, topk_group: int) -> bool:
    """Whether `router_triton` takes this call: a 2-D input of at least one token, no groups."""
    return hidden.dim() == 2 and hidden.shape[0] > 0 and topk_group >= n_group


def router_logits_triton(hidden: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """fp32 `hidden [T, d] @ weight [E, d]^T` from operands in their own dtype. Returns [T, E] fp32."""
    tokens, width = hidden.shape
    experts = weight.shape[0]
    logits = torch.empty(tokens, experts, dtype=torch.float32, device=hidden.device)
    # Two experts a program: 64 programs for one token of 128 experts; rows read 1024 elements at a time.
    block_e = min(2, triton.next_power_of_2(experts))
    block_d = min(1024, triton.next_power_of_2(width))
    grid = (tokens, triton.cdiv(experts, block_e))
    _router_logits_kernel[grid](
        hidden, weight, logits,
        width, experts,
        *hidden.stride(), *weight.stride(), logits.stride(0),
        BLOCK_E=block_e, BLOCK_D=block_d,
        num_warps=4,
    )  # fmt: skip
    return logits


def router_triton(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    top_k: int,
    norm_topk_prob: bool,
    scaling: float,
    logits: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sigmoid top-k routing of hidden [T, d] over weight [E, d] with the selection bias [E].

    ``logits`` [T, E] fp32, where the caller has them (a prefill's come from one tensor-core matmul);
    otherwise the logits kernel makes them (it suits up to `MAX_ROUTER_TOKENS` tokens).
    Returns (weights [T, k] fp32, indices [T, k] int64), as `TopKRouter.forward` without groups.
    """
    tokens = hidden.shape[0]
    experts = weight.shape[0]
    if not 0 < top_k <= experts:
        raise ValueError(f"top_k={top_k} must be in 1..{experts}")
    if logits is None:
        logits = router_logits_triton(hidden, weight)
    elif logits.shape != (tokens, experts) or logits.dtype != torch.float32 or not logits.is_contiguous():
        raise ValueError(f"logits must be contiguous fp32 [{tokens}, {experts}], got {tuple(logits.shape)}")
    weights = torch.empty(tokens, top_k, dtype=torch.float32, device=hidden.device)
    indices = torch.empty(tokens, top_k, dtype=torch.long, device=hidden.device)
    bias = bias if bias.stride(0) == 1 else bias.contiguous()
    block_e = triton.next_power_of_2(experts)
    _router_select_kernel[(tokens,)](
        logits, bias, weights, indices,
        experts, float(scaling),
        TOP_K=top_k, NORMALIZE=bool(norm_topk_prob),
        BLOCK_E=block_e, BLOCK_K=triton.next_power_of_2(top_k),
        num_warps=1 if block_e <= 128 else 4,
    )  # fmt: skip
    return weights, indices
