"""GPU parity of the prefill's routed experts on quack's variable-length GEMMs with torch's grouped
matmuls and the fp32 reference, at the released model's expert shapes. Skipped without CUDA, a Hopper
GPU or the quack package."""

from __future__ import annotations

import pytest
import torch
from numerics import rel_err

from backbone.kernels import moe_quack
from backbone.moe import experts_grouped, experts_loop

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] != 9,
        reason="needs a Hopper GPU",
    ),
]

EXPERTS, WIDTH, INNER = 128, 2688, 1856


@pytest.fixture(autouse=True)
def _quack():
    if moe_quack._kernels() is None:
        pytest.skip("quack is not installed")


def _inputs(tokens: int, seed: int = 0, experts: int = EXPERTS):
    g = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(tokens, WIDTH, generator=g, device="cuda").bfloat16()
    up = (torch.randn(experts, INNER, WIDTH, generator=g, device="cuda") / WIDTH**0.5).bfloat16()
    down = (torch.randn(experts, WIDTH, INNER, generator=g, device="cuda") / INNER**0.5).bfloat16()
    scores = torch.rand(tokens, experts, generator=g, device="cuda")
    weights, indices = scores.topk(6, dim=-1)
    return x, indices, weights, up, down


@pytest.mark.parametrize("tokens", [3344, 16144])
def test_quack_experts_match_torch_and_the_fp32_reference(tokens, monkeypatch):
    x, indices, weights, up, down = _inputs(tokens)
    calls = []
    real = moe_quack.experts
    monkeypatch.setattr(moe_quack, "experts", lambda *a: calls.append(1) or real(*a))
    with torch.no_grad():
        ours = experts_grouped(x, indices, weights, up, down, use_grouped_mm=True)
        assert calls, "the quack kernels were not used"
        monkeypatch.setenv(moe_quack.ENV, "0")
        torch_grouped = experts_grouped(x, indices, weights, up, down, use_grouped_mm=True)
        exact = experts_loop(x.float(), indices, weights, up.float(), down.float())
    assert ours.dtype == torch.bfloat16 and ours.shape == x.shape
    assert rel_err(ours, torch_grouped) <= 1e-2
    # the squared ReLU on the fp32 sums (one rounding less) is no further from fp32 than torch's path
    assert rel_err(ours, exact) <= 1.25 * rel_err(torch_grouped, exact)


def test_quack_experts_with_empty_experts(monkeypatch):
    monkeypatch.setattr(moe_quack, "MIN_ROWS_PER_EXPERT", 0)  # quack's kernels even for these few rows
    calls = []
    real = moe_quack.experts
    monkeypatch.setattr(moe_quack, "experts", lambda *a: calls.append(1) or real(*a))
    x, indices, weights, up, down = _inputs(40, seed=1)  # 240 rows over 128 experts: many get none
    indices = indices % 16  # only 16 experts chosen at all (duplicates within a token are fine here)
    with torch.no_grad():
        ours = experts_grouped(x, indices, weights, up, down, use_grouped_mm=True)
        exact = experts_loop(x.float(), indices, weights, up.float(), down.float())
    assert calls, "the quack kernels were not used"
    assert rel_err(ours, exact) <= 1e-2


@pytest.mark.parametrize(("tokens", "quack"), [(1024, False), (1400, True)])
def test_short_prefills_keep_torchs_grouped_matmuls(tokens, quack, monkeypatch):
    """Below 64 rows per expert (1,024 tokens x 6 over 128 experts: 48) torch's grouped matmuls run:
    quack's calls cost the host more there and save no GPU time."""
    calls = []
    real = moe_quack.experts
    monkeypatch.setattr(moe_quack, "experts", lambda *a: calls.append(1) or real(*a))
    x, indices, weights, up, down = _inputs(tokens)
    with torch.no_grad():
        experts_grouped(x, indices, weights, up, down, use_grouped_mm=True)
    assert bool(calls) == quack


def test_quack_only_for_bf16_inference(monkeypatch):
    x, _, _, up, down = _inputs(8)
    assert moe_quack.usable(x, up, down)
    assert not moe_quack.usable(x.float(), up.float(), down.float())
    assert not moe_quack.usable(x, up.clone().requires_grad_(), down)
    monkeypatch.setenv(moe_quack.ENV, "0")
    assert not moe_quack.usable(x, up, down)
