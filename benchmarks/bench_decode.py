"""Decode throughput of the hybrid LM: ours (CUDA graphs, eager) vs transformers' NemotronHForCausalLM.

The benchmark lives in ``omni.bench.decode`` (also ``omni bench decode``); see its docstring.

Run: python benchmarks/bench_decode.py [--batches 1,8,64] [--json out.json] [--skip-reference]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from omni.bench.decode import main  # noqa: E402 - after the repository root is importable

if __name__ == "__main__":
    sys.exit(main())
