"""GPU parity of the FastConformer's Triton kernels (relative-position attention, the convolution module's
middle, the conv subsampling) with the torch path in fp32, at the released widths, and a padded batch of clips through the
encoder on them against each clip alone. Skipped without CUDA."""

from __future__ import annotations

from unittest import mock

import pytest
import torch
from numerics import rel_err
from parakeet_weights import randomise

from encoders import fast_path, parakeet_attention, parakeet_layers
from encoders.parakeet import ParakeetSoundEncoder
from encoders.parakeet_attention import ClipLayout, RelPositionSelfAttention, relative_position_embedding
from encoders.parakeet_config import ParakeetConfig
from encoders.parakeet_layers import ConvolutionModule, ConvSubsampling

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

RELEASED = dict(hidden_size=1024, num_attention_heads=8, intermediate_size=4096, conv_kernel_size=9)


def _clips(valid: list[int], length: int) -> ClipLayout:
    lengths = torch.tensor(valid, device="cuda")
    return ClipLayout(lengths, (lengths + 1).clamp(max=length), length)


@pytest.mark.parametrize("valid", [[376, 376, 376, 376], [376, 300, 75, 1]])
def test_attention_kernel_matches_fp32(valid):
    config = ParakeetConfig(**RELEASED, num_hidden_layers=1)
    module = RelPositionSelfAttention(config).cuda().eval()
    randomise(module, seed=0)
    length = 376
    hidden = torch.randn(len(valid), length, 1024, device="cuda")
    positions = relative_position_embedding(length, 1024, hidden.device, torch.float32)
    clips = _clips(valid, length)
    with torch.no_grad():
        reference = module(hidden, positions, clips)
        low = module.bfloat16()
        with mock.patch.object(low, "_forward_kernel", wraps=low._forward_kernel) as kernel_path:
            fast = low(hidden.bfloat16(), positions.bfloat16(), clips)
        assert kernel_path.called and not fast_path._FAILED
        with mock.patch.object(parakeet_attention, "kernel_usable", return_value=False):
            torch_bf16 = low(hidden.bfloat16(), positions.bfloat16(), clips)
    assert rel_err(fast, reference) <= 1.5 * rel_err(torch_bf16, reference) + 1e-3


def test_conv_kernel_matches_fp32():
    config = ParakeetConfig(**RELEASED, num_hidden_layers=1)
    module = ConvolutionModule(config).cuda().eval()
    randomise(module, seed=0)
    clips = _clips([376, 200, 9], 376)
    hidden = torch.randn(3, 376, 1024, device="cuda")
    with torch.no_grad():
        reference = module(hidden, clips)
        low = module.bfloat16()
        kernel = parakeet_layers.depthwise_norm_silu
        with mock.patch.object(parakeet_layers, "depthwise_norm_silu", wraps=kernel) as kernel_path:
            fast = low(hidden.bfloat16(), clips)
        assert kernel_path.called and not fast_path._FAILED
        with mock.patch.object(parakeet_layers, "conv_kernel_usable", return_value=False):
            torch_bf16 = low(hidden.bfloat16(), clips)
    assert rel_err(fast, reference) <= 1.5 * rel_err(torch_bf16, reference) + 1e-3


@pytest.mark.parametrize("valid", [[3001, 3001], [3001, 1700, 2, 9]])
def test_subsampling_kernels_match_fp32(valid):
    """128 mel bins, 256 channels, 8x: the padding frames hold loud noise that must not leak in."""
    config = ParakeetConfig(**RELEASED, num_mel_bins=128, subsampling_conv_channels=256)
    module = ConvSubsampling(config).cuda().eval()
    randomise(module, seed=0)
    lengths = torch.tensor(valid, device="cuda")
    loud = 1 + 99 * (torch.arange(3001, device="cuda")[None, :, None] >= lengths[:, None, None])
    features = torch.randn(len(valid), 3001, 128, device="cuda") * loud
    with torch.no_grad():
        reference = module(features, lengths)
        low = module.bfloat16()
        with mock.patch.object(low, "_forward_kernels", wraps=low._forward_kernels) as kernel_path:
            fast = low(features.bfloat16(), lengths)
        assert kernel_path.called and not fast_path._FAILED
        with mock.patch.object(fast_path, "inference_kernel_usable", return_value=False):
            torch_bf16 = low(features.bfloat16(), lengths)
    assert fast.shape == reference.shape == (len(valid), 376, 1024)
    assert rel_err(fast, reference) <= 2 * rel_err(torch_bf16, reference) + 5e-3


def test_padded_batch_on_the_kernels_equals_each_clip_alone():
    config = ParakeetConfig(**RELEASED, num_hidden_layers=2, num_mel_bins=128, subsampling_conv_channels=256)
    encoder = ParakeetSoundEncoder(config).cuda().eval()
    randomise(encoder, seed=0)
    encoder = encoder.bfloat16()
    frames = [3000, 2100, 333]
    features = torch.zeros(3, 3000, 128, device="cuda", dtype=torch.bfloat16)
    mask = torch.zeros(3, 3000, dtype=torch.bool, device="cuda")
    for row, count in enumerate(frames):
        features[row, :count] = torch.randn(count, 128, device="cuda").bfloat16()
        mask[row, :count] = True
    with torch.no_grad():
        assert encoder.encoder.layers[0].fused_usable(features.new_empty(1, 1, 1024))
        hidden, kept = encoder(features, mask)
        for row, count in enumerate(frames):
            alone, alone_kept = encoder(features[row : row + 1, :count], mask[row : row + 1, :count])
            assert rel_err(hidden[row, kept[row]], alone[0, alone_kept[0]]) <= 3e-2
    assert not fast_path._FAILED
