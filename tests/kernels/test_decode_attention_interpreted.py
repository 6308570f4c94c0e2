"""The Triton one-token attention (graph decoding) against masked softmax attention, under Triton's CPU
interpreter at tiny sizes. The cases run in a subprocess (`attention_cases.py`): TRITON_INTERPRET only
takes effect when set before triton is first imported. fp32 only: the interpreter does not evaluate
16-bit `tl.dot` (tests/kernels/test_gpu_decode_attention.py covers bf16 on a GPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def results() -> dict[str, float]:
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("attention_cases.py"))],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout)


@pytest.mark.parametrize("case", ["one_split", "many_splits", "padded_rows"])
def test_decode_attention_matches_masked_softmax(results, case):
    """Unwritten (masked) key slots hold NaN in these cases: a kernel that read them would fail here."""
    assert results[case] <= 1e-5, (case, results[case])
