"""The benchmark's router balancing: random routers brought to even expert load by the family's rule."""

from __future__ import annotations

import pytest
import torch

from backbone.config import HybridConfig
from backbone.model import HybridLM
from backbone.moe import TopKRouter
from omni.bench.routing import balance_routers
from omni.bench.ttft import random_init

TEXT = dict(
    vocab_size=64, hidden_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
    hybrid_override_pattern="EEE", n_routed_experts=32, num_experts_per_tok=4, moe_intermediate_size=16,
    moe_shared_expert_intermediate_size=16, intermediate_size=16, n_group=1, topk_group=1,
)  # fmt: skip


def _inputs(seed: int, base: torch.Tensor) -> torch.Tensor:
    """Tokens that share most of their direction, as a random encoder's outputs do."""
    noise = torch.randn(1, 256, base.numel(), generator=torch.Generator().manual_seed(seed))
    return base + 0.3 * noise


@torch.no_grad()
def _busiest_over_mean(model: HybridLM, embeds: torch.Tensor) -> float:
    routers = [m for m in model.modules() if isinstance(m, TopKRouter)]
    seen: list[torch.Tensor] = []
    hooks = [r.register_forward_hook(lambda _m, _i, out: seen.append(out[1])) for r in routers]
    model(inputs_embeds=embeds, logits_to_keep=1)
    for hook in hooks:
        hook.remove()
    ratios = []
    for indices in seen:
        counts = torch.bincount(indices.reshape(-1), minlength=32).float()
        ratios.append(float(counts.max() / counts.mean()))
    return sum(ratios) / len(ratios)


def test_balancing_evens_the_load_and_carries_over_to_a_fresh_draw():
    torch.manual_seed(0)
    model = HybridLM(HybridConfig.from_dict(TEXT)).eval()
    random_init(model)
    base = torch.randn(64, generator=torch.Generator().manual_seed(1))
    held_out = _inputs(99, base)
    before = _busiest_over_mean(model, held_out)
    report = balance_routers(model, [_inputs(1, base), _inputs(2, base)], passes=30)
    after = _busiest_over_mean(model, held_out)
    assert before > 3.0, before  # concentrated: a few experts take most rows
    assert report.max_over_mean_before == pytest.approx(before, rel=0.3)
    assert report.max_over_mean_after < 1.6 and after < 1.8, (report, after)
    assert report.empty_after == 0
    biases = [m.e_score_correction_bias for m in model.modules() if isinstance(m, TopKRouter)]
    assert all(b.abs().sum() > 0 for b in biases)
    assert all(
        not m.count_load and m.routed_tokens is None for m in model.modules() if isinstance(m, TopKRouter)
    )


def test_bad_pass_count_and_no_routers_are_refused():
    model = HybridLM(HybridConfig.from_dict(dict(TEXT, hybrid_override_pattern="M-"))).eval()
    with pytest.raises(ValueError, match="no MoE routers"):
        balance_routers(model, [torch.zeros(1, 4, 64)])
    with pytest.raises(ValueError, match="at least 1"):
        balance_routers(model, [torch.zeros(1, 4, 64)], passes=0)
