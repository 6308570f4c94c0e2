"""The interpreted kernel tests' shared fixture: a module names its worker script (`WORKER`), which runs
the Triton kernels on CPU tensors under TRITON_INTERPRET=1 in a subprocess and prints one JSON object of
case -> number. A subprocess, because TRITON_INTERPRET only takes effect when set before triton is first
imported, which a test process that already imported torch's Triton integration cannot guarantee."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def results(request: pytest.FixtureRequest) -> dict[str, float]:
    worker = Path(request.module.__file__).with_name(request.module.WORKER)
    env = {
        **os.environ,
        "TRITON_INTERPRET": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
        "CUDA_VISIBLE_DEVICES": "",
    }
    done = subprocess.run(
        [sys.executable, str(worker)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout)


@pytest.fixture
def flash4_gpu() -> None:
    """Skips unless FlashAttention 4 can run here: ``flash_attn.cute`` importable and a Hopper or
    Blackwell GPU (the compute capabilities both our wrappers of it serve)."""
    import torch

    from backbone.kernels import flash4_prefill
    from encoders import flash4

    pytest.importorskip("flash_attn.cute")
    if torch.cuda.get_device_capability()[0] not in set(flash4._ARCHES) & set(flash4_prefill._ARCHES):
        pytest.skip("FlashAttention 4 serves Hopper and Blackwell")
