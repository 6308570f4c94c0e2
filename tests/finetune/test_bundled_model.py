"""The shipped bundled model: within the size limit, the default of the commands, and right on the
tasks it has learned (the two sound tasks, 100% of 200 held-out conversations each at release)."""

from __future__ import annotations

import re

import pytest

import omni
from omni.bundled import BUNDLED_DIR, bundled_model_dir
from omni.cli import main as omni_main

pytestmark = pytest.mark.skipif(
    not (BUNDLED_DIR / "model.safetensors").is_file(), reason="no bundled weights in this checkout"
)


def test_bundled_model_is_the_package_default_and_fits():
    directory = bundled_model_dir()
    assert directory == BUNDLED_DIR and str(directory) == str(omni.BUNDLED_MODEL)
    weights = sum(p.stat().st_size for p in directory.glob("*.safetensors"))
    assert weights <= 50 * 1000**2


def test_bundled_model_answers_the_sound_tasks_on_held_out_seeds(tmp_path, capsys):
    from omni.synthetic import build_dataset

    build_dataset(tmp_path, n_per_task=6, seed=7, split="eval", tasks=["beeps", "video-beeps"])
    code = omni_main(
        ["eval", "--data", str(tmp_path / "eval.jsonl"), "--dtype", "float32", "--batch-size", "6",
         "--num-workers", "0"]
    )  # fmt: skip
    assert code == 0
    table = capsys.readouterr().out
    for task in ("beeps", "video-beeps"):
        right = int(re.search(rf"^{task}\s+\d\.\d{{3}}\s+(\d+)/6$", table, re.M).group(1))
        assert right >= 5, table
