"""FlashAttention 4 (``flash_attn.cute``, the ``flash-attn-4`` package) for the encoders, when installed.

cuDNN's attention runs the ViT's 80-wide heads at the cost of 128-wide ones; FlashAttention 4's Hopper
kernel tiles the head at 80 (a multiple of 16). It is optional: without the package, on other GPUs, with
gradients, a mask or dropout, the encoders keep torch's SDPA. Packed images of mixed sizes take its
variable-length kernel: one call for all of them, where SDPA needs one per size. Its kernels are compiled on first use for
each configuration (dtype, head width), not for each sequence length, so varied image sizes do not add
compile time. On Hopper, 80-wide heads take a tile measured faster than the package's own choice
(`_HOPPER_TILES`). ``OMNI_FLASH_ATTENTION_4=0`` in the environment turns it off.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import inspect
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch

logger = logging.getLogger(__name__)

_ARCHES = (9, 10)  # compute capability majors the package has forward kernels for (Hopper, Blackwell)
_FAILED: set[tuple] = set()  # configurations whose kernel failed to build or run; they stay on SDPA
# Hopper tiles (query rows x key rows) that beat the package's own choice, by head width. For 80-wide
# heads (the ViT's) it takes 192 x 144, tuned at 96. On an H200 (16 heads, bf16, each length measured
# twice, interleaved) 192 x 160 took 1.58-1.60 ms at 13,312 tokens against 1.65-1.68, 0.247-0.252
# against 0.260-0.262 at 4,096, 0.66-0.67 against 0.68-0.73 for 12 packed images, and the same at 4 x
# 2,304 (0.286-0.291 against 0.285-0.287).
_HOPPER_TILES = {80: (192, 160)}
_TILE_ARGS = {"mma_pv_is_rs": False, "intra_wg_overlap": True}  # as the package sets them for 80


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


@functools.cache
def _tiled_forward() -> Callable[..., Any] | None:
    """The package's forward entry that takes a tile (``interface._flash_attn_fwd``: ``(out, lse, ...)``
    out, plain and variable-length inputs), or None where this version has no such entry."""
    try:
        from flash_attn.cute.interface import _flash_attn_fwd
    except Exception:  # not installed, or laid out otherwise in this version
        return None
    needed = {"tile_mn", *_TILE_ARGS, "cu_seqlens_q", "cu_seqlens_k", "max_seqlen_q", "max_seqlen_k"}
    return _flash_attn_fwd if needed <= set(inspect.signature(_flash_attn_fwd).parameters) else None


def _tile(config: tuple) -> dict[str, Any] | None:
    """The tile arguments for this configuration where `_HOPPER_TILES` has one for it, else None."""
    device, _, width, _ = config
    tile = _HOPPER_TILES.get(width)
    if tile is None or device.type != "cuda" or (*config, "tile") in _FAILED:
        return None
    if torch.cuda.get_device_capability(device)[0] != 9:
        return None
    return {"tile_mn": tile, **_TILE_ARGS} if _tiled_forward() is not None else None


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


def _run(
    kernel: Callable[..., Any], config: tuple, *args: Any, fallback: str = "torch's attention", **kwargs: Any
) -> torch.Tensor | None:
    """``kernel(*args, **kwargs)``'s output tensor, or None if it failed: logged once, and ``config``
    goes to ``fallback`` for the rest of the process."""
    device = config[0]
    on_device = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
    try:
        with on_device:
            out = kernel(*args, **kwargs)
    except Exception as err:  # a configuration the package cannot build here
        _FAILED.add(config)
        logger.warning("FlashAttention 4 failed (%s); using %s for %s", err, fallback, config)
        return None
    return out[0] if isinstance(out, tuple) else out


def _forward(kernel: Callable[..., Any], config: tuple, *args: Any, **kwargs: Any) -> torch.Tensor | None:
    """`_run` of the package's kernel, on the tile of `_tile` where it has one (its own choice if that
    tile fails)."""
    tile = _tile(config)
    if tile is not None:
        tiled = _tiled_forward()
        out = _run(tiled, (*config, "tile"), *args, fallback="its own tile", **kwargs, **tile)
        if out is not None:
            return out
    return _run(kernel, config, *args, **kwargs)


def attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor | None:
    """Softmax attention of ``[B, heads, L, D]`` tensors (``[B, heads, L, D]`` out, a view of the
    kernel's ``[B, L, heads, D]`` result); None if the kernel failed (see `_run`)."""
    kernel = _kernel()
    assert kernel is not None
    out = _forward(kernel, _config(query), query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2))
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
    out = _forward(
        kernel,
        _config(query, varlen=True),
        *flat,
        cu_seqlens_q=bounds,
        cu_seqlens_k=bounds,
        max_seqlen_q=longest,
        max_seqlen_k=longest,
    )
    return None if out is None else out.transpose(0, 1)[None]
