"""A linear layer and the SiLU after it as one GEMM on quack's kernels, where that package serves the GPU.

The FastConformer feed-forward blocks (two per layer) apply SiLU to their first linear's output. cuBLAS
has no SiLU epilogue, so torch writes the 4,096-wide activations, reads them back for the SiLU and writes
them again: 48 extra passes for 10 minutes of audio. ``quack-kernels`` (it comes with FlashAttention 4,
``pip install 'omni[fa4]'``) has Hopper GEMMs that add the bias and take the SiLU on the fp32 sums
before rounding them once.

Used for 16-bit inference on Hopper. The kernel is compiled on first use for each configuration
(dtype, widths), not for each row count, and only outside CUDA-graph capture: a capture (the Parakeet
layers' graphs) takes it once it has run eagerly for that configuration, and torch's ops before that.
``OMNI_QUACK_ENCODER_FFN=0`` or ``OMNI_DISABLE_FAST_PATHS=1`` turns it off. A configuration whose kernel
fails to build or run is logged once and goes back to torch.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any

import torch
from torch import nn

from encoders.fast_path import attempt, inference_kernel_usable

logger = logging.getLogger(__name__)

ENV = "OMNI_QUACK_ENCODER_FFN"
_READY: set[tuple] = set()  # configurations that ran eagerly: a CUDA-graph capture may take them


@functools.cache
def _kernels() -> tuple[Any, Any] | None:
    try:
        from quack.gemm_config import GemmConfig
        from quack.gemm_interface import gemm_act
    except Exception as err:  # not installed, or its compiler stack does not load here
        logger.debug("quack is not available: %s", err)
        return None
    return gemm_act, GemmConfig


def _configuration(hidden: torch.Tensor, linear: nn.Linear) -> tuple:
    return ("quack linear+silu", hidden.device, hidden.dtype, *linear.weight.shape, linear.bias is not None)


def usable(hidden: torch.Tensor, linear: nn.Linear) -> bool:
    """Whether `linear_silu` may take `hidden` [..., in]: a 16-bit CUDA tensor on Hopper, no gradients
    wanted, the weights in its dtype, widths in multiples of 8, the package importable, allowed by the
    environment, and outside a CUDA-graph capture unless the configuration already ran."""
    params = [linear.weight] + ([linear.bias] if linear.bias is not None else [])
    if not inference_kernel_usable(hidden, params) or os.environ.get(ENV, "1") == "0":
        return False
    if any(p.dtype != hidden.dtype for p in params) or any(size % 8 for size in linear.weight.shape):
        return False
    if torch.cuda.get_device_capability(hidden.device)[0] != 9:
        return False
    if torch.cuda.is_current_stream_capturing() and _configuration(hidden, linear) not in _READY:
        return False
    return _kernels() is not None


def linear_silu(hidden: torch.Tensor, linear: nn.Linear) -> torch.Tensor | None:
    """``silu(linear(hidden))`` [..., out] in `hidden`'s dtype, the bias and SiLU applied to the fp32 sums;
    None if the kernel failed (the caller then runs torch's ops)."""
    gemm_act, GemmConfig = _kernels()
    configuration = _configuration(hidden, linear)
    flat = hidden.reshape(-1, hidden.shape[-1])
    if not flat.is_contiguous():
        flat = flat.contiguous()
    # quack's own Hopper default: 128 x 192 tiles in clusters of two, ping-pong warp groups
    config = GemmConfig(
        tile_m=128, tile_n=192, cluster_m=2, cluster_n=1, pingpong=True, swap_ab=False,
        device_capacity=9, is_dynamic_persistent=False,
    )  # fmt: skip

    def launch() -> torch.Tensor:
        with torch.cuda.device(hidden.device):
            _, out = gemm_act(
                flat, linear.weight.t(), bias=linear.bias, activation="silu", store_preact=False,
                tuned=False, config=config,
            )  # fmt: skip
        return out

    out = attempt(configuration, launch)
    if out is None:
        return None
    if not torch.cuda.is_current_stream_capturing():
        _READY.add(configuration)
    return out.view(*hidden.shape[:-1], out.shape[-1])
