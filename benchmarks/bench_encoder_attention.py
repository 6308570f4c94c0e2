"""The ViT's attention kernels alone, 16 heads of 80 as the tower makes them (strided q/k/v views of one
``qkv`` tensor), bf16: what `encoders.sdpa` and `encoders.radio_blocks.packed_attention` choose between.

1. One sequence or one batch of equal sequences, per SDPA backend (cuDNN, flash, memory-efficient) and
   FlashAttention 4 where the ``flash-attn-4`` package is installed (`encoders.flash4`), with
   the key count on and off a multiple of 128 (an image's patches alone, and with its 10 prefix tokens;
   a video pass of 32 tubelets).
2. Packed images: one call per image (cuDNN), one batched call for images of one size
   (`packed_attention` itself, with ``OMNI_FLASH_ATTENTION_4=0``: cuDNN once the shape recurs),
   torch's varlen flash kernel (``aten._flash_attention_forward`` with cumulative lengths) and
   FlashAttention 4's varlen kernel where installed, for pages of one size and for images of mixed
   sizes; each one's largest difference from the first.

Times are medians of CUDA-event-timed calls after warm-up (cuDNN's plans built). No peer: this picks
kernels; `bench_pages.py` and `omni bench ttft` compare the tower with transformers'.

Run: python benchmarks/bench_encoder_attention.py [--json out.json]
Smoke run on the CPU (default backend only, tiny shapes): ... --tiny --device cpu
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from encoders import flash4  # noqa: E402
from encoders.radio_blocks import packed_attention  # noqa: E402
from omni.bench.common import format_table, sync, timed, write_json  # noqa: E402

HEADS, WIDTH = 16, 80
SINGLE = {
    "image, 13,312 patches": (1, 13312),
    "image + 10 prefix tokens": (1, 13322),
    "video pass, 32 x 1,024": (32, 1024),
    "video pass, 32 x 1,018": (32, 1018),
}
PACKED = {
    "8 pages of 3,082": [3082] * 8,
    "32 images of 1,034": [1034] * 32,
    "12 mixed, 266..4,106": [
        10 + n for n in (256, 4096, 1024, 768, 2048, 3072, 512, 1536, 4096, 256, 1280, 2560)
    ],
}
TINY_SINGLE = {"one sequence of 70": (1, 70), "4 x 33": (4, 33)}
TINY_PACKED = {"3 of 20": [20] * 3, "mixed 9..30": [9, 30, 17]}


def views(batch: int, length: int, device: torch.device, heads: int, width: int) -> tuple[torch.Tensor, ...]:
    """q, k, v ``[B, H, L, D]`` as the ViT makes them: strided views of one ``[B, L, 3, H, D]`` tensor."""
    qkv = torch.randn(batch, length, 3, heads, width, device=device, dtype=torch.bfloat16)
    return tuple(qkv.permute(2, 0, 3, 1, 4).unbind(0))


def median_seconds(fn: Callable[[], Any], device: torch.device, repeats: int) -> float:
    for _ in range(3):
        fn()
    sync(device)
    return sorted(timed(fn, device) for _ in range(repeats))[repeats // 2]


def backends(device: torch.device) -> dict[str, list]:
    from torch.nn.attention import SDPBackend

    if device.type != "cuda":
        return {"default": [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]}
    return {
        "cuDNN": [SDPBackend.CUDNN_ATTENTION],
        "flash": [SDPBackend.FLASH_ATTENTION],
        "efficient": [SDPBackend.EFFICIENT_ATTENTION],
    }


def has_flash4(device: torch.device) -> bool:
    """Whether FlashAttention 4 serves this device (package installed, Hopper or Blackwell)."""
    q = torch.empty(1, 1, 1, 16, device=device, dtype=torch.bfloat16)
    return flash4.usable(q, q, q, {})


def single_rows(device: torch.device, shapes: dict, heads: int, width: int, repeats: int) -> dict:
    from torch.nn.attention import sdpa_kernel

    rows = {}
    for name, (batch, length) in shapes.items():
        q, k, v = views(batch, length, device, heads, width)
        flops = 4 * batch * heads * length * length * width
        row = {}
        for label, chosen in backends(device).items():
            with sdpa_kernel(chosen):
                seconds = median_seconds(lambda: F.scaled_dot_product_attention(q, k, v), device, repeats)  # noqa: B023
            row[label] = {"ms": seconds * 1e3, "tflop_s": flops / seconds / 1e12}
        if has_flash4(device):
            seconds = median_seconds(lambda: flash4.attention(q, k, v), device, repeats)  # noqa: B023
            row["FA4"] = {"ms": seconds * 1e3, "tflop_s": flops / seconds / 1e12}
        rows[name] = row
    return rows


def packed_rows(device: torch.device, cases: dict, heads: int, width: int, repeats: int) -> dict:
    from torch.nn.attention import sdpa_kernel

    chosen = next(iter(backends(device).values()))  # cuDNN on CUDA
    rows = {}
    for name, lengths in cases.items():
        q, k, v = views(1, sum(lengths), device, heads, width)

        def per_image() -> torch.Tensor:
            with sdpa_kernel(chosen):
                parts = zip(q.split(lengths, 2), k.split(lengths, 2), v.split(lengths, 2))  # noqa: B023
                return torch.cat([F.scaled_dot_product_attention(a, b, c) for a, b, c in parts], 2)

        def batched() -> torch.Tensor:  # the package's own path on SDPA: one call for a run of one size
            with mock.patch.dict(os.environ, {"OMNI_FLASH_ATTENTION_4": "0"}):
                return packed_attention(q, k, v, lengths)  # noqa: B023

        def flash4_varlen() -> torch.Tensor:
            from flash_attn.cute import flash_attn_varlen_func

            cum = torch.tensor([0, *lengths], device=device).cumsum(0).to(torch.int32)  # noqa: B023
            flat = [t[0].transpose(0, 1) for t in (q, k, v)]  # noqa: B023
            top = max(lengths)  # noqa: B023
            out = flash_attn_varlen_func(
                *flat, cu_seqlens_q=cum, cu_seqlens_k=cum, max_seqlen_q=top, max_seqlen_k=top
            )
            return out[0].transpose(0, 1)[None]

        def varlen() -> torch.Tensor:
            cum = torch.tensor([0, *lengths], device=device).cumsum(0).to(torch.int32)  # noqa: B023
            flat = [t[0].transpose(0, 1) for t in (q, k, v)]  # noqa: B023
            top = max(lengths)  # noqa: B023
            out = torch.ops.aten._flash_attention_forward(*flat, cum, cum, top, top, 0.0, False, False)[0]
            return out.transpose(0, 1)[None]

        ways = {"per image": per_image}
        if len(set(lengths)) == 1:
            ways["one batched call"] = batched
        if device.type == "cuda":
            ways["varlen flash"] = varlen
        if has_flash4(device):
            ways["FA4 varlen"] = flash4_varlen
        first = per_image()
        row = {}
        for label, fn in ways.items():
            diff = ((fn().float() - first.float()).abs().max() / first.float().abs().max()).item()
            row[label] = {"ms": median_seconds(fn, device, repeats) * 1e3, "max_rel_diff": diff}
        rows[name] = row
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--tiny", action="store_true", help="tiny shapes (smoke run)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    heads, width = (2, 16) if args.tiny else (HEADS, WIDTH)
    with torch.no_grad():
        single = single_rows(device, TINY_SINGLE if args.tiny else SINGLE, heads, width, args.repeats)
        packed = packed_rows(device, TINY_PACKED if args.tiny else PACKED, heads, width, args.repeats)
    labels = list(next(iter(single.values())))
    print(f"{heads} heads of {width}, bf16, q/k/v strided as the ViT makes them; {device}")
    print(format_table(
        ["shape", *[f"{b} ms (TFLOP/s)" for b in labels]],
        [[name, *[f"{row[b]['ms']:.3f} ({row[b]['tflop_s']:.0f})" for b in labels]] for name, row in single.items()],
    ))  # fmt: skip
    ways = ["per image", "one batched call", "varlen flash", "FA4 varlen"]
    print(format_table(
        ["packed images", *[f"{w} ms" for w in ways], "largest diff"],
        [[name, *[f"{row[w]['ms']:.3f}" if w in row else "-" for w in ways],
          f"{max(r['max_rel_diff'] for r in row.values()):.1e}"] for name, row in packed.items()],
    ))  # fmt: skip
    result = {"device": str(device), "heads": heads, "width": width, "single": single, "packed": packed}
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
