"""Worker run in a subprocess by test_norm_router_interpreted.py: evaluates the Triton RMSNorm and router
kernels under Triton's CPU interpreter against `RMSNorm` / `TopKRouter` and prints one JSON object
{case: number}.

TRITON_INTERPRET must be set before triton is first imported, hence a separate process.
"""

from __future__ import annotations

import json
import os
import sys

os.environ["TRITON_INTERPRET"] = "1"

import torch  # noqa: E402
from numerics import max_ulps, rel_err  # noqa: E402

import backbone.kernels.norm_triton as norm_module  # noqa: E402
import backbone.norms  # noqa: E402
from backbone.config import HybridConfig  # noqa: E402
from backbone.kernels.norm_triton import (  # noqa: E402
    residual_rms_norm_triton,
    residual_rms_norm_usable,
    rms_norm_triton,
    rms_norm_usable,
)
from backbone.kernels.router_triton import router_triton, router_usable  # noqa: E402
from backbone.model import HybridLM  # noqa: E402
from backbone.moe import TopKRouter  # noqa: E402
from backbone.norms import RMSNorm  # noqa: E402

NORM_SHAPES = {
    "one_row": (1, 64),
    "rows_odd": (3, 5, 37),  # several rows, width not a power of two
    "wide": (2, 2688),
}


def _norm_and_input(shape: tuple, dtype: torch.dtype, g: torch.Generator) -> tuple[RMSNorm, torch.Tensor]:
    """An RMSNorm with a random weight in ``dtype`` (the weight follows the model dtype) and an input."""
    norm = RMSNorm(shape[-1], eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(shape[-1], generator=g) * 0.5 + 1)
    return norm.to(dtype), (torch.randn(*shape, generator=g) * 3).to(dtype)


def norm_cases(results: dict) -> None:
    g = torch.Generator().manual_seed(0)
    for name, shape in NORM_SHAPES.items():
        for dtype in (torch.float32, torch.bfloat16):
            norm, x = _norm_and_input(shape, dtype, g)
            with torch.no_grad():
                ref = norm(x)
                exact = norm.weight.float() * x.float() * torch.rsqrt(x.float().pow(2).mean(-1, True) + 1e-5)
            ours = rms_norm_triton(x, norm.weight, norm.eps)
            key = f"norm/{name}/{str(dtype).removeprefix('torch.')}"
            results[key] = rel_err(ours, ref)
            results[key + "/vs_fp32"] = rel_err(ours, exact)
            results[key + "/ulps"] = max_ulps(ours, ref)
            results[key + "/dtype_shape"] = float(ours.dtype == dtype and ours.shape == x.shape)
    # rows with a stride (a view into a wider buffer) and a transposed input
    norm = RMSNorm(24)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5, generator=g)
        wide = torch.randn(4, 40, generator=g)
        results["norm/strided_rows"] = rel_err(
            rms_norm_triton(wide[:, 8:32], norm.weight, norm.eps), norm(wide[:, 8:32])
        )
        cols = torch.randn(24, 3, generator=g).t()
        results["norm/transposed"] = rel_err(rms_norm_triton(cols, norm.weight, norm.eps), norm(cols))
    results["norm/usable_limits"] = float(
        rms_norm_usable(torch.zeros(2, 4096), torch.zeros(4096))
        and not rms_norm_usable(torch.zeros(2, 1 << 14), torch.zeros(1 << 14))
        and not rms_norm_usable(torch.zeros(2, 8, dtype=torch.float64), torch.zeros(8))
    )


def residual_cases(results: dict) -> None:
    """The seam kernel against the separate add and `RMSNorm`: the sum exactly (bf16 rounded to nearest on
    the bits, as the add rounds), the norm as `RMSNorm` of that sum; strided inputs and the limits."""
    g = torch.Generator().manual_seed(1)
    for name, shape in NORM_SHAPES.items():
        for dtype in (torch.float32, torch.bfloat16):
            norm, x = _norm_and_input(shape, dtype, g)
            y = (torch.randn(*shape, generator=g) * 2).to(dtype)
            with torch.no_grad():
                ref_new = x + y
                ref = norm(ref_new)
            new, normed = residual_rms_norm_triton(x, y, norm.weight, norm.eps)
            key = f"seam/{name}/{str(dtype).removeprefix('torch.')}"
            results[key + "/sum_exact"] = float(torch.equal(new, ref_new))
            results[key + "/norm_ulps"] = max_ulps(normed, ref)
            results[key + "/norm"] = rel_err(normed, ref)
            results[key + "/dtype_shape"] = float(
                new.dtype == normed.dtype == dtype and new.shape == normed.shape == x.shape
            )
    norm = RMSNorm(24)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5, generator=g)
        wide = torch.randn(4, 40, generator=g)
        cols = torch.randn(24, 4, generator=g).t()
        new, normed = residual_rms_norm_triton(wide[:, 8:32], cols, norm.weight, norm.eps)
        results["seam/strided"] = max(
            rel_err(new, wide[:, 8:32] + cols), rel_err(normed, norm(wide[:, 8:32] + cols))
        )
    results["seam/usable"] = float(
        residual_rms_norm_usable(
            torch.zeros(2, 8, dtype=torch.bfloat16), torch.zeros(2, 8, dtype=torch.bfloat16), torch.ones(8)
        )
        and not residual_rms_norm_usable(
            torch.zeros(2, 8, dtype=torch.float16), torch.zeros(2, 8, dtype=torch.float16), torch.ones(8)
        )
        and not residual_rms_norm_usable(
            torch.zeros(2, 8), torch.zeros(2, 8, dtype=torch.bfloat16), torch.ones(8)
        )
        and not residual_rms_norm_usable(torch.zeros(2, 8), torch.zeros(1, 8), torch.ones(8))
    )


def model_seam_cases(results: dict) -> None:
    """A tiny hybrid model (Mamba-2, MoE, attention and MLP blocks) whose seams run on the kernel (the rest
    of it on the reference path) against the same model without it: logits and final hidden states."""
    torch.manual_seed(3)
    config = HybridConfig(
        layer_types="ME*-ME", vocab_size=64, hidden_size=32, num_attention_heads=4, num_key_value_heads=2,
        head_dim=8, intermediate_size=48, mamba_num_heads=8, mamba_head_dim=4, ssm_state_size=8, n_groups=2,
        chunk_size=4, n_routed_experts=8, num_experts_per_tok=3, moe_intermediate_size=16,
        moe_shared_expert_intermediate_size=24,
    )  # fmt: skip
    model = HybridLM(config).eval()
    with torch.no_grad():
        for name, tensor in model.named_parameters():
            if "norm" in name:
                tensor.uniform_(0.5, 1.5)
    ids = torch.randint(0, 64, (2, 9))
    calls = []
    with torch.no_grad():
        ref = model(ids)
        original = backbone.norms.fast_paths_enabled
        kernel = residual_rms_norm_triton

        def counted(*args):
            calls.append(1)
            return kernel(*args)

        backbone.norms.fast_paths_enabled = lambda *tensors: True  # as on CUDA, for the norms only
        norm_module.residual_rms_norm_triton = counted
        try:
            ours = model(ids)
        finally:
            backbone.norms.fast_paths_enabled = original
            norm_module.residual_rms_norm_triton = kernel
    results["seam/model/logits"] = rel_err(ours.logits, ref.logits)
    results["seam/model/hidden"] = rel_err(ours.last_hidden_state, ref.last_hidden_state)
    results["seam/model/seams"] = float(len(calls))


ROUTER_SHAPES = {
    "tiny_k2": dict(hidden_size=64, n_routed_experts=16, num_experts_per_tok=2, tokens=5),
    "tiny_k4_one": dict(hidden_size=64, n_routed_experts=16, num_experts_per_tok=4, tokens=1),
    "odd": dict(hidden_size=50, n_routed_experts=12, num_experts_per_tok=3, tokens=7),
    "groups_all_kept": dict(
        hidden_size=64, n_routed_experts=16, num_experts_per_tok=4, tokens=3, n_group=4, topk_group=4
    ),
    "real": dict(hidden_size=2688, n_routed_experts=128, num_experts_per_tok=6, tokens=2),
}


def make_router(seed: int, tokens: int, norm_topk_prob: bool, dtype: torch.dtype, **fields):
    torch.manual_seed(seed)
    config = HybridConfig(
        routed_scaling_factor=2.5, norm_topk_prob=norm_topk_prob, initializer_range=0.5, **fields
    )
    router = TopKRouter(config)
    with torch.no_grad():
        router.weight.mul_(fields["hidden_size"] ** -0.5 * 4)
        router.e_score_correction_bias.copy_(torch.randn(config.n_routed_experts) * 0.2)
    router = router.to(dtype)
    hidden = torch.randn(tokens, config.hidden_size).to(dtype)
    return router, hidden


def compare(results: dict, key: str, router: TopKRouter, hidden: torch.Tensor) -> None:
    with torch.no_grad():
        ref_w, ref_i = router(hidden)
    w, i = router_triton(
        hidden,
        router.weight,
        router.e_score_correction_bias,
        router.top_k,
        router.norm_topk_prob,
        router.scaling,
    )
    ref_sorted, ref_order = ref_i.sort(-1)
    ours_sorted, our_order = i.sort(-1)
    results[key + "/same_indices"] = float(torch.equal(ref_sorted, ours_sorted))
    results[key + "/weights"] = rel_err(w.gather(1, our_order), ref_w.gather(1, ref_order))
    results[key + "/order"] = float(torch.equal(i, ref_i))  # torch.topk's order (decreasing choice)
    results[key + "/dtypes"] = float(
        w.dtype == torch.float32 and i.dtype == torch.long and w.shape == ref_w.shape == i.shape
    )


def router_cases(results: dict) -> None:
    for seed, (name, shape) in enumerate(ROUTER_SHAPES.items()):
        fields = dict(shape)
        tokens = fields.pop("tokens")
        for norm in (True, False):
            router, hidden = make_router(seed, tokens, norm, torch.float32, **fields)
            compare(results, f"router/{name}/{'norm' if norm else 'raw'}", router, hidden)
    # every biased score negative: the kernel's integer keys must keep the order of negative floats
    router, hidden = make_router(
        6, 9, True, torch.float32, hidden_size=64, n_routed_experts=16, num_experts_per_tok=4
    )
    with torch.no_grad():
        router.e_score_correction_bias.sub_(3.0)
    compare(results, "router/negative", router, hidden)

    router, hidden = make_router(
        7, 4, True, torch.bfloat16, hidden_size=96, n_routed_experts=16, num_experts_per_tok=4
    )
    compare(results, "router/bf16", router, hidden)
    kept = router.weight.dtype == torch.bfloat16 and router.e_score_correction_bias.dtype == torch.float32
    results["router/bf16/kept_dtypes"] = float(kept)  # the kernels read bf16 weights and the fp32 bias

    # ties: every score equal -> the lowest indices, in increasing order
    router, hidden = make_router(
        8, 2, True, torch.float32, hidden_size=64, n_routed_experts=16, num_experts_per_tok=3
    )
    with torch.no_grad():
        router.weight.zero_()
        router.e_score_correction_bias.zero_()
        router.e_score_correction_bias[[5, 9]] = 0.1  # two clear winners, then a tie among the rest
    w, i = router_triton(hidden, router.weight, router.e_score_correction_bias, 3, True, 1.0)
    results["router/ties"] = float(i.tolist() == [[5, 9, 0], [5, 9, 0]])
    results["router/ties/weights"] = (w - 1 / 3).abs().max().item()

    results["router/usable"] = float(
        router_usable(torch.zeros(64, 8), 2, 1, 1)
        and router_usable(torch.zeros(1, 8), 2, 4, 4)
        and router_usable(torch.zeros(4096, 8), 2, 1, 1)
        and not router_usable(torch.zeros(4, 8), 2, 4, 2)
        and not router_usable(torch.zeros(0, 8), 2, 1, 1)
    )


if __name__ == "__main__":
    torch.set_num_threads(1)
    out: dict[str, float] = {}
    for run in (norm_cases, residual_cases, model_seam_cases, router_cases):
        run(out)
    json.dump(out, sys.stdout)
