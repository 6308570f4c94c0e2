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

Used only on Hopper, for bf16 inference outside CUDA-graph capture, and only from 64 rows per expert
on average (`worthwhile`): below that the GPU time is the same as torch's (the weights' reads set it)
and quack's calls cost the host more. A whole 52-layer prefill on an H200, quack against torch (ms,
medians of six alternated runs): 128 tokens 42.3 against 39.2, 1,024 tokens 49.3 against 34.0, 2,048
tokens 37.4 against 41.3 (41.0 against 41.2 on another machine), 3,344 tokens 50.8 against 55.4 (50.7
against 55.4). The kernels are compiled on first use (about 2 s each), once per configuration, not per
token count. ``OMNI_QUACK_EXPERTS=0`` turns it off. A configuration whose kernel fails to build or run
is logged once and goes back to torch.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any

import torch

logger = logging.getLogger(__name__)

ENV = "OMNI_QUACK_EXPERTS"
_FAILED: set[tuple] = set()
# Mean rows per expert from which the up projection takes 128 x 192 tiles in clusters of two (3.55
# against 3.84 ms at 757 rows per expert on an H200); below it, 192 x 128 tiles do best.
_WIDE_UP_FROM_ROWS = 512
# Mean rows per expert from which quack pays (the module's docstring: it lost at 48, won or drew at 96).
MIN_ROWS_PER_EXPERT = 64


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


def worthwhile(rows: int, experts: int) -> bool:
    """Whether ``rows`` routed rows over ``experts`` experts are enough for quack's GEMMs to beat torch's
    (`MIN_ROWS_PER_EXPERT` on average)."""
    return rows >= MIN_ROWS_PER_EXPERT * experts


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
