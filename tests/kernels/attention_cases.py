"""Worker run in a subprocess by test_decode_attention_interpreted.py: the Triton decode attention under
Triton's CPU interpreter against masked softmax attention; prints one JSON object {case: relative error}."""

from __future__ import annotations

import json
import os

os.environ["TRITON_INTERPRET"] = "1"

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from backbone.kernels.decode_attention_triton import decode_attention_triton  # noqa: E402


def case(
    batch: int,
    kv_heads: int,
    groups: int,
    dim: int,
    capacity: int,
    valid: list[slice],
    seed: int,
) -> float:
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, kv_heads, groups, dim, generator=g)
    keys = torch.randn(batch, kv_heads, capacity, dim, generator=g)
    values = torch.randn(batch, kv_heads, capacity, dim, generator=g)
    mask = torch.zeros(batch, capacity, dtype=torch.bool)
    for row, span in enumerate(valid):
        mask[row, span] = True
    keys[~mask[:, None, :, None].expand_as(keys)] = float("nan")  # unwritten slots must never be read
    values[~mask[:, None, :, None].expand_as(values)] = float("nan")
    out = decode_attention_triton(q, keys, values, mask, dim**-0.5)
    ref = F.scaled_dot_product_attention(
        q.float(),
        keys.float().nan_to_num(),
        values.float().nan_to_num(),
        attn_mask=mask[:, None, None, :],
        scale=dim**-0.5,
    )
    return ((out.float() - ref).abs().max() / ref.abs().max()).item()


def main() -> None:
    results = {
        "one_split": case(1, 2, 4, 16, 40, [slice(0, 17)], 0),
        "many_splits": case(1, 1, 16, 32, 600, [slice(0, 555)], 1),  # later splits partly or fully empty
        "padded_rows": case(2, 2, 3, 24, 300, [slice(0, 280), slice(120, 290)], 2),  # left padding, odd sizes
    }
    print(json.dumps(results))


if __name__ == "__main__":
    main()
