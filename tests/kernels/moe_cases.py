"""Worker run in a subprocess by test_moe_interpreted.py: the Triton expert kernels under Triton's CPU
interpreter against `backbone.moe.experts_loop`; prints one JSON object {case: relative error}."""

from __future__ import annotations

import json
import os

os.environ["TRITON_INTERPRET"] = "1"

import torch  # noqa: E402
from numerics import max_ulps, rel_err  # noqa: E402

import backbone.moe  # noqa: E402
from backbone.kernels.moe_combine_triton import positions_of, topk_combine_triton  # noqa: E402
from backbone.kernels.moe_dispatch_triton import dispatch_rows  # noqa: E402
from backbone.kernels.moe_triton import experts_gemv_triton  # noqa: E402
from backbone.kernels.relu2_triton import BLOCK, relu2_triton  # noqa: E402
from backbone.moe import experts_grouped, experts_loop  # noqa: E402


def case(
    tokens: int, top_k: int, experts: int, width: int, inner: int, dtype: torch.dtype, seed: int
) -> float:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, width, generator=g).to(dtype)
    up = (torch.randn(experts, inner, width, generator=g) / width**0.5).to(dtype)
    down = (torch.randn(experts, width, inner, generator=g) / inner**0.5).to(dtype)
    indices = torch.stack([torch.randperm(experts, generator=g)[:top_k] for _ in range(tokens)])
    weights = torch.rand(tokens, top_k, generator=g)
    out = experts_gemv_triton(x, indices, weights, up, down, block_up=8, block_down=4)
    ref = experts_loop(x.float(), indices, weights, up.float(), down.float())
    assert out.dtype == dtype and out.shape == ref.shape
    return rel_err(out, ref)


def main() -> None:
    results = {
        "one_token": case(1, 2, 8, 24, 20, torch.float32, 0),
        "odd_sizes": case(3, 3, 5, 37, 19, torch.float32, 1),  # widths off every block size
        "shared_expert": case(4, 4, 4, 16, 16, torch.float32, 2),  # every expert used by several rows
        "bf16": case(2, 2, 6, 32, 24, torch.bfloat16, 3),
    }
    g = torch.Generator().manual_seed(4)  # a strided input row (a view into a wider buffer)
    x = torch.randn(2, 40, generator=g)[:, 3:35]
    up, down = torch.randn(3, 12, 32, generator=g), torch.randn(3, 32, 12, generator=g)
    indices, weights = torch.tensor([[0, 2], [1, 0]]), torch.rand(2, 2, generator=g)
    out = experts_gemv_triton(x, indices, weights, up, down, block_up=8, block_down=4)
    results["strided_input"] = rel_err(out, experts_loop(x, indices, weights, up, down))
    results.update(combine_cases())
    results.update(relu2_cases())
    results.update(dispatch_cases())
    print(json.dumps(results))


def relu2_cases() -> dict[str, float]:
    """The squared ReLU against torch's two operations over more than one block and a ragged last block,
    with NaN, infinities and negatives: 1.0 where every element is the same, and the largest gap in units
    of the last place (the interpreter truncates the bf16 store where the GPU rounds)."""
    results = {}
    g = torch.Generator().manual_seed(11)
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        x = (torch.randn(3, BLOCK + 37, generator=g) * 5).to(dtype)
        x[0, :4] = torch.tensor([float("nan"), -0.0, float("-inf"), float("inf")])
        out, ref = relu2_triton(x), torch.relu(x).square()
        same = torch.equal(out.isnan(), ref.isnan()) and torch.equal(out.nan_to_num(), ref.nan_to_num())
        name = f"relu2/{str(dtype).removeprefix('torch.')}"
        results[name] = float(same and out.dtype == dtype)
        finite = ref.isfinite()
        results[name + "/ulps"] = max_ulps(out[finite], ref[finite])
    return results


def dispatch_cases() -> dict[str, float]:
    """The prefill's dispatch kernels: the layout by expert (every (token, choice) row once, in its expert's
    segment, a copy of its token's row), then dispatch, per-segment experts and combine against the loop."""
    results = {}
    for name, tokens, top_k, experts, width in (("dispatch", 37, 3, 11, 50), ("dispatch_wide", 5, 6, 128, 1100),
                                                ("dispatch_unused", 3, 2, 40, 24)):  # fmt: skip
        g = torch.Generator().manual_seed(tokens)
        x = torch.randn(tokens, width, generator=g)
        indices = torch.stack([torch.randperm(experts, generator=g)[:top_k] for _ in range(tokens)])
        routed, position, bounds = dispatch_rows(x, indices, experts)
        counts = torch.zeros(experts, dtype=torch.long).scatter_add_(
            0, indices.reshape(-1), torch.ones(tokens * top_k, dtype=torch.long)
        )
        expert_of = indices.reshape(-1)
        inside = (bounds[expert_of] <= position) & (position < bounds[expert_of + 1])
        results[name] = float(
            bounds.tolist() == [0, *counts.cumsum(0).tolist()]
            and bool(inside.all())
            and sorted(position.tolist()) == list(range(tokens * top_k))
            and torch.equal(routed[position.long()], x.repeat_interleave(top_k, 0))
        )
    g = torch.Generator().manual_seed(10)
    x = torch.randn(7, 24, generator=g)
    up, down = torch.randn(5, 16, 24, generator=g), torch.randn(5, 24, 16, generator=g)
    indices = torch.stack([torch.randperm(5, generator=g)[:2] for _ in range(7)])
    weights = torch.rand(7, 2, generator=g)
    routed, position, bounds = dispatch_rows(x, indices, 5)
    edges = bounds.tolist()
    out = torch.cat(
        [
            torch.relu(routed[a:b] @ up[e].T).square() @ down[e].T
            for e, (a, b) in enumerate(zip(edges, edges[1:]))
        ]
    )
    results["dispatch_then_combine"] = rel_err(
        topk_combine_triton(out, position, weights), experts_loop(x, indices, weights, up, down)
    )
    return results


def combine_cases() -> dict[str, float]:
    """The top-k combine kernel against the reference's scaled `index_add_`, then inside `experts_grouped`
    (its fast-path switch forced on) against the expert loop."""
    results = {}
    for name, tokens, top_k, width, dtype in (("combine_fp32", 5, 3, 37, torch.float32),
                                              ("combine_bf16", 4, 2, 1100, torch.bfloat16)):  # fmt: skip
        g = torch.Generator().manual_seed(tokens)
        rows = torch.randn(tokens * top_k, width, generator=g).to(dtype)
        order = torch.randperm(tokens * top_k, generator=g)
        weights = torch.rand(tokens, top_k, generator=g)
        out = topk_combine_triton(rows, positions_of(order), weights)
        ref = torch.zeros(tokens, width).index_add_(
            0, order // top_k, rows.float() * weights.reshape(-1)[order, None]
        )
        assert out.dtype == dtype
        results[name] = rel_err(out, ref.to(dtype))
    for name, dtype in (("combine_addend_fp32", torch.float32), ("combine_addend_bf16", torch.bfloat16)):
        g = torch.Generator().manual_seed(4)
        tokens, top_k, width = 5, 3, 300
        rows = (torch.randn(tokens * top_k, width, generator=g) * 3).to(dtype)
        order = torch.randperm(tokens * top_k, generator=g)
        weights = torch.rand(tokens, top_k, generator=g)
        addend = torch.randn(tokens, width, generator=g).to(dtype)
        position = positions_of(order)
        out = topk_combine_triton(rows, position, weights, addend)
        routed = torch.zeros(tokens, width)
        for j in range(top_k):  # the kernel's order: choice by choice, in fp32
            routed = routed + rows[position.view(tokens, top_k)[:, j]].float() * weights[:, j, None]
        ref = routed.to(dtype) + addend  # two rounded tensors added, as the MoE layer adds them
        results[name] = float(out.dtype == dtype and torch.equal(out, ref))
    g = torch.Generator().manual_seed(9)
    x = torch.randn(6, 24, generator=g)
    up, down = torch.randn(5, 16, 24, generator=g), torch.randn(5, 24, 16, generator=g)
    indices = torch.stack([torch.randperm(5, generator=g)[:3] for _ in range(6)])
    weights = torch.rand(6, 3, generator=g)
    enabled = backbone.moe.fast_paths_enabled
    backbone.moe.fast_paths_enabled = lambda *tensors: True
    try:
        out = experts_grouped(x, indices, weights, up, down)
    finally:
        backbone.moe.fast_paths_enabled = enabled
    results["grouped_with_combine"] = rel_err(out, experts_loop(x, indices, weights, up, down))
    return results


if __name__ == "__main__":
    main()
