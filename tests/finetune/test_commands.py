"""``omni finetune`` and ``omni eval`` end to end on a tiny model; the 2-process run matches 1 process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from omni.cli import main as omni_main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, data_dir, config_path) -> Path:
    out = tmp_path_factory.mktemp("finetuned")
    code = omni_main(
        ["finetune", "--data", str(data_dir / "train.jsonl"), "--init-config", str(config_path),
         "--mode", "lora", "--lora-rank", "4", "--steps", "2", "--batch-size", "2", "--lr", "1e-3",
         "--output", str(out), "--save-every", "2", "--num-workers", "1", "--no-progress",
         "--eval-data", str(data_dir / "heldout.jsonl"), "--eval-max-new-tokens", "4"]
    )  # fmt: skip
    assert code == 0
    return out


def test_finetune_writes_a_loadable_model_and_state(finetuned):
    from omni import OmniModel, OmniProcessor

    names = {p.name for p in finetuned.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "processor_config.json", "state"} <= names
    processor_config = json.loads((finetuned / "processor_config.json").read_text())
    assert processor_config["image_processor"]["max_num_patches"] == 64
    assert processor_config["video_processor"]["video_target_num_patches"] == 16
    assert {p.name for p in (finetuned / "state").iterdir()} == {
        "model.safetensors", "optimizer.safetensors", "rng.safetensors", "trainer.json"
    }  # fmt: skip
    scores = json.loads((finetuned / "eval_results.json").read_text())
    assert scores["all"]["n"] == 4 and set(scores) == {"beeps", "shapes-count", "all"}
    OmniModel.from_pretrained(finetuned)
    OmniProcessor.from_pretrained(finetuned)


def test_eval_prints_a_table_per_task(finetuned, data_dir, tmp_path, capsys):
    out = tmp_path / "scores.json"
    code = omni_main(
        ["eval", "--model", str(finetuned), "--data", str(data_dir / "heldout.jsonl"), "--json", str(out),
         "--num-workers", "0", "--max-new-tokens", "4", "--batch-size", "3"]
    )  # fmt: skip
    assert code == 0
    table = capsys.readouterr().out
    assert re.search(r"beeps\s+\d\.\d{3}\s+\d/2", table) and re.search(
        r"shapes-count\s+\d\.\d{3}\s+\d/2", table
    )
    scores = json.loads(out.read_text())
    assert scores["all"]["n"] == 4
    assert scores["all"]["correct"] == scores["beeps"]["correct"] + scores["shapes-count"]["correct"]


def test_bad_jsonl_line_is_a_clean_command_error(tmp_path, config_path, capsys):
    data = tmp_path / "bad.jsonl"
    data.write_text(
        '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}]}\n{oops\n'
    )
    code = omni_main(
        ["finetune", "--data", str(data), "--init-config", str(config_path), "--output", str(tmp_path / "o"),
         "--steps", "1", "--num-workers", "0", "--no-progress"]
    )  # fmt: skip
    assert code == 2 and f"{data}:2" in capsys.readouterr().err


def _losses(output: str) -> list[float]:
    return [float(x) for x in re.findall(r"step \d+/\d+ loss ([0-9.]+)", output)]


def _finetune_args(batch: int, data: Path, config: Path, out: Path) -> list[str]:
    return ["finetune", "--data", str(data), "--init-config", str(config), "--mode", "full", "--steps", "3",
            "--batch-size", str(batch), "--lr", "3e-3", "--output", str(out), "--num-workers", "0",
            "--no-progress", "--device", "cpu"]  # fmt: skip


def _torchrun(procs: int, args: list[str]) -> list[float]:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*launcher, "-m", "omni", *args], env=env, capture_output=True, text=True,
                          timeout=240, cwd=ROOT)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return _losses(done.stdout)


def test_two_process_fsdp_matches_one_process(data_dir, config_path, tmp_path, subset, capsys):
    """FSDP2 on gloo (CPU): 2 ranks x 2 conversations follow 1 rank x 4 step for step."""
    data = subset(data_dir / "train.jsonl", ("shapes-count", "motion", "video-beeps"), tmp_path / "two.jsonl")
    assert omni_main(_finetune_args(4, data, config_path, tmp_path / "one")) == 0
    one = _losses(capsys.readouterr().out)
    two = _torchrun(2, _finetune_args(2, data, config_path, tmp_path / "two"))
    assert len(one) == len(two) == 3
    for a, b in zip(one, two):
        assert abs(a - b) <= 1e-3 * abs(a), (one, two)
    assert (tmp_path / "two" / "model.safetensors").is_file()


def test_bundled_dir_names_the_recipe_until_trained(tmp_path, finetuned):
    from omni.bundled import RECIPE, checked_model_dir

    with pytest.raises(FileNotFoundError, match=RECIPE):
        checked_model_dir(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="not in"):
        checked_model_dir(tmp_path)
    assert checked_model_dir(finetuned) == finetuned
