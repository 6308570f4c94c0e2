"""GPU parity of the Triton RMSNorm, the residual seam (add + RMSNorm) and the router with the reference path (OMNI_DISABLE_FAST_PATHS=1) at the
released model's sizes, their dispatch rules, and their capture in a CUDA graph. Skipped without CUDA."""

from __future__ import annotations

import pytest
import torch
from numerics import max_ulps, rel_err

from backbone import HybridConfig
from backbone.kernels import DISABLE_ENV
from backbone.moe import TopKRouter
from backbone.norms import RMSNorm, add_and_norm

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _norm(width: int, dtype: torch.dtype) -> RMSNorm:
    norm = RMSNorm(width, eps=1e-5).cuda()
    with torch.no_grad():
        norm.weight.copy_(torch.randn(width, device="cuda") * 0.3 + 1)
    return norm.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("width", [2688, 4096, 1000])
@pytest.mark.parametrize("rows", [1, 64, 777])
def test_rms_norm_matches_reference(monkeypatch, dtype, width, rows):
    torch.manual_seed(0)
    norm = _norm(width, dtype)
    x = (torch.randn(rows, 1, width, device="cuda") * 4).to(dtype)
    with torch.no_grad():
        fast = norm(x)
        monkeypatch.setenv(DISABLE_ENV, "1")
        ref = norm(x)
    assert fast.dtype == ref.dtype and fast.shape == ref.shape
    if dtype == torch.float32:
        assert rel_err(fast, ref) <= 1e-6
    else:  # fp32 statistics summed in another order may move a rounding by one bf16 ulp
        assert max_ulps(fast, ref) <= 1.0
        assert (fast == ref).float().mean() >= 0.99


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, 3344])
def test_residual_seam_is_the_add_then_the_norm(monkeypatch, dtype, rows):
    """At the language model's width: the sum bit for bit as torch's add, and the norm bit for bit as the
    Triton RMSNorm of that sum (the same reduction); against the reference path's norm as RMSNorm is."""
    torch.manual_seed(1)
    norm = _norm(2688, dtype)
    x = (torch.randn(1, rows, 2688, device="cuda") * 4).to(dtype)
    y = (torch.randn(1, rows, 2688, device="cuda") * 2).to(dtype)
    with torch.no_grad():
        new, normed = add_and_norm(x, y, norm)
        assert torch.equal(new, x + y)
        assert torch.equal(normed, norm(x + y))
        monkeypatch.setenv(DISABLE_ENV, "1")
        ref_new, ref = add_and_norm(x, y, norm)
    assert torch.equal(new, ref_new) and normed.dtype == ref.dtype and normed.shape == ref.shape
    if dtype == torch.float32:
        assert rel_err(normed, ref) <= 1e-6
    else:
        assert max_ulps(normed, ref) <= 1.0


def test_rms_norm_keeps_the_reference_when_grad_is_needed():
    norm = _norm(256, torch.float32)
    x = torch.randn(3, 256, device="cuda", requires_grad=True)
    out = norm(x)
    assert out.grad_fn is not None
    out.sum().backward()
    assert x.grad is not None and norm.weight.grad is not None


def _router(dtype: torch.dtype, norm_topk_prob: bool = True, **fields) -> TopKRouter:
    sizes = dict(hidden_size=2688, n_routed_experts=128, num_experts_per_tok=6, routed_scaling_factor=2.5)
    config = HybridConfig(**{**sizes, **fields}, norm_topk_prob=norm_topk_prob, initializer_range=0.02)
    torch.manual_seed(0)
    router = TopKRouter(config).cuda()
    with torch.no_grad():
        router.e_score_correction_bias.copy_(torch.randn(config.n_routed_experts, device="cuda") * 0.02)
    return router.to(dtype)


def _compare(fast: tuple[torch.Tensor, torch.Tensor], ref: tuple[torch.Tensor, torch.Tensor]) -> None:
    (w, i), (ref_w, ref_i) = fast, ref
    assert w.dtype == torch.float32 and i.dtype == torch.long and w.shape == ref_w.shape == i.shape
    ours_sorted, our_order = i.sort(-1)
    ref_sorted, ref_order = ref_i.sort(-1)
    assert torch.equal(ours_sorted, ref_sorted)
    assert rel_err(w.gather(1, our_order), ref_w.gather(1, ref_order)) <= 1e-5


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("tokens", [1, 7, 64, 65, 5000])
@pytest.mark.parametrize("norm_topk_prob", [True, False])
def test_router_matches_reference(monkeypatch, dtype, tokens, norm_topk_prob):
    """Up to 64 tokens (decode) both kernels; more (prefill) logits from one matmul (tensor cores with fp32
    output for bf16) and the selection kernel: the same experts as the reference, weights to fp32 units."""
    router = _router(dtype, norm_topk_prob)
    hidden = torch.randn(tokens, 2688, device="cuda").to(dtype)
    with torch.no_grad():
        fast = router(hidden)
        monkeypatch.setenv(DISABLE_ENV, "1")
        ref = router(hidden)
    _compare(fast, ref)


def test_router_groups_keep_the_reference(monkeypatch):
    """Group-limited selection has no kernel: the PyTorch code runs whatever the switch, bit for bit."""
    router = _router(torch.float32, n_group=8, topk_group=4)
    hidden = torch.randn(5, 2688, device="cuda")
    with torch.no_grad():
        fast = router(hidden)
        monkeypatch.setenv(DISABLE_ENV, "1")
        ref = router(hidden)
    assert torch.equal(fast[1], ref[1]) and torch.equal(fast[0], ref[0])


def test_norm_and_router_replay_in_a_cuda_graph():
    norm = _norm(2688, torch.bfloat16)
    router = _router(torch.bfloat16)
    static_in = torch.randn(8, 2688, device="cuda").to(torch.bfloat16)

    def step() -> tuple[torch.Tensor, torch.Tensor]:
        return router(norm(static_in))

    with torch.no_grad():
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            step()  # compiles the kernels outside the capture
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            weights, indices = step()
        for seed in range(3):
            static_in.copy_(
                torch.randn(8, 2688, device="cuda", generator=torch.Generator("cuda").manual_seed(seed))
            )
            graph.replay()
            eager_w, eager_i = step()
            assert torch.equal(indices, eager_i) and torch.equal(weights, eager_w)
