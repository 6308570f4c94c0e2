"""The capture-safe decode step (static cache, device-held position, capture-safe experts) run eagerly on
CPU against ordinary decoding: it is exactly what a CUDA graph records, so it must give the same logits."""

from __future__ import annotations

import pytest
import torch
from numerics import rel_err

from backbone import HybridConfig, HybridLM
from backbone.fast_decode import (
    GraphDecoder,
    StaticDecodeCache,
    capture_safe_experts,
    cuda_graphs_usable,
    experts_capture_safe,
)
from backbone.kernels import DISABLE_ENV, fast_paths_enabled
from backbone.moe import experts_loop


def tiny_model(seed: int = 0) -> HybridLM:
    config = HybridConfig(
        layer_types="ME*-ME",
        vocab_size=96,
        hidden_size=32,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        intermediate_size=48,
        mamba_num_heads=4,
        mamba_head_dim=8,
        ssm_state_size=8,
        n_groups=2,
        chunk_size=4,
        n_routed_experts=8,
        num_experts_per_tok=3,
        moe_intermediate_size=16,
        moe_shared_expert_intermediate_size=24,
        n_group=4,
        topk_group=2,
        eos_token_id=2,
        pad_token_id=0,
        initializer_range=0.2,
    )
    torch.manual_seed(seed)
    model = HybridLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("dt_bias"):
                p.uniform_(-3.0, 0.5)
            elif name.endswith(".D") or "norm" in name:
                p.normal_(1.0, 0.3)
            elif name.endswith("conv1d.weight"):
                p.normal_(0.0, 0.5)
    return model


def test_capture_safe_experts_match_the_loop():
    torch.manual_seed(1)
    x = torch.randn(7, 12)
    up, down = torch.randn(5, 10, 12), torch.randn(5, 12, 10)
    indices = torch.stack([torch.randperm(5)[:2] for _ in range(7)])
    weights = torch.rand(7, 2)
    ours = experts_capture_safe(x, indices, weights, up, down)
    assert rel_err(ours, experts_loop(x, indices, weights, up, down)) <= 1e-5


@pytest.mark.parametrize("padded", [False, True])
def test_static_step_matches_eager_decoding(padded):
    model = tiny_model()
    torch.manual_seed(2)
    prompt = torch.randint(3, 96, (2, 9))
    mask = torch.ones_like(prompt)
    if padded:
        mask[0, :4] = 0
    steps = 4
    tokens = torch.randint(3, 96, (2, steps))

    eager_cache = model.new_cache(2, 9 + steps)
    decoder = GraphDecoder(model)
    static = StaticDecodeCache(model, 2, 32)
    with torch.no_grad():
        eager = model(input_ids=prompt, attention_mask=mask, cache=eager_cache, logits_to_keep=1).logits
        ours = model(input_ids=prompt, attention_mask=mask, cache=static, logits_to_keep=1).logits
        assert rel_err(ours, eager) <= 1e-6
        embed = model.get_input_embeddings()
        for t in range(steps):
            token = tokens[:, t]
            eager = model(inputs_embeds=embed(token[:, None]), cache=eager_cache, logits_to_keep=1).logits[
                :, -1
            ]
            static.graph_mode = True
            static.position.fill_(static.seen_tokens)
            with capture_safe_experts(model):
                ours = decoder._step(static, token)
            static.graph_mode = False
            static.advance(1)
            assert rel_err(ours, eager) <= 1e-4, t
    # the experts' own forward is back in place afterwards
    assert "forward" not in vars(model.backbone.layers[1].mixer.experts)


def test_static_cache_reset_and_capacity():
    model = tiny_model()
    static = StaticDecodeCache(model, 1, 8)
    with torch.no_grad():
        model(input_ids=torch.randint(3, 96, (1, 5)), cache=static)
        assert static.seen_tokens == 5 and bool(static.key_mask[:, :5].all())
        assert static.mamba_state(0).ssm.abs().sum() > 0
        static.reset()
        assert static.seen_tokens == 0 and not bool(static.key_mask.any())
        assert static.mamba_state(0).ssm.abs().sum() == 0
        with pytest.raises(ValueError, match="8 positions"):
            model(input_ids=torch.randint(3, 96, (1, 9)), cache=static)


def test_fast_paths_stay_off_on_cpu(monkeypatch):
    model = tiny_model()
    assert not cuda_graphs_usable(model, 1)
    assert not fast_paths_enabled(torch.zeros(2))
    monkeypatch.setenv(DISABLE_ENV, "1")
    assert not fast_paths_enabled(torch.zeros(2))
