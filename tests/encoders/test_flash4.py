"""The optional FlashAttention 4 path of the encoders: when it is taken, its layout, and its fallback."""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F

from encoders import flash4, sdpa
from encoders.radio_blocks import packed_attention


def _qkv(length: int = 12, grad: bool = False) -> tuple[torch.Tensor, ...]:
    """q, k, v ``[B, H, L, D]`` as the ViT makes them: strided views of one ``[B, L, 3, H, D]`` tensor."""
    qkv = torch.randn(2, length, 3, 4, 16, requires_grad=grad)
    return tuple(qkv.permute(2, 0, 3, 1, 4).unbind(0))


def _reference_kernel(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, None]:
    """What the package's ``flash_attn_func`` computes, on ``[B, L, H, D]`` tensors: (out, lse)."""
    assert q.shape[1] > q.shape[2]  # sequence before heads
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2).contiguous(), None


def test_not_taken_on_the_cpu_with_a_mask_or_with_gradients():
    q, k, v = _qkv()
    assert not flash4.usable(q, k, v, {})  # a CPU tensor
    assert not flash4.usable(q, k, v, {"attn_mask": torch.ones(12, 12, dtype=torch.bool)})
    gq, gk, gv = _qkv(grad=True)
    assert not flash4.usable(gq, gk, gv, {})


def test_the_environment_turns_it_off(monkeypatch):
    monkeypatch.setenv("OMNI_FLASH_ATTENTION_4", "0")
    assert not flash4.enabled()
    monkeypatch.setenv("OMNI_FLASH_ATTENTION_4", "1")
    assert flash4.enabled()


def test_says_whether_it_serves_a_device_without_importing_it(monkeypatch):
    monkeypatch.setattr(flash4, "installed_version", lambda: "4.0.0b36")
    assert not flash4.serves(torch.device("cpu"))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert flash4.serves(torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    assert not flash4.serves(torch.device("cuda"))  # an A100: no kernels for it
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setenv("OMNI_FLASH_ATTENTION_4", "0")
    assert not flash4.serves(torch.device("cuda"))
    monkeypatch.setenv("OMNI_FLASH_ATTENTION_4", "1")
    monkeypatch.setattr(flash4, "installed_version", lambda: None)
    assert not flash4.serves(torch.device("cuda"))


def test_heads_in_and_out_in_the_sdpa_layout(monkeypatch):
    monkeypatch.setattr(flash4, "_kernel", lambda: _reference_kernel)
    q, k, v = _qkv()
    out = flash4.attention(q, k, v)
    assert out is not None and out.shape == q.shape
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v))


def test_a_failing_kernel_falls_back_to_sdpa_for_good(monkeypatch, caplog):
    calls = []

    def broken(q, k, v):
        calls.append(q.shape)
        raise RuntimeError("cannot compile this configuration")

    monkeypatch.setattr(flash4, "_kernel", lambda: broken)
    monkeypatch.setattr(flash4, "_FAILED", set())
    monkeypatch.setattr(flash4, "usable", lambda q, k, v, kwargs: flash4._config(q) not in flash4._FAILED)
    q, k, v = _qkv()
    with torch.no_grad():
        first = sdpa.attention(q, k, v)
        second = sdpa.attention(q, k, v)
    torch.testing.assert_close(first, F.scaled_dot_product_attention(q, k, v))
    torch.testing.assert_close(second, first)
    assert len(calls) == 1  # the configuration is not tried again
    assert "FlashAttention 4 failed" in caplog.text


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_other_gpus_keep_sdpa():
    q, k, v = (t.cuda().to(torch.bfloat16) for t in _qkv())
    if torch.cuda.get_device_capability()[0] in flash4._ARCHES:
        pytest.skip("this GPU is one FlashAttention 4 serves")
    assert not flash4.usable(q, k, v, {})


def _reference_varlen_kernel(q, k, v, *, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k):
    """What the package's ``flash_attn_varlen_func`` computes on ``[L, H, D]`` tensors: (out, lse)."""
    assert torch.equal(cu_seqlens_q, cu_seqlens_k) and cu_seqlens_q.dtype == torch.int32
    bounds = cu_seqlens_q.tolist()
    assert max_seqlen_q == max_seqlen_k == max(b - a for a, b in zip(bounds, bounds[1:]))
    pieces = [
        F.scaled_dot_product_attention(*(t[a:b].transpose(0, 1) for t in (q, k, v))).transpose(0, 1)
        for a, b in zip(bounds, bounds[1:])
    ]
    return torch.cat(pieces), None


def _per_image(q, k, v, lengths):
    parts = zip(q.split(lengths, 2), k.split(lengths, 2), v.split(lengths, 2))
    return torch.cat([F.scaled_dot_product_attention(a, b, c) for a, b, c in parts], 2)


def test_mixed_sizes_take_one_varlen_call(monkeypatch):
    calls = []

    def kernel(*args, **kwargs):
        calls.append(kwargs["cu_seqlens_q"].tolist())
        return _reference_varlen_kernel(*args, **kwargs)

    monkeypatch.setattr(flash4, "_varlen_kernel", lambda: kernel)
    monkeypatch.setattr(flash4, "varlen_usable", lambda q, k, v: True)
    lengths = [7, 7, 12, 5]
    qkv = torch.randn(1, sum(lengths), 3, 4, 16)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    with torch.no_grad():
        got = packed_attention(q, k, v, lengths)
        assert calls == [[0, 7, 14, 26, 31]]
        torch.testing.assert_close(got, _per_image(q, k, v, lengths))
        packed_attention(q, k, v, [14, 17])  # two runs: still one call
        packed_attention(q, k, v, [31])  # one image: plain attention, no varlen call
    assert calls[1:] == [[0, 14, 31]]


def test_a_failing_varlen_kernel_falls_back_to_one_call_per_size(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("cannot compile this configuration")

    monkeypatch.setattr(flash4, "_varlen_kernel", lambda: broken)
    monkeypatch.setattr(flash4, "_FAILED", set())
    monkeypatch.setattr(flash4, "usable", lambda q, k, v, kwargs: False)  # SDPA for the fallback calls
    lengths = [9, 4, 4]
    qkv = torch.randn(1, sum(lengths), 3, 2, 8)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    with torch.no_grad():
        out = flash4.varlen_attention(q, k, v, lengths)
        assert out is None and flash4._config(q, varlen=True) in flash4._FAILED
        torch.testing.assert_close(packed_attention(q, k, v, lengths), _per_image(q, k, v, lengths))


def _hopper_with_tiles(monkeypatch, tiled) -> None:
    """A Hopper GPU as far as `flash4` asks, with ``tiled`` as the package's tiled forward entry."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setattr(flash4, "_tiled_forward", lambda: tiled)
    monkeypatch.setattr(flash4, "_FAILED", set())
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())


def _vit_width_qkv() -> tuple[torch.Tensor, ...]:
    """[1, 2, 6, 80] q, k, v said to be on a CUDA device (the tile is chosen by device and width)."""
    q, k, v = torch.randn(3, 1, 2, 6, 80).unbind(0)
    return tuple(_OnCuda(t) for t in (q, k, v))


class _OnCuda(torch.Tensor):
    """A CPU tensor whose ``device`` reads as CUDA, so the choice of tile runs without a GPU."""

    @staticmethod
    def __new__(cls, data):
        return torch.Tensor._make_subclass(cls, data)

    @property
    def device(self):
        return torch.device("cuda", 0)

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        out = super().__torch_function__(func, types, args, kwargs or {})
        return out.as_subclass(torch.Tensor) if isinstance(out, torch.Tensor) else out


def test_eighty_wide_heads_on_hopper_take_the_measured_tile(monkeypatch):
    tiled_calls, plain_calls = [], []

    def tiled(q, k, v, **kwargs):
        tiled_calls.append(kwargs)
        return _reference_kernel(q, k, v)[0], None, None

    monkeypatch.setattr(flash4, "_kernel", lambda: lambda *a: plain_calls.append(1) or _reference_kernel(*a))
    _hopper_with_tiles(monkeypatch, tiled)
    q, k, v = _vit_width_qkv()
    out = flash4.attention(q, k, v)
    assert tiled_calls == [{"tile_mn": (192, 160), "mma_pv_is_rs": False, "intra_wg_overlap": True}]
    assert plain_calls == []
    plain = [t.as_subclass(torch.Tensor) for t in (q, k, v)]
    torch.testing.assert_close(out.as_subclass(torch.Tensor), F.scaled_dot_product_attention(*plain))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (10, 0))
    flash4.attention(q, k, v)  # Blackwell: the package's own tiles
    assert len(tiled_calls) == 1 and plain_calls == [1]


def test_a_failing_tile_falls_back_to_the_packages_own_choice_for_good(monkeypatch, caplog):
    tiled_calls, plain_calls = [], []

    def broken(*args, **kwargs):
        tiled_calls.append(1)
        raise RuntimeError("shared memory exceeded")

    monkeypatch.setattr(flash4, "_kernel", lambda: lambda *a: plain_calls.append(1) or _reference_kernel(*a))
    _hopper_with_tiles(monkeypatch, broken)
    q, k, v = _vit_width_qkv()
    first, second = flash4.attention(q, k, v), flash4.attention(q, k, v)
    assert first is not None and second is not None
    assert tiled_calls == [1] and plain_calls == [1, 1]  # the tile is not tried again
    assert "using its own tile" in caplog.text
    assert flash4._config(q) not in flash4._FAILED  # the package's own kernel still serves


def test_other_widths_keep_the_packages_tiles(monkeypatch):
    _hopper_with_tiles(monkeypatch, lambda *a, **k: pytest.fail("no tile is known for 16-wide heads"))
    q, _, _ = _qkv()
    assert flash4._tile(flash4._config(_OnCuda(q))) is None
