"""GPU: a long causal prefill's attention on FlashAttention 4 (``flash-attn-4`` installed, Hopper or
Blackwell) is as accurate as torch's flash kernel against fp32 attention, from the first call; decoding
after it and short prefills keep torch's kernels. Skipped otherwise."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from numerics import rel_err

from backbone import HybridCache, HybridConfig
from backbone.attention import Attention
from backbone.kernels import flash4_prefill

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.usefixtures("flash4_gpu"),  # conftest.py
]


def _causal(q, k, v, scale):
    """[B, L, heads, D] causal GQA on torch's SDPA, [B, L, heads, D] out."""
    groups = q.shape[2] // k.shape[2]
    k, v = (t.repeat_interleave(groups, 2).transpose(1, 2) for t in (k, v))
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k, v, is_causal=True, scale=scale)
    return out.transpose(1, 2)


@pytest.mark.parametrize(("batch", "length", "kv_heads"), [(1, 5000, 2), (2, 2100, 8), (1, 3344, 1)])
def test_as_accurate_as_torchs_flash_kernel(batch, length, kv_heads):
    g = torch.Generator(device="cuda").manual_seed(length)
    q = torch.randn(batch, length, 8, 128, device="cuda", dtype=torch.bfloat16, generator=g)
    k, v = (
        torch.randn(batch, length, kv_heads, 128, device="cuda", dtype=torch.bfloat16, generator=g)
        for _ in "kv"
    )
    scale = 128**-0.5
    with torch.no_grad():
        assert flash4_prefill.usable(q, k, v)
        ours = flash4_prefill.causal_attention(q, k, v, scale)
        flash = _causal(q, k, v, scale)
    reference = _causal(q.float(), k.float(), v.float(), scale)
    assert ours is not None and ours.shape == q.shape and ours.dtype == q.dtype
    assert rel_err(ours, reference) <= max(2 * rel_err(flash, reference), 2**-9)


def _config() -> HybridConfig:
    return HybridConfig(
        layer_types="*", hidden_size=512, num_attention_heads=8, num_key_value_heads=2, head_dim=128,
        vocab_size=64,
    )  # fmt: skip


def test_a_long_prefill_takes_it_from_the_first_call_and_decoding_does_not(monkeypatch):
    torch.manual_seed(0)
    layer = Attention(_config(), layer_index=0).cuda().bfloat16().eval()
    calls = []
    real = flash4_prefill.causal_attention
    monkeypatch.setattr(flash4_prefill, "causal_attention", lambda *a: calls.append(a[0].shape) or real(*a))
    length = 2500
    hidden = torch.randn(1, length + 1, 512, device="cuda").bfloat16()
    cache = HybridCache(_config(), 1, torch.bfloat16, "cuda", max_length=length + 1)
    with torch.no_grad():
        prefill = layer(hidden[:, :length], cache=cache)
        assert calls == [(1, length, 8, 128)]
        cache.seen_tokens = length
        step = layer(hidden[:, length:], is_causal=False, cache=cache)  # one token after the prompt
        assert calls == [(1, length, 8, 128)]
        whole = layer(hidden)  # prompt and token at once, for reference
        short = layer(hidden[:, : flash4_prefill.MIN_LENGTH - 1])
        assert len(calls) == 2  # the whole prompt took it, the short one did not
    assert rel_err(prefill, whole[:, :length]) <= 1e-2
    assert rel_err(step, whole[:, length:]) <= 1e-2
    assert short.shape == (1, flash4_prefill.MIN_LENGTH - 1, 512)
