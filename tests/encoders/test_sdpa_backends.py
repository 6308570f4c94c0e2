"""The encoders' attention backend policy: cuDNN (plans built per shape) only for recurring inference
shapes, never with gradients."""

from __future__ import annotations

import pytest
import torch

from encoders import sdpa

pytestmark = pytest.mark.skipif(sdpa.sdpa_kernel is None, reason="torch without torch.nn.attention")


@pytest.fixture(autouse=True)
def fresh_counts(monkeypatch):
    monkeypatch.setattr(sdpa, "_SEEN", {})


def _qk(length: int, grad: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    q = torch.randn(1, 2, length, 8, requires_grad=grad)
    return q, torch.randn(1, 2, length, 8)


def test_inference_takes_cudnn_from_a_shapes_second_call():
    q, k = _qk(10)
    with torch.no_grad():
        assert sdpa.backends_for(q, k, {}) == sdpa._PLAN_FREE  # first call: no plan to build for one-offs
        assert sdpa.backends_for(q, k, {})[0] == sdpa.SDPBackend.CUDNN_ATTENTION
        other_q, other_k = _qk(11)
        assert sdpa.backends_for(other_q, other_k, {}) == sdpa._PLAN_FREE  # a new length starts over


def test_training_never_takes_cudnn():
    q, k = _qk(10, grad=True)
    for _ in range(3):
        assert sdpa.backends_for(q, k, {}) == sdpa._PLAN_FREE


def test_a_mask_is_part_of_the_shape():
    q, k = _qk(6)
    mask = torch.ones(6, 6, dtype=torch.bool)
    with torch.no_grad():
        sdpa.backends_for(q, k, {})
        assert sdpa.backends_for(q, k, {"attn_mask": mask}) == sdpa._PLAN_FREE


def test_the_memory_of_shapes_is_bounded(monkeypatch):
    monkeypatch.setattr(sdpa, "_SEEN_LIMIT", 3)
    with torch.no_grad():
        for length in range(1, 8):
            sdpa.backends_for(*_qk(length), {})
    assert len(sdpa._SEEN) <= 3
