"""OmniModel against transformers 5.23's NemotronH_Omni_Reasoning_V3 on a tiny random checkpoint.

Where transformers breaks (video ``forward``: it ``torch.cat``s a tensor; EVS: it assumes square
frames), the reference is its own building blocks composed correctly.
"""

from __future__ import annotations

import pytest
import torch

from tokenreduce import evs_retained_count

REFERENCE_KEYS = (
    "input_ids",
    "attention_mask",
    "pixel_values",
    "image_grid_hw",
    "input_features",
    "input_features_mask",
)

pytestmark = pytest.mark.filterwarnings("ignore")


def _reference_inputs(inputs: dict) -> dict:
    return {k: v for k, v in inputs.items() if k in REFERENCE_KEYS}


@pytest.mark.parametrize(
    "case",
    ["one image", "two images", "audio", "image and audio"],
)
@torch.no_grad()
def test_logits_match_transformers(case, model, reference_model, processor, make):
    kwargs = {
        "one image": dict(text="<image> What is this?", images=[make.image(300, 500)]),
        "two images": dict(
            text="<image><image> Compare.", images=[make.image(300, 500), make.image(700, 200, 1)]
        ),
        "audio": dict(text="<so_embedding> What do you hear?", audio=[make.noise(2.3)]),
        "image and audio": dict(
            text="<image> <so_embedding> Both.", images=[make.image(256, 256)], audio=[make.noise(1.1)]
        ),
    }[case]
    inputs = processor(return_tensors="pt", **kwargs)
    ours = model(**inputs).logits
    theirs = reference_model(**_reference_inputs(inputs)).logits
    assert ours.shape == theirs.shape
    assert make.rel(ours, theirs) <= 1e-4


@torch.no_grad()
def test_greedy_tokens_match_transformers(model, reference_model, processor, make):
    inputs = processor(text="<image> Describe it.", images=[make.image(320, 480)], return_tensors="pt")
    ours = model.generate(**inputs, max_new_tokens=8, eos_token_id=[])
    theirs = reference_model.generate(**_reference_inputs(inputs), max_new_tokens=8, do_sample=False)
    assert ours[0, -8:].tolist() == theirs[0, -8:].tolist()
    assert torch.equal(ours[:, : inputs["input_ids"].shape[1]], inputs["input_ids"])


def _reference_video_logits(reference_model, inputs: dict, pruning_rate: float) -> torch.Tensor:
    """transformers' tower, projector, EVS and LM composed on the video's true grid."""
    from transformers.models.nemotron_h_omni.modeling_nemotron_h_omni import compute_retention_mask

    video = inputs["pixel_values_videos"]
    if video.shape[0] % 2:
        video = torch.cat([video, video[-1:]])
    tubelets, _, height, width = video.shape[0] // 2, *video.shape[1:]
    packed = video.reshape(tubelets, 6, height, width)
    features = reference_model.vision_model(packed).features
    rows, cols = height // 16, width // 16
    embeds = reference_model.project_vision_features(features, rows, cols).reshape(-1, 32)
    ids = inputs["input_ids"]
    text = reference_model.get_input_embeddings()(ids)
    placeholders = ids == 18
    text[placeholders] = embeds
    keep = torch.ones_like(ids, dtype=torch.bool)
    if pruning_rate > 0:
        mask = compute_retention_mask(
            video_embeds=embeds, thw=(tubelets, rows // 2, cols // 2), spatial_merge_size=1, q=pruning_rate
        )
        keep[placeholders] = mask
    return reference_model.language_model(inputs_embeds=text[keep][None]).logits


@pytest.mark.parametrize("rate", [0.0, 0.5])
@torch.no_grad()
def test_video_16x9_matches_reference_blocks(rate, model, reference_model, processor, make):
    inputs = processor(text="<video> What moves?", videos=[make.frames(7, 90, 160)], return_tensors="pt")
    rows, cols = inputs["video_grid_thw"][0, 1:].tolist()
    assert rows != cols  # a 16:9 grid: transformers' own EVS path would reshape it as a square
    out = model(**inputs, video_pruning_rate=rate)
    theirs = _reference_video_logits(reference_model, inputs, rate)
    tubelets = 4
    kept = evs_retained_count(tubelets, rows // 2, cols // 2, rate)
    text_rows = int((inputs["mm_token_type_ids"] == 0).sum())
    assert out.logits.shape[1] == text_rows + kept
    assert make.rel(out.logits, theirs) <= 1e-4


@torch.no_grad()
def test_batch_of_two_videos_equals_each_alone(model, processor, make):
    clips = [make.frames(6, 90, 160, seed=1), make.frames(5, 120, 120, seed=2)]
    texts = ["<video> What moves here?", "<video> And here?"]
    batch = processor(text=texts, videos=clips, return_tensors="pt")
    for rate in (0.0, 0.5):
        out = model(**batch, video_pruning_rate=rate)
        for row, (text, clip) in enumerate(zip(texts, clips)):
            alone = model(**processor(text=text, videos=[clip], return_tensors="pt"), video_pruning_rate=rate)
            n = alone.logits.shape[1]
            assert int(out.attention_mask[row].sum()) == n
            assert make.rel(out.logits[row, -n:], alone.logits[0]) <= 1e-4


@torch.no_grad()
def test_mixed_image_audio_batch_equals_each_alone(model, processor, make):
    texts = ["<image> Look.", "<so_embedding> Listen to this clip please."]
    batch = processor(text=texts, images=[make.image(200, 300)], audio=[make.noise(1.7)], return_tensors="pt")
    out = model(**batch)
    singles = [
        processor(text=texts[0], images=[make.image(200, 300)], return_tensors="pt"),
        processor(text=texts[1], audio=[make.noise(1.7)], return_tensors="pt"),
    ]
    for row, single in enumerate(singles):
        alone = model(**single).logits
        n = alone.shape[1]
        assert make.rel(out.logits[row, -n:], alone[0]) <= 1e-4


@torch.no_grad()
def test_evs_in_bf16_keeps_the_tokens_the_released_rule_keeps(reference_dir, processor):
    """A bf16 model scores EVS in bf16, as the released code does: it keeps exactly the tokens
    transformers' `compute_retention_mask` keeps on the same embeddings. Scores taken in fp32 order the
    many near-ties of bf16 embeddings otherwise and keep other tokens."""
    import numpy as np
    from transformers.models.nemotron_h_omni.modeling_nemotron_h_omni import compute_retention_mask

    from omni import OmniModel

    model = OmniModel.from_pretrained(reference_dir, dtype=torch.bfloat16)
    # every frame new noise: every token changes, and their scores crowd into a few bf16 steps
    clip = torch.from_numpy(np.random.default_rng(3).integers(0, 256, (16, 3, 160, 160), dtype=np.uint8))
    inputs = processor(text="<video> What changes?", videos=[clip], return_tensors="pt")
    rate = 0.5
    (video,) = model.video_embeddings(
        inputs["pixel_values_videos"], inputs["video_frame_counts"], inputs["video_grid_thw"]
    )
    tubelets, rows, cols, width = video.shape
    mask = compute_retention_mask(
        video_embeds=video.reshape(-1, width), thw=(tubelets, rows, cols), spatial_merge_size=1, q=rate
    )
    ids = inputs["input_ids"]
    placeholders = inputs["mm_token_type_ids"] == 2
    expected = model.get_input_embeddings()(ids)
    expected[placeholders] = video.reshape(-1, width)
    keep = torch.ones_like(ids, dtype=torch.bool)
    keep[placeholders] = mask
    ours = model.embed_inputs(**inputs, video_pruning_rate=rate).inputs_embeds
    assert torch.equal(ours, expected[keep][None])
