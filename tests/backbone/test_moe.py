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


def _moe_lm(experts: int = 8):
    from backbone.config import HybridConfig
    from backbone.model import HybridLM

    config = HybridConfig(
        layer_types="E*E", vocab_size=64, hidden_size=16, num_attention_heads=2, num_key_value_heads=1,
        head_dim=8, n_routed_experts=experts, num_experts_per_tok=2, moe_intermediate_size=8,
        moe_shared_expert_intermediate_size=8,
    )  # fmt: skip
    torch.manual_seed(0)
    return HybridLM(config)


def test_routers_count_the_real_tokens_while_training_only():
    from backbone.moe import ExpertBiasBalancer

    model = _moe_lm()
    balancer = ExpertBiasBalancer(model, rate=0.01)
    ids = torch.randint(0, 64, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[0, :3] = 0  # left padding: 11 real tokens
    model.train()
    model(input_ids=ids, attention_mask=mask)
    model(input_ids=ids[1:])  # one unpadded row: 7 more
    for router in balancer.routers:
        assert router.routed_tokens.sum().item() == (11 + 7) * 2  # top-2 choices of real tokens
    model.eval()
    with torch.no_grad():
        model(input_ids=ids)
    assert all(r.routed_tokens.sum().item() == 36 for r in balancer.routers)
    balancer.update()
    assert all(r.routed_tokens is None for r in balancer.routers)


def test_bias_update_moves_each_expert_towards_the_mean_load():
    from backbone.moe import ExpertBiasBalancer

    model = _moe_lm(experts=4)
    balancer = ExpertBiasBalancer(model, rate=0.25)
    router = balancer.routers[0]
    router.routed_tokens = torch.tensor([10.0, 0.0, 5.0, 5.0])  # mean 5
    balancer.update(reduce=lambda counts: counts * 2)  # e.g. two ranks that saw the same
    assert router.e_score_correction_bias.tolist() == [-0.25, 0.25, 0.0, 0.0]
    assert router.e_score_correction_bias.dtype == torch.float32
    assert balancer.routers[1].e_score_correction_bias.tolist() == [0.0] * 4  # counted nothing


def test_bias_updates_even_out_a_skewed_router():
    """A router whose selection favours two experts: repeated updates on the same tokens spread the load
    (the rate is small against the spread of its scores, as in the released models)."""
    from backbone.moe import ExpertBiasBalancer

    model = _moe_lm()
    router = model.backbone.layers[0].mixer.gate
    with torch.no_grad():
        router.weight.normal_(0.0, 0.25, generator=torch.Generator().manual_seed(2))  # logits ~ N(0, 1)
        router.e_score_correction_bias[:2] = 0.3
    ids = torch.randint(0, 64, (8, 16), generator=torch.Generator().manual_seed(1))
    balancer = ExpertBiasBalancer(model, rate=0.005)
    model.train()

    def spread() -> float:
        model(input_ids=ids)
        counts = router.routed_tokens
        return (counts.max() / counts.mean()).item()

    before = spread()
    balancer.update()
    for _ in range(150):
        spread()
        balancer.update()
    after = spread()
    assert before > 2.5 and after < 1.4, (before, after)
    assert (router.e_score_correction_bias[:2] < 0.3).all()


def test_squared_relu_kernel_only_for_tensors_large_enough_to_gain():
    pytest.importorskip("triton")
    from backbone.kernels.relu2_triton import MIN_ELEMENTS, relu2_usable

    assert not relu2_usable(torch.zeros(8, 3712, dtype=torch.bfloat16))  # a decode step's shared expert
    assert relu2_usable(torch.zeros(MIN_ELEMENTS // 1856 + 1, 1856, dtype=torch.bfloat16))
    assert not relu2_usable(torch.zeros(4096, 1856, dtype=torch.bfloat16)[:, :1000])  # not contiguous
    assert not relu2_usable(torch.zeros(4096, 1856, dtype=torch.float64))


def test_quack_experts_not_taken_on_cpu():
    from backbone.kernels import moe_quack

    x = torch.randn(8, 16).bfloat16()
    up, down = torch.randn(4, 8, 16).bfloat16(), torch.randn(4, 16, 8).bfloat16()
    assert not moe_quack.usable(x, up, down)


def test_quack_experts_only_from_64_rows_an_expert():
    """Short prefills keep torch's grouped matmuls: 1,024 tokens x top-6 over 128 experts is 48 rows an
    expert (quack lost there on an H200), 2,048 tokens 96 (it won); the image's 3,344 tokens 157."""
    from backbone.kernels import moe_quack

    assert not moe_quack.worthwhile(1024 * 6, 128)
    assert moe_quack.worthwhile(64 * 128, 128) and not moe_quack.worthwhile(64 * 128 - 1, 128)
    assert moe_quack.worthwhile(2048 * 6, 128) and moe_quack.worthwhile(3344 * 6, 128)
