"""``import omni`` stays light: torch and timm load only when a model, processor or command needs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_omni_loads_neither_torch_nor_timm():
    code = "import sys, omni; print(sorted(m for m in ('torch', 'timm') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_lazy_exports_resolve():
    import encoders
    import tokenreduce

    assert encoders.RadioEncoder.__name__ == "RadioEncoder"
    assert tokenreduce.evs_retained_count(4, 2, 3, 0.0) == 24
    for package in (encoders, tokenreduce):
        for name in package.__all__:
            assert getattr(package, name) is not None
