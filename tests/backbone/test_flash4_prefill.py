"""A long causal prefill's attention on FlashAttention 4: the rule that picks it (CUDA Hopper/Blackwell,
16-bit, inference, long, the package installed, allowed by the environment), the layer's hand-off to it
(layouts, scale, grouped heads) and the fallback when its kernel fails. Runs without a GPU: a stand-in
kernel computes the same attention with torch's SDPA."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

from backbone import HybridConfig
from backbone.attention import Attention
from backbone.kernels import DISABLE_ENV, flash4_prefill


class _Fake:
    """What the rule reads of a [1, length, heads, width] tensor, without a GPU."""

    def __init__(self, length, heads=32, width=128, dtype=torch.bfloat16, cuda=True, grad=False):
        self.shape = torch.Size((1, length, heads, width))
        self.is_cuda, self.dtype, self.requires_grad, self.device = cuda, dtype, grad, "cuda:0"

    def dim(self) -> int:
        return len(self.shape)


def _sdpa_kernel(calls: list):
    """A stand-in for ``flash_attn_func``: [B, L, heads, D] in, (out [B, L, heads, D], lse) out."""

    def kernel(q, k, v, softmax_scale=None, causal=False):
        calls.append((q.shape, k.shape, softmax_scale, causal))
        groups = q.shape[2] // k.shape[2]
        k, v = (t.repeat_interleave(groups, dim=2).transpose(1, 2) for t in (k, v))
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k, v, is_causal=causal, scale=softmax_scale)
        return out.transpose(1, 2), None

    return kernel


@pytest.fixture
def hopper(monkeypatch):
    """A Hopper GPU with the package installed, the environment silent, no failed configurations."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setattr(flash4_prefill, "_kernel", lambda: _sdpa_kernel([]))
    monkeypatch.setattr(flash4_prefill, "_FAILED", set())
    monkeypatch.delenv(flash4_prefill.ENV, raising=False)
    monkeypatch.delenv(DISABLE_ENV, raising=False)


def test_the_rule(hopper, monkeypatch):
    usable = flash4_prefill.usable
    long = flash4_prefill.MIN_LENGTH
    q, kv = _Fake(long), _Fake(long, heads=2)
    with torch.no_grad():
        assert usable(q, kv, kv)
        assert not usable(_Fake(long - 1), _Fake(long - 1, heads=2), _Fake(long - 1, heads=2))  # short
        assert not usable(_Fake(long, cuda=False), kv, kv)
        fp32 = _Fake(long, heads=2, dtype=torch.float32)
        assert not usable(_Fake(long, dtype=torch.float32), fp32, fp32)
        assert not usable(q, _Fake(long, heads=3), _Fake(long, heads=3))  # heads do not group
        wide = _Fake(long, heads=2, width=256)
        assert not usable(_Fake(long, width=256), wide, wide)
        assert not usable(q, _Fake(long + 1, heads=2), _Fake(long + 1, heads=2))  # keys cached before
    assert not usable(_Fake(long, grad=True), kv, kv)  # training keeps torch's kernels
    with torch.no_grad():
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
        assert not usable(q, kv, kv)  # Ampere
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
        monkeypatch.setenv(flash4_prefill.ENV, "0")
        assert not usable(q, kv, kv)
        monkeypatch.delenv(flash4_prefill.ENV)
        monkeypatch.setenv(DISABLE_ENV, "1")
        assert not usable(q, kv, kv)
        monkeypatch.delenv(DISABLE_ENV)
        monkeypatch.setattr(flash4_prefill, "_kernel", lambda: None)  # not installed
        assert not usable(q, kv, kv)


def _layer() -> Attention:
    config = HybridConfig(
        layer_types="*", hidden_size=64, num_attention_heads=8, num_key_value_heads=2, head_dim=16,
        vocab_size=32,
    )  # fmt: skip
    torch.manual_seed(0)
    return Attention(config, layer_index=0).eval()


def test_the_layer_hands_its_views_over_and_gets_the_same_rows(monkeypatch):
    layer = _layer()
    hidden = torch.randn(2, 37, 64)
    with torch.no_grad():
        reference = layer(hidden)
        calls: list = []
        monkeypatch.setattr(flash4_prefill, "usable", lambda q, k, v: True)
        monkeypatch.setattr(flash4_prefill, "_kernel", lambda: _sdpa_kernel(calls))
        ours = layer(hidden)
    assert calls == [((2, 37, 8, 16), (2, 37, 2, 16), 16**-0.5, True)]
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)


def test_a_failing_kernel_is_logged_and_torch_takes_over(monkeypatch, caplog):
    layer = _layer()
    hidden = torch.randn(1, 21, 64)

    def broken(*args, **kwargs):
        raise RuntimeError("no kernel for this configuration")

    monkeypatch.setattr(flash4_prefill, "_FAILED", set())
    monkeypatch.setattr(flash4_prefill, "_kernel", lambda: broken)
    with torch.no_grad():
        reference = layer(hidden)
        monkeypatch.setattr(flash4_prefill, "usable", lambda q, k, v: True)
        with caplog.at_level(logging.WARNING, logger=flash4_prefill.__name__):
            ours = layer(hidden)
    assert [r.message for r in caplog.records if "FlashAttention 4 failed" in r.message] != []
    assert flash4_prefill._FAILED == {(torch.device("cpu"), torch.float32, 16, 4)}
    torch.testing.assert_close(ours, reference, rtol=0, atol=0)


def test_a_failed_configuration_is_not_tried_again(hopper):
    flash4_prefill._FAILED.add(("cuda:0", torch.bfloat16, 128, 16))
    long = flash4_prefill.MIN_LENGTH
    with torch.no_grad():
        assert not flash4_prefill.usable(_Fake(long), _Fake(long, heads=2), _Fake(long, heads=2))
        assert flash4_prefill.usable(_Fake(long), _Fake(long, heads=4), _Fake(long, heads=4))
