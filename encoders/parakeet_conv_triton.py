"""Triton kernel of the FastConformer convolution module's depthwise convolution, BatchNorm and SiLU, for
inference on the GPU.

Between its two pointwise convolutions the module runs GLU, zeroes the clip's padding, a depthwise
convolution in time, BatchNorm (running statistics) and SiLU: five passes over ``[B, d, T]`` tensors in
torch, plus the layout changes around cuDNN's convolutions. Here the GLU stays one torch kernel on the
token-major ``[B, T, 2d]`` output of a plain matmul (its result rounded to 16 bits, as the module rounds
it), and one Triton pass does the rest: each output sums the ``K`` time steps around it with the depthwise
weights, reading zeros past the clip's valid length, then applies the BatchNorm folded with the
convolution's bias into one scale and shift, and SiLU, in fp32, rounded once.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

MAX_KERNEL = 63  # depthwise kernel widths the kernel unrolls


@triton.jit
def _depthwise_norm_silu_kernel(
    x_ptr, w_ptr, scale_ptr, shift_ptr, out_ptr, valid_ptr,
    T, C, sx_b, sx_t, so_b, so_t,
    K: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(2)
    steps = tl.program_id(0) * BT + tl.arange(0, BT)
    channels = tl.program_id(1) * BC + tl.arange(0, BC)
    in_channels = channels < C
    valid = tl.load(valid_ptr + b)
    base = x_ptr + b.to(tl.int64) * sx_b
    acc = tl.zeros((BT, BC), tl.float32)
    for tap in tl.static_range(K):
        source = steps + (tap - (K - 1) // 2)
        keep = ((source >= 0) & (source < valid))[:, None] & in_channels[None, :]
        x = tl.load(base + source[:, None] * sx_t + channels[None, :], mask=keep, other=0.0).to(tl.float32)
        weight = tl.load(w_ptr + tap * C + channels, mask=in_channels, other=0.0)
        acc += x * weight[None, :]
    scale = tl.load(scale_ptr + channels, mask=in_channels, other=0.0)
    shift = tl.load(shift_ptr + channels, mask=in_channels, other=0.0)
    y = acc * scale[None, :] + shift[None, :]
    y = y * tl.sigmoid(y)
    tl.store(
        out_ptr + b.to(tl.int64) * so_b + steps[:, None] * so_t + channels[None, :],
        y.to(out_ptr.dtype.element_ty),
        mask=(steps < T)[:, None] & in_channels[None, :],
    )


def usable(hidden: torch.Tensor, depthwise: torch.nn.Conv1d) -> bool:
    """Whether the kernel takes this module's depthwise convolution on ``[B, T, d]`` 16-bit activations:
    one filter per channel, an odd width up to `MAX_KERNEL` padded to keep the length, stride and
    dilation 1."""
    channels = depthwise.in_channels
    (width,) = depthwise.kernel_size
    return (
        hidden.dim() == 3
        and hidden.shape[-1] == channels
        and hidden.dtype in (torch.bfloat16, torch.float16)
        and depthwise.groups == channels == depthwise.out_channels
        and width % 2 == 1
        and width <= MAX_KERNEL
        and depthwise.padding == ((width - 1) // 2,)
        and depthwise.stride == (1,)
        and depthwise.dilation == (1,)
        and depthwise.padding_mode == "zeros"
    )


def folded_operands(
    depthwise: torch.nn.Conv1d, norm: torch.nn.BatchNorm1d
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """fp32 ``(weight [K, d], scale [d], shift [d])`` with ``norm(conv + bias) = conv · scale + shift``
    (running statistics): what `depthwise_norm_silu` reads."""
    with torch.no_grad():
        scale = norm.weight.float() * torch.rsqrt(norm.running_var.float() + norm.eps)
        shift = norm.bias.float() - norm.running_mean.float() * scale
        if depthwise.bias is not None:
            shift = shift + depthwise.bias.float() * scale
        weight = depthwise.weight.reshape(depthwise.out_channels, -1).t().float()
    return weight.contiguous(), scale.contiguous(), shift.contiguous()


def depthwise_norm_silu(
    hidden: torch.Tensor,
    operands: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    valid_lengths: torch.Tensor,
    *,
    tiles: tuple[int, int, int] = (32, 128, 4),
) -> torch.Tensor:
    """``SiLU(norm(depthwise(hidden with padding zeroed)))`` of ``hidden [B, T, d]``: ``[B, T, d]`` in
    ``hidden``'s dtype. ``operands`` from `folded_operands`; ``valid_lengths [B]`` int32. ``tiles``: (time
    steps, channels, warps) of a program."""
    batch, length, channels = hidden.shape
    if hidden.stride(-1) != 1:
        hidden = hidden.contiguous()
    weight, scale, shift = operands
    out = torch.empty(batch, length, channels, dtype=hidden.dtype, device=hidden.device)
    block_t, block_c, warps = tiles
    grid = (triton.cdiv(length, block_t), triton.cdiv(channels, block_c), batch)
    _depthwise_norm_silu_kernel[grid](
        hidden, weight, scale, shift, out, valid_lengths,
        length, channels, hidden.stride(0), hidden.stride(1), out.stride(0), out.stride(1),
        K=weight.shape[0], BT=block_t, BC=block_c, num_warps=warps,
    )  # fmt: skip
    return out
