"""The audio encoder (subsampling and layers) replayed from a CUDA graph gives the eager encoder's outputs
bit for bit: for new inputs of a captured shape, beside a shape seen once, and after a weight changes in
place (which drops the graphs). Skipped without CUDA."""

from __future__ import annotations

import pytest
import torch
from parakeet_weights import randomise

from encoders import fast_path
from encoders.parakeet import ParakeetSoundEncoder
from encoders.parakeet_config import ParakeetConfig
from encoders.parakeet_graphs import GRAPHS_ENV

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _encoder() -> ParakeetSoundEncoder:
    config = ParakeetConfig(
        hidden_size=1024, num_attention_heads=8, intermediate_size=4096, conv_kernel_size=9,
        num_hidden_layers=2, num_mel_bins=128, subsampling_conv_channels=256,
    )  # fmt: skip
    encoder = ParakeetSoundEncoder(config).cuda().eval()
    randomise(encoder, seed=0)
    return encoder.bfloat16()


def _clips(frames: list[int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator(device="cuda").manual_seed(seed)
    features = torch.zeros(len(frames), max(frames), 128, device="cuda", dtype=torch.bfloat16)
    mask = torch.zeros(len(frames), max(frames), dtype=torch.bool, device="cuda")
    for row, count in enumerate(frames):
        features[row, :count] = torch.randn(count, 128, device="cuda", generator=generator).bfloat16()
        mask[row, :count] = True
    return features, mask


def _eager(encoder, batches, monkeypatch):
    monkeypatch.setenv(GRAPHS_ENV, "1")
    try:
        return [encoder(features, mask) for features, mask in batches]
    finally:
        monkeypatch.delenv(GRAPHS_ENV)


def test_replayed_layers_equal_eager(monkeypatch):
    encoder = _encoder()
    graphs = encoder.encoder.layer_graphs
    # three batches of one shape (other lengths inside it), then a shape seen once
    batches = [_clips([3000, 2100, 333], 1), _clips([3000, 3000, 1], 2), _clips([2999, 17, 3000], 3)]
    batches.append(_clips([1000, 640], 4))
    with torch.no_grad():
        eager = _eager(encoder, batches, monkeypatch)
        first = encoder(*batches[0])
        assert not graphs.graphs  # a shape's first call runs eagerly
        replayed = [encoder(features, mask) for features, mask in batches]
        assert len(graphs.graphs) == 1  # captured on the shape's second call; the last shape seen once
    assert torch.equal(first[0], eager[0][0])
    for (hidden, kept), (hidden_eager, kept_eager) in zip(replayed, eager, strict=True):
        assert torch.equal(kept, kept_eager)
        assert torch.equal(hidden, hidden_eager)
    assert not fast_path._FAILED


def test_changed_weights_drop_the_graphs(monkeypatch):
    encoder = _encoder()
    graphs = encoder.encoder.layer_graphs
    batch = _clips([1600, 800], 5)
    with torch.no_grad():
        encoder(*batch)
        encoder(*batch)
        assert len(graphs.graphs) == 1
        encoder.encoder.layers[1].conv.norm.running_var.mul_(2.0)  # folded into the convolution kernel
        encoder.encoder.layers[0].feed_forward1.linear1.weight.mul_(0.5)
        encoder.encoder.subsampling.layers[0].weight.mul_(0.5)  # folded into the first convolution's taps
        after = [encoder(*batch), encoder(*batch)]  # eager, then captured anew
        assert len(graphs.graphs) == 1
        (eager,) = _eager(encoder, [batch], monkeypatch)
    for hidden, _ in after:
        assert torch.equal(hidden, eager[0])


def test_captured_under_inference_mode_replays_outside_it(monkeypatch):
    """A server may warm up under `torch.inference_mode` and serve under `torch.no_grad`: the graph's own
    input buffers must take the later calls' inputs."""
    encoder = _encoder()
    batches = [_clips([1200, 700], 6), _clips([1200, 90], 7)]
    with torch.no_grad():
        eager = _eager(encoder, batches, monkeypatch)
    with torch.inference_mode():
        encoder(*batches[0])
        encoder(*batches[0])  # captured here
    assert len(encoder.encoder.layer_graphs.graphs) == 1
    with torch.no_grad():
        replayed = [encoder(features, mask) for features, mask in batches]
    for (hidden, _), (hidden_eager, _) in zip(replayed, eager, strict=True):
        assert torch.equal(hidden, hidden_eager)


def test_a_replayed_encode_of_a_host_mask_never_waits_for_the_gpu(monkeypatch):
    """The mask as the processor hands it over (on the host) is checked and counted there: the encode, from
    the checks to the replay, queues its work without one read back (torch's sync debug mode raises on
    any), and gives the outputs of the mask on the GPU."""
    encoder = _encoder()
    features, mask = _clips([2400, 1300, 5], 8)
    host_mask, final = mask.cpu(), torch.tensor([False, True, True])
    with torch.no_grad():
        (eager,) = _eager(encoder, [(features, mask)], monkeypatch)
        encoder(features, host_mask, final)
        encoder(features, host_mask, final)  # captured here
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            hidden, kept = encoder(features, host_mask, final)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        on_gpu = encoder(features, mask, final.cuda())
    assert torch.equal(hidden, eager[0])
    assert torch.equal(kept, on_gpu[1])
    assert kept.sum(1).tolist() == [300, 163, 1]  # the first clip is not final: no trailing output
