"""Parakeet encoder against transformers 5.23: checkpoint keys, parity, padded batches, long audio."""

import json
import re

import pytest
import torch
from parakeet_weights import randomise
from safetensors.torch import load_file
from transformers import (
    NemotronH_Omni_Reasoning_V3,
    NemotronH_Omni_Reasoning_V3_Config,
    ParakeetEncoder,
    ParakeetEncoderConfig,
)

from encoders.audio_clips import AudioClipper, audio_token_count
from encoders.errors import EncoderInputError
from encoders.mel import LogMelFrontEnd
from encoders.parakeet import ParakeetSoundEncoder
from encoders.parakeet_config import ParakeetConfig

N_MELS = 16
AUDIO_CONFIG = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "num_mel_bins": N_MELS,
    "subsampling_conv_channels": 8,
    "conv_kernel_size": 5,
    "projection_hidden_size": 48,
    "projection_bias": False,
    "sampling_rate": 16000,
}


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture(scope="module")
def saved_omni(tmp_path_factory):
    """A tiny transformers omni model with an audio tower, written by `save_pretrained`."""
    torch.manual_seed(0)
    config = NemotronH_Omni_Reasoning_V3_Config(
        text_config=dict(
            hidden_size=32, num_hidden_layers=2, hybrid_override_pattern="M*", vocab_size=64,
            num_attention_heads=2, num_key_value_heads=1, head_dim=16, mamba_num_heads=4, mamba_head_dim=8,
            ssm_state_size=8, n_groups=1, intermediate_size=64, chunk_size=8,
        ),
        vision_config=dict(
            hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
            patch_size=16, image_size=64, video_temporal_patch_size=2,
        ),
        audio_config=dict(AUDIO_CONFIG),
        vision_hidden_size=32, projector_hidden_size=48, audio_token_id=5, image_token_id=6,
    )  # fmt: skip
    model = NemotronH_Omni_Reasoning_V3(config).eval()
    randomise(model.audio_tower)
    path = tmp_path_factory.mktemp("omni")
    model.save_pretrained(path)
    return model, path


@pytest.fixture(scope="module")
def ours(saved_omni):
    _, path = saved_omni
    audio_config = json.loads((path / "config.json").read_text())["audio_config"]
    weights = load_file(path / "model.safetensors")
    encoder = ParakeetSoundEncoder.from_config(audio_config).eval()
    prefix = "sound_encoder."
    encoder.load_state_dict(
        {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}, strict=True
    )
    return encoder


@pytest.fixture(scope="module")
def front_end():
    return LogMelFrontEnd(n_mels=N_MELS)


def waves(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [0.5 * torch.randn(n, generator=g) for n in lengths]


def test_state_dict_keys_equal_checkpoint_keys(saved_omni, ours):
    _, path = saved_omni
    stored = load_file(path / "model.safetensors").keys()
    expected = {k[len("sound_encoder.") :] for k in stored if k.startswith("sound_encoder.")}
    assert any(k.startswith("encoder.subsampling.") for k in expected)
    assert any(k.startswith("encoder.layers.1.") for k in expected)
    assert {k for k in stored if k.startswith("sound_projection.")}  # the omni model's adapter
    ignored = [re.compile(p) for p in ParakeetSoundEncoder.IGNORED_CHECKPOINT_KEYS]
    assert not any(p.search(k) for p in ignored for k in ours.state_dict())
    checkpoint_side = {k for k in expected if not any(p.search(k) for p in ignored)}
    assert set(ours.state_dict()) == checkpoint_side
    assert ParakeetSoundEncoder.IGNORED_CHECKPOINT_KEYS[0] and re.search(
        ParakeetSoundEncoder.IGNORED_CHECKPOINT_KEYS[0], "encoder.feature_extractor.featurizer.fb"
    )


def test_parity_with_transformers_tower(saved_omni, ours, front_end):
    model, _ = saved_omni
    tower = model.audio_tower
    lengths = [32000, 1280 * 7, 1280 * 3 + 500, 900]  # 200, 56 and 27 frames: two with a trailing output
    features, mask = front_end(waves(lengths))
    with torch.no_grad():
        reference = tower(input_features=features, attention_mask=mask).last_hidden_state
        hidden, kept = ours(features, mask)
    valid = tower._get_subsampling_output_length(mask.sum(-1))
    for row, n in enumerate(valid.tolist()):
        assert rel_err(hidden[row, :n], reference[row, :n]) < 1e-4

    # each audio alone, trimmed the way the omni model trims (`mask.sum() + 1` frames)
    for row, wave in enumerate(waves(lengths)):
        f, m = front_end([wave])
        with torch.no_grad():
            ref = tower(input_features=f, attention_mask=m).last_hidden_state[0]
            count = int(tower._get_subsampling_output_length(m.sum(-1) + 1)[0])
            alone, alone_kept = ours(f, m)
        assert count == audio_token_count(lengths[row]) == int(kept[row].sum()) == int(alone_kept.sum())
        assert rel_err(alone[0][alone_kept[0]], ref[:count]) < 1e-4
        # the same clip inside the padded batch, trailing output included
        assert rel_err(hidden[row][kept[row]], ref[:count]) < 1e-4


def test_kept_outputs_match_the_omni_models_audio_features(saved_omni, ours, front_end):
    model, _ = saved_omni
    features, mask = front_end(waves([16000]))
    with torch.no_grad():
        reference = model.get_audio_features(features, mask)
        hidden, kept = ours(features, mask)
    n = int(kept.sum())
    assert reference.pooler_output.shape[0] == n == audio_token_count(16000)
    assert rel_err(hidden[kept], reference.last_hidden_state[0, :n]) < 1e-4


def test_no_mask_matches_transformers(saved_omni, ours):
    tower = saved_omni[0].audio_tower
    features = torch.randn(2, 45, N_MELS)
    with torch.no_grad():
        reference = tower(input_features=features).last_hidden_state
        hidden, kept = ours(features)
    assert kept.all() and rel_err(hidden, reference) < 1e-4


def test_padded_batch_equals_clips_one_by_one(ours, front_end):
    clips = waves([48000, 700, 12800, 5120], seed=3)  # one clip far shorter than the longest
    features, mask = front_end(clips)
    final = torch.tensor([True, True, False, True])
    with torch.no_grad():
        hidden, kept = ours(features, mask, final)
        for row, clip in enumerate(clips):
            f, m = front_end([clip])
            alone, alone_kept = ours(f, m, final[row : row + 1])
            assert torch.equal(kept[row].sum(), alone_kept[0].sum())
            assert rel_err(hidden[row][kept[row]], alone[0][alone_kept[0]]) < 1e-5
    # a non-final clip keeps only its valid outputs: 12800 samples = 80 frames = 10 tokens
    assert int(kept[2].sum()) == 10 and int(kept[3].sum()) == audio_token_count(5120) == 5


def test_kept_counts_on_the_host_match_the_kept_mask(ours, front_end):
    """What a caller counts on the host (to gather rows without reading the GPU) is what `forward` keeps:
    with a mask and final flags, with a mask only, and with no mask."""
    features, mask = front_end(waves([48000, 700, 12800, 5120], seed=3))
    final = torch.tensor([True, True, False, True])
    with torch.no_grad():
        for m, f in ((mask, final), (mask, None), (None, None)):
            _, kept = ours(features, m, f)
            counts = ours.kept_counts(features.shape[0], features.shape[1], m, f)
            assert counts.tolist() == kept.sum(-1).tolist()
            # the kept outputs are each row's first ones
            assert torch.equal(kept, torch.arange(kept.shape[1])[None, :] < counts[:, None])


def test_long_audio_split_and_joined(ours, front_end):
    clip_seconds = 0.64  # 10240 samples, 8 tokens per full clip
    lengths = [3 * 10240 + 700, 2 * 10240, 5000, 10240 + 1600]
    audios = waves(lengths, seed=5)
    outputs = ours.encode_waveforms(audios, front_end, clip_seconds=clip_seconds, batch_size=3)
    clipper = AudioClipper(clip_seconds)
    for audio, out, n in zip(audios, outputs, lengths):
        assert out.shape == (audio_token_count(n), AUDIO_CONFIG["hidden_size"])
        pieces, plan = clipper.split(audio)
        expected = []
        with torch.no_grad():
            for piece, clip in zip(pieces, plan):
                f, m = front_end([piece])
                h, k = ours(f, m, torch.tensor([clip.final]))
                expected.append(h[0][k[0]])
        assert rel_err(out, torch.cat(expected)) < 1e-5


def test_default_clips_of_a_long_recording(ours, front_end):
    audio = waves([65 * 16000 + 123], seed=6)[0]  # 30 s + 30 s + 5 s
    (out,) = ours.encode_waveforms([audio], front_end, batch_size=2)
    assert out.shape[0] == audio_token_count(audio.numel()) == 375 + 375 + 63
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(
    "options",
    [
        {"scale_input": True, "attention_bias": True, "convolution_bias": False},
        {"scale_input": False, "attention_bias": False, "hidden_act": "relu", "num_mel_bins": 40},
    ],
)
def test_options_parity_with_parakeet_encoder(options):
    torch.manual_seed(1)
    config = {**AUDIO_CONFIG, **options}
    reference = ParakeetEncoder(
        ParakeetEncoderConfig(**{k: v for k, v in config.items() if "projection" not in k})
    )
    randomise(reference.eval())
    encoder = ParakeetSoundEncoder.from_config(config).eval()
    encoder.load_state_dict({f"encoder.{k}": v for k, v in reference.state_dict().items()}, strict=True)
    front_end = LogMelFrontEnd(n_mels=config["num_mel_bins"])
    features, mask = front_end(waves([20000, 6400]))
    with torch.no_grad():
        ref = reference(input_features=features, attention_mask=mask).last_hidden_state
        hidden, _ = encoder(features, mask)
    for row, n in enumerate(reference._get_subsampling_output_length(mask.sum(-1)).tolist()):
        assert rel_err(hidden[row, :n], ref[row, :n]) < 1e-4


def test_legacy_sound_config_defaults():
    legacy = {"model_type": "parakeet", "hidden_size": 64, "num_attention_heads": 4, "num_mel_bins": 128}
    config = ParakeetConfig.from_dict(legacy)
    assert config.attention_bias is False and config.scale_input is False and config.conv_kernel_size == 9
    assert ParakeetConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="power of"):
        ParakeetConfig(subsampling_factor=6)


def test_bad_input_raises_typed_errors(ours):
    features, mask = torch.randn(2, 40, N_MELS), torch.ones(2, 40, dtype=torch.bool)
    cases = [
        ((torch.randn(40, N_MELS), None), "expected \\[clips, frames, mel bins\\]"),
        ((torch.randn(2, 40, N_MELS + 1), None), "mel bins, but the encoder expects"),
        ((features, mask[:, :30]), "mask: expected shape"),
        (
            (features, torch.cat([torch.zeros(2, 1, dtype=torch.bool), mask[:, 1:]], 1)),
            "valid frames must come first",
        ),
        ((torch.randn(0, 40, N_MELS), None), "empty batch"),
    ]
    for args, message in cases:
        with pytest.raises(EncoderInputError, match=message):
            ours(*args)
    with pytest.raises(EncoderInputError, match="one flag per clip"):
        ours(features, mask, torch.tensor([True, False, True]))
    with pytest.raises(EncoderInputError, match="audio 1"):
        ours.encode_waveforms([torch.randn(100), torch.zeros(0)], LogMelFrontEnd(n_mels=N_MELS))
    with pytest.raises(ValueError, match="mel bins"):
        ours.encode_waveforms([torch.randn(100)], LogMelFrontEnd(n_mels=80))


def test_copies_start_without_graphs_on_their_own_layers():
    """A copy (or a pickle) of the encoder must not share the CUDA graphs of the original: they replay
    on the original's memory. On the CPU nothing is captured; the layers run as modules."""
    import copy
    import threading

    encoder = ParakeetSoundEncoder(ParakeetConfig.from_dict(AUDIO_CONFIG)).eval()
    features = torch.randn(2, 40, N_MELS)
    with torch.no_grad():
        first, second = encoder(features), encoder(features)
    assert torch.equal(first[0], second[0]) and not encoder.encoder.layer_graphs.graphs
    # a stand-in for a captured graph, which cannot be copied either
    encoder.encoder.layer_graphs.graphs[("captured",)] = threading.Lock()
    clone = copy.deepcopy(encoder)
    graphs = clone.encoder.layer_graphs
    assert graphs is not encoder.encoder.layer_graphs and not graphs.graphs
    assert graphs._parts[0] is clone.encoder.subsampling and graphs._parts[1] is clone.encoder.layers
    assert not graphs.usable(features)  # CPU tensors


def test_subsampling_leaves_the_callers_features_as_they_were(ours):
    """Inference zeroes the frames past each clip's length on a copy, never in the caller's tensor."""
    torch.manual_seed(0)
    features = torch.randn(2, 40, ours.config.num_mel_bins)
    before = features.clone()
    with torch.no_grad():
        ours.encoder.subsampling(features, torch.tensor([40, 25]))
    assert torch.equal(features, before)


def test_layer_graphs_see_every_change_to_the_layers_weights_and_hooks():
    """The graphs' check of the encoder (kept lists, re-listed after a registration) notices weights
    changed in place, parameters, buffers and submodules replaced, and hooks added."""
    encoder = ParakeetSoundEncoder(ParakeetConfig.from_dict(AUDIO_CONFIG)).eval()
    graphs = encoder.encoder.layer_graphs
    layer = encoder.encoder.layers[0]
    seen = [graphs._weights_signature()]

    def changed() -> bool:
        seen.append(graphs._weights_signature())
        return seen[-1] != seen[-2]

    assert not changed()
    with torch.no_grad():
        layer.feed_forward1.linear1.weight.add_(1.0)
    assert changed()
    layer.feed_forward1.linear1.weight = torch.nn.Parameter(
        torch.zeros_like(layer.feed_forward1.linear1.weight)
    )
    assert changed()
    state = {k: v.clone() for k, v in encoder.encoder.layers.state_dict().items()}
    encoder.encoder.layers.load_state_dict(state, assign=True)
    assert changed()
    layer.conv.norm.running_mean = torch.ones_like(layer.conv.norm.running_mean)
    assert changed()
    layer.feed_forward2 = type(layer.feed_forward2)(encoder.config)
    assert changed()
    with torch.no_grad():
        encoder.encoder.subsampling.linear.bias.add_(1.0)  # captured with the layers
    assert changed()
    assert layer.feed_forward2 in graphs._walk()[1]
    hook = layer.feed_forward2.register_forward_hook(lambda *args: None)
    assert any(m._forward_hooks for m in graphs._walk()[1])
    hook.remove()
