"""Triton kernels of the FastConformer's conv subsampling, for inference on the GPU.

The subsampling's first convolution has one input channel and 256 outputs; its depthwise convolutions
have one filter per channel. cuDNN runs both far below the memory's rate, and the torch path adds a ReLU
pass and a masking pass over each stage's ``[B, C, T, mels]`` output (at 20 clips of 30 s the first
stage's output is about 1 GB in bf16). Here, channels last (``[B, T, mels, C]``):

- `first_conv_relu`: the strided convolution from one channel, its bias and ReLU in one pass, reading
  zeros at the frames past each clip's valid length;
- `depthwise_conv`: a strided depthwise convolution and its bias in one pass, reading zeros at the rows
  past each clip's valid length, which stands in for the torch path's masking of the stage before;
- the pointwise convolutions stay matmuls (`torch._addmm_activation`, bias and ReLU in the epilogue).

Sums are fp32 over the 16-bit inputs, rounded once, as cuDNN sums them.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _strided_conv_kernel(
    x_ptr, w_ptr, bias_ptr, valid_ptr, out_ptr,
    T_in, M_in, M_out, P_out, C,
    sx_b, sx_t, sx_m,
    K: tl.constexpr, S: tl.constexpr, ONE_CHANNEL: tl.constexpr, RELU: tl.constexpr,
    BP: tl.constexpr, BC: tl.constexpr,
):  # fmt: skip
    """A strided K x K convolution ('same' padding) from one input channel to C (``ONE_CHANNEL``) or
    depthwise over C channels last, plus its bias (and ReLU), into a channels-last [B, P_out, C]."""
    b = tl.program_id(2)
    positions = tl.program_id(0) * BP + tl.arange(0, BP)
    channels = tl.program_id(1) * BC + tl.arange(0, BC)
    in_positions = positions < P_out
    in_channels = channels < C
    t_out = positions // M_out
    m_out = positions % M_out
    valid = tl.minimum(tl.load(valid_ptr + b), T_in)
    base = x_ptr + b.to(tl.int64) * sx_b
    acc = tl.zeros((BP, BC), tl.float32)
    for i in tl.static_range(K):
        t = t_out * S + (i - (K - 1) // 2)
        for j in tl.static_range(K):
            m = m_out * S + (j - (K - 1) // 2)
            keep = in_positions & (t >= 0) & (t < valid) & (m >= 0) & (m < M_in)
            source = t * sx_t + m * sx_m
            if ONE_CHANNEL:
                x = tl.load(base + source, mask=keep, other=0.0).to(tl.float32)[:, None]
            else:
                x = tl.load(
                    base + source[:, None] + channels[None, :],
                    mask=keep[:, None] & in_channels[None, :],
                    other=0.0,
                ).to(tl.float32)
            w = tl.load(w_ptr + (i * K + j) * C + channels, mask=in_channels, other=0.0)
            acc += x * w[None, :]
    acc += tl.load(bias_ptr + channels, mask=in_channels, other=0.0)[None, :]
    if RELU:
        acc = tl.maximum(acc, 0.0)
    rows = b.to(tl.int64) * P_out + positions
    tl.store(
        out_ptr + rows[:, None] * C + channels[None, :],
        acc.to(out_ptr.dtype.element_ty),
        mask=in_positions[:, None] & in_channels[None, :],
    )


def strided_length(length: int, kernel: int, stride: int) -> int:
    """Outputs of one strided convolution with 'same' padding over ``length`` inputs."""
    return (length + 2 * ((kernel - 1) // 2) - kernel) // stride + 1


def conv_operands(conv: torch.nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 ``(taps [K*K, C], bias [C])`` of a one-input-channel or depthwise ``K x K`` convolution: what
    the kernels read (a zero bias where the convolution has none)."""
    with torch.no_grad():
        channels = conv.out_channels
        taps = conv.weight.reshape(channels, -1).t().float().contiguous()
        bias = conv.bias.float() if conv.bias is not None else taps.new_zeros(channels)
    return taps, bias.contiguous()


def first_conv_relu(
    features: torch.Tensor,
    valid_frames: torch.Tensor,
    operands: tuple[torch.Tensor, torch.Tensor],
    kernel: int,
    stride: int,
    *,
    tiles: tuple[int, int, int] = (128, 64, 4),
) -> torch.Tensor:
    """``ReLU(conv(features))`` of ``features [B, F, mels]`` (one input channel; frames at or past
    ``valid_frames [B]`` read as zeros): ``[B, F', mels', C]`` channels last, in ``features``' dtype.
    ``operands`` from `conv_operands`; ``tiles``: (positions, channels, warps) of a program."""
    return _convolve(features, valid_frames, operands, kernel, stride, tiles, one_channel=True)


def depthwise_conv(
    hidden: torch.Tensor,
    valid_rows: torch.Tensor,
    operands: tuple[torch.Tensor, torch.Tensor],
    kernel: int,
    stride: int,
    *,
    tiles: tuple[int, int, int] = (32, 128, 4),
) -> torch.Tensor:
    """The strided depthwise convolution (with its bias) of ``hidden [B, T, mels, C]`` (channels last;
    rows at or past ``valid_rows [B]`` read as zeros): ``[B, T', mels', C]``. ``operands`` from
    `conv_operands`; ``tiles``: (positions, channels, warps) of a program."""
    return _convolve(hidden.contiguous(), valid_rows, operands, kernel, stride, tiles, one_channel=False)


def _convolve(
    x: torch.Tensor,
    valid: torch.Tensor,
    operands: tuple[torch.Tensor, torch.Tensor],
    kernel: int,
    stride: int,
    tiles: tuple[int, int, int],
    one_channel: bool,
) -> torch.Tensor:
    """`_strided_conv_kernel` over ``x`` ([B, F, mels] with ``one_channel``, then ReLU; else channels-last
    [B, T, mels, C])."""
    batch, rows, mels = x.shape[:3]
    taps, bias = operands
    channels = taps.shape[1]
    out_t, out_m = strided_length(rows, kernel, stride), strided_length(mels, kernel, stride)
    out = torch.empty(batch, out_t, out_m, channels, dtype=x.dtype, device=x.device)
    block_p, block_c, warps = tiles
    grid = (triton.cdiv(out_t * out_m, block_p), triton.cdiv(channels, block_c), batch)
    _strided_conv_kernel[grid](
        x, taps, bias, valid, out,
        rows, mels, out_m, out_t * out_m, channels,
        x.stride(0), x.stride(1), x.stride(2),
        K=kernel, S=stride, ONE_CHANNEL=one_channel, RELU=one_channel, BP=block_p, BC=block_c,
        num_warps=warps,
    )  # fmt: skip
    return out
