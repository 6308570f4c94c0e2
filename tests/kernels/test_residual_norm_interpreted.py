"""The ViT's fused scaled-residual + LayerNorm kernel under Triton's CPU interpreter, against the separate
tensor operations and block by block (`residual_norm_cases.py`, run once in a subprocess)."""

from __future__ import annotations

import pytest

pytest.importorskip("triton")

SHAPES = ["one_row", "rows_odd", "no_bias", "last_program_partial"]
WORKER = "residual_norm_cases.py"  # run by the `results` fixture of conftest.py


@pytest.mark.parametrize("shape", SHAPES)
def test_bf16_seam_sum_is_exact(results, shape):
    """The sum is rounded on its bits as PyTorch's two operations round it: equal to the last bit. The
    interpreter truncates the final fp32 -> bf16 store of the norm where the GPU rounds, so the norm is only
    within a unit of its last place here (the GPU test asks for that too)."""
    key = f"seam/{shape}/bfloat16"
    assert results[key + "/new_ulps"] == 0.0, results[key + "/new_ulps"]
    assert results[key + "/normed_ulps"] <= 1.0, results[key + "/normed_ulps"]
    assert results[key + "/dtype_shape"] == 1.0


def test_strided_rows_and_limits(results):
    assert results["seam/strided/new_ulps"] == 0.0
    assert results["seam/strided/normed"] <= 2**-7
    assert results["seam/usable_limits"] == 1.0


def test_blocks_through_the_fused_seams_match_block_by_block(results):
    assert results["blocks/fused"] <= 1e-2, results["blocks/fused"]
    assert results["blocks/packed"] <= 1e-2, results["blocks/packed"]
    assert results["blocks/cpu_not_fused"] == 1.0
