"""The Triton routed-expert kernels (decoding) and the top-k combine (prefill) against the readable
expert loop and the reference combine, under Triton's CPU interpreter at tiny sizes. The cases run in a
subprocess (`moe_cases.py`): TRITON_INTERPRET only takes effect when set before triton is first
imported."""

from __future__ import annotations

import pytest

pytest.importorskip("triton")


WORKER = "moe_cases.py"  # run by the `results` fixture of conftest.py


@pytest.mark.parametrize("case", ["one_token", "odd_sizes", "shared_expert", "strided_input"])
def test_expert_kernels_match_the_loop_fp32(results, case):
    assert results[case] <= 1e-5, (case, results[case])


def test_expert_kernels_bf16_weights(results):
    assert results["bf16"] <= 1e-2  # fp32 sums of bf16 products, one bf16 rounding of the output


@pytest.mark.parametrize("case", ["combine_fp32", "grouped_with_combine"])
def test_topk_combine_matches_the_reference_fp32(results, case):
    assert results[case] <= 1e-5, (case, results[case])


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_topk_combine_adds_the_shared_expert_as_the_separate_add(results, dtype):
    """With an addend the sum is rounded, the addend added and the result rounded again: the bits of the
    rounded routed sum plus the addend as two tensors (rounded to nearest here, unlike a plain cast)."""
    assert results[f"combine_addend_{dtype}"] == 1.0


def test_topk_combine_bf16(results):
    assert results["combine_bf16"] <= 1e-2  # one bf16 rounding of the fp32 sum (truncated by the interpreter)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_squared_relu_kernel_is_torchs_bit_for_bit(results, dtype):
    assert results[f"relu2/{dtype}"] == 1.0


def test_squared_relu_kernel_bf16_within_the_interpreters_truncation(results):
    """Exact on the GPU (test_gpu_moe.py); the interpreter truncates the bf16 store: one unit at most."""
    assert results["relu2/bfloat16/ulps"] <= 1.0


@pytest.mark.parametrize("case", ["dispatch", "dispatch_wide", "dispatch_unused"])
def test_dispatch_lays_each_routed_row_in_its_experts_segment(results, case):
    """Segment bounds as the counts give them; every (token, choice) row once, inside its expert's
    segment, a copy of its token's row (experts with no rows get empty segments)."""
    assert results[case] == 1.0


def test_dispatch_matmuls_and_combine_match_the_loop(results):
    assert results["dispatch_then_combine"] <= 1e-5
