"""GPU: the encoders' FlashAttention 4 path (``flash-attn-4`` installed, Hopper or Blackwell) against fp32
attention, as accurate as cuDNN's, and taken by the ViT's attention. Skipped otherwise."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from numerics import rel_err

from encoders import flash4, sdpa
from encoders.radio_blocks import packed_attention

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.usefixtures("flash4_gpu"),  # conftest.py
]


def _vit_views(batch: int, length: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator(device="cuda").manual_seed(seed)
    qkv = torch.randn(batch, length, 3, 16, 80, device="cuda", dtype=torch.bfloat16, generator=generator)
    return tuple(qkv.permute(2, 0, 3, 1, 4).unbind(0))


@pytest.mark.parametrize(("batch", "length"), [(1, 4106), (3, 1018), (2, 77)])
def test_as_accurate_as_cudnn(batch, length):
    q, k, v = _vit_views(batch, length)
    with torch.no_grad():
        assert flash4.usable(q, k, v, {})
        ours = flash4.attention(q, k, v)
        reference = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
        with sdpa.sdpa_kernel([sdpa.SDPBackend.CUDNN_ATTENTION]):
            cudnn = F.scaled_dot_product_attention(q, k, v)
    assert ours is not None and ours.shape == q.shape
    assert rel_err(ours, reference) <= max(2 * rel_err(cudnn, reference), 2**-9)


def _per_image_fp32(q, k, v, lengths):
    pieces = zip(q.split(lengths, 2), k.split(lengths, 2), v.split(lengths, 2))
    return torch.cat(
        [F.scaled_dot_product_attention(a.float(), b.float(), c.float()) for a, b, c in pieces], 2
    )


def test_packed_images_take_it(monkeypatch):
    calls = []
    plain, varlen = flash4.attention, flash4.varlen_attention
    monkeypatch.setattr(flash4, "attention", lambda q, k, v: calls.append("plain") or plain(q, k, v))
    monkeypatch.setattr(
        flash4, "varlen_attention", lambda q, k, v, n: calls.append("varlen") or varlen(q, k, v, n)
    )
    mixed = [1034] * 3 + [522, 4106]
    q, k, v = _vit_views(1, sum(mixed), seed=1)
    with torch.no_grad():
        got = packed_attention(q, k, v, mixed)
        assert calls == ["varlen"]  # one call for all five images
        assert rel_err(got, _per_image_fp32(q, k, v, mixed)) <= 2**-8
        same = [1034] * 3
        q3, k3, v3 = (t[:, :, : sum(same)] for t in (q, k, v))
        got = packed_attention(q3, k3, v3, same)
        assert calls == ["varlen", "plain"]  # images of one size: one batched call
        assert rel_err(got, _per_image_fp32(q3, k3, v3, same)) <= 2**-8
        monkeypatch.setenv("OMNI_FLASH_ATTENTION_4", "0")
        packed_attention(q, k, v, mixed)
    assert calls == ["varlen", "plain"]


def test_hopper_takes_the_measured_tile_for_the_vits_heads():
    if torch.cuda.get_device_capability()[0] != 9 or flash4._tiled_forward() is None:
        pytest.skip("the tile is chosen on Hopper, with a package version that takes one")
    q, k, v = _vit_views(1, 4106, seed=2)
    assert flash4._tile(flash4._config(q)) == {"tile_mn": (192, 160), **flash4._TILE_ARGS}
    with torch.no_grad():
        tiled = flash4.attention(q, k, v)
        own = flash4._kernel()(*(t.transpose(1, 2) for t in (q, k, v)))[0].transpose(1, 2)
        reference = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
    assert (*flash4._config(q), "tile") not in flash4._FAILED
    assert rel_err(tiled, reference) <= max(1.25 * rel_err(own, reference), 2**-9)
