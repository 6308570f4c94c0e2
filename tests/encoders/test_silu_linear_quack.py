"""The FastConformer feed-forward's first linear and SiLU as one quack GEMM: the feed-forward's hand-off
to it (operand layout, bias, row shape), the fallback when its kernel fails, and the rule's CPU and
environment cases. Runs without a GPU: a stand-in for quack's ``gemm_act`` computes the same epilogue
in torch."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

from encoders import fast_path, silu_linear_quack
from encoders.parakeet_config import ParakeetConfig
from encoders.parakeet_layers import FeedForward


class _Config:
    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)


def _stand_in(calls: list):
    """``gemm_act`` on CPU tensors: A (M, K), B (K, N), bias (N,) -> (None, silu(A @ B + bias))."""

    def gemm_act(A, B, bias=None, activation=None, store_preact=True, tuned=True, config=None):
        calls.append((A.shape, B.shape, B.stride(), activation, store_preact, config))
        sums = A.float() @ B.float() + (bias.float() if bias is not None else 0.0)
        return None, F.silu(sums).to(A.dtype)

    return gemm_act


@pytest.fixture
def feed_forward():
    torch.manual_seed(0)
    config = ParakeetConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1)
    return FeedForward(config).eval()


def test_feed_forward_hands_its_first_linear_to_the_kernel(feed_forward, monkeypatch):
    calls: list = []
    monkeypatch.setattr(silu_linear_quack, "_kernels", lambda: (_stand_in(calls), _Config))
    monkeypatch.setattr(silu_linear_quack, "usable", lambda hidden, linear: True)
    monkeypatch.setattr(silu_linear_quack, "_READY", set())
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    monkeypatch.setattr(silu_linear_quack.torch.cuda, "device", lambda device: _NullContext())
    hidden = torch.randn(3, 7, 32)
    with torch.no_grad():
        fused = feed_forward(hidden)
        monkeypatch.setattr(silu_linear_quack, "usable", lambda hidden, linear: False)
        reference = feed_forward(hidden)
    # one call over the 21 rows, the weight read as its (in, out) transpose, the preactivation not kept
    assert len(calls) == 1
    (a_shape, b_shape, b_stride, activation, store_preact, config) = calls[0]
    assert a_shape == (21, 32) and b_shape == (32, 64) and b_stride == (1, 32)
    assert activation == "silu" and store_preact is False and config.tile_n == 192
    assert fused.shape == reference.shape == (3, 7, 32)
    assert torch.allclose(fused, reference, atol=1e-6, rtol=1e-5)


def test_a_failing_kernel_falls_back_to_torch_once(feed_forward, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("no kernel for this GPU")

    monkeypatch.setattr(silu_linear_quack, "_kernels", lambda: (broken, _Config))
    monkeypatch.setattr(silu_linear_quack, "usable", lambda hidden, linear: True)
    monkeypatch.setattr(silu_linear_quack.torch.cuda, "device", lambda device: _NullContext())
    monkeypatch.setattr(fast_path, "_FAILED", set())
    hidden = torch.randn(2, 5, 32)
    with torch.no_grad(), caplog.at_level(logging.WARNING):
        out = feed_forward(hidden)
        again = feed_forward(hidden)
    reference = feed_forward.linear2(F.silu(feed_forward.linear1(hidden)))
    assert torch.allclose(out, reference) and torch.equal(out, again)
    assert sum("failed" in record.message for record in caplog.records) == 1


def test_the_rule(feed_forward, monkeypatch):
    """With a 16-bit inference tensor on CUDA (stood in for): Hopper only, widths in multiples of 8, off
    through the environment, and under a CUDA-graph capture only once the configuration ran eagerly."""
    linear = feed_forward.linear1
    hidden = torch.randn(2, 5, 32)
    assert not silu_linear_quack.usable(hidden, linear)  # a CPU tensor
    monkeypatch.setattr(silu_linear_quack, "inference_kernel_usable", lambda hidden, params: True)
    monkeypatch.setattr(silu_linear_quack, "_kernels", lambda: (_stand_in([]), _Config))
    monkeypatch.setattr(silu_linear_quack, "_READY", set())
    capability, capturing = [(9, 0)], [False]
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability[0])
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: capturing[0])
    assert silu_linear_quack.usable(hidden, linear)
    capability[0] = (10, 0)
    assert not silu_linear_quack.usable(hidden, linear)
    capability[0] = (9, 0)
    assert not silu_linear_quack.usable(torch.randn(2, 5, 36), torch.nn.Linear(36, 64))
    monkeypatch.setenv(silu_linear_quack.ENV, "0")
    assert not silu_linear_quack.usable(hidden, linear)
    monkeypatch.delenv(silu_linear_quack.ENV)
    capturing[0] = True
    assert not silu_linear_quack.usable(hidden, linear)  # never ran eagerly
    silu_linear_quack._READY.add(silu_linear_quack._configuration(hidden, linear))
    assert silu_linear_quack.usable(hidden, linear)


class _NullContext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
