"""The FastConformer's attention and convolution-module kernels under Triton's CPU interpreter, against the
torch path in fp32, and a padded batch on them against each clip alone (`parakeet_cases.py`, run once in a
subprocess)."""

from __future__ import annotations

import pytest

pytest.importorskip("triton")

WORKER = "parakeet_cases.py"  # run by the `results` fixture of conftest.py


@pytest.mark.parametrize("shape", ["small", "two_blocks"])
def test_attention_kernel_as_close_to_fp32_as_the_torch_path(results, shape):
    """Clips of 37, 20 and 1 valid positions (and 70 and 65 over two key blocks), padding rows included:
    the kernel in bf16 lands as near the fp32 torch path as the torch path in bf16 does."""
    key = f"attention/{shape}"
    assert results[key + "/kernel"] <= 1.5 * results[key + "/torch_bf16"] + 1e-3, results
    assert results[key + "/shape_dtype"] == 1.0


def test_training_with_attention_dropout_keeps_the_torch_path(results):
    assert results["attention/dropout_keeps_torch_path"] == 1.0


def test_conv_kernel_as_close_to_fp32_as_the_torch_path(results):
    assert results["conv/kernel"] <= 1.5 * results["conv/torch_bf16"] + 1e-3, results
    assert results["conv/short_clip_tail"] <= 2e-2


@pytest.mark.parametrize("layout", ["contiguous", "strided"])
def test_subsampling_kernels_as_close_to_fp32_as_the_torch_path(results, layout):
    """The first convolution, the depthwise convolutions and the channels-last projection, on clips of 45,
    30 and 7 frames with noise in the padding. Each stage's output is rounded to bf16 on both paths, at
    different points, so the bound leaves room for a few roundings (a missed mask or tap errs by 1e-1)."""
    key = f"subsampling/{layout}"
    assert results[key + "/taken"] == 1.0
    assert results[key + "/kernel"] <= 2 * results[key + "/torch_bf16"] + 5e-3, results
    assert results["subsampling/short_clip_tail"] <= 2e-2


def test_padded_batch_on_the_kernels_equals_each_clip_alone(results):
    assert results["encoder/batch_vs_alone"] <= 3e-2, results["encoder/batch_vs_alone"]
    assert results["encoder/cpu_not_taken"] == 1.0


def test_every_case_ran_on_the_kernels(results):
    """A kernel that fails falls back to the torch path (logged); here none may have."""
    assert results["kernels/none_failed"] == 1.0
