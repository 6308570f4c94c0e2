"""The two adapters that map encoder features into the language model's embedding space.

Both are RMSNorm -> Linear -> ReLU² -> Linear, the norm and the activation the language model's own (fp32
statistics; one Triton pass each on CUDA); they differ only in their checkpoint names:
``mlp1.{0,1,3}`` for vision (an ``nn.Sequential``) and ``sound_projection.{norm,linear1,linear2}``
for audio.
"""

from __future__ import annotations

import torch
from torch import nn

from backbone.mlp import relu2
from backbone.norms import RMSNorm


class SquaredReLU(nn.Module):
    """relu(x)²: the activation of the adapters and of the language model's MLPs (one Triton pass on
    CUDA, bit for bit the torch form)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return relu2(x)


def vision_projector(in_size: int, hidden: int, out_size: int, eps: float = 1e-5) -> nn.Sequential:
    """``mlp1``: pixel-shuffled vision features (4 × ViT width) -> language model width."""
    return nn.Sequential(
        RMSNorm(in_size, eps),
        nn.Linear(in_size, hidden, bias=False),
        SquaredReLU(),
        nn.Linear(hidden, out_size, bias=False),
    )


class SoundProjection(nn.Module):
    """``sound_projection``: audio encoder features -> language model width."""

    def __init__(
        self, in_size: int, hidden: int, out_size: int, bias: bool = False, eps: float = 1e-5
    ) -> None:
        super().__init__()
        self.norm = RMSNorm(in_size, eps)
        self.linear1 = nn.Linear(in_size, hidden, bias=bias)
        self.act = SquaredReLU()
        self.linear2 = nn.Linear(hidden, out_size, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.act(self.linear1(self.norm(x))))
