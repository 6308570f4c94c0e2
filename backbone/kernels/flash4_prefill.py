"""A long causal prefill's attention on FlashAttention 4 (``flash_attn.cute``, the ``flash-attn-4``
package), where it is installed and serves the GPU.

On an H200 (32 query / 2 key-value heads of 128, bf16, the whole call from the projections' views to
the ``[B, L, heads * D]`` the output projection reads) it took 0.153 ms at 3,344 tokens against 0.303
for cuDNN padded to its bucket and 0.379 for torch's flash kernel, 0.666 against 1.000 and 1.500 at
7,517, and 3.46 against 4.25 and 6.36 at 16,144. It reads the ``[B, L, heads, D]`` views of the
projections as they are and writes the layout the output projection reads, where cuDNN needs its
inputs transposed and padded and its output cut and transposed back. Its kernels are compiled once per
configuration (dtype, head width, head ratio), not per length, so there are no length buckets and no
plan to build on a length's first call.

Used for causal prefills of at least `MIN_LENGTH` tokens with nothing cached before them, in fp16/bf16
inference on Hopper or Blackwell. ``OMNI_FLASH_ATTENTION_4=0`` (which the encoders honour too) or
``OMNI_DISABLE_FAST_PATHS=1`` turns it off. A configuration whose kernel fails to build or run is
logged once and keeps torch's kernels.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Callable
from typing import Any

import torch

from . import DISABLE_ENV

logger = logging.getLogger(__name__)

ENV = "OMNI_FLASH_ATTENTION_4"
_ARCHES = (9, 10)  # compute capability majors the package has forward kernels for
_MAX_HEAD_DIM = 128
# Shorter prefills keep torch's flash kernel, as they do without the package (cuDNN's threshold, where
# cuDNN gained microseconds a layer); FlashAttention 4 was not measured below it.
MIN_LENGTH = 2048
_FAILED: set[tuple] = set()


def enabled() -> bool:
    """Whether the environment allows FlashAttention 4 here (`ENV` and the fast-path switch)."""
    return os.environ.get(ENV, "1") != "0" and os.environ.get(DISABLE_ENV, "0") != "1"


@functools.cache
def _kernel() -> Callable[..., Any] | None:
    """``flash_attn_func`` (``[B, L, heads, D]`` in, ``(out, lse)`` out), or None without the package."""
    try:
        from flash_attn.cute import flash_attn_func
    except Exception as err:  # not installed, or its compiler stack does not load here
        logger.debug("FlashAttention 4 is not available: %s", err)
        return None
    return flash_attn_func


def _config(q: torch.Tensor, k: torch.Tensor) -> tuple:
    return (q.device, q.dtype, q.shape[-1], q.shape[2] // k.shape[2])


def usable(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    """Whether a causal prefill over ``[B, L, heads, D]`` queries and ``[B, L, kv_heads, D]`` keys and
    values (the same L: nothing cached before) takes FlashAttention 4."""
    if not q.is_cuda or q.dim() != 4 or q.shape[1] < MIN_LENGTH or not enabled():
        return False
    if q.dtype not in (torch.float16, torch.bfloat16) or not (q.dtype == k.dtype == v.dtype):
        return False
    if k.shape != v.shape or k.shape[:2] != q.shape[:2] or k.shape[-1] != q.shape[-1]:
        return False
    width = q.shape[-1]
    if width % 8 or width > _MAX_HEAD_DIM or q.shape[2] % k.shape[2]:
        return False
    if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
        return False  # inference only: the backward is not wired here
    if _config(q, k) in _FAILED or torch.cuda.get_device_capability(q.device)[0] not in _ARCHES:
        return False
    return _kernel() is not None


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor | None:
    """Causal GQA over ``[B, L, heads, D]`` / ``[B, L, kv_heads, D]`` tensors (see `usable`): ``[B, L,
    heads, D]`` out. None if the kernel failed: logged once, and this configuration keeps torch's
    kernels for the rest of the process."""
    kernel = _kernel()
    assert kernel is not None
    config = _config(q, k)
    on_device = torch.cuda.device(q.device) if q.is_cuda else contextlib.nullcontext()
    try:
        with on_device:
            out = kernel(q, k, v, softmax_scale=scale, causal=True)
    except Exception as err:  # a configuration the package cannot build or run here
        _FAILED.add(config)
        logger.warning("FlashAttention 4 failed (%s); using torch's attention for %s", err, config)
        return None
    return out[0] if isinstance(out, tuple) else out
