"""RMS normalisations of the NemotronH model, computed in float32 whatever the model dtype."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .kernels import fast_paths_enabled


class RMSNorm(nn.Module):
    """Root-mean-square norm: statistics, scaling and the weight product in fp32, result in the input dtype."""

    def __init__(self, hidden_size: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if fast_paths_enabled(hidden, self.weight):
            from .kernels.norm_triton import rms_norm_triton, rms_norm_usable

            if rms_norm_usable(hidden, self.weight):
                return rms_norm_triton(hidden, self.weight, self.eps)
        x = hidden.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return (self.weight.float() * x).to(hidden.dtype)


def add_and_norm(hidden: torch.Tensor, out: torch.Tensor, norm: RMSNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """The seam between two pre-norm blocks: ``(hidden + out, norm(hidden + out))``.

    On the fast paths the add and the norm are one Triton pass (`residual_rms_norm_triton`): the sum is
    rounded as the separate add rounds it and normalised with `RMSNorm`'s arithmetic."""
    if fast_paths_enabled(hidden, out, norm.weight):
        from .kernels.norm_triton import residual_rms_norm_triton, residual_rms_norm_usable

        if residual_rms_norm_usable(hidden, out, norm.weight):
            return residual_rms_norm_triton(hidden, out, norm.weight, norm.eps)
    new = hidden + out
    return new, norm(new)


class GatedGroupRMSNorm(nn.Module):
    """The Mamba-2 output norm: `y * silu(gate)`, then RMS-normalised per group of channels, then scaled.

    The gate is applied before the norm, and the statistics are taken over `hidden_size / n_groups`
    channels at a time (one group of SSM heads each), all in fp32.
    """

    def __init__(self, hidden_size: int, n_groups: int, eps: float = 1e-5) -> None:
        super().__init__()
        if hidden_size % n_groups:
            raise ValueError(f"hidden_size={hidden_size} is not a multiple of n_groups={n_groups}")
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.n_groups = n_groups
        self.eps = eps

    def forward(self, hidden: torch.Tensor, gate: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
        x = hidden.float() * F.silu(gate.float())
        grouped = x.unflatten(-1, (self.n_groups, -1))
        grouped = grouped * torch.rsqrt(grouped.pow(2).mean(-1, keepdim=True) + self.eps)
        return (self.weight.float() * grouped.flatten(-2)).to(out_dtype)
