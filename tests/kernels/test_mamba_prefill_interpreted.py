"""The Mamba-2 prefill conv and time-step kernels, and the mixer's forward on its prefill kernels, against the mixer's
PyTorch reference under Triton's CPU interpreter (tiny shapes, some not powers of two; lengths across the
kernel's 8-position blocks and shorter than K - 1).

All cases run once, in a subprocess (`mamba_prefill_cases.py`), because TRITON_INTERPRET only takes effect
when set before triton is first imported. The interpreter truncates fp32 -> bf16 casts where CUDA rounds
to nearest, so the bf16 case gets the looser tolerance.
"""

from __future__ import annotations

import pytest

pytest.importorskip("triton")

TOLERANCE = 1e-4
BF16_TOLERANCE = 2e-2

WORKER = "mamba_prefill_cases.py"  # run by the `results` fixture of conftest.py


@pytest.mark.parametrize("case", ["base", "odd", "k1", "k6"])
@pytest.mark.parametrize("length", [2, 5, 37])
def test_conv_kernel_matches_the_mixers_conv(results, case, length):
    """Every mask/state combination; with a state, the updated conv state too."""
    for masked in ("nomask", "mask"):
        for start in ("fresh", "state"):
            key = f"conv/{case}/L{length}/{masked}/{start}"
            assert results[key] <= TOLERANCE, (key, results[key])


@pytest.mark.parametrize("case", ["base", "nobias_limit", "odd"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_time_steps_match_the_mixers(results, case, dtype):
    """dt = softplus(dt_raw + dt_bias), clamped and masked, and A = -exp(A_log), in fp32 from a strided view
    (bf16 inputs are widened exactly, so both dtypes get the fp32 tolerance)."""
    for length in (3, 70):
        for masked in ("nomask", "mask"):
            key = f"dt/{case}/{dtype}/L{length}/{masked}"
            assert results[key] <= TOLERANCE, (key, results[key])
            assert results[key + "/layout"] == 1.0


@pytest.mark.parametrize("case", ["base", "nobias_limit", "odd", "k1"])
@pytest.mark.parametrize("start", ["fresh", "state"])
def test_prefill_matches_the_mixer(results, case, start):
    """The forward with the conv and gated-norm kernels on padded rows, fp32: the output and, continuing
    from a state, the updated SSM and conv states."""
    key = f"mixer/{case}/float32/{start}"
    assert results[key] <= TOLERANCE, (key, results[key])


@pytest.mark.parametrize("start", ["fresh", "state"])
def test_prefill_bf16(results, start):
    assert results[f"mixer/base/bfloat16/{start}"] <= BF16_TOLERANCE
