"""The encoders' fast-path switches and the cache of weights folded for a kernel."""

from __future__ import annotations

import pytest
import torch

from encoders import fast_path


def test_derived_value_is_rebuilt_when_a_source_changes():
    owner = torch.nn.Linear(4, 4)
    calls = []

    def build():
        calls.append(1)
        return owner.weight.detach().sum().item()

    first = fast_path.derived(owner, "total", [owner.weight], build)
    assert fast_path.derived(owner, "total", [owner.weight], build) == first and len(calls) == 1
    with torch.no_grad():
        owner.weight.add_(1.0)  # in place, as an optimizer step or load_state_dict does
    assert fast_path.derived(owner, "total", [owner.weight], build) == pytest.approx(first + 16)
    owner.double()  # new tensors
    fast_path.derived(owner, "total", [owner.weight], build)
    assert len(calls) == 3
    assert "_derived" not in str(owner.state_dict().keys())


def test_kernels_off_on_cpu_with_gradients_or_when_switched_off(monkeypatch):
    weight = torch.nn.Parameter(torch.ones(2))
    cpu = torch.ones(2, dtype=torch.bfloat16)
    assert not fast_path.inference_kernel_usable(cpu, [weight])
    monkeypatch.setenv(fast_path.DISABLE_FAST_PATHS_ENV, "1")
    assert not fast_path.fast_paths_enabled()
    monkeypatch.setenv(fast_path.DISABLE_FAST_PATHS_ENV, "0")
    assert fast_path.fast_paths_enabled()


def test_a_failing_kernel_falls_back_to_the_reference_path_once(monkeypatch, caplog):
    """A kernel that cannot be built here (e.g. too little shared memory) leaves the torch path to run,
    says so once, and is not tried again."""
    from encoders import parakeet_attention
    from encoders.parakeet_attention import ClipLayout, RelPositionSelfAttention, relative_position_embedding
    from encoders.parakeet_config import ParakeetConfig

    module = RelPositionSelfAttention(ParakeetConfig(hidden_size=32, num_attention_heads=2)).eval()
    hidden = torch.randn(2, 5, 32)
    positions = relative_position_embedding(5, 32, hidden.device, hidden.dtype)
    clips = ClipLayout(torch.tensor([5, 3]), torch.tensor([5, 4]), 5)
    with torch.no_grad():
        reference = module(hidden, positions, clips)
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("out of resources: shared memory")

    monkeypatch.setattr(fast_path, "_FAILED", set())
    monkeypatch.setattr(fast_path, "inference_kernel_usable", lambda *a: True)
    monkeypatch.setattr(parakeet_attention, "kernel_usable", lambda *a: True)
    monkeypatch.setattr(parakeet_attention, "rel_position_attention", broken, raising=False)
    monkeypatch.setattr(parakeet_attention, "default_tiles", lambda length: (64, 64, 4, 2), raising=False)
    with torch.no_grad(), caplog.at_level("WARNING", logger="encoders.fast_path"):
        first = module(hidden, positions, clips)
        second = module(hidden, positions, clips)
    assert torch.equal(first, reference) and torch.equal(second, reference)
    assert len(calls) == 1
    assert sum("out of resources" in r.getMessage() for r in caplog.records) == 1
