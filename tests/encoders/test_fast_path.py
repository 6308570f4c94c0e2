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
