"""Triton squared ReLU, ``relu(x) ** 2`` in one pass over memory.

PyTorch runs it as two elementwise kernels (the ReLU, then the square), each reading and writing the whole
tensor; in a prefill the experts' hidden activations are the largest tensors of a layer (tokens x top-k x
the expert width), so the second pass costs as much as the first. The result is bit for bit PyTorch's: the
square of a 16-bit value is exact in fp32, and the one rounding is at the store, as PyTorch's square rounds.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

RELU2_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
BLOCK = 2048
# Below this many elements (a decode step's shared expert: batch x 3,712) the two PyTorch kernels are as
# quick; at batch-1 decode an H200 showed no difference outside the spread of runs (1,656 against 1,686
# tokens/s, two runs each, 8-layer cut), so small tensors keep PyTorch's kernels.
MIN_ELEMENTS = 1 << 20


@triton.jit
def _relu2_kernel(x_ptr, out_ptr, count, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < count
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    positive = tl.maximum(x, 0.0)
    positive = tl.where(x != x, x, positive)  # NaN stays NaN, as torch.relu keeps it
    tl.store(out_ptr + offs, (positive * positive).to(out_ptr.dtype.element_ty), mask=mask)


def relu2_usable(x: torch.Tensor) -> bool:
    """Whether `relu2_triton` takes ``x`` (dtype, layout, large enough to gain; the device is the
    caller's check)."""
    return x.dtype in RELU2_DTYPES and x.is_contiguous() and x.numel() >= MIN_ELEMENTS


def relu2_triton(x: torch.Tensor) -> torch.Tensor:
    """``torch.relu(x).square()`` as one kernel; ``x`` contiguous, any shape."""
    out = torch.empty_like(x)
    count = x.numel()
    if count:
        _relu2_kernel[(triton.cdiv(count, BLOCK),)](x, out, count, BLOCK=BLOCK, num_warps=8)
    return out
