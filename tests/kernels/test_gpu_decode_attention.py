"""GPU parity of the Triton one-token attention with masked SDPA at the released model's head layout
(32 query heads over 2 key/value heads of 128), bf16 and fp32. Skipped without CUDA."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("dtype,tolerance", [(torch.float32, 1e-4), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("batch,capacity", [(1, 1280), (8, 2304)])
def test_decode_attention_matches_sdpa(dtype, tolerance, batch, capacity):
    from backbone.kernels.decode_attention_triton import decode_attention_triton

    g = torch.Generator(device="cuda").manual_seed(batch)
    q = torch.randn(batch, 2, 16, 128, generator=g, device="cuda").to(dtype)
    keys = torch.randn(batch, 2, capacity, 128, generator=g, device="cuda").to(dtype)
    values = torch.randn(batch, 2, capacity, 128, generator=g, device="cuda").to(dtype)
    mask = torch.zeros(batch, capacity, dtype=torch.bool, device="cuda")
    for row in range(batch):  # left padding of a few rows, lengths ending inside a split
        mask[row, 3 * row : capacity - 200 + row] = True
    out = decode_attention_triton(q, keys, values, mask, 128**-0.5)
    ref = F.scaled_dot_product_attention(
        q.float(), keys.float(), values.float(), attn_mask=mask[:, None, None, :], scale=128**-0.5
    )
    assert out.dtype == dtype
    assert ((out.float() - ref).abs().max() / ref.abs().max()).item() <= tolerance
