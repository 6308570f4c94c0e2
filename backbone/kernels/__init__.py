"""GPU fast paths of the language model and the rule that picks them.

A fast path runs only on CUDA tensors, when Triton is importable and `OMNI_DISABLE_FAST_PATHS` is not
set to 1; otherwise the pure-PyTorch reference in `backbone.ssd` runs (always the case on CPU). The
`*_auto` functions have the reference functions' signatures, so callers need not know which ran.
"""

from __future__ import annotations

import os
from functools import lru_cache

import torch

from ..ssd import ssd_chunked, ssd_step

DISABLE_ENV = "OMNI_DISABLE_FAST_PATHS"
# Routed rows (tokens x top_k) up to which the experts run as gathered matrix-vector products.
EXPERTS_GEMV_MAX_ROWS = 64


@lru_cache(maxsize=1)
def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def fast_paths_enabled(*tensors: torch.Tensor) -> bool:
    """Whether the Triton fast paths should handle these (CUDA) tensors.

    The kernels have no backward, so inputs that need gradients keep the reference path.
    """
    if not tensors[0].is_cuda or os.environ.get(DISABLE_ENV, "0") == "1":
        return False
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        return False
    return triton_available()


def ssd_chunked_auto(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    chunk_size: int,
    D: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`backbone.ssd.ssd_chunked`, on the Triton kernel where `fast_paths_enabled`."""
    if fast_paths_enabled(x, dt, A, B, C, D, initial_state):
        from .ssd_triton import ssd_chunked_triton

        return ssd_chunked_triton(x, dt, A, B, C, D, initial_state)
    return ssd_chunked(x, dt, A, B, C, chunk_size, D, initial_state=initial_state)


def ssd_step_auto(
    state: torch.Tensor,
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
) -> torch.Tensor:
    """`backbone.ssd.ssd_step` (state updated in place), on the fused Triton kernel where enabled."""
    if fast_paths_enabled(x, dt, A, B, C, D) and state.is_contiguous():
        from .ssd_triton import ssd_step_triton

        return ssd_step_triton(state, x, dt, A, B, C, D)
    return ssd_step(state, x, dt, A, B, C, D)


def experts_gemv_usable(x: torch.Tensor, indices: torch.Tensor, up_proj: torch.Tensor) -> bool:
    """Whether the routed experts of these few tokens should run on `moe_triton.experts_gemv_triton`."""
    return indices.numel() <= EXPERTS_GEMV_MAX_ROWS and fast_paths_enabled(x, up_proj)


def experts_gemv(
    x: torch.Tensor,
    indices: torch.Tensor,
    weights: torch.Tensor,
    up_proj: torch.Tensor,
    down_proj: torch.Tensor,
) -> torch.Tensor:
    """`moe_triton.experts_gemv_triton` (import deferred so CPU-only installs never load Triton)."""
    from .moe_triton import experts_gemv_triton

    return experts_gemv_triton(x, indices, weights, up_proj, down_proj)


def decode_attention(
    q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, key_mask: torch.Tensor, scale: float
) -> torch.Tensor:
    """`decode_attention_triton.decode_attention_triton` (import deferred, as above)."""
    from .decode_attention_triton import decode_attention_triton

    return decode_attention_triton(q, keys, values, key_mask, scale)


def topk_combine(
    rows: torch.Tensor, position: torch.Tensor, weights: torch.Tensor, addend: torch.Tensor | None = None
) -> torch.Tensor:
    """`moe_combine_triton.topk_combine_triton` (import deferred, as above)."""
    from .moe_combine_triton import topk_combine_triton

    return topk_combine_triton(rows, position, weights, addend)


def dispatch_rows(
    x: torch.Tensor, indices: torch.Tensor, num_experts: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`moe_dispatch_triton.dispatch_rows` (import deferred, as above)."""
    from .moe_dispatch_triton import dispatch_rows as dispatch

    return dispatch(x, indices, num_experts)
