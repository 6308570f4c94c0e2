"""Triton exact GELU, ``x * 0.5 * (1 + erf(x / sqrt(2)))``, for the ViT's MLP in inference.

The same expression, in the same order and in fp32, as PyTorch's CUDA GELU, with the same ``erf`` (CUDA's
libdevice); the result is rounded once at the store, as PyTorch rounds it. PyTorch's own kernel moved the
video ViT's [tokens, 5,120] activations at about half the memory bandwidth of an H200; this one is a plain
streaming pass.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

GELU_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
BLOCK = 2048
SQRT_HALF = 0.7071067811865476


@triton.jit
def _gelu_kernel(x_ptr, out_ptr, count, BLOCK: tl.constexpr, SQRT_HALF: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < count
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    out = x * 0.5 * (1.0 + tl.math.erf(x * SQRT_HALF))
    tl.store(out_ptr + offs, out.to(out_ptr.dtype.element_ty), mask=mask)


def gelu_usable(x: torch.Tensor) -> bool:
    """Whether `gelu_triton` takes ``x`` (dtype and layout; the device is the caller's check)."""
    return x.dtype in GELU_DTYPES and x.is_contiguous()


def gelu_triton(x: torch.Tensor) -> torch.Tensor:
    """``torch.nn.functional.gelu(x)`` (exact, not the tanh form) as one streaming kernel."""
    out = torch.empty_like(x)
    count = x.numel()
    if count:
        _gelu_kernel[(triton.cdiv(count, BLOCK),)](
            x, out, count, BLOCK=BLOCK, SQRT_HALF=SQRT_HALF, num_warps=8
        )
    return out
