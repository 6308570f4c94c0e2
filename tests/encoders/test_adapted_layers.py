"""Kernel paths that read a layer's weight instead of calling the layer (the audio encoder's attention,
subsampling and feed-forward) call it when it is wrapped or hooked: a LoRA adapter left unmerged, as the
fine-tuning's evaluation runs it, must still count. The kernels' routing is forced on here (a CPU has
none of them); the ViT's GELU epilogue, CUDA only, is covered by the GPU tests."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from parakeet_weights import randomise
from peft import LoraConfig, inject_adapter_in_model

from encoders import fast_path, parakeet_attention, quack_linear
from encoders.parakeet_attention import ClipLayout, RelPositionSelfAttention, relative_position_embedding
from encoders.parakeet_config import ParakeetConfig
from encoders.parakeet_layers import ConvSubsampling, FeedForward
from omni.finetune import merge_lora

CONFIG = ParakeetConfig(
    hidden_size=32, num_attention_heads=2, intermediate_size=64, num_mel_bins=16, subsampling_conv_channels=8
)


def with_lora(module: torch.nn.Module, target: str) -> torch.nn.Module:
    """``module`` with a LoRA adapter on ``target``, its B made non-zero so the adapter shows."""
    inject_adapter_in_model(LoraConfig(r=2, lora_alpha=4, target_modules=[target]), module)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.5)
    return module.eval()


def test_plain_means_the_exact_class_without_hooks():
    linear = torch.nn.Linear(4, 4)
    assert fast_path.plain(linear, torch.nn.Linear)
    assert not fast_path.plain(torch.nn.Conv1d(4, 4, 1), torch.nn.Linear)
    assert not fast_path.plain(type("Derived", (torch.nn.Linear,), {})(4, 4), torch.nn.Linear)
    handle = linear.register_forward_hook(lambda *args: None)
    assert not fast_path.plain(linear, torch.nn.Linear) and not fast_path.unhooked(linear)
    handle.remove()
    assert fast_path.plain(linear, torch.nn.Linear)


def test_feed_forward_calls_a_lora_linear1(monkeypatch):
    torch.manual_seed(0)
    module = with_lora(FeedForward(CONFIG), "linear1")
    monkeypatch.setattr(quack_linear, "usable", lambda *args: True)
    monkeypatch.setattr(quack_linear, "linear_act", lambda *args: pytest.fail("the adapter was skipped"))
    x = torch.randn(2, 5, 32)
    with torch.no_grad():
        out = module(x)
        merged = merge_lora(module)
        assert torch.allclose(out, merged.linear2(F.silu(merged.linear1(x))), atol=1e-6)


def test_attention_calls_a_lora_q_proj(monkeypatch):
    module = RelPositionSelfAttention(CONFIG)
    randomise(module, seed=1)
    module = with_lora(module, "q_proj")
    hidden = torch.randn(2, 7, 32)
    positions = relative_position_embedding(7, 32, hidden.device, hidden.dtype)
    clips = ClipLayout(torch.tensor([7, 5]), torch.tensor([7, 6]), 7)
    with torch.no_grad():
        expected = merge_lora(copy.deepcopy(module))(hidden, positions, clips)
    monkeypatch.setattr(fast_path, "inference_kernel_usable", lambda *args: True)
    monkeypatch.setattr(parakeet_attention, "kernel_usable", lambda *args: True)
    monkeypatch.setattr(module, "_forward_kernel", lambda *args: pytest.fail("the adapter was skipped"))
    with torch.no_grad():
        assert torch.allclose(module(hidden, positions, clips), expected, atol=1e-5)


def test_subsampling_kernels_leave_a_lora_linear_to_the_torch_path(monkeypatch):
    pytest.importorskip("triton")
    module = ConvSubsampling(CONFIG)
    monkeypatch.setattr(fast_path, "inference_kernel_usable", lambda *args: True)
    features = torch.randn(2, 40, 16)
    assert module._kernels_usable(features)
    assert not with_lora(module, "linear")._kernels_usable(features)
