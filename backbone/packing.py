"""Padded batches as packed rows: the real tokens of every row, one after another, without the padding.

A batch of prompts of different lengths arrives left-padded to the longest. The MoE and dense MLP layers
treat tokens one at a time, so they need not run on the padding at all, and causal attention over the
real tokens of each row is one variable-length call (``cu_seqlens``) instead of a masked ``L × L`` pass
per row. `PackedRows` holds where the real tokens are, `gather` takes them out of a ``[B, L, ...]``
tensor and `scatter` puts results back (zeros at the padding, whose outputs nothing reads: Mamba-2 and
attention mask padding out, and the loss ignores it). Mamba-2 layers keep the padded layout: taking
their projections out of it and back cost more than it saved (H200, 8 prompts of 512 to 4,096 tokens).

Packing is used for a first prefill (nothing cached yet) with padding, on CUDA, unless
``OMNI_PACKED_PREFILL=0`` or ``OMNI_DISABLE_FAST_PATHS=1``; the CPU keeps the masked reference path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from .kernels import DISABLE_ENV

PACKED_PREFILL_ENV = "OMNI_PACKED_PREFILL"


@dataclass(frozen=True)
class PackedRows:
    """Where the real tokens of a ``[B, L]`` batch are, in row-major order.

    ``rows`` / ``positions``: the row and position of each of the ``N`` real tokens; ``cu_seqlens``:
    int32 ``[B + 1]`` offsets of each row's tokens in the packed order; ``max_length``: the longest row.
    """

    rows: torch.Tensor
    positions: torch.Tensor
    cu_seqlens: torch.Tensor
    max_length: int
    batch: int
    length: int

    @classmethod
    def from_mask(cls, token_mask: torch.Tensor) -> PackedRows:
        """From a ``[B, L]`` mask (1 = real token). One device-to-host copy (the longest row)."""
        mask = token_mask.bool()
        rows, positions = mask.nonzero(as_tuple=True)
        counts = mask.sum(dim=1, dtype=torch.int32)
        cu_seqlens = torch.nn.functional.pad(counts.cumsum(0, dtype=torch.int32), (1, 0))
        return cls(rows, positions, cu_seqlens, int(counts.max()), mask.shape[0], mask.shape[1])

    @property
    def tokens(self) -> int:
        """``N``, the number of real tokens."""
        return self.rows.numel()

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """``[B, L, ...]`` -> ``[N, ...]``: the real tokens, row after row (any strides)."""
        return tensor[self.rows, self.positions]

    def scatter(self, packed: torch.Tensor) -> torch.Tensor:
        """``[N, ...]`` -> ``[B, L, ...]`` with zeros at the padding (differentiable)."""
        out = packed.new_zeros(self.batch, self.length, *packed.shape[1:])
        return out.index_put((self.rows, self.positions), packed)


def packing_wanted(hidden: torch.Tensor, token_mask: torch.Tensor | None, past: int) -> bool:
    """Whether this forward should pack its rows: a first prefill (``past == 0``) of more than one token
    with padding, on CUDA, not switched off by the environment."""
    if token_mask is None or past != 0 or hidden.shape[1] < 2 or not hidden.is_cuda:
        return False
    if os.environ.get(PACKED_PREFILL_ENV, "1") == "0" or os.environ.get(DISABLE_ENV, "0") == "1":
        return False
    return True
