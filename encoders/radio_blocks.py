"""The pre-norm transformer block of the RADIO ViT, with packed variable-length attention.

Module and parameter names follow the checkpoint (``norm1``, ``attn.qkv``, ``attn.proj``, ``norm2``,
``mlp.fc1``, ``mlp.fc2``, ``layer_scale{1,2}.lambda1``); the MLP is timm's ``Mlp``.

Several images of different sizes travel through the linear layers as one packed sequence
``[1, Σ tokens, hidden]``; only attention needs to know where one image ends and the next begins.
That is :func:`packed_attention`. By default each image attends on its own, which skips the
cross-image blocks a block-diagonal mask would still compute and keeps PyTorch's memory-efficient SDPA
kernels (no ``L × L`` score matrix). Consecutive images of one size (the pages of a document, the
tiles of a training batch) go in one call with the images along the batch dimension: the same numbers,
in fewer and fuller kernel launches. On an H200 (16 heads of 80, cuDNN; `benchmarks/
bench_encoder_attention.py`) 8 pages of 3,082 tokens took 1.14 ms a layer against 1.63 ms one page at a
time, and 32 images of 1,034 tokens 0.65 against 1.51 ms. Images of mixed sizes take FlashAttention 4's
varlen kernel where that package serves the GPU (`encoders.flash4`): 12 packed images of 266 to 4,106
tokens took 0.77 ms against 1.25 ms one image at a time on cuDNN. torch's own varlen flash kernel took
1.38 ms there, so without the package each size still gets its own call.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
from timm.layers import Mlp
from torch import nn

from . import fast_path, flash4
from .fast_path import DISABLE_FAST_PATHS_ENV  # noqa: F401  (the switch, named here too)
from .radio_config import RadioConfig
from .sdpa import attention

PACKED_ATTENTION_MODES = ("per_image", "block_diagonal")


def block_diagonal_mask(seq_lengths: Sequence[int], device: torch.device | None = None) -> torch.Tensor:
    """Boolean ``[L, L]`` mask (True = may attend) letting each packed sequence see only itself."""
    lengths = torch.as_tensor(list(seq_lengths), device=device)
    owner = torch.repeat_interleave(torch.arange(len(lengths), device=device), lengths)
    return owner[:, None] == owner[None, :]


def packed_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    seq_lengths: Sequence[int] | None,
    mode: str = "per_image",
) -> torch.Tensor:
    """Bidirectional attention over ``[B, heads, L, head_dim]`` tensors, never across packed sequences.

    ``seq_lengths`` (only with ``B == 1``) splits ``L`` into independent sequences; None attends over
    all of ``L`` in each batch row. ``mode`` picks the packed strategy (see the module docstring).
    """
    if seq_lengths is None or len(seq_lengths) == 1:
        return attention(query, key, value)
    if mode == "per_image":
        runs = equal_runs(seq_lengths)
        if len(runs) > 1 and flash4.varlen_usable(query, key, value):
            out = flash4.varlen_attention(query, key, value, seq_lengths)
            if out is not None:
                return out
        pieces = [_attend_run(query, key, value, *run) for run in runs]
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=2)
    if mode == "block_diagonal":
        mask = block_diagonal_mask(seq_lengths, device=query.device)
        return attention(query, key, value, attn_mask=mask)
    raise ValueError(f"unknown packed attention mode {mode!r} (use one of {PACKED_ATTENTION_MODES})")


def equal_runs(seq_lengths: Sequence[int]) -> list[tuple[int, int, int]]:
    """``(start, count, length)`` of each run of consecutive equal lengths, in order."""
    runs: list[tuple[int, int, int]] = []
    start = 0
    for length in seq_lengths:
        if runs and runs[-1][2] == length:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1, length)
        else:
            runs.append((start, 1, length))
        start += length
    return runs


def _attend_run(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, start: int, count: int, length: int
) -> torch.Tensor:
    """Attention of ``count`` consecutive packed sequences of ``length`` tokens each, from ``start``, in
    one call with the sequences along the batch dimension (``[1, H, L, D]`` views in and out)."""

    def batched(tensor: torch.Tensor) -> torch.Tensor:  # [1, H, count * length, D] -> [count, H, length, D]
        return tensor[0, :, start : start + count * length].unflatten(1, (count, length)).transpose(0, 1)

    out = attention(batched(query), batched(key), batched(value))
    return out.transpose(0, 1).flatten(1, 2).unsqueeze(0)


class RadioAttention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection (rows ordered q, k, v; heads inside)."""

    def __init__(self, config: RadioConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.qkv_bias)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.packed_mode = "per_image"

    def forward(self, hidden: torch.Tensor, seq_lengths: Sequence[int] | None = None) -> torch.Tensor:
        batch, length, width = hidden.shape
        qkv = self.qkv(hidden).view(batch, length, 3, self.num_heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        out = packed_attention(query, key, value, seq_lengths, mode=self.packed_mode)
        return self.proj(out.transpose(1, 2).reshape(batch, length, width))


class LayerScale(nn.Module):
    """Per-channel residual scale ``lambda1`` (1.0, an identity, for the released C-RADIO towers)."""

    def __init__(self, width: int, value: float) -> None:
        super().__init__()
        self.lambda1 = nn.Parameter(torch.full((width,), float(value)))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden * self.lambda1


class RadioBlock(nn.Module):
    """``x + ls1(attn(norm1(x)))`` then ``x + ls2(mlp(norm2(x)))``."""

    def __init__(self, config: RadioConfig) -> None:
        super().__init__()
        activation = nn.GELU if config.hidden_act == "gelu" else partial(nn.GELU, approximate="tanh")
        self.norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attn = RadioAttention(config)
        self.layer_scale1 = LayerScale(config.hidden_size, config.layerscale_value)
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = Mlp(config.hidden_size, hidden_features=config.intermediate_size, act_layer=activation)
        self.layer_scale2 = LayerScale(config.hidden_size, config.layerscale_value)

    def forward(self, hidden: torch.Tensor, seq_lengths: Sequence[int] | None = None) -> torch.Tensor:
        hidden = hidden + self.layer_scale1(self.attn(self.norm1(hidden), seq_lengths))
        return hidden + self.layer_scale2(self.mlp(self.norm2(hidden)))


def _fused_seams_usable(blocks: Sequence[RadioBlock], hidden: torch.Tensor) -> bool:
    """Whether the blocks' residual-add + LayerNorm seams can run on the Triton kernel: CUDA, no
    gradients wanted (the kernel has no backward), Triton importable, shapes and dtypes it takes."""
    if not hidden.is_cuda or not blocks or not fast_path.fast_paths_enabled():
        return False
    if torch.is_grad_enabled() and (
        hidden.requires_grad or any(p.requires_grad for p in blocks[0].parameters())
    ):
        return False
    try:
        from .residual_norm_triton import scaled_residual_norm_usable
    except ImportError:
        return False
    first = blocks[0]
    return scaled_residual_norm_usable(hidden, hidden, first.layer_scale1.lambda1, first.norm2)


def gelu_epilogue_usable(mlp: nn.Module, hidden: torch.Tensor) -> bool:
    """Whether `mlp_gelu_epilogue` can run this timm ``Mlp`` (GELU between two biased linears, no norm
    or dropout in use, a plain ``fc1`` and no hooks: see `fast_path.plain`) on ``hidden``: a 16-bit CUDA
    tensor of the MLP's dtype."""
    return (
        isinstance(mlp, Mlp)
        and fast_path.unhooked(mlp)
        and fast_path.plain(mlp.fc1, nn.Linear)
        and isinstance(mlp.act, nn.GELU)
        and isinstance(mlp.norm, nn.Identity)
        and not mlp.training
        and mlp.fc1.bias is not None
        and hidden.is_cuda
        and hidden.dtype in (torch.bfloat16, torch.float16)
        and hidden.dtype == mlp.fc1.weight.dtype
    )


def mlp_gelu_epilogue(mlp: Mlp, hidden: torch.Tensor) -> torch.Tensor:
    """``fc2(GELU(fc1(x)))`` with the GELU inside fc1's cuBLASLt epilogue: one pass less over the
    ``[tokens, 5120]`` activations: 2.3 and 2.7 ms, in two runs, of a 13,312-patch image's 32 MLPs
    on an H200 (in the whole model, within run-to-run noise of about 3 ms).

    The epilogue's GELU is the tanh form, applied to fc1's fp32 sums before they are rounded to 16 bits;
    the model's is the erf form applied after the rounding. The two forms differ by at most 4.7e-4,
    below the rounding of most outputs, and skipping the extra rounding makes up for it: on an H200
    (13,312 x 1,280, random weights; two runs) the MLP's output came out closer to the fp32 erf
    reference, with a largest error of 3.1e-3 and 3.4e-3 of the largest output against 3.7e-3 for the
    separate ops, and a mean error 0.73 times theirs."""
    flat = hidden.reshape(-1, hidden.shape[-1])
    inner = torch._addmm_activation(mlp.fc1.bias, flat, mlp.fc1.weight.t(), use_gelu=True)
    return mlp.fc2(inner).view(*hidden.shape[:-1], -1)


def run_blocks(
    blocks: Sequence[RadioBlock], hidden: torch.Tensor, seq_lengths: Sequence[int] | None = None
) -> torch.Tensor:
    """``blocks`` in turn over ``hidden``. On CUDA in inference, each scaled residual add and the LayerNorm
    after it (``norm2`` of the same block, ``norm1`` of the next) run as one Triton kernel; the sum is
    rounded as the separate operations round it, so only the norms' last bits may differ. The MLPs then
    take their GELU in the first matmul's epilogue (`mlp_gelu_epilogue`)."""
    if not _fused_seams_usable(blocks, hidden):
        for block in blocks:
            hidden = block(hidden, seq_lengths)
        return hidden
    from .residual_norm_triton import scaled_residual_norm_triton as seam

    normed = blocks[0].norm1(hidden)
    for index, block in enumerate(blocks):
        hidden, normed = seam(
            hidden, block.attn(normed, seq_lengths), block.layer_scale1.lambda1, block.norm2
        )
        mlp = block.mlp
        branch = mlp_gelu_epilogue(mlp, normed) if gelu_epilogue_usable(mlp, normed) else mlp(normed)
        if index + 1 < len(blocks):
            hidden, normed = seam(hidden, branch, block.layer_scale2.lambda1, blocks[index + 1].norm1)
        else:
            hidden = hidden + block.layer_scale2(branch)
    return hidden
