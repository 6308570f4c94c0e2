"""Time to first token and peak GPU memory for image, video and audio prompts: ours vs transformers.

The benchmark lives in ``omni.bench.ttft`` (also ``omni bench ttft``); see its docstring.

Run: python benchmarks/bench_ttft.py [--json out.json] [--skip-reference] [--video-2min] [--tiny --device cpu]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from omni.bench.ttft import main  # noqa: E402 - after the repository root is importable

if __name__ == "__main__":
    sys.exit(main())
