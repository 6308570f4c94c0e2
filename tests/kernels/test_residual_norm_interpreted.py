"""The ViT's fused scaled-residual + LayerNorm kernel under Triton's CPU interpreter, against the separate
tensor operations and block by block (`residual_norm_cases.py`, run once in a subprocess)."""

from __future__ import annotations

import pytest

pytest.importorskip("triton")

SHAPES = ["one_row", "rows_odd", "no_bias"]
WORKER = "residual_norm_cases.py"  # run by the `results` fixture of conftest.py


@pytest.mark.parametrize("shape", SHAPES)
def test_fp32_seam_matches_the_separate_operations(results, shape):
    key = f"seam/{shape}/float32"
    assert results[key + "/new_ulps"] == 0.0, results[key + "/new_ulps"]
    assert results[key + "/normed"] <= 1e-6, results[key + "/normed"]
    assert results[key + "/dtype_shape"] == 1.0


@pytest.mark.parametrize("shape", SHAPES)
def test_bf16_seam_within_rounding(results, shape):
    """The interpreter truncates fp32 -> bf16 where the GPU rounds to nearest, as torch does, so the scaled
    branch may be a unit of its last place off before the sum: within 2^-7 of the largest value (the GPU
    test asks the sum to be exact)."""
    key = f"seam/{shape}/bfloat16"
    assert results[key + "/new"] <= 2**-7, results[key + "/new"]
    assert results[key + "/normed"] <= 2**-6, results[key + "/normed"]
    assert results[key + "/dtype_shape"] == 1.0


def test_strided_rows_and_limits(results):
    assert results["seam/strided"] <= 1e-6
    assert results["seam/usable_limits"] == 1.0


def test_blocks_through_the_fused_seams_match_block_by_block(results):
    assert results["blocks/fused"] <= 1e-5, results["blocks/fused"]
    assert results["blocks/packed"] <= 1e-5, results["blocks/packed"]
    assert results["blocks/cpu_not_fused"] == 1.0
