"""The Triton SSD kernels against the PyTorch reference under Triton's CPU interpreter (fp32, tiny shapes).

All cases run once, in a subprocess (`interpreted_cases.py`), because TRITON_INTERPRET only takes effect
when set before triton is first imported; each test below checks its own cases' numbers.
"""

from __future__ import annotations

import pytest

pytest.importorskip("triton")

TOLERANCE = 1e-4


WORKER = "interpreted_cases.py"  # run by the `results` fixture of conftest.py


@pytest.mark.parametrize("shape", ["ragged", "grouped", "single"])
@pytest.mark.parametrize("start", ["zero", "state"])
def test_chunked_scan_matches_reference(results, shape, start):
    key = f"chunked/{shape}/{start}"
    assert results[key] <= TOLERANCE, (key, results[key])
    assert results[key + "/sequential"] <= TOLERANCE
    assert results[key + "/dtype"] == 0.0  # y and the final state come back in fp32


def test_chunked_scan_takes_strided_views_and_no_skip(results):
    assert results["strided/no_skip"] <= TOLERANCE


def test_left_padding_leaves_the_state_untouched(results):
    """Padded positions carry dt = 0 and x = 0: the padded row must end as the row alone."""
    assert results["padding/final"] <= 1e-5
    assert results["padding/outputs"] <= 1e-5
    assert results["padding/padded_outputs"] == 0.0


@pytest.mark.parametrize("groups", [1, 2])
def test_step_kernel_matches_reference(results, groups):
    assert results[f"step/groups{groups}/outputs"] <= TOLERANCE
    assert results[f"step/groups{groups}/state"] <= TOLERANCE


def test_step_kernel_rejects_a_low_precision_state(results):
    assert results["step/rejects_half_state"] == 1.0


@pytest.mark.parametrize("case", ["noD/zero", "D/state"])
def test_parallel_scan_matches_reference_and_one_pass(results, case):
    """Batch 2, two heads per group, a length that is not a multiple of the chunk; with and without D
    and the initial state. The chunk-parallel path agrees with the reference and with the one-pass kernel."""
    key = f"parallel/{case}"
    assert results[key] <= TOLERANCE, (key, results[key])
    assert results[key + "/one_pass"] <= TOLERANCE, (key, results[key + "/one_pass"])
    assert results[key + "/dtype"] == 0.0


@pytest.mark.parametrize("starts", ["fp32", "bf16"])
def test_parallel_scan_carries_the_state_across_turns_of_the_serial_pass(results, starts):
    """Ten chunks, four a turn: the state carried between turns and the starts written in place (fp32) or
    apart (bf16, one rounding in y) give the reference's outputs and its exact final state."""
    key = f"parallel/groups/{starts}"
    assert results[key + "/final"] <= TOLERANCE, (key, results[key + "/final"])
    assert results[key + "/y"] <= (TOLERANCE if starts == "fp32" else 1e-2), (key, results[key + "/y"])


@pytest.mark.parametrize("case", ["tiles", "strided", "single"])
def test_parallel_scan_tiles_views_and_one_token(results, case):
    """Several row and channel blocks per chunk with masked edges; strided views of every input; L = 1."""
    assert results[f"parallel/{case}"] <= TOLERANCE, (case, results[f"parallel/{case}"])


def test_parallel_scan_rounds_outputs_and_start_states_to_bf16_only(results):
    """bf16 y and start states (the GPU default for bf16 models) cost one bf16 rounding in y; the final
    state, which decode continues from, stays fp32 and exact."""
    assert results["parallel/bf16_starts/dtypes"] == 0.0
    assert results["parallel/bf16_starts/y"] <= 1e-2, results["parallel/bf16_starts/y"]
    assert results["parallel/bf16_starts/final"] <= TOLERANCE, results["parallel/bf16_starts/final"]


def test_parallel_scan_multiplies_bf16_operands_in_bf16_by_default(results):
    """bf16 x, B and C: the default 16-bit products round each scaled operand once (as mamba-ssm's kernels
    do), within bf16 rounding of the fp32 scan of the same values; TF32 products (`native_dots=False`)
    stay exact."""
    assert results["parallel/native/rounded"] == 1.0
    assert results["parallel/native/y"] <= 1e-2, results["parallel/native/y"]
    assert results["parallel/native/final"] <= 1e-2, results["parallel/native/final"]
    assert results["parallel/native/tf32"] <= TOLERANCE, results["parallel/native/tf32"]


def test_parallel_scan_refuses_wide_pass_one_tiles_with_16_bit_products():
    """64 head channels a program in pass 1 with 16-bit products: a clear error, not a launch (its
    compiled kernel gave wrong outputs on a GPU)."""
    import torch

    from backbone.kernels.ssd_parallel_triton import ssd_chunked_parallel_triton

    x = torch.zeros(1, 64, 2, 64, dtype=torch.bfloat16)
    B = C = torch.zeros(1, 64, 1, 16, dtype=torch.bfloat16)
    dt, A = torch.zeros(1, 64, 2), torch.zeros(2)
    with pytest.raises(ValueError, match="block_p 64"):
        ssd_chunked_parallel_triton(x, dt, A, B, C, block_p=64)


def test_parallel_scan_refuses_16_bit_products_of_fp32_inputs():
    """`native_dots=True` asked of fp32 inputs: a clear error, not TF32 products passed off as exact."""
    import torch

    from backbone.kernels.ssd_parallel_triton import ssd_chunked_parallel_triton

    x = torch.zeros(1, 64, 2, 64)
    B = C = torch.zeros(1, 64, 1, 16)
    dt, A = torch.zeros(1, 64, 2), torch.zeros(2)
    with pytest.raises(ValueError, match="native_dots"):
        ssd_chunked_parallel_triton(x, dt, A, B, C, native_dots=True)


def test_parallel_scan_left_padding(results):
    assert results["parallel/padding"] <= 1e-5
    assert results["parallel/padded_outputs"] == 0.0


@pytest.mark.parametrize("name", ["below", "at"])
def test_path_selection(results, name):
    """One token short of the chunk count stays on the one-pass kernel; at it, the chunk-parallel path runs
    (the two differ in rounding, so which one ran shows)."""
    assert results[f"select/{name}/parallel"] == float(name == "at")
    assert results[f"select/{name}/same"] == 1.0
    assert results[f"select/{name}/distinct"] == 1.0
