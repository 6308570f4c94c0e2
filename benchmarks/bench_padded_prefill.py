"""A batch of prompts of different lengths, left-padded: prefill time and peak memory, packed against masked.

The language model of Nemotron 3 Nano 30B-A3B at full width (``--pattern``: its layers, default
``MEM*EMEM``; ``full`` for all 52), random bf16 weights. One batch of ``--lengths`` prompts, left-padded
to the longest, runs its first forward (the last position's logits, as ``generate`` asks for):

- ours as it runs by default: the real tokens packed (``backbone.packing``): one variable-length flash
  call per attention layer, the MoE on the real tokens only;
- ours with ``OMNI_PACKED_PREFILL=0``: the padded batch with a mask (key/value heads repeated to the
  query heads, so that the memory-efficient kernel takes it);
- ours, each prompt alone (no padding), the times summed;
- transformers' ``NemotronHForCausalLM`` on the same weights, the padded batch (skipped with
  ``--skip-reference``).

A second table times one attention layer's prefill (the model's 32 query / 2 key-value heads of 128) on
the same batch: varlen flash on the packed tokens; masked SDPA on the kernels the model allows (flash,
memory-efficient, math) with the key/value heads repeated, or with GQA (which leaves only math); and
masked with GQA on cuDNN (which the model keeps off: it builds a plan for every new shape).

Run: PYTHONPATH=. python benchmarks/bench_padded_prefill.py [--pattern full --skip-reference] [--json out.json]
Smoke run on the CPU: ... --tiny --device cpu --skip-reference
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backbone.attention import flash_varlen  # noqa: E402
from backbone.packing import PACKED_PREFILL_ENV, PackedRows  # noqa: E402
from omni.bench import add_shared_arguments  # noqa: E402
from omni.bench.common import (  # noqa: E402
    GIB,
    format_table,
    measure,
    release_memory,
    run_info,
    write_json,
)
from omni.bench.decode import build_model, load_reference, text_config  # noqa: E402

PLAN_FREE = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]  # as the model
CUDNN = [SDPBackend.CUDNN_ATTENTION]


def left_padded(lengths: list[int], vocab: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Random prompts of ``lengths`` tokens, left-padded (id 0) to the longest, and their mask."""
    torch.manual_seed(0)
    total = max(lengths)
    ids = torch.randint(3, vocab, (len(lengths), total), device=device)
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        mask[row, total - n :] = 1
    return ids.masked_fill(mask == 0, 0), mask


def _row(name: str, seconds: float | None, peak: int | None, tokens: int, base: float | None) -> dict:
    return {
        "way": name,
        "seconds": seconds,
        "peak_gib": None if peak is None else peak / GIB,
        "tokens_per_s": None if seconds is None else tokens / seconds,
        "over_packed": None if seconds is None or base is None else seconds / base,
    }


def time_model(model: Any, ids: torch.Tensor, mask: torch.Tensor, repeats: int, device: torch.device) -> Any:
    def run() -> None:
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask, logits_to_keep=1)

    return measure(run, device, repeats)


def model_rows(args: argparse.Namespace, device: torch.device, lengths: list[int]) -> list[dict]:
    """The whole-model table: ours packed / masked / alone, transformers masked."""
    config = text_config(args.pattern, args.tiny)
    ours = build_model(config, device)
    ids, mask = left_padded(lengths, config.vocab_size, device)
    tokens = sum(lengths)
    rows = []
    packed = time_model(ours, ids, mask, args.repeats, device)
    rows.append(_row("ours, packed", packed.seconds, packed.peak_above_bytes, tokens, packed.seconds))
    os.environ[PACKED_PREFILL_ENV] = "0"
    try:
        masked = time_model(ours, ids, mask, args.repeats, device)
    finally:
        os.environ.pop(PACKED_PREFILL_ENV, None)
    rows.append(_row("ours, masked", masked.seconds, masked.peak_above_bytes, tokens, packed.seconds))
    alone = [time_model(ours, ids[r : r + 1, -n:], None, args.repeats, device) for r, n in enumerate(lengths)]
    rows.append(
        _row(
            "ours, each prompt alone (sum)",
            sum(m.seconds for m in alone),
            max(m.peak_above_bytes for m in alone),
            tokens,
            packed.seconds,
        )
    )
    if not args.skip_reference:
        reference = load_reference(ours, device)
        try:
            theirs = time_model(reference, ids, mask, args.repeats, device)
            rows.append(
                _row("transformers, masked", theirs.seconds, theirs.peak_above_bytes, tokens, packed.seconds)
            )
        except torch.OutOfMemoryError:
            rows.append(_row("transformers, masked (out of memory)", None, None, tokens, None))
        del reference
    del ours
    release_memory(device)
    return rows


def attention_rows(args: argparse.Namespace, device: torch.device, lengths: list[int]) -> list[dict]:
    """One attention layer's prefill on the batch, four ways on CUDA (see the module docstring)."""
    heads, kv_heads, dim = (4, 2, 16) if args.tiny else (32, 2, 128)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    _, mask = left_padded(lengths, 16, device)
    batch, total = mask.shape
    packed = PackedRows.from_mask(mask)
    q = torch.randn(batch, total, heads, dim, device=device, dtype=dtype)
    k = torch.randn(batch, total, kv_heads, dim, device=device, dtype=dtype)
    v = torch.randn_like(k)
    allowed = torch.ones(total, total, dtype=torch.bool, device=device).tril()[None] & mask.bool()[:, None]
    allowed = (allowed | torch.eye(total, dtype=torch.bool, device=device))[:, None]
    scale = dim**-0.5
    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
    groups = heads // kv_heads

    def varlen() -> None:
        packed.scatter(flash_varlen(packed.gather(q), packed.gather(k), packed.gather(v), packed.cu_seqlens,
                                    packed.max_length, scale))  # fmt: skip

    def repeated() -> None:
        kr, vr = kt.repeat_interleave(groups, 1), vt.repeat_interleave(groups, 1)
        with sdpa_kernel(PLAN_FREE):
            F.scaled_dot_product_attention(qt, kr, vr, attn_mask=allowed, scale=scale)

    def gqa(backends: list) -> Callable[[], None]:
        def call() -> None:
            with sdpa_kernel(backends):
                F.scaled_dot_product_attention(qt, kt, vt, attn_mask=allowed, scale=scale, enable_gqa=True)

        return call

    tokens = sum(lengths)
    ways = [("masked, heads repeated", repeated), ("masked, GQA (math)", gqa(PLAN_FREE))]
    if device.type == "cuda":
        ways = [("varlen flash, packed", varlen), *ways, ("masked, GQA, cuDNN", gqa(CUDNN))]
    rows: list[dict] = []
    for name, fn in ways:
        try:
            m = measure(fn, device, args.repeats)
            base = rows[0]["seconds"] if rows else m.seconds
            rows.append(_row(name, m.seconds, m.peak_above_bytes, tokens, base))
        except torch.OutOfMemoryError:
            rows.append(_row(f"{name} (out of memory)", None, None, tokens, None))
        release_memory(device)
    return rows


def _cells(r: dict, seconds_unit: float) -> list[str]:
    def fmt(value: float | None, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    secs = None if r["seconds"] is None else r["seconds"] * seconds_unit
    return [r["way"], fmt(secs, ".2f"), fmt(r["peak_gib"], ".2f"), fmt(r["tokens_per_s"], ",.0f"),
            fmt(r["over_packed"], ".2f")]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pattern", default="MEM*EMEM", help='layer pattern, or "full" for all 52 layers')
    parser.add_argument(
        "--lengths",
        default="512,1024,1536,2048,2560,3072,3584,4096",
        help="comma-separated prompt lengths, one row each (default: 8 prompts, 512 to 4,096)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per way after a warm-up")
    add_shared_arguments(parser)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    lengths = [int(n) for n in args.lengths.split(",")]
    if args.tiny:
        lengths = [max(1, n // 64) for n in lengths]
    info = run_info(device)
    result = {
        "meta": {**info, "pattern": args.pattern, "lengths": lengths},
        "model": model_rows(args, device, lengths),
        "attention": attention_rows(args, device, lengths),
    }
    padded = len(lengths) * max(lengths)
    print(
        f"\n{info['device']}, torch {info['torch']}, transformers {info['transformers']}, bf16, pattern "
        f"{args.pattern}; {len(lengths)} prompts of {min(lengths)}..{max(lengths)} tokens: {sum(lengths):,} "
        f"real of {padded:,} padded ({1 - sum(lengths) / padded:.0%} padding)"
    )
    headers = ["first forward", "ms", "peak GiB", "real tokens/s", "time / packed"]
    print(format_table(headers, [_cells(r, 1e3) for r in result["model"]]))
    print()
    headers = ["one attention layer", "ms", "peak GiB", "real tokens/s", "time / varlen"]
    print(format_table(headers, [_cells(r, 1e3) for r in result["attention"]]))
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
