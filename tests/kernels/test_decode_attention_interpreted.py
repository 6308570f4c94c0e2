"""The Triton one-token attention (graph decoding) against masked softmax attention, under Triton's CPU
interpreter at tiny sizes. The cases run in a subprocess (`attention_cases.py`): TRITON_INTERPRET only
takes effect when set before triton is first imported. fp32 only: the interpreter does not evaluate
16-bit `tl.dot` (tests/kernels/test_gpu_decode_attention.py covers bf16 on a GPU)."""

from __future__ import annotations

import pytest

pytest.importorskip("triton")


WORKER = "attention_cases.py"  # run by the `results` fixture of conftest.py


@pytest.mark.parametrize("case", ["one_split", "many_splits", "padded_rows"])
def test_decode_attention_matches_masked_softmax(results, case):
    """Unwritten (masked) key slots hold NaN in these cases: a kernel that read them would fail here."""
    assert results[case] <= 1e-5, (case, results[case])
