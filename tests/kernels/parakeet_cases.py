"""Worker run in a subprocess by test_parakeet_interpreted.py: the FastConformer's relative-position
attention kernel and its convolution-module kernel under Triton's CPU interpreter, each against the torch
path in fp32, and a padded batch of clips through the whole encoder on the kernels against each clip
alone on the torch path. Prints one JSON object {case: number}.

TRITON_INTERPRET must be set before triton is first imported, hence a separate process.
"""

from __future__ import annotations

import json
import os
import sys
from unittest import mock

os.environ["TRITON_INTERPRET"] = "1"

import torch  # noqa: E402
from numerics import rel_err  # noqa: E402
from parakeet_weights import randomise  # noqa: E402

from encoders import fast_path  # noqa: E402
from encoders.parakeet import ParakeetSoundEncoder  # noqa: E402
from encoders.parakeet_attention import ClipLayout, RelPositionSelfAttention, relative_position_embedding  # noqa: E402
from encoders.parakeet_config import ParakeetConfig  # noqa: E402
from encoders.parakeet_layers import ConvolutionModule, ConvSubsampling  # noqa: E402


def kernels_on():
    """Our kernels taken on CPU tensors (the interpreter runs them there)."""
    return mock.patch.object(fast_path, "inference_kernel_usable", return_value=True)


def clip_layout(valid: list[int], extents: list[int], length: int) -> ClipLayout:
    return ClipLayout(torch.tensor(valid), torch.tensor(extents), length)


def attention_cases(results: dict) -> None:
    """Clips of different lengths in one batch; padding rows (past the valid length) included."""
    shapes = {
        "small": (dict(hidden_size=32, num_attention_heads=2), [37, 20, 1], [37, 21, 2], 37),
        "two_blocks": (dict(hidden_size=256, num_attention_heads=2), [70, 65], [71, 66], 71),
    }
    for name, (sizes, valid, extents, length) in shapes.items():
        config = ParakeetConfig(**sizes, num_hidden_layers=1, intermediate_size=64)
        module = RelPositionSelfAttention(config).eval()
        randomise(module, seed=len(name))
        g = torch.Generator().manual_seed(3)
        hidden = torch.randn(len(valid), length, config.hidden_size, generator=g)
        positions = relative_position_embedding(length, config.hidden_size, hidden.device, torch.float32)
        clips = clip_layout(valid, extents, length)
        with torch.no_grad():
            reference = module(hidden, positions, clips)  # fp32, torch path
            low = module.bfloat16()
            torch_bf16 = low(hidden.bfloat16(), positions.bfloat16(), clips)
            with kernels_on():
                kernel = low(hidden.bfloat16(), positions.bfloat16(), clips)
        results[f"attention/{name}/kernel"] = rel_err(kernel, reference)
        results[f"attention/{name}/torch_bf16"] = rel_err(torch_bf16, reference)
        results[f"attention/{name}/shape_dtype"] = float(
            kernel.shape == reference.shape and kernel.dtype == torch.bfloat16
        )


def dropout_case(results: dict) -> None:
    """In training with attention dropout (a frozen encoder in a model put in training mode), the torch path
    runs: the kernel has no dropout."""
    config = ParakeetConfig(hidden_size=32, num_attention_heads=2, num_hidden_layers=1, attention_dropout=0.1)
    module = RelPositionSelfAttention(config).bfloat16().train().requires_grad_(False)
    hidden = torch.randn(1, 8, 32).bfloat16()
    positions = relative_position_embedding(8, 32, hidden.device, hidden.dtype)
    with kernels_on(), mock.patch.object(module, "_forward_kernel") as kernel_path:
        module(hidden, positions, clip_layout([8], [8], 8))
    results["attention/dropout_keeps_torch_path"] = float(not kernel_path.called)


def conv_cases(results: dict) -> None:
    config = ParakeetConfig(hidden_size=96, num_attention_heads=2, num_hidden_layers=1, conv_kernel_size=9)
    module = ConvolutionModule(config).eval()
    randomise(module, seed=5)
    valid, length = [50, 17, 3], 50
    clips = clip_layout(valid, [v + 1 for v in valid], length)
    hidden = torch.randn(3, length, 96, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        reference = module(hidden, clips)
        low = module.bfloat16()
        torch_bf16 = low(hidden.bfloat16(), clips)
        with kernels_on():
            kernel = low(hidden.bfloat16(), clips)
    results["conv/kernel"] = rel_err(kernel, reference)
    results["conv/torch_bf16"] = rel_err(torch_bf16, reference)
    # the kernel sees zeros past each clip's valid length: rows near the end of the short clip, where the
    # depthwise kernel reaches into padding, agree as well
    results["conv/short_clip_tail"] = rel_err(kernel[1, 10:20], reference[1, 10:20])


def subsampling_cases(results: dict) -> None:
    """Clips of 45, 30 and 7 valid frames (padding frames hold loud noise, which must not leak in), as a
    contiguous and as a strided input: the kernels in bf16 land as near the fp32 torch path as the
    torch path in bf16 does, padding positions included."""
    config = ParakeetConfig(hidden_size=24, num_mel_bins=20, subsampling_conv_channels=8)
    module = ConvSubsampling(config).eval()
    randomise(module, seed=11)
    g = torch.Generator().manual_seed(12)
    lengths = torch.tensor([45, 30, 7])
    loud = 1 + 99 * (torch.arange(45)[None, :, None] >= lengths[:, None, None])  # padding 100x louder
    features = torch.randn(3, 45, 20, generator=g) * loud
    strided = torch.randn(3, 20, 45, generator=g).transpose(1, 2) * loud  # mel bins the slow axis
    with torch.no_grad():
        for name, inputs in (("contiguous", features), ("strided", strided)):
            reference = module(inputs, lengths)
            low = module.bfloat16()
            torch_bf16 = low(inputs.bfloat16(), lengths)
            with (
                kernels_on(),
                mock.patch.object(low, "_forward_kernels", wraps=low._forward_kernels) as taken,
            ):
                kernel = low(inputs.bfloat16(), lengths)
            results[f"subsampling/{name}/kernel"] = rel_err(kernel, reference)
            results[f"subsampling/{name}/torch_bf16"] = rel_err(torch_bf16, reference)
            results[f"subsampling/{name}/taken"] = float(taken.called and kernel.shape == reference.shape)
            module = module.float()
    # the short clip's last outputs read the padding frames as zeros, as the torch path does
    results["subsampling/short_clip_tail"] = rel_err(kernel[2, :2], reference[2, :2])


def encoder_case(results: dict) -> None:
    """A padded batch on the kernels gives each clip what the torch path gives it alone."""
    config = ParakeetConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=96, num_mel_bins=16,
        subsampling_conv_channels=8, conv_kernel_size=5,
    )  # fmt: skip
    encoder = ParakeetSoundEncoder(config).eval()
    randomise(encoder, seed=7)
    encoder = encoder.bfloat16()
    g = torch.Generator().manual_seed(8)
    frames = [160, 97, 40]
    features = torch.zeros(3, 160, 16, dtype=torch.bfloat16)
    mask = torch.zeros(3, 160, dtype=torch.bool)
    for row, count in enumerate(frames):
        features[row, :count] = torch.randn(count, 16, generator=g).bfloat16()
        mask[row, :count] = True
    worst = 0.0
    with torch.no_grad():
        with kernels_on():
            hidden, kept = encoder(features, mask)
        for row, count in enumerate(frames):
            alone, alone_kept = encoder(features[row : row + 1, :count], mask[row : row + 1, :count])
            worst = max(worst, rel_err(hidden[row, kept[row]], alone[0, alone_kept[0]]))
    results["encoder/batch_vs_alone"] = worst
    # off CUDA the kernels are never chosen
    results["encoder/cpu_not_taken"] = float(not fast_path.inference_kernel_usable(features, []))


if __name__ == "__main__":
    out: dict = {}
    attention_cases(out)
    dropout_case(out)
    conv_cases(out)
    subsampling_cases(out)
    encoder_case(out)
    out["kernels/none_failed"] = float(not fast_path._FAILED)  # no case fell back to the torch path
    json.dump(out, sys.stdout)
