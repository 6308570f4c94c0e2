"""GPU: an image's inputs embedded with the placeholder rows worked out on the host, whether the ids come
on the host or on the GPU, and nothing read back from the GPU once the encoder is queued. Skipped without
CUDA."""

from __future__ import annotations

import pytest
import torch

from omni import InputError
from omni.bench.ttft import one_case

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture(scope="module")
def image_case():
    torch.manual_seed(0)
    model, case, _ = one_case("image", "MEM*E", tiny=True, device=torch.device("cuda"), balanced=False)
    return model.float(), {**case.ours, "pixel_values": case.ours["pixel_values"].float()}


def test_ids_on_the_host_or_the_gpu_embed_alike(image_case):
    model, inputs = image_case
    assert inputs["input_ids"].is_cuda
    with torch.no_grad():
        on_gpu = model.embed_inputs(**inputs).inputs_embeds
        on_host = model.embed_inputs(**{**inputs, "input_ids": inputs["input_ids"].cpu()}).inputs_embeds
    assert on_host.is_cuda
    assert torch.equal(on_host, on_gpu)
    # the image's rows hold its features: not the text embedding of the placeholder token
    text_only = model.get_input_embeddings()(inputs["input_ids"])
    image_rows = inputs["input_ids"][0] == model.config.image_token_id
    assert not torch.equal(on_gpu[0, image_rows], text_only[0, image_rows])
    assert torch.equal(on_gpu[0, ~image_rows], text_only[0, ~image_rows])


def test_nothing_is_read_back_once_the_encoder_is_queued(image_case, monkeypatch):
    """With every input on the GPU, token types included (a processor's output moved with ``.to``), what
    the host needs is read back before the image encoder is queued: after it, a synchronising call would
    hold the host until the encoder is done, and the language model would be queued late."""
    model, inputs = image_case
    ids = inputs["input_ids"]
    types = (ids == model.config.image_token_id).long()
    assert types.is_cuda and types.any()
    encode = model.image_embeddings

    def then_strict(*args, **kwargs):
        out = encode(*args, **kwargs)
        torch.cuda.set_sync_debug_mode("error")  # a synchronising call from here on raises
        return out

    with torch.no_grad():
        expected = model.embed_inputs(**inputs, mm_token_type_ids=types).inputs_embeds
        monkeypatch.setattr(model, "image_embeddings", then_strict)
        try:
            strict = model.embed_inputs(**inputs, mm_token_type_ids=types).inputs_embeds
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert torch.equal(strict, expected)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_bad_pixel_on_the_gpu_raises_an_input_error(image_case, bad):
    model, inputs = image_case
    pixels = inputs["pixel_values"].clone()
    pixels[5, 7] = bad
    with torch.no_grad(), pytest.raises(InputError, match="contain 1 NaN or infinite"):
        model(**{**inputs, "pixel_values": pixels}, logits_to_keep=1)
