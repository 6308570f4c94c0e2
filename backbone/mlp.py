"""The non-gated squared-ReLU MLP of NemotronH (`-` layers, and the shared expert of MoE layers)."""

from __future__ import annotations

import torch
from torch import nn

from .kernels import fast_paths_enabled, moe_quack


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
        hidden = self._up_relu2_fused(x)
        return self.down_proj(relu2(self.up_proj(x)) if hidden is None else hidden)

    def _up_relu2_fused(self, x: torch.Tensor) -> torch.Tensor | None:
        """The up projection and its squared ReLU as one quack GEMM (`moe_quack.linear_relu2`) where that
        serves, else None. Only for a plain ``nn.Linear`` without hooks: a wrapped layer (a LoRA adapter)
        must be called, not read."""
        up = self.up_proj
        if type(up) is not nn.Linear or up._forward_hooks or up._forward_pre_hooks:
            return None
        if not fast_paths_enabled(x, up.weight) or not moe_quack.linear_relu2_usable(x, up.weight, up.bias):
            return None
        return moe_quack.linear_relu2(x, up.weight, up.bias)
