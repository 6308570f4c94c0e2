"""Worker run in a subprocess by test_residual_norm_interpreted.py: evaluates the ViT's fused residual-add +
LayerNorm kernel under Triton's CPU interpreter against the separate tensor operations, and the blocks
run through it, and prints one JSON object {case: number}.

TRITON_INTERPRET must be set before triton is first imported, hence a separate process.
"""

from __future__ import annotations

import json
import os
import sys
from unittest import mock

os.environ["TRITON_INTERPRET"] = "1"

import torch  # noqa: E402
from numerics import max_ulps, rel_err  # noqa: E402

from encoders import radio_blocks  # noqa: E402
from encoders.radio_blocks import RadioBlock, run_blocks  # noqa: E402
from encoders.radio_config import RadioConfig  # noqa: E402
from encoders.residual_norm_triton import (  # noqa: E402
    scaled_residual_norm_triton,
    scaled_residual_norm_usable,
)

SHAPES = {
    "one_row": ((1, 64), True),
    "rows_odd": ((3, 5, 37), True),
    "no_bias": ((2, 1280), False),
    "last_program_partial": ((9, 1280), True),  # programs of 4 rows: the last holds one
}


def seam_cases(results: dict) -> None:
    g = torch.Generator().manual_seed(0)
    for name, (shape, bias) in SHAPES.items():
        for dtype in (torch.bfloat16,):
            width = shape[-1]
            norm = torch.nn.LayerNorm(width, eps=1e-6, bias=bias)
            with torch.no_grad():
                norm.weight.copy_(torch.randn(width, generator=g) * 0.5 + 1)
                if bias:
                    norm.bias.copy_(torch.randn(width, generator=g) * 0.1)
            norm = norm.to(dtype)
            gamma = (torch.rand(width, generator=g) + 0.5).to(dtype)
            x = (torch.randn(*shape, generator=g) * 3 + 1).to(dtype)
            y = torch.randn(*shape, generator=g).to(dtype)
            with torch.no_grad():
                new_ref = x + y * gamma
                normed_ref = norm(new_ref)
            new, normed = scaled_residual_norm_triton(x, y, gamma, norm)
            key = f"seam/{name}/{str(dtype).removeprefix('torch.')}"
            results[key + "/new_ulps"] = max_ulps(new, new_ref)
            results[key + "/new"] = rel_err(new, new_ref)
            results[key + "/normed"] = rel_err(normed, normed_ref)
            results[key + "/normed_ulps"] = max_ulps(normed, normed_ref)
            results[key + "/dtype_shape"] = float(
                new.dtype == normed.dtype == dtype and new.shape == normed.shape == x.shape
            )
    # rows that are views into wider buffers
    norm = torch.nn.LayerNorm(24)
    wide_x, wide_y = torch.randn(4, 40, generator=g).bfloat16(), torch.randn(4, 40, generator=g).bfloat16()
    gamma = torch.rand(24, generator=g).bfloat16()
    x, y = wide_x[:, 8:32], wide_y[:, 4:28]
    new, normed = scaled_residual_norm_triton(x, y, gamma, norm)
    with torch.no_grad():
        results["seam/strided/new_ulps"] = max_ulps(new, x + y * gamma)
        results["seam/strided/normed"] = rel_err(normed, norm(x + y * gamma).bfloat16())

    def usable(width: int, dtype: torch.dtype = torch.bfloat16, norm_width: int | None = None) -> bool:
        rows = torch.zeros(2, width, dtype=dtype)
        return scaled_residual_norm_usable(
            rows, rows, torch.ones(width, dtype=dtype), torch.nn.LayerNorm(norm_width or width)
        )

    results["seam/usable_limits"] = float(
        usable(1280)
        and not usable(1 << 14)  # wider than a row held in registers
        and not usable(8, norm_width=4)
        and not usable(8, torch.float32)  # bf16 activations only
        and not usable(8, torch.float16)
    )


def blocks_case(results: dict) -> None:
    """Three tiny ViT blocks (layer scales not 1) through the fused seams against block by block."""
    config = RadioConfig(
        hidden_size=32, num_hidden_layers=3, num_attention_heads=4, patch_size=4, max_img_size=64
    )
    torch.manual_seed(1)
    blocks = torch.nn.ModuleList(RadioBlock(config) for _ in range(3))
    blocks = blocks.bfloat16()
    with torch.no_grad():
        for block in blocks:
            block.layer_scale1.lambda1.uniform_(0.5, 1.5)
            block.layer_scale2.lambda1.uniform_(0.5, 1.5)
            block.norm1.bias.normal_(0, 0.1)
            block.norm2.bias.normal_(0, 0.1)
        hidden = torch.randn(2, 9, 32).bfloat16()
        reference = hidden
        for block in blocks:
            reference = block(reference)
        with mock.patch.object(radio_blocks, "_fused_seams_usable", return_value=True):
            fused = run_blocks(blocks, hidden)
        results["blocks/fused"] = rel_err(fused, reference)
        packed = run_blocks(blocks, hidden.reshape(1, 18, 32), [9, 9])
        with mock.patch.object(radio_blocks, "_fused_seams_usable", return_value=True):
            packed_fused = run_blocks(blocks, hidden.reshape(1, 18, 32), [9, 9])
        results["blocks/packed"] = rel_err(packed_fused, packed)
    # off CUDA the fused path is never chosen
    results["blocks/cpu_not_fused"] = float(not radio_blocks._fused_seams_usable(blocks, hidden))


if __name__ == "__main__":
    out: dict = {}
    seam_cases(out)
    blocks_case(out)
    json.dump(out, sys.stdout)
