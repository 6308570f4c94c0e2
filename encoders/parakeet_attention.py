"""Relative-position multi-head self-attention of the FastConformer (Transformer-XL style).

The score of query ``i`` for key ``j`` is ``((q_i + u)·k_j + (q_i + v)·r_{i-j}) / sqrt(d_head)``:
a content term with the learned bias ``u`` (``bias_u``) and a position term against a projected
sinusoidal embedding of the distance ``i - j`` with the learned bias ``v`` (``bias_v``). There is
no absolute position anywhere, so a clip's result does not depend on how far it is padded.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F
from torch import nn

from encoders import fast_path
from encoders.parakeet_config import ParakeetConfig
from encoders.sdpa import attention

try:
    from encoders.parakeet_attention_triton import default_tiles, rel_position_attention
    from encoders.parakeet_attention_triton import usable as kernel_usable
except ImportError:  # no Triton: the torch path only

    def kernel_usable(query: torch.Tensor, num_heads: int) -> bool:
        return False


@dataclass
class ClipLayout:
    """Where each clip of a padded batch ``[B, T, ...]`` is: ``valid_lengths [B]`` positions hold the
    clip, ``extents [B]`` (at least as many) are those its padding rows attend to, as for the clip
    encoded alone. The masks the torch path needs are built on first use."""

    valid_lengths: torch.Tensor
    extents: torch.Tensor
    length: int

    @cached_property
    def valid(self) -> torch.Tensor:
        """``[B, T]``: position < valid length."""
        steps = torch.arange(self.length, device=self.valid_lengths.device)
        return steps[None, :] < self.valid_lengths[:, None]

    @cached_property
    def valid_lengths_i32(self) -> torch.Tensor:
        """``valid_lengths`` as int32, for the kernels."""
        return self.valid_lengths.to(torch.int32)

    @cached_property
    def extents_i32(self) -> torch.Tensor:
        """``extents`` as int32, for the kernels."""
        return self.extents.to(torch.int32)

    @cached_property
    def allowed(self) -> torch.Tensor:
        """``[B, 1, T, T]``: valid queries see valid keys; any other query sees the clip's extent."""
        steps = torch.arange(self.length, device=self.extents.device)
        within_extent = steps[None, :] < self.extents[:, None]
        valid = self.valid
        return torch.where(valid[:, :, None], valid[:, None, :], within_extent[:, None, :])[:, None]

    @cached_property
    def uniform_rows(self) -> torch.Tensor:
        """``[B, 1, T, 1]``: queries on padding, which average the values they may see."""
        return ~self.valid[:, None, :, None]


POSITION_ALIGN = 8  # distance rows padded to a multiple of this: 16-byte rows of 16-bit scores per distance


def padded_distances(length: int) -> int:
    """Rows of the position table for ``length`` positions: ``2 · length - 1`` rounded up to `POSITION_ALIGN`."""
    return -(-(2 * length - 1) // POSITION_ALIGN) * POSITION_ALIGN


def relative_position_embedding(
    length: int, width: int, device: torch.device, dtype: torch.dtype, rows: int | None = None
) -> torch.Tensor:
    """Sinusoids of the distances ``length-1, …, -(length-1)``: ``[2*length-1, width]``, followed by zero
    rows up to ``rows`` if given (the GPU kernel's aligned table, `padded_distances`).

    Channel ``2k`` holds ``sin(p / 10000^(2k/width))`` and channel ``2k+1`` the cosine, computed
    in float32 and cast to ``dtype``.
    """
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, width, 2, device=device, dtype=torch.float32) / width))
    distances = torch.arange(length - 1, -length, -1, device=device, dtype=torch.float32)
    angles = distances[:, None] * inv_freq[None, :]
    table = torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1).to(dtype)
    if rows is not None and rows > table.shape[0]:
        table = F.pad(table, (0, 0, 0, rows - table.shape[0]))
    return table


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
        self, hidden: torch.Tensor, position_embedding: torch.Tensor, clips: ClipLayout
    ) -> torch.Tensor:
        """Attend over ``hidden [B, T, d]``.

        ``position_embedding [2T-1 or more, d]`` from :func:`relative_position_embedding`; ``clips`` each
        clip's valid length and extent. Queries on padding average the values of the clip's extent
        with equal weights (what the reference computes for a clip alone, where every score of such
        a row is the same large negative).
        """
        no_dropout = not self.training or self.dropout == 0.0  # the kernel has none
        if (
            no_dropout
            and fast_path.plain(self.q_proj, nn.Linear)  # the kernel path reads its weight
            and fast_path.inference_kernel_usable(hidden, self.parameters())
            and kernel_usable(hidden, self.num_heads)
        ):
            out = self._forward_kernel(hidden, position_embedding, clips)
            if out is not None:  # None: the kernel failed here (logged once)
                return out
        q = self._heads(self.q_proj(hidden))  # [B, H, T, Dh]
        k = self._heads(self.k_proj(hidden))
        v = self._heads(self.v_proj(hidden))
        distances = 2 * hidden.shape[1] - 1
        r = self._heads(self.relative_k_proj(position_embedding[:distances]))  # [H, 2T-1, Dh]

        bias_u = self.bias_u.to(q.dtype)[None, :, None, :]
        bias_v = self.bias_v.to(q.dtype)[None, :, None, :]
        # the scale goes on the queries, so the [B, H, T, T] scores are read once, by the where below
        by_position = torch.matmul((q + bias_v) * self.scale, r.transpose(-1, -2))
        allowed, uniform_rows = clips.allowed, clips.uniform_rows
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

    def _forward_kernel(
        self, hidden: torch.Tensor, position_embedding: torch.Tensor, clips: ClipLayout
    ) -> torch.Tensor | None:
        """The same on the GPU through `encoders.parakeet_attention_triton` (inference), or None if the
        kernel failed. ``bias_v`` rides in the query projection's bias, so ``q + v`` comes out of its
        matmul; the kernel adds ``u - v``."""
        length = hidden.shape[1]
        rows = padded_distances(length)
        if position_embedding.shape[0] < rows:  # no bias: the zero rows project to zero
            position_embedding = F.pad(position_embedding, (0, 0, 0, rows - position_embedding.shape[0]))
        q_bias, u_minus_v = fast_path.derived(
            self, "query_biases", [self.bias_u, self.bias_v, *self.q_proj.parameters()], self._query_biases
        )
        configuration = (
            "parakeet attention",
            hidden.device,
            hidden.dtype,
            self.head_dim,
            default_tiles(length),
        )
        out = fast_path.attempt(
            configuration,
            lambda: rel_position_attention(
                F.linear(hidden, self.q_proj.weight, q_bias),
                self.k_proj(hidden),
                self.v_proj(hidden),
                self.relative_k_proj(position_embedding[:rows]),
                u_minus_v,
                clips.valid_lengths_i32,
                clips.extents_i32,
                self.scale,
                self.num_heads,
            ),
        )
        return None if out is None else self.o_proj(out)

    def _query_biases(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The query projection's bias plus ``bias_v`` (flattened), and ``bias_u - bias_v`` in fp32."""
        v = self.bias_v.detach().flatten()
        q_bias = v if self.q_proj.bias is None else self.q_proj.bias.detach() + v
        u_minus_v = (self.bias_u.detach().float() - self.bias_v.detach().float()).flatten().contiguous()
        return q_bias.to(self.q_proj.weight.dtype), u_minus_v
