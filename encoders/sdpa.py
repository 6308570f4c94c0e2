"""``scaled_dot_product_attention`` for the encoders, kept off cuDNN's attention backend on CUDA.

cuDNN builds a new execution plan for every new sequence length (forward and backward). Encoder
inputs change length with every image size, clip length and batch, so on an H100 (torch 2.11) a
fine-tuning step over images of varied sizes spent about 2 s building plans against 0.2 s of work.
The flash, memory-efficient and math kernels need no plans.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn.functional as F

try:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    _CUDA_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
except ImportError:  # torch < 2.3
    sdpa_kernel = None


def attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    """``F.scaled_dot_product_attention(query, key, value, **kwargs)`` on a plan-free backend."""
    if query.is_cuda and sdpa_kernel is not None:
        context = sdpa_kernel(_CUDA_BACKENDS)
    else:
        context = contextlib.nullcontext()
    with context:
        return F.scaled_dot_product_attention(query, key, value, **kwargs)
