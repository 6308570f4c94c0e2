"""The audio feed-forward's quack GEMM (`encoders.quack_linear`) off the GPU: when it does not serve, and
that a failing kernel hands over to torch's ops once and for good."""

import contextlib

import pytest
import torch
import torch.nn.functional as F

from encoders import fast_path, quack_linear
from encoders.parakeet_config import ParakeetConfig
from encoders.parakeet_layers import FeedForward


def test_not_usable_off_the_gpu_or_when_switched_off(monkeypatch):
    x, weight = torch.randn(4, 16).bfloat16(), torch.randn(32, 16).bfloat16()
    assert not quack_linear.usable(x, weight)
    monkeypatch.setenv(quack_linear.ENV, "0")
    assert not quack_linear.usable(x, weight)


def test_an_unknown_activation_is_refused():
    with pytest.raises(ValueError, match="gelu"):
        quack_linear.linear_act(torch.randn(2, 8), torch.randn(8, 8), None, "gelu")


def test_gated_operands_give_torchs_glu_under_quacks_gate_up_pairs():
    torch.manual_seed(1)
    weight, bias, x = torch.randn(8, 3), torch.randn(8), torch.randn(5, 3)
    w, b = quack_linear.gated_operands(weight, bias)
    pairs = F.linear(x, w, b).view(5, 4, 2)  # quack's "glu": sigmoid(gate) * up over (gate, up) pairs
    assert torch.allclose(
        torch.sigmoid(pairs[..., 0]) * pairs[..., 1], F.glu(F.linear(x, weight, bias), dim=-1)
    )
    assert quack_linear.gated_operands(weight, None)[1] is None


def test_feed_forward_falls_back_to_torch_when_the_gemm_fails(monkeypatch):
    torch.manual_seed(0)
    module = FeedForward(ParakeetConfig(hidden_size=16, intermediate_size=32, attention_bias=True)).eval()
    x = torch.randn(2, 5, 16)
    calls = []

    def broken(*args, **kwargs):
        calls.append(kwargs["activation"])
        raise RuntimeError("no kernel for this GPU")

    monkeypatch.setattr(fast_path, "_FAILED", set())
    monkeypatch.setattr(quack_linear, "usable", lambda *args: True)
    monkeypatch.setattr(quack_linear, "_kernels", lambda: (broken, lambda **config: config))
    monkeypatch.setattr(torch.cuda, "device", contextlib.nullcontext)
    with torch.no_grad():
        expected = module.linear2(F.silu(module.linear1(x)))
        first, second = module(x), module(x)
    assert torch.equal(first, expected) and torch.equal(second, expected)
    assert calls == ["silu"]  # the failure is remembered: the second call goes straight to torch
