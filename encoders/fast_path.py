"""When the encoders may take their own GPU kernels: CUDA (compute capability 8.0 or later, for 16-bit
tensor-core dots), 16-bit activations, no gradients wanted (the kernels have no backward), Triton
importable, and not switched off by the package-wide ``OMNI_DISABLE_FAST_PATHS=1`` (the reference path
then runs). A kernel that fails to build or run (`attempt`) is logged once and not tried again for its
configuration; the reference path takes over."""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

import torch

T = TypeVar("T")
logger = logging.getLogger(__name__)
MIN_CAPABILITY = (8, 0)  # bf16 tensor-core dots in Triton
_FAILED: set[tuple] = set()  # kernel configurations that failed to build or run

# The package-wide switch that keeps every GPU kernel of our own off (the reference path runs).
DISABLE_FAST_PATHS_ENV = "OMNI_DISABLE_FAST_PATHS"


def fast_paths_enabled() -> bool:
    """Whether the environment allows our own kernels (``OMNI_DISABLE_FAST_PATHS`` unset or not ``1``)."""
    return os.environ.get(DISABLE_FAST_PATHS_ENV, "0") != "1"


def triton_available() -> bool:
    """Whether Triton can be imported (without importing it)."""
    return importlib.util.find_spec("triton") is not None


def inference_kernel_usable(hidden: torch.Tensor, parameters: Iterable[torch.Tensor]) -> bool:
    """Whether an inference-only Triton kernel may run on ``hidden``: a bf16/fp16 CUDA tensor, no
    gradient wanted of it or of ``parameters``, Triton there and fast paths allowed."""
    if not hidden.is_cuda or hidden.dtype not in (torch.bfloat16, torch.float16) or not fast_paths_enabled():
        return False
    if torch.is_grad_enabled() and (hidden.requires_grad or any(p.requires_grad for p in parameters)):
        return False
    return torch.cuda.get_device_capability(hidden.device) >= MIN_CAPABILITY and triton_available()


def unhooked(module: torch.nn.Module) -> bool:
    """Whether ``module`` has no forward hooks of its own: a kernel that skips calling it skips nothing."""
    return not module._forward_hooks and not module._forward_pre_hooks


def plain(module: torch.nn.Module, kind: type[torch.nn.Module]) -> bool:
    """Whether ``module`` is exactly a ``kind`` (``nn.Linear``, ``nn.Conv1d``) without forward hooks, so a
    kernel may use its weight and bias in place of calling it. A wrapped or derived layer must be called:
    a LoRA layer (peft's) exposes its base layer's weight as its own, and reading that weight would skip
    the adapter."""
    return type(module) is kind and unhooked(module)


def attempt(configuration: tuple, launch: Callable[[], T]) -> T | None:
    """``launch()``'s result, or None when this kernel ``configuration`` failed to build or run before or
    fails now (too little shared memory on a smaller GPU, a compiler error): the failure is logged once,
    and the caller runs the reference path."""
    if configuration in _FAILED:
        return None
    try:
        return launch()
    except Exception as err:  # any build or launch failure: the reference path is always right
        _FAILED.add(configuration)
        logger.warning("kernel %s failed (%s); using the reference path for it", configuration, err)
        return None


def derived(owner: torch.nn.Module, name: str, sources: Sequence[torch.Tensor], build: Callable[[], T]) -> T:
    """``build()``, a value computed from ``sources`` (weights folded for a kernel), cached on ``owner`` until
    any source changes: another tensor, dtype or device, or an in-place update (its version counter), as
    loading a state dict or an optimizer step makes. Kept out of the state dict."""
    signature = tuple((t.data_ptr(), t._version, t.dtype, t.device, t.shape) for t in sources)
    cache = owner.__dict__.setdefault("_derived", {})
    hit = cache.get(name)
    if hit is not None and hit[0] == signature:
        return hit[1]
    value = build()
    cache[name] = (signature, value)
    return value
