"""The non-gated squared-ReLU MLP of NemotronH (`-` layers, and the shared expert of MoE layers)."""

from __future__ import annotations

import torch
from torch import nn

from .kernels import fast_paths_enabled


def relu2(x: torch.Tensor) -> torch.Tensor:
    """Squared ReLU, the activation of every NemotronH feed-forward (one Triton pass on the fast path,
    bit for bit the same)."""
    if fast_paths_enabled(x):
        from .kernels.relu2_triton import relu2_triton, relu2_usable

        if relu2_usable(x):
            return relu2_triton(x)
    return torch.relu(x).square()


class ReLU2MLP(nn.Module):
    """down_proj(relu(up_proj(x))^2)."""

    def __init__(self, hidden_size: int, intermediate_size: int, bias: bool = False) -> None:
        super().__init__()
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=bias)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(relu2(self.up_proj(x)))
