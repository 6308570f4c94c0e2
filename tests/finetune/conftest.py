"""Fixtures of the fine-tuning tests: a tiny from-scratch model and a small synthetic data set."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from tiny_configs import CONFIG


def tiny_config() -> dict:
    """The shared tiny omni config with processor limits for small inputs and ``<|im_end|>`` as eos."""
    config = copy.deepcopy(CONFIG)
    config["text_config"]["eos_token_id"] = 11
    config["vision_config"].update(min_num_patches=16, max_num_patches=64, video_target_num_patches=16)
    config["max_model_len"] = 4096
    return config


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: these models are tiny, and on a busy machine two spinning OpenMP threads
    per process slow a training step down many times over."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two samples of every synthetic task (train split) and two of a held-out split."""
    from omni.synthetic import build_dataset

    out = tmp_path_factory.mktemp("synthetic")
    build_dataset(out, n_per_task=2, seed=0, split="train")
    build_dataset(out, tasks=["shapes-count", "beeps"], n_per_task=2, seed=0, split="heldout")
    return out


@pytest.fixture(scope="session")
def config_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("config") / "tiny.json"
    path.write_text(json.dumps(tiny_config()))
    return path


@pytest.fixture()
def fresh():
    """``fresh(seed)`` -> (tiny random model, processor with the package's small tokenizer)."""
    from omni.finetune.init import fresh_model_and_processor

    def build(seed: int = 0):
        return fresh_model_and_processor(tiny_config(), seed=seed)

    return build


@pytest.fixture()
def subset():
    """``subset(jsonl, tasks, out)``: a JSONL with only ``tasks`` (media paths made absolute)."""
    return _subset


def _subset(jsonl: Path, tasks: tuple[str, ...], out: Path) -> Path:
    lines = []
    for line in jsonl.read_text().splitlines():
        record = json.loads(line)
        if record["task"] in tasks:
            for message in record["messages"]:
                if isinstance(message["content"], list):
                    for item in message["content"]:
                        if "path" in item:
                            item["path"] = str(jsonl.parent / item["path"])
            lines.append(json.dumps(record))
    out.write_text("\n".join(lines) + "\n")
    return out
