"""The ``device`` option: pixels resized and normalised where the model runs, same values as on the CPU."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

import omni
from omni import InputError, input_builder
from omni.pixels import StreamingResize, resize_normalize

TEXT = "Look <image> and watch <video>"


def _inputs(processor, make, device=None):
    options = {} if device is None else {"device": device}
    return processor(
        text=TEXT, images=[make.image(90, 130, seed=1)], videos=[make.frames(5, 72, 128, seed=2)], **options
    )


def test_cpu_device_gives_the_default_output(processor, make):
    default, on_cpu = _inputs(processor, make), _inputs(processor, make, "cpu")
    assert set(default) == set(on_cpu)
    for key in default:
        assert torch.equal(default[key], on_cpu[key]), key


def test_device_option_reaches_chat_template(processor, make):
    messages = [
        {
            "role": "user",
            "content": [{"type": "image", "image": make.image(64, 64)}, {"type": "text", "text": "?"}],
        }
    ]
    out = processor.apply_chat_template(messages, tokenize=True, return_dict=True, device="cpu")
    assert out["pixel_values"].device.type == "cpu"


@pytest.mark.parametrize(
    ("device", "message"),
    [("not-a-device", "is not a torch device"), pytest.param("cuda", "CUDA is not available", id="cuda")],
)
def test_unusable_device_is_an_input_error(processor, make, device, message):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(InputError, match=message):
        _inputs(processor, make, device)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_pixels_match_the_cpu(processor, make):
    cpu, gpu = _inputs(processor, make), _inputs(processor, make, "cuda")
    for key in ("pixel_values", "pixel_values_videos"):
        assert gpu[key].device.type == "cuda"
        assert make.rel(gpu[key].cpu(), cpu[key]) < 1e-4, key
    assert torch.equal(gpu["input_ids"], cpu["input_ids"])


def _video_file(tmp_path, frames, height, width, seed):
    from omni.synthetic.writers import write_mp4

    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (frames, height, width, 3), dtype=np.uint8)
    return str(write_mp4(pixels, 4, tmp_path / f"clip{seed}.mp4"))


def _stream_on(processor, monkeypatch, device):
    """Make the processor resize video files on ``device`` as they decode, and forbid the resize after
    the decode, so that the output can only come from the frames resized while decoding."""
    makers = []

    def make_on_device(options):
        settings = processor._call_settings(options)

        def make():
            makers.append(processor.builder.streaming_resize(settings, torch.device(device)))
            return makers[-1]

        return make

    def no_resize_after_decode(*args, **kwargs):
        raise AssertionError("the video was resized again after it decoded")

    monkeypatch.setattr(processor, "_streaming_resize", make_on_device)
    monkeypatch.setattr(input_builder, "resize_normalize", no_resize_after_decode)
    return makers


def test_frames_resized_while_decoding_are_the_same(processor, make, tmp_path, monkeypatch):
    first = _video_file(tmp_path, 6, 72, 128, seed=1)
    second = _video_file(tmp_path, 5, 96, 64, seed=2)  # another size: the batch is padded
    text = ["Watch <video>", "and <video>"]
    one = processor(text=text[0], videos=[first], fps=4)
    two = processor(text=text, videos=[first, second], fps=4)
    messages = [{"role": "user", "content": [{"type": "video", "video": first, "fps": 4}]}]
    chat = processor.apply_chat_template(messages, tokenize=True, return_dict=True)

    makers = _stream_on(processor, monkeypatch, "cpu")
    assert torch.equal(
        processor(text=text[0], videos=[first], fps=4)["pixel_values_videos"], one["pixel_values_videos"]
    )
    streamed = processor(text=text, videos=[first, second], fps=4)
    for key in one:
        assert torch.equal(streamed[key], two[key]), key
    streamed_chat = processor.apply_chat_template(messages, tokenize=True, return_dict=True)
    assert torch.equal(streamed_chat["pixel_values_videos"], chat["pixel_values_videos"])
    assert len(makers) == 4


def test_streaming_resize_is_like_resizing_after(make):
    frames = make.frames(7, 50, 90, seed=3)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    resize = StreamingResize(lambda h, w: (h // 2 + 4, w // 3 + 8), mean, std, torch.device("cpu"))
    resize(4, make.frames(3, 40, 40, seed=4), 7)  # frames of another decoder, then these frames:
    assert resize.result(frames) is None
    for first, stop in ((3, 5), (0, 3), (5, 6)):  # out of order, in runs
        resize(first, frames[first:stop], 7)
    assert resize.result(frames) is None  # frame 6 has not arrived
    resize(6, frames[6:], 7)
    assert torch.equal(resize.result(frames), resize_normalize(frames, 29, 38, mean, std))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.skipif(
    not any(importlib.util.find_spec(name) for name in ("decord", "av")), reason="needs a video decoder"
)
def test_cuda_resizes_video_files_while_they_decode(processor, monkeypatch, make):
    path = str(Path(omni.__file__).parent / "examples" / "video-beeps.mp4")
    cpu = processor(text="Watch <video>", videos=[path], fps=4)

    def no_resize_after_decode(*args, **kwargs):
        raise AssertionError("the video was resized again after it decoded")

    monkeypatch.setattr(input_builder, "resize_normalize", no_resize_after_decode)
    gpu = processor(text="Watch <video>", videos=[path], fps=4, device="cuda")
    assert gpu["pixel_values_videos"].device.type == "cuda"
    assert make.rel(gpu["pixel_values_videos"].cpu(), cpu["pixel_values_videos"]) < 1e-4
