"""``scaled_dot_product_attention`` for the encoders, with cuDNN's attention only for recurring shapes.

cuDNN's attention is the fastest on Hopper for the ViT's 80-wide heads (an H200, 13,312 patches: the
whole ViT in 114 ms against 145 ms with the flash kernel, which pads heads to 96), but it builds an
execution plan for every new shape: about 60 ms per forward shape there, and far more with backward
plans (a fine-tuning step over images of varied sizes spent about 2 s building plans against 0.2 s of
work on an H100). So:

- with gradients (training) it is never used: flash, memory-efficient, math;
- in inference a shape takes cuDNN from its second call on (its plan is then built once and reused,
  e.g. every pass over a video's equal frames, or a service seeing the same image sizes); a one-off
  shape stays on the plan-free kernels.

Where the optional FlashAttention 4 package is installed (``encoders.flash4``), plain inference
attention on Hopper and Blackwell takes it before any of these.
"""

from __future__ import annotations

import contextlib
import inspect
from typing import Any

import torch
import torch.nn.functional as F

from encoders import flash4

try:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    _PLAN_FREE = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    _WITH_CUDNN = [SDPBackend.CUDNN_ATTENTION, *_PLAN_FREE]
    # the list order is the priority only where sdpa_kernel takes set_priority (torch >= 2.6)
    _PRIORITY = {"set_priority": True} if "set_priority" in inspect.signature(sdpa_kernel).parameters else {}
except ImportError:  # torch < 2.3
    sdpa_kernel = None

_SEEN: dict[tuple, int] = {}
_SEEN_LIMIT = 4096  # shapes remembered; the count starts over beyond it


def _recurring(query: torch.Tensor, key: torch.Tensor, kwargs: dict[str, Any]) -> bool:
    """Count this inference shape; True from its second call on."""
    mask = kwargs.get("attn_mask")
    shape = (
        tuple(query.shape),
        tuple(key.shape),
        query.dtype,
        query.device,
        None if mask is None else mask.shape,
    )
    if len(_SEEN) >= _SEEN_LIMIT and shape not in _SEEN:
        _SEEN.clear()
    _SEEN[shape] = _SEEN.get(shape, 0) + 1
    return _SEEN[shape] >= 2


def backends_for(query: torch.Tensor, key: torch.Tensor, kwargs: dict[str, Any]) -> list:
    """The SDPA backends, in priority order, for this call (see the module docstring)."""
    training = torch.is_grad_enabled() and (query.requires_grad or key.requires_grad)
    if training or not _recurring(query, key, kwargs):
        return _PLAN_FREE
    return _WITH_CUDNN


def attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    """``F.scaled_dot_product_attention(query, key, value, **kwargs)``: FlashAttention 4 where
    `flash4.usable`, else SDPA on the backends of `backends_for`."""
    if flash4.usable(query, key, value, kwargs):
        out = flash4.attention(query, key, value)
        if out is not None:
            return out
    if query.is_cuda and sdpa_kernel is not None:
        context = sdpa_kernel(backends_for(query, key, kwargs), **_PRIORITY)
    else:
        context = contextlib.nullcontext()
    with context:
        return F.scaled_dot_product_attention(query, key, value, **kwargs)
