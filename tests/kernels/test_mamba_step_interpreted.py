"""The fused Mamba-2 decode-step kernels against the mixer's PyTorch reference under Triton's CPU
interpreter (tiny shapes, some not powers of two).

All cases run once, in a subprocess (`mamba_step_cases.py`), because TRITON_INTERPRET only takes effect
when set before triton is first imported; each test below checks its own cases' numbers. The interpreter
truncates fp32 -> bf16 casts where CUDA rounds to nearest, so bf16 results may differ by one unit in the
last place: bf16 cases get the looser tolerance.
"""

from __future__ import annotations

import pytest

pytest.importorskip("triton")

TOLERANCE = 1e-4
BF16_TOLERANCE = 1e-2


WORKER = "mamba_step_cases.py"  # run by the `results` fixture of conftest.py


@pytest.mark.parametrize("case", ["base", "nobias_limit", "odd", "k1"])
def test_fused_decode_step_matches_the_mixer(results, case):
    """Outputs of three successive steps and the updated conv and SSM states, fp32."""
    for part in ("outputs", "ssm", "conv"):
        key = f"decode/{case}/{part}"
        assert results[key] <= TOLERANCE, (key, results[key])


@pytest.mark.parametrize("case", ["nobias_limit", "odd", "k1"])
def test_time_step_limit_is_exercised(results, case):
    assert results[f"decode/{case}/limit_active"] == 1.0


def test_fused_decode_step_bf16(results):
    assert results["decode/bf16/outputs"] <= BF16_TOLERANCE
    assert results["decode/bf16/ssm"] <= BF16_TOLERANCE
    assert results["decode/bf16/conv"] == 0.0  # the conv state only moves inputs


@pytest.mark.parametrize("case", ["base", "odd"])
@pytest.mark.parametrize("bias", ["bias", "nobias"])
def test_conv_kernel_matches_reference(results, case, bias):
    assert results[f"conv/{case}/{bias}"] <= TOLERANCE


@pytest.mark.parametrize("case", ["base", "odd"])
@pytest.mark.parametrize("limit", ["free", "limit"])
def test_ssd_kernel_matches_reference(results, case, limit):
    assert results[f"ssd/{case}/{limit}"] <= TOLERANCE


def test_softplus_matches_torch_elementwise(results):
    """Both sides of the threshold (x > 20 -> x) and small dt, to fp32 precision per element."""
    assert results["softplus/elementwise"] <= 1e-6


@pytest.mark.parametrize("case", ["base", "odd"])
def test_norm_kernel_matches_reference(results, case):
    assert results[f"norm/{case}/float32"] <= TOLERANCE
    assert results[f"norm/{case}/bfloat16"] <= BF16_TOLERANCE
