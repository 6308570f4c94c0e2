"""FlashAttention 4 (``flash_attn.cute``, the ``flash-attn-4`` package) for the encoders, when installed.

cuDNN's attention runs the ViT's 80-wide heads at the cost of 128-wide ones; FlashAttention 4's Hopper
kernel tiles the head at 80 (a multiple of 16). It is optional: without the package, on other GPUs, with
gradients, a mask or dropout, the encoders keep torch's SDPA. Packed images of mixed sizes take its
variable-length kernel: one call for all of them, where SDPA needs one per size. Its kernels are compiled on first use for
each configuration (dtype, head width), not for each sequence length, so varied image sizes do not add
compile time. ``OMNI_FLASH_ATTENTION_4=0`` in the environment turns it off.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch

logger = logging.getLogger(__name__)

_ARCHES = (9, 10)  # compute capability majors the package has forward kernels for (Hopper, Blackwell)
_FAILED: set[tuple] = set()  # configurations whose kernel failed to build or run; they stay on SDPA


def enabled() -> bool:
    """Whether the environment allows FlashAttention 4 (``OMNI_FLASH_ATTENTION_4``, default on)."""
    return os.environ.get("OMNI_FLASH_ATTENTION_4", "1") != "0"


@functools.cache
def _kernels() -> tuple[Callable[..., Any], Callable[..., Any]] | None:
    try:
        from flash_attn.cute import flash_attn_func, flash_attn_varlen_func
    except Exception as err:  # not installed, or its compiler stack does not load here
        logger.debug("FlashAttention 4 is not available: %s", err)
        return None
    return flash_attn_func, flash_attn_varlen_func


def _kernel() -> Callable[..., Any] | None:
    """``flash_attn_func`` (``[B, L, heads, D]`` in, ``(out, lse)`` out), or None without the package."""
    kernels = _kernels()
    return None if kernels is None else kernels[0]


def _varlen_kernel() -> Callable[..., Any] | None:
    """``flash_attn_varlen_func`` (``[L, heads, D]`` and cumulative lengths in), or None."""
    kernels = _kernels()
    return None if kernels is None else kernels[1]


def installed_version() -> str | None:
    """The installed ``flash-attn-4`` version (read from its metadata, without importing it), or None."""
    try:
        return importlib.metadata.version("flash-attn-4")
    except importlib.metadata.PackageNotFoundError:
        return None


def serves(device: torch.device) -> bool:
    """Whether the encoders' attention on ``device`` goes to FlashAttention 4 (installed, allowed by the
    environment, a Hopper or Blackwell GPU); says so without importing the package."""
    if device.type != "cuda" or not enabled() or installed_version() is None:
        return False
    return torch.cuda.get_device_capability(device)[0] in _ARCHES


def _config(query: torch.Tensor, varlen: bool = False) -> tuple:
    return (query.device, query.dtype, query.shape[-1], varlen)


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


def _run(kernel: Callable[..., Any], config: tuple, *args: Any, **kwargs: Any) -> torch.Tensor | None:
    """``kernel(*args, **kwargs)``'s output tensor, or None if it failed: logged once, and ``config``
    goes back to SDPA for the rest of the process."""
    device = config[0]
    on_device = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
    try:
        with on_device:
            out = kernel(*args, **kwargs)
    except Exception as err:  # a configuration the package cannot build here
        _FAILED.add(config)
        logger.warning("FlashAttention 4 failed (%s); using torch's attention for %s", err, config)
        return None
    return out[0] if isinstance(out, tuple) else out


def attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor | None:
    """Softmax attention of ``[B, heads, L, D]`` tensors (``[B, heads, L, D]`` out, a view of the
    kernel's ``[B, L, heads, D]`` result); None if the kernel failed (see `_run`)."""
    kernel = _kernel()
    assert kernel is not None
    out = _run(kernel, _config(query), query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2))
    return None if out is None else out.transpose(1, 2)


def varlen_usable(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> bool:
    """Whether `varlen_attention` can take these ``[1, heads, L, D]`` tensors (see `usable`)."""
    return (
        query.dim() == 4
        and query.shape[0] == 1
        and usable(query, key, value, {})
        and _config(query, varlen=True) not in _FAILED
        and _varlen_kernel() is not None
    )


def varlen_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, seq_lengths: Sequence[int]
) -> torch.Tensor | None:
    """Attention of packed independent sequences of ``seq_lengths`` tokens along ``L`` of ``[1, heads,
    L, D]`` tensors, in one call whatever their sizes; None if the kernel failed (see `_run`)."""
    kernel = _varlen_kernel()
    assert kernel is not None
    bounds = torch.tensor([0, *seq_lengths], dtype=torch.int32).cumsum(0, dtype=torch.int32)
    bounds = bounds.to(query.device, non_blocking=True)
    longest = max(seq_lengths)
    flat = [t[0].transpose(0, 1) for t in (query, key, value)]  # [L, heads, D] views
    out = _run(
        kernel,
        _config(query, varlen=True),
        *flat,
        cu_seqlens_q=bounds,
        cu_seqlens_k=bounds,
        max_seqlen_q=longest,
        max_seqlen_k=longest,
    )
    return None if out is None else out.transpose(0, 1)[None]
