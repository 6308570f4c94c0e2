"""A prefill's routed experts on quack's variable-length GEMMs, where that package serves the GPU.

``quack-kernels`` (CuTe DSL kernels; it comes with FlashAttention 4, ``pip install 'omni[fa4]'``) has
Hopper GEMMs over row segments of one matrix, one weight matrix per segment: exactly the experts'
up and down projections over tokens sorted by expert. torch's grouped matmul tiles each expert's rows
128 at a time, so at the 157 rows per expert of a 3,344-token prefill the second tile of every expert
is mostly empty; quack takes 192-row tiles, and squares the ReLU in the up projection's epilogue, on
the fp32 sums before they are rounded. On an H200 at the released shapes, with tokens spread evenly
over the experts (the load the family's bias balancing aims for; one layer's experts, from the gather
to the down projection): 0.88 against 1.13 ms at 3,344 tokens, 1.69 against 2.40 at 7,517, 3.55
against 4.74 at 16,144. The random-weight model of `omni bench ttft` routes otherwise: most tokens go
to a few experts (in the first and last three MoE layers, one held 1,518 to 2,510 of an image's 20,064
rows, and up to 73 of 128 got none in the audio case), whose long segments fill torch's tiles too, and
its time to first token did not move beyond noise. quack's own gather of
the rows (``A_idx``) was slower on Hopper than torch's gather before a TMA-fed GEMM, so it is not used.

The shared expert's up projection (and a ``-`` layer's) takes the same epilogue in a prefill
(`linear_relu2`): one GEMM writes the squared ReLU of the fp32 sums, where cuBLAS wrote the hidden layer
and a Triton pass read it back to square it.

Used only on Hopper, for bf16 inference outside CUDA-graph capture; the kernels are compiled on first
use (about 2 s each), once per configuration, not per token count. ``OMNI_QUACK_EXPERTS=0`` turns off
the routed experts' kernels, ``OMNI_QUACK_RELU2=0`` the dense one. A configuration whose kernel fails to
build or run is logged once and goes back to torch.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any

import torch

logger = logging.getLogger(__name__)

ENV = "OMNI_QUACK_EXPERTS"
DENSE_ENV = "OMNI_QUACK_RELU2"
_FAILED: set[tuple] = set()
# Mean rows per expert from which the up projection takes 128 x 192 tiles in clusters of two (3.55
# against 3.84 ms at 757 rows per expert on an H200); below it, 192 x 128 tiles do best.
_WIDE_UP_FROM_ROWS = 512
# Rows from which `linear_relu2` takes a dense up projection: a prefill's. A decode step's few rows stay on
# cuBLAS (and run inside the decode's CUDA graphs, where these kernels are not taken).
DENSE_MIN_ROWS = 1024
_DENSE_TILE = {"tile_m": 128, "tile_n": 192, "cluster_m": 1, "pingpong": True}


@functools.cache
def _kernels() -> tuple[Any, Any, Any] | None:
    try:
        from quack.gemm_config import GemmConfig
        from quack.gemm_interface import gemm_act, gemm_tuned
    except Exception as err:  # not installed, or its compiler stack does not load here
        logger.debug("quack is not available: %s", err)
        return None
    return gemm_act, gemm_tuned, GemmConfig


def _config(rows_per_expert: float, up: bool) -> dict[str, Any]:
    if up and rows_per_expert >= _WIDE_UP_FROM_ROWS:
        return {"tile_m": 128, "tile_n": 192, "cluster_m": 2}
    return {"tile_m": 192, "tile_n": 128, "cluster_m": 1}


def usable(routed: torch.Tensor, up_proj: torch.Tensor, down_proj: torch.Tensor) -> bool:
    """Whether `experts` may take these operands: bf16 on a Hopper GPU, no gradients wanted, not while a
    CUDA graph is captured, widths in multiples of 8, the package importable, allowed by the environment."""
    if not routed.is_cuda or os.environ.get(ENV, "1") == "0" or routed.dtype != torch.bfloat16:
        return False
    if not (routed.dtype == up_proj.dtype == down_proj.dtype):
        return False
    if torch.is_grad_enabled() and any(t.requires_grad for t in (routed, up_proj, down_proj)):
        return False
    if torch.cuda.get_device_capability(routed.device)[0] != 9 or torch.cuda.is_current_stream_capturing():
        return False
    if any(size % 8 for size in (*up_proj.shape[1:], *down_proj.shape[1:])):
        return False
    return (routed.device, up_proj.shape, down_proj.shape) not in _FAILED and _kernels() is not None


def experts(
    routed: torch.Tensor, bounds: torch.Tensor, up_proj: torch.Tensor, down_proj: torch.Tensor
) -> torch.Tensor | None:
    """``down_e(relu(up_e(x))^2)`` for each expert ``e``'s segment of ``routed`` [rows, in] (rows sorted by
    expert; ``bounds`` [E + 1] int32 the segments' limits, from 0); up_proj [E, I, in], down_proj [E, in, I].
    Returns [rows, in], or None if the kernels failed (the caller then runs torch's)."""
    gemm_act, gemm_tuned, GemmConfig = _kernels()
    rows_per_expert = routed.shape[0] / up_proj.shape[0]

    def config(up: bool) -> Any:
        return GemmConfig(
            **_config(rows_per_expert, up), pingpong=True, cluster_n=1, swap_ab=False,
            device_capacity=9, is_dynamic_persistent=False,
        )  # fmt: skip

    try:
        with torch.cuda.device(routed.device):
            _, hidden = gemm_act(
                routed, up_proj.transpose(1, 2), activation="relu_sq", cu_seqlens_m=bounds,
                store_preact=False, tuned=False, config=config(up=True),
            )  # fmt: skip
            out = torch.empty(routed.shape[0], down_proj.shape[1], dtype=routed.dtype, device=routed.device)
            gemm_tuned.fn(
                hidden, down_proj.transpose(1, 2), out, cu_seqlens_m=bounds, config=config(up=False)
            )
    except Exception as err:  # a configuration the package cannot build or run here
        _FAILED.add((routed.device, up_proj.shape, down_proj.shape))
        logger.warning("quack's expert GEMMs failed (%s); using torch's grouped matmuls", err)
        return None
    return out


def linear_relu2_usable(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    """Whether `linear_relu2` may take ``x [..., in]`` and ``weight [out, in]`` (``bias [out]``): bf16 on a
    Hopper GPU, at least `DENSE_MIN_ROWS` rows, no gradients wanted, not while a CUDA graph is captured,
    widths in multiples of 8, the package importable, allowed by the environment."""
    operands = (x, weight) if bias is None else (x, weight, bias)
    if not x.is_cuda or any(t.dtype != torch.bfloat16 for t in operands):
        return False
    if os.environ.get(DENSE_ENV, "1") == "0":
        return False
    if x.numel() < DENSE_MIN_ROWS * x.shape[-1] or weight.shape[0] % 8 or weight.shape[1] % 8:
        return False
    if torch.is_grad_enabled() and any(t.requires_grad for t in operands):
        return False
    if torch.cuda.get_device_capability(x.device)[0] != 9 or torch.cuda.is_current_stream_capturing():
        return False
    return ("dense", x.device, tuple(weight.shape)) not in _FAILED and _kernels() is not None


def linear_relu2(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor | None:
    """``relu(x @ weight.T + bias) ** 2`` as one GEMM, squared on the fp32 sums and rounded once, shaped
    ``[..., out]``; None if the kernel failed (logged once; the caller runs cuBLAS and `relu2`)."""
    gemm_act, _, GemmConfig = _kernels()
    rows = x.reshape(-1, x.shape[-1])
    config = GemmConfig(
        **_DENSE_TILE, cluster_n=1, swap_ab=False, device_capacity=9, is_dynamic_persistent=False
    )
    try:
        with torch.cuda.device(x.device):
            _, out = gemm_act(
                rows, weight.t(), bias=bias, activation="relu_sq", store_preact=False, tuned=False,
                config=config,
            )  # fmt: skip
    except Exception as err:  # a configuration the package cannot build or run here
        _FAILED.add(("dense", x.device, tuple(weight.shape)))
        logger.warning("quack's squared-ReLU GEMM failed (%s); using cuBLAS and the Triton pass", err)
        return None
    return out.view(*x.shape[:-1], out.shape[-1])
