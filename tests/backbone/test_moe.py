"""Routed experts: the grouped computation against the per-expert reference loop, and the router."""

from __future__ import annotations

import pytest
import torch

from backbone.moe import MoE, TopKRouter, experts_grouped, experts_loop


def _experts(tokens=37, top_k=3, experts=8, width=16, inner=12, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, width, generator=g).to(dtype)
    # leave experts 5 and 6 unused to exercise empty segments
    pool = torch.tensor([0, 1, 2, 3, 4, 7])
    indices = torch.stack([pool[torch.randperm(len(pool), generator=g)[:top_k]] for _ in range(tokens)])
    weights = torch.rand(tokens, top_k, generator=g)
    up = (torch.randn(experts, inner, width, generator=g) * 0.3).to(dtype)
    down = (torch.randn(experts, width, inner, generator=g) * 0.3).to(dtype)
    return x, indices, weights, up, down


def test_segments_equal_reference_loop(relative_error):
    x, indices, weights, up, down = _experts()
    expected = experts_loop(x, indices, weights, up, down)
    assert relative_error(experts_grouped(x, indices, weights, up, down), expected) <= 1e-6


def test_combine_in_slices_equals_whole(relative_error, monkeypatch):
    """The fp32 weighted combine runs a slice of rows at a time (bounded memory), with the same result."""
    import backbone.moe as moe

    x, indices, weights, up, down = _experts()
    whole = experts_grouped(x, indices, weights, up, down)
    monkeypatch.setattr(moe, "_COMBINE_ROWS", 5)  # several slices, the last one partial
    assert torch.equal(experts_grouped(x, indices, weights, up, down), whole)
    assert relative_error(whole, experts_loop(x, indices, weights, up, down)) <= 1e-6


def test_segments_equal_reference_loop_bf16(relative_error):
    x, indices, weights, up, down = _experts(dtype=torch.bfloat16)
    expected = experts_loop(x, indices, weights, up, down)
    got = experts_grouped(x, indices, weights, up, down)
    assert got.dtype == torch.bfloat16
    assert relative_error(got, expected) <= 1e-2


def test_grouped_mm_equals_reference_loop(relative_error):
    x, indices, weights, up, down = _experts()
    try:
        got = experts_grouped(x, indices, weights, up, down, use_grouped_mm=True)
    except (RuntimeError, NotImplementedError) as error:  # no kernel for this device / dtype
        pytest.skip(f"torch._grouped_mm unavailable here: {error}")
    assert relative_error(got, experts_loop(x, indices, weights, up, down)) <= 1e-5


def test_grouped_experts_backprop_like_the_loop():
    x, indices, weights, up, down = _experts(tokens=9)
    grads = []
    for fn in (experts_loop, experts_grouped):
        u, d = up.clone().requires_grad_(), down.clone().requires_grad_()
        fn(x, indices, weights, u, d).square().sum().backward()
        grads.append((u.grad, d.grad))
    torch.testing.assert_close(grads[0], grads[1])


def test_moe_backends_agree(tiny_config, randomize, relative_error):
    torch.manual_seed(0)
    moe = randomize(MoE(tiny_config())).eval()
    hidden = torch.randn(3, 7, 32)
    outs = {}
    for backend in ("loop", "segments", "auto"):
        moe.experts.backend = backend
        outs[backend] = moe(hidden)
    assert relative_error(outs["segments"], outs["loop"]) <= 1e-6
    assert relative_error(outs["auto"], outs["loop"]) <= 1e-6
    moe.experts.backend = "fast"
    with pytest.raises(ValueError, match="backend"):
        moe(hidden)


def test_router_group_limit_bias_and_weights(tiny_config):
    config = tiny_config(
        n_routed_experts=8, n_group=4, topk_group=1, num_experts_per_tok=2, routed_scaling_factor=2.0
    )
    router = TopKRouter(config)
    with torch.no_grad():
        router.weight.zero_()
        # scores all 0.5; the bias makes group 2 (experts 4, 5) the best one and expert 0 the best single expert
        router.e_score_correction_bias.copy_(torch.tensor([0.5, 0, 0, 0, 0.3, 0.3, 0, 0]))
    weights, indices = router(torch.randn(5, config.hidden_size))
    # group 0 scores 0.5+0.5+0.5 = 1.5 < group 2's 0.8+0.8, so experts of group 2 are chosen, not expert 0
    assert sorted(indices[0].tolist()) == [4, 5]
    # the weights come from the unbiased scores (equal), normalised then scaled
    torch.testing.assert_close(weights, torch.full((5, 2), 1.0))


def test_correction_bias_stays_fp32(tiny_model):
    model = tiny_model().to(torch.bfloat16)
    biases = [b for n, b in model.named_buffers() if n.endswith("e_score_correction_bias")]
    assert biases and all(b.dtype == torch.float32 for b in biases)
    assert model.lm_head.weight.dtype == torch.bfloat16
