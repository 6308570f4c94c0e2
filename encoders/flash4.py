"""FlashAttention 4 (``flash_attn.cute``, the ``flash-attn-4`` package) for the encoders, when installed.

cuDNN's attention runs the ViT's 80-wide heads at the cost of 128-wide ones; FlashAttention 4's Hopper
kernel tiles the head at 80 (a multiple of 16). It is optional: without the package, on other GPUs, with
gradients, a mask or dropout, the encoders keep torch's SDPA. Its kernels are compiled on first use for
each configuration (dtype, head width), not for each sequence length, so varied image sizes do not add
compile time. ``OMNI_FLASH_ATTENTION_4=0`` in the environment turns it off.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Callable
from typing import Any

import torch

logger = logging.getLogger(__name__)

_ARCHES = (9, 10)  # compute capability majors the package has forward kernels for (Hopper, Blackwell)
_FAILED: set[tuple] = set()  # configurations whose kernel failed to build or run; they stay on SDPA


def enabled() -> bool:
    """Whether the environment allows FlashAttention 4 (``OMNI_FLASH_ATTENTION_4``, default on)."""
    return os.environ.get("OMNI_FLASH_ATTENTION_4", "1") != "0"


@functools.cache
def _kernel() -> Callable[..., Any] | None:
    try:
        from flash_attn.cute import flash_attn_func
    except Exception as err:  # not installed, or its compiler stack does not load here
        logger.debug("FlashAttention 4 is not available: %s", err)
        return None
    return flash_attn_func


def _config(query: torch.Tensor) -> tuple:
    return (query.device, query.dtype, query.shape[-1])


def usable(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, kwargs: dict[str, Any]) -> bool:
    """Whether this call can take FlashAttention 4: plain bidirectional attention (no mask, dropout,
    scale or causal flag) in fp16/bf16 on a Hopper or Blackwell GPU, without gradients, heads of a
    multiple of 8 up to 128 columns, the package installed."""
    if kwargs or not query.is_cuda or not enabled():
        return False
    if query.dtype not in (torch.float16, torch.bfloat16) or not (query.dtype == key.dtype == value.dtype):
        return False
    if torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value)):
        return False
    width = query.shape[-1]
    if width % 8 or width > 128 or key.shape[-1] != width or value.shape[-1] != width:
        return False
    if query.dim() != 4 or key.shape[1] != query.shape[1] or _config(query) in _FAILED:
        return False
    if torch.cuda.get_device_capability(query.device)[0] not in _ARCHES:
        return False
    return _kernel() is not None


def attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor | None:
    """Softmax attention of ``[B, heads, L, D]`` tensors (``[B, heads, L, D]`` out, a view of the
    kernel's ``[B, L, heads, D]`` result); None if the kernel failed, which is logged once and sends
    this configuration back to SDPA for the rest of the process."""
    kernel = _kernel()
    assert kernel is not None
    on_device = torch.cuda.device(query.device) if query.is_cuda else contextlib.nullcontext()
    try:
        with on_device:
            out = kernel(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2))
    except Exception as err:  # a configuration the package cannot build here
        _FAILED.add(_config(query))
        logger.warning("FlashAttention 4 failed (%s); using torch's attention for %s", err, _config(query))
        return None
    out = out[0] if isinstance(out, tuple) else out
    return out.transpose(1, 2)
