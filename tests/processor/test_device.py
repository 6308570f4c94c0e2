"""The ``device`` option: pixels resized and normalised where the model runs, same values as on the CPU."""

from __future__ import annotations

import pytest
import torch

from omni import InputError

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
