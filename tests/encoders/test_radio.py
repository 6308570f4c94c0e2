"""RADIO vision tower: parity with transformers' Nemotron Omni tower, packing, checkpoint keys, bad input."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file

from encoders import EncoderInputError
from encoders.radio import RadioEncoder
from encoders.radio_config import RadioConfig

PREFIX = 5  # 2 cls + 3 register tokens in the tiny config below
TINY_VISION = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "patch_size": 4,
    "max_img_size": 64,  # a 16 × 16 position grid
    "num_cls_tokens": 2,
    "num_registers": 3,
    "video_temporal_patch_size": 2,
}
TINY_TEXT = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "layers_block_type": ["mamba", "attention"],
    "vocab_size": 64,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "mamba_num_heads": 4,
    "mamba_head_dim": 16,
    "ssm_state_size": 8,
    "n_groups": 1,
    "intermediate_size": 64,
}


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return float((ours - ref).abs().max() / ref.abs().max())


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A tiny transformers omni model with randomised vision weights, saved the released way."""
    from transformers import NemotronH_Omni_Reasoning_V3, NemotronH_Omni_Reasoning_V3_Config

    torch.manual_seed(0)
    config = NemotronH_Omni_Reasoning_V3_Config(
        vision_config=TINY_VISION,
        text_config=TINY_TEXT,
        vision_hidden_size=32,
        projector_hidden_size=64,
        image_token_id=5,
    )
    model = NemotronH_Omni_Reasoning_V3(config).eval()
    with torch.no_grad():
        for name, param in model.vision_model.named_parameters():
            # every tensor random, layer scales and norm gains around 1 so the signal stays O(1)
            around_one = "lambda" in name or ("norm" in name and name.endswith("weight"))
            param.copy_(torch.randn_like(param) * (0.2 if around_one else 0.5) + (1.0 if around_one else 0.0))
    directory = tmp_path_factory.mktemp("omni")
    model.save_pretrained(directory)
    tensors = load_file(os.path.join(directory, "model.safetensors"))
    vision_state = {
        k.removeprefix("vision_model."): v for k, v in tensors.items() if k.startswith("vision_model.")
    }
    vision_config = json.loads((directory / "config.json").read_text())["vision_config"]
    return model, vision_state, vision_config


@pytest.fixture(scope="module")
def encoder(reference):
    _, vision_state, vision_config = reference
    ours = RadioEncoder.from_config_dict(vision_config).eval()
    ours.load_checkpoint_state(vision_state)
    return ours


def reference_image_features(model, pixel_values, grid_hw) -> torch.Tensor:
    with torch.no_grad():
        packed = model.get_image_features(pixel_values, grid_hw, return_dict=True).last_hidden_state
    pieces, start = [], 0
    for rows, cols in grid_hw.tolist():
        pieces.append(packed[start + PREFIX : start + PREFIX + rows * cols])
        start += PREFIX + rows * cols
    return torch.cat(pieces)


def random_images(grids: list[tuple[int, int]], seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    grid_hw = torch.tensor(grids)
    return torch.randn(int(grid_hw.prod(-1).sum()), 48, generator=generator), grid_hw


# --------------------------------------------------------------------------------------------------
# checkpoint keys and config
# --------------------------------------------------------------------------------------------------
def test_state_dict_keys_equal_checkpoint_keys(reference, encoder):
    _, vision_state, _ = reference
    expected = {key for key in vision_state if not RadioEncoder.is_ignored_checkpoint_key(key)}
    assert set(encoder.state_dict()) == expected
    assert "radio_model.model.patch_generator.embedder.weight" in expected
    assert "radio_model.model.blocks.1.attn.qkv.weight" in expected
    assert "radio_model.model.patch_generator.cls_token.token" in expected
    assert RadioEncoder.is_ignored_checkpoint_key("radio_model.summary_idxs")
    assert RadioEncoder.is_ignored_checkpoint_key("radio_model.input_conditioner.norm_mean")
    for key, value in encoder.state_dict().items():
        assert tuple(value.shape) == tuple(vision_state[key].shape), key


def test_checkpoint_without_layer_scale_loads_as_identity(reference):
    _, vision_state, vision_config = reference
    released = {k: v for k, v in vision_state.items() if "layer_scale" not in k}
    released["radio_model.input_conditioner.norm_mean"] = torch.zeros(3, 1, 1)
    tower = RadioEncoder.from_config_dict(vision_config)
    tower.load_checkpoint_state(released)
    assert torch.equal(tower.blocks[0].layer_scale1.lambda1, torch.ones(32))


def test_checkpoint_mismatches_are_named(reference):
    _, vision_state, vision_config = reference
    tower = RadioEncoder.from_config_dict(vision_config)
    with pytest.raises(ValueError, match="unexpected keys.*blocks.9"):
        tower.load_checkpoint_state(
            {**vision_state, "radio_model.model.blocks.9.norm1.weight": torch.ones(32)}
        )
    missing = {k: v for k, v in vision_state.items() if not k.endswith("pos_embed")}
    with pytest.raises(ValueError, match="missing keys.*pos_embed"):
        tower.load_checkpoint_state(missing)
    wrong = {**vision_state, "radio_model.model.patch_generator.pos_embed": torch.zeros(1, 100, 32)}
    with pytest.raises(ValueError, match="pos_embed has shape"):
        tower.load_checkpoint_state(wrong)


def test_legacy_config_of_the_released_checkpoint():
    legacy = {
        "args": {
            "model": "vit_huge_patch16_224",
            "cpe_max_size": 2048,
            "register_multiple": 10,
            "cls_token_per_teacher": True,
            "teachers": [{"name": "siglip"}, {"name": "dino"}, {"name": "sam"}, {"name": "siglip"}],
            "min_num_patches": 1024,
            "max_num_patches": 13312,
        },
        "patch_size": 16,
        "max_resolution": 2048,
        "preferred_resolution": [512, 512],
        "video_temporal_patch_size": 2,
        "separate_video_embedder": True,
        "version": "radio_v2.5-h",
    }
    config = RadioConfig.from_dict(legacy)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (1280, 32, 16)
    assert config.intermediate_size == 5120 and config.head_dim == 80
    assert (config.num_cls_tokens, config.num_registers) == (3, 7)  # 3 distinct teachers, padded to 10
    assert config.position_grid_side == 128 and config.video_patch_dim == 1536 and config.image_size == 512
    assert RadioConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="not a supported ViT"):
        RadioConfig.from_dict({**legacy, "args": {**legacy["args"], "model": "vit_giant_patch14_224"}})
    with pytest.raises(ValueError, match="SwiGLU"):
        RadioConfig.from_dict({**TINY_VISION, "use_swiglu_ffn": True})


# --------------------------------------------------------------------------------------------------
# parity with transformers
# --------------------------------------------------------------------------------------------------
def test_packed_images_match_transformers(reference, encoder):
    model, _, _ = reference
    # 20 × 4 is taller than the 16 × 16 position grid (upsampled CPE), the others crop it
    pixel_values, grid_hw = random_images([(4, 6), (8, 4), (6, 6), (20, 4)])
    expected = reference_image_features(model, pixel_values, grid_hw)
    with torch.no_grad():
        ours = encoder.encode_images(pixel_values, grid_hw)
    assert ours.shape == (pixel_values.shape[0], 32)
    assert rel_err(ours, expected) <= 1e-4


def test_video_with_odd_frame_count_matches_transformers(reference, encoder):
    model, _, _ = reference
    frames = torch.randn(5, 3, 24, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = model.get_video_features(frames, return_dict=True).last_hidden_state[:, PREFIX:]
        ours = encoder.encode_video(frames, tubelets_per_batch=2)
    assert ours.shape == (3, 6 * 8, 32)
    assert rel_err(ours, expected) <= 1e-4
    # the last tubelet repeats the fifth frame
    with torch.no_grad():
        padded = encoder.encode_video(frames[[4, 4]])
    assert rel_err(ours[-1], padded[0]) <= 1e-5


def test_videos_of_one_size_share_passes_and_match_one_by_one(encoder, monkeypatch):
    """Training batches hold many short clips: equal-sized ones run through the ViT together."""
    gen = torch.Generator().manual_seed(4)
    videos = [torch.randn(n, 3, h, w, generator=gen) for n, h, w in [(5, 24, 32), (3, 16, 16), (4, 24, 32)]]
    with torch.no_grad():
        alone = [encoder.encode_video(v) for v in videos]
        passes = []
        run_blocks = encoder.run_blocks
        monkeypatch.setattr(
            encoder, "run_blocks", lambda hidden, *a: passes.append(hidden.shape[0]) or run_blocks(hidden, *a)
        )
        together = encoder.encode_videos(videos)
    assert sorted(passes) == [2, 5]  # 3 + 2 tubelets of the 24 x 32 videos in one pass, the 16 x 16 one alone
    for ours, expected in zip(together, alone):
        assert ours.shape == expected.shape and rel_err(ours, expected) <= 1e-5


def test_tubelet_layout_is_frame_major(encoder):
    frames = torch.randn(2, 3, 8, 4)
    tubelets, rows, cols = encoder.video_to_tubelets(frames)
    assert (rows, cols) == (2, 1) and tubelets.shape == (1, 2, 96)
    # patch (1, 0) of the tubelet: frame 0's (C, 4, 4) block, then frame 1's
    expected = torch.cat([frames[0, :, 4:8, 0:4].reshape(-1), frames[1, :, 4:8, 0:4].reshape(-1)])
    assert torch.equal(tubelets[0, 1], expected)


# --------------------------------------------------------------------------------------------------
# packing
# --------------------------------------------------------------------------------------------------
def test_packed_equals_images_one_by_one(encoder):
    pixel_values, grid_hw = random_images([(4, 6), (8, 4), (6, 6)], seed=3)
    with torch.no_grad():
        packed = encoder.encode_images(pixel_values, grid_hw)
        singles = torch.cat(
            [
                encoder.encode_images(chunk, grid[None])
                for chunk, grid in zip(pixel_values.split(grid_hw.prod(-1).tolist()), grid_hw)
            ]
        )
    assert rel_err(packed, singles) <= 1e-5


def test_block_diagonal_mode_matches_per_image(encoder):
    pixel_values, grid_hw = random_images([(4, 6), (2, 2), (6, 6)], seed=4)
    with torch.no_grad():
        per_image = encoder.encode_images(pixel_values, grid_hw)
        encoder.packed_attention_mode = "block_diagonal"
        try:
            masked = encoder.encode_images(pixel_values, grid_hw)
        finally:
            encoder.packed_attention_mode = "per_image"
    assert rel_err(masked, per_image) <= 1e-5
    with pytest.raises(ValueError, match="packed attention mode"):
        encoder.packed_attention_mode = "flash"


def test_prefix_tokens_are_dropped(encoder):
    pixel_values, grid_hw = random_images([(3, 5), (2, 4)], seed=5)
    generator = encoder.patch_generator
    with torch.no_grad():
        tokens = generator.embed_packed_images(pixel_values, [(3, 5), (2, 4)])
        full = encoder.run_blocks(tokens[None], [PREFIX + 15, PREFIX + 8])[0]
        ours = encoder.encode_images(pixel_values, grid_hw)
    assert full.shape[0] == ours.shape[0] + 2 * PREFIX
    patch_rows = torch.cat([full[PREFIX : PREFIX + 15], full[2 * PREFIX + 15 :]])
    torch.testing.assert_close(ours, patch_rows, rtol=0, atol=0)


def test_gradients_and_checkpointing_agree(reference):
    _, vision_state, vision_config = reference
    tower = RadioEncoder.from_config_dict(vision_config).train()
    tower.load_checkpoint_state(vision_state)
    pixel_values, grid_hw = random_images([(4, 4), (2, 6)], seed=6)

    def grad_of_embedder(checkpointing: bool) -> torch.Tensor:
        tower.zero_grad()
        tower.gradient_checkpointing = checkpointing
        tower.encode_images(pixel_values, grid_hw).square().mean().backward()
        return tower.patch_generator.embedder.weight.grad.clone()

    plain = grad_of_embedder(False)
    assert plain.abs().sum() > 0
    assert rel_err(grad_of_embedder(True), plain) <= 1e-5


def test_bfloat16_tower_takes_float32_input(encoder):
    tower = RadioEncoder(encoder.config).to(torch.bfloat16).eval()
    pixel_values, grid_hw = random_images([(4, 6)], seed=7)
    with torch.no_grad():
        out = tower.encode_images(pixel_values, grid_hw)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()


# --------------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("pixel_values", "grid_hw", "message"),
    [
        (torch.randn(24, 47), torch.tensor([[4, 6]]), "pixel_values must be \\[patches, 48\\]"),
        (torch.randn(24, 4, 12), torch.tensor([[4, 6]]), "pixel_values must be \\[patches, 48\\]"),
        (torch.randn(24, 48), torch.tensor([[4, 5]]), "describes 20 patches but pixel_values holds 24"),
        (torch.randn(24, 48), torch.tensor([4, 6]), "grid_hw must be \\[n_images, 2\\]"),
        (torch.randn(24, 48), torch.tensor([[4.0, 6.0]]), "grid_hw must hold integers"),
        (torch.randn(24, 48), torch.tensor([[-4, -6]]), "image 0: grid -4×-6 must be positive"),
        (torch.randn(24, 48), torch.tensor([[4, 6], [0, 3]]), "image 1: grid 0×3 must be positive"),
        (torch.randn(0, 48), torch.zeros(0, 2, dtype=torch.long), "empty input"),
        (torch.full((24, 48), float("nan")), torch.tensor([[4, 6]]), "NaN or infinite"),
        (
            torch.randn(24, 48).index_put((torch.tensor([3]), torch.tensor([5])), torch.tensor(float("inf"))),
            torch.tensor([[4, 6]]),
            "contain 1 NaN or infinite",
        ),
        (torch.zeros(24, 48, dtype=torch.uint8), torch.tensor([[4, 6]]), "normalised floats"),
    ],
)
def test_bad_images_raise_encoder_input_error(encoder, pixel_values, grid_hw, message):
    with pytest.raises(EncoderInputError, match=message):
        encoder.encode_images(pixel_values, grid_hw)


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        (torch.randn(2, 4, 8, 8), "frames must be \\[T, 3, H, W\\]"),
        (torch.randn(3, 8, 8), "frames must be \\[T, 3, H, W\\]"),
        (torch.randn(2, 3, 10, 8), "10×8 is not a multiple of the patch size 4"),
        (torch.randn(0, 3, 8, 8), "empty input"),
        (torch.full((2, 3, 8, 8), float("-inf")), "NaN or infinite"),
        (torch.zeros(2, 3, 8, 8, dtype=torch.uint8), "normalised floats"),
    ],
)
def test_bad_video_raises_encoder_input_error(encoder, frames, message):
    with pytest.raises(EncoderInputError, match=message):
        encoder.encode_video(frames)


def test_ragged_grid_list_raises_encoder_input_error(encoder):
    with pytest.raises(EncoderInputError, match="grid_hw is not"):
        encoder.encode_images(torch.randn(24, 48), [[4, 6], [3]])


def test_video_needs_a_video_embedder(encoder):
    image_only = RadioEncoder(RadioConfig(**{**vars(encoder.config), "video_temporal_patch_size": None}))
    assert "radio_model.model.patch_generator.video_embedder.weight" not in image_only.state_dict()
    with pytest.raises(EncoderInputError, match="no video embedder"):
        image_only.encode_video(torch.randn(2, 3, 8, 8))


def test_runs_of_equal_lengths():
    from encoders.radio_blocks import equal_runs

    assert equal_runs([5, 5, 3, 3, 3, 5]) == [(0, 2, 5), (10, 3, 3), (19, 1, 5)]
    assert equal_runs([7]) == [(0, 1, 7)]


def test_packed_attention_batches_equal_runs_with_the_numbers_of_one_at_a_time(monkeypatch):
    """Pages of one size attend in one batched call; each still sees only itself."""
    from encoders import radio_blocks

    torch.manual_seed(0)
    lengths = [4, 4, 4, 7, 4, 4]
    qkv = torch.randn(1, sum(lengths), 3, 2, 8)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    calls = []
    real = radio_blocks.attention
    monkeypatch.setattr(radio_blocks, "attention", lambda *a: calls.append(a[0].shape) or real(*a))
    got = radio_blocks.packed_attention(q, k, v, lengths)
    assert calls == [(3, 2, 4, 8), (1, 2, 7, 8), (2, 2, 4, 8)]
    one_at_a_time = torch.cat(
        [
            torch.nn.functional.scaled_dot_product_attention(a, b, c)
            for a, b, c in zip(q.split(lengths, 2), k.split(lengths, 2), v.split(lengths, 2))
        ],
        dim=2,
    )
    torch.testing.assert_close(got, one_at_a_time, rtol=1e-6, atol=1e-6)
