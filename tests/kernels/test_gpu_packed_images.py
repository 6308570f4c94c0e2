"""GPU: packed images of one size attend in one batched call and give the one-at-a-time cuDNN numbers.
Skipped without CUDA."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from numerics import rel_err

from encoders import sdpa
from encoders.radio_blocks import packed_attention

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_equal_pages_in_one_call_match_one_at_a_time(monkeypatch):
    monkeypatch.setattr(sdpa, "_SEEN", {})
    monkeypatch.setenv("OMNI_FLASH_ATTENTION_4", "0")  # the SDPA path (FlashAttention 4: test_gpu_flash4)
    torch.manual_seed(0)
    lengths = [1034] * 4 + [522] + [1034] * 2
    qkv = torch.randn(1, sum(lengths), 3, 16, 80, device="cuda", dtype=torch.bfloat16)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    with torch.no_grad():
        packed_attention(q, k, v, lengths)  # first calls of the shapes: plan-free kernels
        got = packed_attention(q, k, v, lengths)  # cuDNN from here on
        with sdpa.sdpa_kernel([sdpa.SDPBackend.CUDNN_ATTENTION]):
            pieces = zip(q.split(lengths, 2), k.split(lengths, 2), v.split(lengths, 2))
            one_at_a_time = torch.cat([F.scaled_dot_product_attention(a, b, c) for a, b, c in pieces], 2)
    assert got.shape == one_at_a_time.shape
    assert rel_err(got, one_at_a_time) <= 2**-8  # bit for bit on an H200; a page seeing another is ~1e-1
