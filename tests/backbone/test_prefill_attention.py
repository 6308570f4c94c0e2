"""Long causal prefills on cuDNN's attention: the padding to a length bucket leaves every real row as it
was, and the rule that picks cuDNN (CUDA, 16-bit, inference, long, a layer's second prefill of a bucket)."""

from __future__ import annotations

import types

import pytest
import torch
import torch.nn.functional as F

from backbone import attention
from backbone.attention import (
    CUDNN_MIN_BUCKET,
    CUDNN_MIN_LENGTH,
    cudnn_bucket,
    padded_causal_attention,
)


@pytest.mark.parametrize("length, bucket", [(37, 16), (48, 16), (5, 64)])
def test_padding_to_a_bucket_keeps_the_causal_rows(length, bucket):
    g = torch.Generator().manual_seed(length)
    q = torch.randn(2, 4, length, 8, generator=g)
    k, v = torch.randn(2, 2, length, 8, generator=g), torch.randn(2, 2, length, 8, generator=g)
    out = padded_causal_attention(q, k, v, 0.3, bucket)
    ref = F.scaled_dot_product_attention(
        q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1), is_causal=True, scale=0.3
    )
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


def _fake(length: int, heads: int = 32, dtype=torch.bfloat16, cuda: bool = True, grad: bool = False):
    """What the rule reads of a [1, heads, length, 128] tensor, without a GPU."""
    return types.SimpleNamespace(
        is_cuda=cuda, dtype=dtype, shape=(1, heads, length, 128), requires_grad=grad, device="cuda:0"
    )


@pytest.fixture
def fresh_counts(monkeypatch):
    monkeypatch.setattr(attention, "_BUCKETS_SEEN", {})
    monkeypatch.delenv(attention.DISABLE_ENV, raising=False)


def test_cudnn_from_a_layers_second_prefill_of_a_bucket(fresh_counts):
    usable = attention._cudnn_prefill_usable
    q, kv = _fake(16144), _fake(16144, heads=2)
    assert not usable(q, kv, kv, layer_index=3)  # a one-off length stays on the flash kernel
    assert not usable(q, kv, kv, layer_index=9)  # another layer of the same first prefill
    assert usable(q, kv, kv, layer_index=3)  # the next prefill of that bucket
    other = _fake(16144 - cudnn_bucket(16144) // 2)  # a shorter prompt in the same bucket of 512
    assert usable(other, _fake(other.shape[2], heads=2), _fake(other.shape[2], heads=2), layer_index=9)


def test_buckets_grow_with_the_length_and_pad_at_most_a_sixteenth():
    """A bucket is 1/32 of the length's power-of-two ceiling, at least CUDNN_MIN_BUCKET: the image's 3,344
    tokens pad to 3,584, the audio's 7,517 to 7,680 and the video's 16,144 to 16,384, never more than a
    sixteenth of the rows, with 16 buckets (plans) an octave."""
    padded = {n: -(-n // cudnn_bucket(n)) * cudnn_bucket(n) for n in (3344, 7517, 16144)}
    assert padded == {3344: 3584, 7517: 7680, 16144: 16384}
    for length in range(CUDNN_MIN_LENGTH, 140_000, 97):
        bucket = cudnn_bucket(length)
        assert bucket >= CUDNN_MIN_BUCKET and bucket & (bucket - 1) == 0
        assert -length % bucket < max(CUDNN_MIN_BUCKET, length / 16)
    octave = {-(-n // cudnn_bucket(n)) for n in range(16385, 32769)}
    assert len(octave) == 16


def test_lengths_share_a_plan_only_within_a_bucket(fresh_counts):
    usable = attention._cudnn_prefill_usable
    kv = _fake(3344, heads=2)
    assert not usable(_fake(3344), kv, kv, layer_index=0)
    other = _fake(3584 + 1)  # the next bucket of 256: a plan of its own
    assert not usable(other, _fake(3585, heads=2), _fake(3585, heads=2), layer_index=0)
    same = _fake(3584)  # the same bucket as 3,344
    assert usable(same, _fake(3584, heads=2), _fake(3584, heads=2), layer_index=0)


def test_cudnn_never_for_short_cpu_fp32_or_training_prefills(fresh_counts, monkeypatch):
    usable = attention._cudnn_prefill_usable
    for q in (
        _fake(CUDNN_MIN_LENGTH - 1),
        _fake(16144, cuda=False),
        _fake(16144, dtype=torch.float32),
        _fake(16144, grad=True),
    ):
        kv = _fake(q.shape[2], heads=2, dtype=q.dtype, cuda=q.is_cuda)
        assert not any(usable(q, kv, kv, layer_index=0) for _ in range(3))
    monkeypatch.setenv(attention.DISABLE_ENV, "1")
    q, kv = _fake(16144), _fake(16144, heads=2)
    assert not any(usable(q, kv, kv, layer_index=0) for _ in range(3))
