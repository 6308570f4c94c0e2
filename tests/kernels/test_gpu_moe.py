"""GPU parity of the Triton routed-expert kernels (decoding) and top-k combine (prefill) with the
reference experts, at the released model's expert shapes, and their use inside captured decode steps.
Skipped without CUDA."""

from __future__ import annotations

import pytest
import torch
from numerics import rel_err

from backbone import load_preset
from backbone.fast_decode import experts_capture_safe
from backbone.kernels import DISABLE_ENV
from backbone.moe import MoE, experts_grouped, experts_loop

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

EXPERTS, WIDTH, INNER = 128, 2688, 1856


def _inputs(tokens: int, top_k: int, dtype: torch.dtype, seed: int = 0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(tokens, WIDTH, generator=g, device="cuda").to(dtype)
    up = (torch.randn(EXPERTS, INNER, WIDTH, generator=g, device="cuda") / WIDTH**0.5).to(dtype)
    down = (torch.randn(EXPERTS, WIDTH, INNER, generator=g, device="cuda") / INNER**0.5).to(dtype)
    scores = torch.rand(tokens, EXPERTS, generator=g, device="cuda")
    weights, indices = scores.topk(top_k, dim=-1)
    return x, indices, weights, up, down


@pytest.mark.parametrize("tokens", [1, 3, 10])
def test_gemv_kernels_match_the_loop_fp32(tokens):
    from backbone.kernels.moe_triton import experts_gemv_triton

    x, indices, weights, up, down = _inputs(tokens, 6, torch.float32)
    out = experts_gemv_triton(x, indices, weights, up, down)
    assert rel_err(out, experts_loop(x, indices, weights, up, down)) <= 1e-4


def test_gemv_kernels_bf16_match_grouped_matmuls():
    from backbone.kernels.moe_triton import experts_gemv_triton

    x, indices, weights, up, down = _inputs(4, 6, torch.bfloat16, seed=1)
    out = experts_gemv_triton(x, indices, weights, up, down)
    ref = experts_loop(x.float(), indices, weights, up.float(), down.float())
    assert out.dtype == torch.bfloat16
    assert rel_err(out, ref) <= 1e-2
    assert rel_err(out, experts_grouped(x, indices, weights, up, down)) <= 2e-2


def test_capture_safe_experts_take_the_kernels_and_agree_with_the_reference(monkeypatch):
    x, indices, weights, up, down = _inputs(2, 6, torch.bfloat16, seed=2)
    with torch.no_grad():
        fast = experts_capture_safe(x, indices, weights, up, down)
        monkeypatch.setenv(DISABLE_ENV, "1")
        reference = experts_capture_safe(x, indices, weights, up, down)
    assert rel_err(fast, reference) <= 2e-2


@pytest.mark.parametrize("tokens", [65, 3000])
@pytest.mark.parametrize("use_grouped_mm", [False, True], ids=["segments", "grouped_mm"])
def test_prefill_combine_kernel_matches_reference_and_is_deterministic(monkeypatch, tokens, use_grouped_mm):
    """Many tokens: the grouped path with the Triton top-k combine against the same path with the
    reference's scaled `index_add_` (OMNI_DISABLE_FAST_PATHS=1), bf16; two runs give the same bits."""
    x, indices, weights, up, down = _inputs(tokens, 6, torch.bfloat16, seed=3)
    fast = experts_grouped(x, indices, weights, up, down, use_grouped_mm)
    assert torch.equal(fast, experts_grouped(x, indices, weights, up, down, use_grouped_mm))
    monkeypatch.setenv(DISABLE_ENV, "1")
    ref = experts_grouped(x, indices, weights, up, down, use_grouped_mm)
    assert fast.dtype == ref.dtype == torch.bfloat16
    assert rel_err(fast, ref) <= 1e-2


@pytest.mark.parametrize("tokens", [64, 3344])
def test_moe_layer_adds_its_shared_expert_in_the_combine(monkeypatch, tokens):
    """The released MoE layer's widths, bf16: the shared expert added in the combine kernel gives the bits
    of the routed sum plus the shared expert as separate tensors, and agrees with the reference path."""
    config = load_preset("nemotron-3-nano-30b-a3b")
    torch.manual_seed(6)
    layer = MoE(config).cuda().bfloat16().eval()
    hidden = torch.randn(1, tokens, WIDTH, device="cuda").bfloat16()
    with torch.no_grad():
        fast = layer(hidden)
        flat = hidden.reshape(-1, WIDTH)
        weights, indices = layer.gate(flat)
        separate = layer.experts(flat, indices, weights) + layer.shared_experts(flat)
        assert torch.equal(fast.reshape(-1, WIDTH), separate)
        monkeypatch.setenv(DISABLE_ENV, "1")
        reference = layer(hidden)
    assert fast.shape == reference.shape and fast.dtype == reference.dtype
    assert rel_err(fast, reference) <= 2e-2


def test_dispatch_lays_out_a_prefill_by_expert():
    """16,144 tokens x 6 choices over 128 experts, a few experts left empty: segment bounds as counted,
    each (token, choice) row once inside its expert's segment, a copy of its token's row."""
    from backbone.kernels.moe_dispatch_triton import dispatch_rows

    x, indices, _, _, _ = _inputs(16144, 6, torch.bfloat16, seed=4)
    indices = torch.where(indices < 3, indices + 3, indices)  # experts 0..2 get no rows
    routed, position, bounds = dispatch_rows(x, indices, 128)
    counts = torch.bincount(indices.reshape(-1), minlength=128)
    assert bounds.tolist() == [0, *counts.cumsum(0).tolist()]
    expert = indices.reshape(-1)
    assert bool(((bounds[expert] <= position) & (position < bounds[expert + 1])).all())
    assert torch.equal(position.long().sort().values, torch.arange(position.numel(), device="cuda"))
    assert torch.equal(routed[position.long()], x.repeat_interleave(6, 0))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_squared_relu_is_torchs_bit_for_bit(dtype, monkeypatch):
    """The experts' activation at a prefill's size ([tokens x top-k, expert width]) through `relu2`'s fast
    path against the two PyTorch operations."""
    from backbone.mlp import relu2

    x = (torch.randn(3000 * 6, INNER, device="cuda") * 3).to(dtype)
    x[0, :3] = torch.tensor([float("nan"), float("-inf"), float("inf")])
    with torch.no_grad():
        fast = relu2(x)
        monkeypatch.setenv(DISABLE_ENV, "1")
        reference = relu2(x)
    assert torch.equal(fast.isnan(), reference.isnan())
    assert torch.equal(fast.nan_to_num(), reference.nan_to_num())


def test_router_logits_on_tensor_cores_match_the_fp32_matmul(monkeypatch):
    """bf16 hidden states and router weights: the fp32-output tensor-core matmul against the reference's
    widened fp32 matmul (only the order of the fp32 sums differs), and the experts chosen from them."""
    from backbone.moe import router_logits

    g = torch.Generator(device="cuda").manual_seed(5)
    hidden = torch.randn(16144, WIDTH, generator=g, device="cuda").bfloat16()
    weight = (torch.randn(EXPERTS, WIDTH, generator=g, device="cuda") / WIDTH**0.5).bfloat16()
    with torch.no_grad():
        fast = router_logits(hidden, weight)
        monkeypatch.setenv(DISABLE_ENV, "1")
        reference = router_logits(hidden, weight)
    assert fast.dtype == torch.float32
    # Hopper's tensor cores do not add quite in IEEE fp32: an H200 gave 3.2e-6 (against ~1e-7 for a
    # reordering alone), thirty times below a bf16 unit
    assert rel_err(fast, reference) <= 1e-5
    # the six experts chosen per token agree except where the sixth and seventh scores are that close
    top_fast, top_ref = fast.topk(6, dim=-1), reference.topk(6, dim=-1)
    differ = (top_fast.indices.sort(-1).values != top_ref.indices.sort(-1).values).any(-1)
    sorted_ref = reference.sort(-1, descending=True).values
    near_tie = (sorted_ref[:, 5] - sorted_ref[:, 6]).abs() <= 1e-4 * sorted_ref.abs().amax(-1)
    assert not (differ & ~near_tie).any()
