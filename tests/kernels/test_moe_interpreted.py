"""The Triton routed-expert kernels (decoding) against the readable expert loop, under Triton's CPU
interpreter at tiny sizes. The cases run in a subprocess (`moe_cases.py`): TRITON_INTERPRET only takes
effect when set before triton is first imported."""

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
        [sys.executable, str(Path(__file__).with_name("moe_cases.py"))],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout)


@pytest.mark.parametrize("case", ["one_token", "odd_sizes", "shared_expert", "strided_input"])
def test_expert_kernels_match_the_loop_fp32(results, case):
    assert results[case] <= 1e-5, (case, results[case])


def test_expert_kernels_bf16_weights(results):
    assert results["bf16"] <= 1e-2  # fp32 sums of bf16 products, one bf16 rounding of the output
