"""The Mamba-2 mixer of NemotronH (`M` layers).

in_proj -> [gate z | xBC | dt] -> causal depthwise conv1d on xBC -> SiLU -> SSD scan with
A = -exp(A_log), dt = softplus(dt + dt_bias) and the per-head skip D -> gated grouped RMSNorm
(gate before norm) -> out_proj.

Time step: the released checkpoints were trained and are served by the CUDA kernels of mamba-ssm /
vLLM with `dt_limit = time_step_limit`, which is (0, inf) in their configs, i.e. no clamp. transformers
5.23 instead clamps dt to at least `time_step_min` (0.001) in its prefill path, and does not clamp at all
in its decode path, so its two paths disagree whenever softplus(dt + dt_bias) < 0.001. This module clamps
to `config.time_step_limit` in both prefill and decode, which is faithful to the kernels.

Padding: positions whose mask is 0 get xBC = 0 before and after the conv and dt = 0 in the scan, so
they neither feed nor decay the state; a left-padded row therefore evolves exactly as the row alone.

Fast paths (see `backbone.kernels`): an unpadded one-token step runs between in_proj and out_proj on
three fused Triton kernels (`backbone.kernels.mamba_step_triton`); a longer input takes the conv and
the time-step kernel of `backbone.kernels.mamba_prefill_triton`, the Triton scan and the step's
gated-norm kernel over its rows, with the same math.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .cache import MambaState
from .config import HybridConfig
from .kernels import fast_paths_enabled, ssd_chunked_auto, ssd_step_auto
from .norms import GatedGroupRMSNorm


class Mamba2Mixer(nn.Module):
    """Selective state-space mixer; parameter names follow the checkpoint (`mixer.in_proj.weight`, ...)."""

    def __init__(self, config: HybridConfig) -> None:
        super().__init__()
        self.num_heads = config.mamba_num_heads
        self.head_dim = config.mamba_head_dim
        self.n_groups = config.n_groups
        self.state_size = config.ssm_state_size
        self.kernel = config.conv_kernel
        self.chunk_size = config.chunk_size
        self.inner = config.mamba_inner_size
        self.conv_dim = config.mamba_conv_dim
        self.time_step_limit = config.time_step_limit

        self.in_proj = nn.Linear(
            config.hidden_size, self.inner + self.conv_dim + self.num_heads, bias=config.use_bias
        )
        self.conv1d = nn.Conv1d(
            self.conv_dim,
            self.conv_dim,
            kernel_size=self.kernel,
            groups=self.conv_dim,
            padding=self.kernel - 1,
            bias=config.use_conv_bias,
        )
        # Initial values as in the Mamba-2 recipe: A_h = -h, D = 1, dt_bias = softplus^-1(dt0) for a
        # log-uniform dt0 in [time_step_min, time_step_max] (floored at time_step_floor).
        self.A_log = nn.Parameter(torch.log(torch.arange(1, self.num_heads + 1, dtype=torch.float32)))
        self.D = nn.Parameter(torch.ones(self.num_heads))
        low, high = math.log(config.time_step_min), math.log(config.time_step_max)
        dt0 = torch.exp(torch.rand(self.num_heads) * (high - low) + low).clamp(min=config.time_step_floor)
        self.dt_bias = nn.Parameter(dt0 + torch.log(-torch.expm1(-dt0)))
        self.norm = GatedGroupRMSNorm(self.inner, self.n_groups, eps=config.layer_norm_epsilon)
        self.out_proj = nn.Linear(self.inner, config.hidden_size, bias=config.use_bias)

    def _causal_conv(self, xbc: torch.Tensor, state: MambaState | None) -> torch.Tensor:
        """Depthwise causal conv + SiLU over [B, L, C]; with a state, continues from (and updates) it.

        Written as K shifted multiply-adds accumulated in fp32 rather than `F.conv1d`: on CPU it is
        several times faster for both decode steps and long prompts, and bf16 inputs keep an fp32 sum.
        """
        length = xbc.shape[1]
        channels_first = xbc.transpose(1, 2)
        if state is None:
            padded = F.pad(channels_first, (self.kernel - 1, 0))
        else:
            padded = torch.cat([state.conv.to(channels_first.dtype), channels_first], dim=-1)
            if self.kernel > 1:
                state.conv.copy_(padded[..., -(self.kernel - 1) :])
        weight = self.conv1d.weight[:, 0].float()  # [C, K]
        if length == 1:
            out = (padded.float() * weight).sum(-1, keepdim=True)
        else:
            padded = padded.float()
            out = padded[..., :length] * weight[:, :1]
            for k in range(1, self.kernel):
                out = out + padded[..., k : k + length] * weight[:, k : k + 1]
        if self.conv1d.bias is not None:
            out = out + self.conv1d.bias.float()[:, None]
        return F.silu(out).to(xbc.dtype).transpose(1, 2)

    def discretize_dt(self, dt_raw: torch.Tensor) -> torch.Tensor:
        """softplus(dt + dt_bias) in fp32, limited to `time_step_limit`."""
        dt = F.softplus(dt_raw.float() + self.dt_bias.float())
        low, high = self.time_step_limit
        if low > 0.0 or high < math.inf:
            dt = dt.clamp(min=low, max=high)
        return dt

    def _fast_usable(self, hidden: torch.Tensor) -> bool:
        """Whether this forward may run on the Triton kernels (CUDA, no gradients needed)."""
        return fast_paths_enabled(
            hidden,
            self.in_proj.weight,
            self.conv1d.weight,
            self.dt_bias,
            self.A_log,
            self.D,
            self.norm.weight,
        )

    def _fused_step_usable(self, hidden: torch.Tensor, state: MambaState) -> bool:
        """Whether a one-token step may run on the fused Triton decode kernels."""
        return state.ssm.dtype == torch.float32 and self._fast_usable(hidden)

    def forward(
        self,
        hidden: torch.Tensor,
        token_mask: torch.Tensor | None = None,
        state: MambaState | None = None,
    ) -> torch.Tensor:
        """hidden [B, L, d]; token_mask [B, L] (1 = real token) or None; state to continue from / update."""
        batch, length, _ = hidden.shape
        if (
            state is not None
            and length == 1
            and token_mask is None
            and self._fused_step_usable(hidden, state)
        ):
            from .kernels.mamba_step_triton import mamba_decode_step

            return mamba_decode_step(self, hidden, state)
        # longer inputs on CUDA: the conv and the norm on the prefill kernels (the scan picks its own)
        prefill_kernels = length > 1 and self._fast_usable(hidden)
        gate, xbc, dt_raw = self.in_proj(hidden).split([self.inner, self.conv_dim, self.num_heads], dim=-1)
        if prefill_kernels:
            from .kernels.mamba_prefill_triton import causal_conv_silu

            conv_state = state.conv if state is not None else None
            xbc = causal_conv_silu(xbc, self.conv1d.weight[:, 0], self.conv1d.bias, token_mask, conv_state)
        else:
            mask = token_mask[..., None].to(xbc.dtype) if token_mask is not None else None
            if mask is not None:
                xbc = xbc * mask
            xbc = self._causal_conv(xbc, state)
            if mask is not None:
                xbc = xbc * mask
        x, B, C = xbc.split(
            [self.inner, self.n_groups * self.state_size, self.n_groups * self.state_size], dim=-1
        )
        if prefill_kernels:
            from .kernels.mamba_prefill_triton import discretize

            dt, A = discretize(dt_raw, self.dt_bias, self.A_log, self.time_step_limit, token_mask)
        else:
            dt = self.discretize_dt(dt_raw)
            if token_mask is not None:
                dt = dt * token_mask[..., None].to(dt.dtype)
            A = -torch.exp(self.A_log.float())

        x = x.reshape(batch, length, self.num_heads, self.head_dim)
        B = B.reshape(batch, length, self.n_groups, self.state_size)
        C = C.reshape(batch, length, self.n_groups, self.state_size)
        if state is not None and length == 1:
            y = ssd_step_auto(state.ssm, x[:, 0], dt[:, 0], A, B[:, 0], C[:, 0], self.D)[:, None]
        else:
            initial = state.ssm if state is not None else None
            y, final = ssd_chunked_auto(x, dt, A, B, C, self.chunk_size, self.D, initial_state=initial)
            if state is not None:
                state.ssm.copy_(final)
        if prefill_kernels:
            from .kernels.mamba_step_triton import gated_group_rmsnorm

            rows = batch * length
            y = gated_group_rmsnorm(
                y.reshape(rows, self.inner), gate.reshape(rows, self.inner), self.norm.weight,
                self.norm.n_groups, self.norm.eps, hidden.dtype,
            ).view(batch, length, self.inner)  # fmt: skip
        else:
            y = self.norm(y.reshape(batch, length, self.inner), gate, hidden.dtype)
        return self.out_proj(y)
