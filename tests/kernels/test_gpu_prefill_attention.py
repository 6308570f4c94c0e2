"""GPU: without FlashAttention 4, a long causal prefill's attention takes cuDNN (padded to its length
bucket) from a layer's second prefill of that bucket, and gives the flash kernel's output. Skipped
without CUDA."""

from __future__ import annotations

import pytest
import torch
from numerics import rel_err

from backbone import HybridConfig, attention
from backbone.attention import Attention
from backbone.kernels import DISABLE_ENV, flash4_prefill

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("length", [5000, 3344])  # buckets of 1,024 and of 256 tokens
def test_long_prefill_on_cudnn_from_the_second_call_matches_flash(monkeypatch, length):
    config = HybridConfig(
        layer_types="*", hidden_size=512, num_attention_heads=8, num_key_value_heads=2, head_dim=128,
        vocab_size=64,
    )  # fmt: skip
    torch.manual_seed(0)
    layer = Attention(config, layer_index=0).cuda().bfloat16().eval()
    hidden = torch.randn(1, length, 512, device="cuda").bfloat16()
    monkeypatch.setattr(attention, "_BUCKETS_SEEN", {})
    monkeypatch.setenv(flash4_prefill.ENV, "0")  # FlashAttention 4, where installed, comes before cuDNN
    padded_calls = []
    real = attention.padded_causal_attention
    monkeypatch.setattr(
        attention, "padded_causal_attention", lambda *a: padded_calls.append(a[0].shape) or real(*a)
    )
    with torch.no_grad():
        first = layer(hidden)
        assert padded_calls == []  # the first prefill of a bucket stays on flash
        second = layer(hidden)
        assert padded_calls == [(1, 8, length, 128)]
        monkeypatch.setenv(DISABLE_ENV, "1")
        reference = layer(hidden)
    assert torch.equal(first, reference)
    assert rel_err(second, reference) <= 1e-2
