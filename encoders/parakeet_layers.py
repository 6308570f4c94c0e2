"""Building blocks of the FastConformer: conv subsampling, macaron feed-forward, convolution
module and the Conformer block. Attribute names are the checkpoint's (``subsampling.layers.{i}``,
``feed_forward{1,2}.linear{1,2}``, ``conv.{pointwise_conv1,depthwise_conv,norm,pointwise_conv2}``,
``norm_{feed_forward1,self_att,conv,feed_forward2,out}``).

Padding never leaks into a clip: every convolution in time sees zeros beyond the clip's valid
length, exactly as when the clip is encoded alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from encoders import fast_path, quack_linear
from encoders.audio_clips import subsampled_length, subsampled_lengths
from encoders.parakeet_attention import ClipLayout, RelPositionSelfAttention
from encoders.parakeet_config import ParakeetConfig

try:
    from encoders.parakeet_conv_triton import depthwise_norm_silu, folded_operands
    from encoders.parakeet_conv_triton import usable as conv_kernel_usable
except ImportError:  # no Triton: the torch path only

    def conv_kernel_usable(hidden: torch.Tensor, depthwise: nn.Conv1d) -> bool:
        return False


try:
    from encoders import parakeet_subsampling_triton as subsampling_kernels
except ImportError:  # no Triton: the torch path only
    subsampling_kernels = None


_ACTIVATIONS = {"silu": F.silu, "swish": F.silu, "relu": F.relu, "gelu": F.gelu}


def activation(name: str):
    """The activation function a config names."""
    if name not in _ACTIVATIONS:
        raise ValueError(f"unsupported activation {name!r} (one of {sorted(_ACTIVATIONS)})")
    return _ACTIVATIONS[name]


class ConvSubsampling(nn.Module):
    """Mel frames ``[B, F, mels]`` -> ``[B, F', hidden]`` with ``F' = ceil(F / factor)``.

    A 2-D convolution stack over (time, mel): a strided 3×3 conv from one channel, then per
    further stage a strided depthwise 3×3 and a pointwise 1×1 conv, ReLU after each stage; the
    channels × remaining mel bins are flattened per frame and projected by ``linear``. The
    ``nn.ReLU`` entries keep the checkpoint's layer indices (0, 2, 3, 5, 6, ...).
    """

    def __init__(self, config: ParakeetConfig) -> None:
        super().__init__()
        k, s, c = (
            config.subsampling_conv_kernel_size,
            config.subsampling_conv_stride,
            config.subsampling_conv_channels,
        )
        self.kernel_size, self.stride, self.stages = k, s, config.stride_stages
        pad = (k - 1) // 2
        layers: list[nn.Module] = [nn.Conv2d(1, c, k, stride=s, padding=pad), nn.ReLU()]
        for _ in range(self.stages - 1):
            layers += [nn.Conv2d(c, c, k, stride=s, padding=pad, groups=c), nn.Conv2d(c, c, 1), nn.ReLU()]
        self.layers = nn.ModuleList(layers)
        mel_out = config.num_mel_bins
        for _ in range(self.stages):
            mel_out = (mel_out + 2 * pad - k) // s + 1
        self.linear = nn.Linear(c * mel_out, config.hidden_size)

    def forward(self, features: torch.Tensor, frame_lengths: torch.Tensor) -> torch.Tensor:
        if self._kernels_usable(features):
            out = fast_path.attempt(
                ("subsampling", features.dtype, self.kernel_size, self.stride, self.stages),
                lambda: self._forward_kernels(features, frame_lengths),
            )
            if out is not None:
                return out
        x = features.unsqueeze(1)  # [B, 1, F, mels]
        # inference: ReLU in place, and only the time steps past the shortest clip get zeroed, in place
        in_place = not (
            torch.is_grad_enabled() and (features.requires_grad or self.linear.weight.requires_grad)
        )
        lengths, shortest = frame_lengths, int(frame_lengths.min()) if in_place else 0
        x = _zero_past(x, lengths, 0, in_place=False)  # a copy: the caller's features stay as they are
        for layer in self.layers:
            if isinstance(layer, nn.ReLU):
                x = x.relu_() if in_place else layer(x)
                continue
            x = layer(x)
            if layer.stride[0] != 1:
                lengths = subsampled_lengths(lengths, self.kernel_size, self.stride, 1)
                shortest = subsampled_length(shortest, self.kernel_size, self.stride, 1)
            x = _zero_past(x, lengths, shortest, in_place)
        return self.linear(x.transpose(1, 2).flatten(2))  # [B, F', channels * mel_out]

    def _kernels_usable(self, features: torch.Tensor) -> bool:
        """Inference on a 16-bit CUDA tensor with Triton there, and the stack the kernels serve: square
        odd kernels with 'same' padding and equal strides, a first convolution from one channel."""
        if subsampling_kernels is None or features.dim() != 3:
            return False
        k, s = self.kernel_size, self.stride
        layers = list(self.layers)  # a slice of the ModuleList would build (and register) a new one
        strided, pointwise = [layers[0], *layers[2::3]], layers[3::3]
        same = all(
            conv.kernel_size == (k, k) and conv.stride == (s, s) and conv.padding == ((k - 1) // 2,) * 2
            and conv.dilation == (1, 1) and conv.padding_mode == "zeros"
            for conv in strided
        )  # fmt: skip
        return (
            k % 2 == 1
            and same
            and strided[0].in_channels == 1
            and strided[0].groups == 1
            and all(conv.groups == conv.out_channels for conv in strided[1:])
            and all(conv.kernel_size == (1, 1) and conv.bias is not None for conv in pointwise)
            and fast_path.plain(self.linear, nn.Linear)  # the kernels' path reads its weight
            and fast_path.inference_kernel_usable(features, self.parameters())
        )

    def _forward_kernels(self, features: torch.Tensor, frame_lengths: torch.Tensor) -> torch.Tensor:
        """The forward on `parakeet_subsampling_triton`, channels last: no masking pass until the last
        stage, since each depthwise convolution reads the rows past a clip's length as zeros."""
        k, s, kernels = self.kernel_size, self.stride, subsampling_kernels
        first = self.layers[0]
        sources = [t for t in (first.weight, first.bias) if t is not None]
        operands = fast_path.derived(self, "first", sources, lambda: kernels.conv_operands(first))
        x = kernels.first_conv_relu(features, frame_lengths, operands, k, s)  # [B, T, mels, C]
        lengths = subsampled_lengths(frame_lengths, k, s, 1)
        for stage in range(1, self.stages):
            depthwise, pointwise = self.layers[3 * stage - 1], self.layers[3 * stage]
            taps = fast_path.derived(
                self, f"depthwise{stage}", [t for t in (depthwise.weight, depthwise.bias) if t is not None],
                lambda conv=depthwise: kernels.conv_operands(conv),
            )  # fmt: skip
            x = kernels.depthwise_conv(x, lengths, taps, k, s)
            lengths = subsampled_lengths(lengths, k, s, 1)
            channels = pointwise.out_channels
            x = torch._addmm_activation(
                pointwise.bias, x.view(-1, x.shape[-1]), pointwise.weight.view(channels, -1).t()
            ).view(*x.shape[:3], channels)
        steps = torch.arange(x.shape[1], device=x.device)
        x.masked_fill_((steps[None, :] >= lengths[:, None])[:, :, None, None], 0.0)
        weight = fast_path.derived(self, "linear", [self.linear.weight], self._channels_last_linear_weight)
        return F.linear(x.flatten(2), weight, self.linear.bias)  # [B, F', mel_out * channels]

    def _channels_last_linear_weight(self) -> torch.Tensor:
        """``linear``'s weight with its columns in (mel, channel) order, to read channels-last frames."""
        hidden, width = self.linear.weight.shape
        channels = self.layers[0].out_channels
        with torch.no_grad():
            columns = self.linear.weight.view(hidden, channels, width // channels).transpose(1, 2)
            return columns.reshape(hidden, width)


def _zero_past(x: torch.Tensor, lengths: torch.Tensor, start: int, in_place: bool) -> torch.Tensor:
    """``x [B, C, T, F]`` with the steps at or past each clip's length zeroed; only the steps from ``start``
    on are looked at (in place: the least length; otherwise 0, for autograd)."""
    if start >= x.shape[2]:
        return x
    steps = torch.arange(start, x.shape[2], device=x.device)
    past = (steps[None, :] >= lengths[:, None])[:, None, :, None]
    if in_place:
        x[:, :, start:].masked_fill_(past, 0.0)
        return x
    return x.masked_fill(past, 0.0)


class FeedForward(nn.Module):
    """Linear -> activation -> Linear (``linear1``, ``linear2``)."""

    def __init__(self, config: ParakeetConfig) -> None:
        super().__init__()
        self.linear1 = nn.Linear(config.hidden_size, config.intermediate_size, bias=config.attention_bias)
        self.linear2 = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.attention_bias)
        self.act = activation(config.hidden_act)
        self.dropout = config.activation_dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self._linear1_silu(x) if self.act is F.silu and not self.training else None
        if h is None:
            h = F.dropout(self.act(self.linear1(x)), self.dropout, self.training)
        return self.linear2(h)

    def _linear1_silu(self, x: torch.Tensor) -> torch.Tensor | None:
        """``silu(linear1(x))`` as one quack GEMM (`encoders.quack_linear`), or None where it does not serve."""
        weight, bias = self.linear1.weight, self.linear1.bias
        if not fast_path.plain(self.linear1, nn.Linear) or not quack_linear.usable(x, weight, bias):
            return None
        return quack_linear.linear_act(x, weight, bias, "silu")


class ConvolutionModule(nn.Module):
    """Pointwise conv to 2×, GLU, depthwise conv in time, BatchNorm, activation, pointwise conv.

    Positions past a clip's valid length are zeroed right before the depthwise convolution, so
    its kernel sees the same zeros as for the clip alone. BatchNorm always uses its running
    statistics (the batch would mix in padding).
    """

    def __init__(self, config: ParakeetConfig) -> None:
        super().__init__()
        d, k, bias = config.hidden_size, config.conv_kernel_size, config.convolution_bias
        self.pointwise_conv1 = nn.Conv1d(d, 2 * d, 1, bias=bias)
        self.depthwise_conv = nn.Conv1d(d, d, k, padding=(k - 1) // 2, groups=d, bias=bias)
        self.norm = nn.BatchNorm1d(d)
        self.pointwise_conv2 = nn.Conv1d(d, d, 1, bias=bias)
        self.act = activation(config.hidden_act)

    def forward(self, x: torch.Tensor, clips: ClipLayout) -> torch.Tensor:
        """``x [B, T, d]`` -> ``[B, T, d]``. The pointwise convolutions run as matmuls on the token-major
        layout (the same sums as a width-1 convolution, without the layout changes around one)."""
        h = self._pointwise_glu(x)
        if h is None:
            h = F.linear(x, self.pointwise_conv1.weight.squeeze(-1), self.pointwise_conv1.bias)  # [B, T, 2d]
            h = F.glu(h, dim=-1)
        middle = self._middle_kernel(h, clips) if self._kernel_usable(h) else None
        if middle is not None:
            h = middle
        else:
            h = h.masked_fill(~clips.valid[:, :, None], 0.0).transpose(1, 2)  # [B, d, T]
            h = self.depthwise_conv(h)
            bn = self.norm
            h = F.batch_norm(h, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
            h = self.act(h).transpose(1, 2)
        return F.linear(h, self.pointwise_conv2.weight.squeeze(-1), self.pointwise_conv2.bias)

    def _pointwise_glu(self, x: torch.Tensor) -> torch.Tensor | None:
        """The first pointwise convolution and the GLU as one quack GEMM (`encoders.quack_linear`, its
        rows interleaved once and kept), or None where it does not serve."""
        conv = self.pointwise_conv1
        if not fast_path.plain(conv, nn.Conv1d) or not quack_linear.usable(
            x, conv.weight.squeeze(-1), conv.bias
        ):
            return None
        weight, bias = fast_path.derived(
            self,
            "gated",
            list(conv.parameters()),
            lambda: quack_linear.gated_operands(conv.weight.squeeze(-1), conv.bias),
        )
        return quack_linear.linear_act(x, weight, bias, "glu")

    def _middle_kernel(self, h: torch.Tensor, clips: ClipLayout) -> torch.Tensor | None:
        """Depthwise convolution, BatchNorm and SiLU of the GLU's output on the Triton kernel (padding read
        as zeros there), or None if it failed."""
        sources = [*self.depthwise_conv.parameters(), *self.norm.parameters(), *self.norm.buffers()]
        operands = fast_path.derived(
            self, "folded", sources, lambda: folded_operands(self.depthwise_conv, self.norm)
        )
        configuration = ("parakeet convolution", h.device, h.dtype, self.depthwise_conv.kernel_size)
        return fast_path.attempt(
            configuration, lambda: depthwise_norm_silu(h, operands, clips.valid_lengths_i32)
        )

    def _kernel_usable(self, h: torch.Tensor) -> bool:
        """Whether depthwise convolution, BatchNorm and SiLU run as one Triton kernel
        (`encoders.parakeet_conv_triton`)."""
        return (
            self.act is F.silu
            and fast_path.inference_kernel_usable(h, self.parameters())
            and conv_kernel_usable(h, self.depthwise_conv)
        )


class ConformerBlock(nn.Module):
    """Macaron Conformer block: ½·FF, self-attention, convolution, ½·FF, each pre-normed and
    residual, then a final LayerNorm."""

    def __init__(self, config: ParakeetConfig) -> None:
        super().__init__()
        d = config.hidden_size
        self.feed_forward1 = FeedForward(config)
        self.self_attn = RelPositionSelfAttention(config)
        self.conv = ConvolutionModule(config)
        self.feed_forward2 = FeedForward(config)
        self.norm_feed_forward1 = nn.LayerNorm(d)
        self.norm_self_att = nn.LayerNorm(d)
        self.norm_conv = nn.LayerNorm(d)
        self.norm_feed_forward2 = nn.LayerNorm(d)
        self.norm_out = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor, position_embedding: torch.Tensor, clips: ClipLayout) -> torch.Tensor:
        x = x + 0.5 * self.feed_forward1(self.norm_feed_forward1(x))
        x = x + self.self_attn(self.norm_self_att(x), position_embedding, clips)
        x = x + self.conv(self.norm_conv(x), clips)
        x = x + 0.5 * self.feed_forward2(self.norm_feed_forward2(x))
        return self.norm_out(x)

    def forward_fused(
        self,
        x: torch.Tensor,
        position_embedding: torch.Tensor,
        clips: ClipLayout,
        scales: tuple[torch.Tensor, torch.Tensor],
    ) -> torch.Tensor:
        """`forward` with each residual add and the LayerNorm after it as one Triton kernel
        (`encoders.residual_norm_triton`): the sums rounded as the separate operations round them, the
        norms equal up to their last bits. ``scales``: the residual scales ½ and 1 as ``[d]`` tensors of
        ``x``'s dtype, made once for all layers."""
        from encoders.residual_norm_triton import scaled_residual_norm_triton as seam

        halves, ones = scales
        x, normed = seam(x, self.feed_forward1(self.norm_feed_forward1(x)), halves, self.norm_self_att)
        x, normed = seam(x, self.self_attn(normed, position_embedding, clips), ones, self.norm_conv)
        x, normed = seam(x, self.conv(normed, clips), ones, self.norm_feed_forward2)
        return seam(x, self.feed_forward2(normed), halves, self.norm_out)[1]

    def fused_usable(self, x: torch.Tensor) -> bool:
        """Whether `forward_fused` can run on ``x`` (bf16 on CUDA, inference, the kernel importable)."""
        if not fast_path.inference_kernel_usable(x, self.parameters()):
            return False
        try:
            from encoders.residual_norm_triton import scaled_residual_norm_usable
        except ImportError:
            return False
        return all(
            scaled_residual_norm_usable(x, x, x.new_empty(x.shape[-1]), norm)
            for norm in (self.norm_self_att, self.norm_conv, self.norm_feed_forward2, self.norm_out)
        )
