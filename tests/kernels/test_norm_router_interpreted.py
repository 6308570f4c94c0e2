"""The Triton RMSNorm and router kernels against `RMSNorm` / `TopKRouter` under Triton's CPU interpreter.

All cases run once, in a subprocess (`norm_router_cases.py`), because TRITON_INTERPRET only takes effect
when set before triton is first imported; each test below checks its own cases' numbers.
"""

from __future__ import annotations

import pytest

pytest.importorskip("triton")

NORM_SHAPES = ["one_row", "rows_odd", "wide"]
SEAM_LAYERS = 6  # "ME*-ME": one seam after each block, the last one into norm_f
ROUTER_SHAPES = ["tiny_k2", "tiny_k4_one", "odd", "groups_all_kept", "real"]


WORKER = "norm_router_cases.py"  # run by the `results` fixture of conftest.py


@pytest.mark.parametrize("shape", NORM_SHAPES)
def test_rms_norm_fp32_matches_reference(results, shape):
    key = f"norm/{shape}/float32"
    assert results[key] <= 1e-6, (key, results[key])
    assert results[key + "/vs_fp32"] <= 1e-6
    assert results[key + "/dtype_shape"] == 1.0


@pytest.mark.parametrize("shape", NORM_SHAPES)
def test_rms_norm_bf16_within_one_ulp(results, shape):
    """The interpreter truncates fp32 -> bf16 (the GPU rounds to nearest, as torch does): one bf16 ulp."""
    key = f"norm/{shape}/bfloat16"
    assert results[key + "/ulps"] <= 1.0, (key, results[key + "/ulps"])
    assert results[key + "/vs_fp32"] <= 2**-7
    assert results[key + "/dtype_shape"] == 1.0


@pytest.mark.parametrize("shape", NORM_SHAPES)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_residual_seam_matches_the_add_and_the_norm(results, shape, dtype):
    """The residual sum bit for bit; its norm as `RMSNorm`'s (bf16: within the interpreter's truncation,
    one ulp; on the GPU the GPU tests ask for bit equality)."""
    key = f"seam/{shape}/{dtype}"
    assert results[key + "/sum_exact"] == 1.0, key
    if dtype == "float32":
        assert results[key + "/norm"] <= 1e-6, (key, results[key + "/norm"])
    else:
        assert results[key + "/norm_ulps"] <= 1.0, (key, results[key + "/norm_ulps"])
    assert results[key + "/dtype_shape"] == 1.0


def test_residual_seam_strided_inputs_and_limits(results):
    assert results["seam/strided"] <= 1e-6
    assert results["seam/usable"] == 1.0


def test_model_runs_its_seams_on_the_kernel(results):
    """Every block's residual add and the norm after it went through the kernel, and the model's logits and
    final hidden states are those of the separate add and norm."""
    assert results["seam/model/seams"] == SEAM_LAYERS
    assert results["seam/model/logits"] <= 1e-5, results["seam/model/logits"]
    assert results["seam/model/hidden"] <= 1e-6, results["seam/model/hidden"]


def test_rms_norm_strided_inputs_and_limits(results):
    assert results["norm/strided_rows"] <= 1e-6
    assert results["norm/transposed"] <= 1e-6
    assert results["norm/usable_limits"] == 1.0


@pytest.mark.parametrize("shape", ROUTER_SHAPES)
@pytest.mark.parametrize("normalise", ["norm", "raw"])
def test_router_matches_reference(results, shape, normalise):
    key = f"router/{shape}/{normalise}"
    assert results[key + "/same_indices"] == 1.0, key
    assert results[key + "/weights"] <= 1e-5, (key, results[key + "/weights"])
    assert results[key + "/order"] == 1.0
    assert results[key + "/dtypes"] == 1.0


def test_router_bf16_operands(results):
    assert results["router/bf16/kept_dtypes"] == 1.0
    assert results["router/bf16/same_indices"] == 1.0
    assert results["router/bf16/weights"] <= 1e-5
    assert results["router/bf16/dtypes"] == 1.0


def test_router_orders_negative_scores(results):
    assert results["router/negative/same_indices"] == 1.0
    assert results["router/negative/order"] == 1.0
    assert results["router/negative/weights"] <= 1e-5


def test_router_ties_pick_the_lowest_index(results):
    assert results["router/ties"] == 1.0
    assert results["router/ties/weights"] <= 1e-6


def test_router_usable_without_groups_only(results):
    assert results["router/usable"] == 1.0
