"""Relative-position multi-head self-attention of the FastConformer (Transformer-XL style).

The score of query ``i`` for key ``j`` is ``((q_i + u)·k_j + (q_i + v)·r_{i-j}) / sqrt(d_head)``:
a content term with the learned bias ``u`` (``bias_u``) and a position term against a projected
sinusoidal embedding of the distance ``i - j`` with the learned bias ``v`` (``bias_v``). There is
no absolute position anywhere, so a clip's result does not depend on how far it is padded.
"""

from __future__ import annotations

import torch
from torch import nn

from encoders.parakeet_config import ParakeetConfig
from encoders.sdpa import attention


def relative_position_embedding(
    length: int, width: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """Sinusoids of the distances ``length-1, …, -(length-1)``: ``[2*length-1, width]``.

    Channel ``2k`` holds ``sin(p / 10000^(2k/width))`` and channel ``2k+1`` the cosine, computed
    in float32 and cast to ``dtype``.
    """
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, width, 2, device=device, dtype=torch.float32) / width))
    distances = torch.arange(length - 1, -length, -1, device=device, dtype=torch.float32)
    angles = distances[:, None] * inv_freq[None, :]
    return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1).to(dtype)


def _scores_by_distance(by_position: torch.Tensor) -> torch.Tensor:
    """``[..., T, 2T-1]`` scores against distances ``T-1 … -(T-1)`` -> ``[..., T, T]`` with entry ``[i, j]``
    taken at distance ``i - j``, i.e. column ``T-1-i+j``.

    Row ``i`` starts ``T-1-i`` columns in, so stepping one row down moves ``2T-1`` elements
    forward in memory but one column back: a strided view with row stride ``2T-2`` reads every
    entry without a gather.
    """
    by_position = by_position.contiguous()
    *lead, length, _ = by_position.shape
    lead_strides = by_position.stride()[:-2]
    return by_position.as_strided(
        (*lead, length, length),
        (*lead_strides, 2 * length - 2, 1),
        by_position.storage_offset() + length - 1,
    )


class RelPositionSelfAttention(nn.Module):
    """Multi-head self-attention with relative positions; checkpoint names ``self_attn.*``."""

    def __init__(self, config: ParakeetConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.attention_head_dim
        inner = self.num_heads * self.head_dim
        self.scale = self.head_dim**-0.5
        self.dropout = config.attention_dropout
        self.q_proj = nn.Linear(config.hidden_size, inner, bias=config.attention_bias)
        self.k_proj = nn.Linear(config.hidden_size, inner, bias=config.attention_bias)
        self.v_proj = nn.Linear(config.hidden_size, inner, bias=config.attention_bias)
        self.o_proj = nn.Linear(inner, config.hidden_size, bias=config.attention_bias)
        self.relative_k_proj = nn.Linear(config.hidden_size, inner, bias=False)
        self.bias_u = nn.Parameter(torch.zeros(self.num_heads, self.head_dim))
        self.bias_v = nn.Parameter(torch.zeros(self.num_heads, self.head_dim))

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(-3, -2)

    def forward(
        self,
        hidden: torch.Tensor,
        position_embedding: torch.Tensor,
        allowed: torch.Tensor,
        uniform_rows: torch.Tensor,
    ) -> torch.Tensor:
        """Attend over ``hidden [B, T, d]``.

        ``position_embedding [2T-1, d]`` from :func:`relative_position_embedding`; ``allowed
        [B, 1, T, T]`` which keys each query may see; ``uniform_rows [B, 1, T, 1]`` queries on
        padding, which average the values they may see with equal weights (what the reference
        computes for a clip alone, where every score of such a row is the same large negative).
        """
        q = self._heads(self.q_proj(hidden))  # [B, H, T, Dh]
        k = self._heads(self.k_proj(hidden))
        v = self._heads(self.v_proj(hidden))
        r = self._heads(self.relative_k_proj(position_embedding))  # [H, 2T-1, Dh]

        bias_u = self.bias_u.to(q.dtype)[None, :, None, :]
        bias_v = self.bias_v.to(q.dtype)[None, :, None, :]
        # the scale goes on the queries, so the [B, H, T, T] scores are read once, by the where below
        by_position = torch.matmul((q + bias_v) * self.scale, r.transpose(-1, -2))
        keep = allowed & ~uniform_rows  # [B, 1, T, T]: scores that stay; the rest is 0 (padding rows) or -inf
        fill = torch.zeros((), dtype=q.dtype, device=q.device).masked_fill(~allowed, float("-inf"))
        additive = torch.where(keep, _scores_by_distance(by_position), fill)  # [B, H, T, T]
        query = (q + bias_u).masked_fill(uniform_rows, 0.0)

        out = attention(
            query,
            k,
            v,
            attn_mask=additive,
            dropout_p=self.dropout if self.training else 0.0,
            scale=self.scale,
        )
        return self.o_proj(out.transpose(1, 2).flatten(2))
