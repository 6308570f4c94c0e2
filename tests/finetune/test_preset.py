"""The bundled model's preset: the full architecture, at most 40 MB of weights, trainable on every task."""

from __future__ import annotations

import warnings

import pytest
import torch

from omni.config import OmniConfig
from omni.finetune.data import IGNORE_INDEX, BatchBuilder, read_jsonl
from omni.finetune.init import fresh_model_and_processor, read_init_config

pytestmark = pytest.mark.filterwarnings("ignore")


def _meta_model(config: dict):
    from omni.model import OmniModel

    with torch.device("meta"):
        return OmniModel(OmniConfig.from_dict(config))


def test_preset_is_the_full_architecture_within_40_mb():
    config = read_init_config("bundled-small")
    model = _meta_model(config)
    params = sum(p.numel() for p in model.parameters())
    assert params * 4 <= 40 * 1024**2  # fp32 bytes
    text = config["text_config"]
    assert set(text["hybrid_override_pattern"]) == {"M", "E", "*"} and text["n_routed_experts"] >= 4
    assert model.sound_encoder is not None and model.sound_projection is not None
    assert config["vision_config"]["patch_size"] == 16
    assert config["vision_config"]["max_num_patches"] <= 1024
    assert config["vision_config"]["video_target_num_patches"] <= 64


def test_transformers_builds_the_same_parameters():
    from transformers import NemotronH_Omni_Reasoning_V3, NemotronH_Omni_Reasoning_V3_Config

    config = read_init_config("bundled-small")
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        reference = NemotronH_Omni_Reasoning_V3(NemotronH_Omni_Reasoning_V3_Config(**config))
    theirs = {n: tuple(p.shape) for n, p in reference.state_dict().items() if "summary_idxs" not in n}
    ours = _meta_model(config)
    assert sum(p.numel() for p in ours.parameters()) == sum(
        p.numel() for n, p in reference.named_parameters() if "summary_idxs" not in n
    )
    assert len(theirs) > 100


def test_forward_backward_on_every_task(data_dir):
    torch.manual_seed(0)
    model, processor = fresh_model_and_processor(read_init_config("bundled-small"))
    settings = processor.settings
    assert (settings.max_num_patches, settings.video_target_num_patches) == (1024, 64)
    records = read_jsonl(data_dir / "train.jsonl")
    one_each = list({r.task: r for r in records}.values())
    assert len(one_each) == 6
    batch = BatchBuilder(processor)(one_each)
    assert int(batch["image_grid_hw"].prod(-1).max()) <= settings.max_num_patches
    assert int(batch["video_grid_thw"][:, 1:].prod(-1).max()) <= 64
    out = model(**batch)
    out.loss.backward()
    assert torch.isfinite(out.loss) and (batch["labels"] != IGNORE_INDEX).any()
    grads = {
        n.split(".")[0] for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0
    }
    assert grads == {"language_model", "vision_model", "mlp1", "sound_encoder", "sound_projection"}
