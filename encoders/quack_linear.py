"""A linear layer and the activation after it as one quack GEMM on Hopper, the activation in the epilogue.

``quack-kernels`` (CuTe DSL kernels; it comes with FlashAttention 4, ``pip install 'omni[fa4]'``) applies
the activation to the fp32 sums before they are rounded, in the GEMM's epilogue: the separate activation
pass, a read and a write of the whole hidden layer, goes away, and the result is rounded once instead of
twice. The audio encoder takes it for its feed-forward's first linear and SiLU, and for its convolution
module's first pointwise convolution and GLU. On an H200, inside the encoder's CUDA graph, at 20 clips of
30 s (7,520 rows, 1,024 wide, with biases): the linear to 4,096 with SiLU took 89 µs against 129 to 135 µs
for cuBLAS followed by torch's SiLU, the linear to 2,048 with GLU 51 to 54 µs against 77 to 81 µs.

Used for bf16 inference on Hopper with the package installed, also while a CUDA graph is captured (the
capture's warm-up compiles the kernel first). The kernel is compiled on first use (a few seconds), once
per configuration, not per row count. ``OMNI_QUACK_ENCODERS=0`` turns it off, as does
``OMNI_DISABLE_FAST_PATHS=1``; a configuration that fails to build or run is logged once and the caller's
torch path takes over.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any

import torch

from encoders import fast_path

logger = logging.getLogger(__name__)

ENV = "OMNI_QUACK_ENCODERS"
# quack's names of the epilogue activations offered here; "glu" takes `gated_operands`
ACTIVATIONS = ("silu", "glu")
# 128 x 192 tiles, ping-pong warpgroups: the fastest of five configurations at 7,520 x 1,024 -> 4,096 on
# an H200 (89 µs; 128 x 128 ping-pong 94, quack's own tuning 93, 128 x 256 and 256 x 128 in clusters of
# two 113). For the GLU's 2,048 outputs quack's tuning was 2 to 3 µs faster (49-50 against 51-54 µs).
_TILE = {"tile_m": 128, "tile_n": 192, "cluster_m": 1, "pingpong": True}


@functools.cache
def _kernels() -> tuple[Any, Any] | None:
    try:
        from quack.gemm_config import GemmConfig
        from quack.gemm_interface import gemm_act
    except Exception as err:  # not installed, or its compiler stack does not load here
        logger.debug("quack is not available: %s", err)
        return None
    return gemm_act, GemmConfig


def usable(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> bool:
    """Whether `linear_act` may take ``x [..., in]``, ``weight [out, in]`` and ``bias [out]``: bf16 on a
    Hopper GPU, no gradients wanted, widths in multiples of 8, the package importable, allowed by the
    environment."""
    operands = (x, weight) if bias is None else (x, weight, bias)
    if not x.is_cuda or any(t.dtype != torch.bfloat16 for t in operands):
        return False
    if os.environ.get(ENV, "1") == "0" or not fast_path.fast_paths_enabled():
        return False
    if torch.is_grad_enabled() and any(t.requires_grad for t in operands):
        return False
    if torch.cuda.get_device_capability(x.device)[0] != 9 or weight.shape[0] % 8 or weight.shape[1] % 8:
        return False
    return x.shape[-1] == weight.shape[1] and _kernels() is not None


def gated_operands(
    weight: torch.Tensor, bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A linear's ``weight [2n, in]`` and ``bias [2n]`` before torch's GLU (``first · sigmoid(second)`` of
    the output's halves) laid out for quack's ``"glu"`` (``sigmoid(gate) · up`` over interleaved
    ``(gate, up)`` rows): row ``2j`` is the second half's row ``j``, row ``2j + 1`` the first half's. A copy
    (the caller keeps it with `fast_path.derived`)."""
    first, second = weight.chunk(2)
    interleaved = torch.stack([second, first], dim=1).reshape(weight.shape).contiguous()
    if bias is None:
        return interleaved, None
    first_bias, second_bias = bias.chunk(2)
    return interleaved, torch.stack([second_bias, first_bias], dim=1).reshape(bias.shape).contiguous()


def linear_act(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, activation: str
) -> torch.Tensor | None:
    """``activation(x @ weight.T + bias)`` as one GEMM, shaped ``[..., out]`` (``[..., out / 2]`` for the
    gated ``"glu"``, whose operands come from `gated_operands`), or None when this configuration failed
    to build or run (logged once; the caller runs torch's ops)."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation {activation!r} is not one of {ACTIVATIONS}")
    gemm_act, GemmConfig = _kernels()
    rows = x.reshape(-1, x.shape[-1])
    config = GemmConfig(**_TILE, cluster_n=1, swap_ab=False, device_capacity=9, is_dynamic_persistent=False)

    def launch() -> torch.Tensor:
        with torch.cuda.device(x.device):
            _, out = gemm_act(
                rows, weight.t(), bias=bias, activation=activation, store_preact=False, tuned=False,
                config=config,
            )  # fmt: skip
        return out

    configuration = ("quack linear", x.device, tuple(weight.shape), bias is not None, activation)
    out = fast_path.attempt(configuration, launch)
    return None if out is None else out.view(*x.shape[:-1], out.shape[-1])
