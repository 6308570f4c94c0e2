"""Many pages of one size through the vision tower: ours (pages of one size attend in one batched call),
ours one page at a time, and transformers' tower on the same weights and pixels.

Builds the time-to-first-token benchmark's model (`omni.bench.ttft`: full-size RADIO tower, random bf16
weights) and transformers' model holding the same tensors, then times ``encode_images`` over packed pages
(median after two warm-up calls, so cuDNN's plans are built) and checks that batching changes no number.

Run: python benchmarks/bench_pages.py [--json out.json] [--repeats 5]
Smoke run on the CPU: ... --tiny --device cpu
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from encoders import radio_blocks  # noqa: E402
from omni.bench.common import format_table, measure, write_json  # noqa: E402
from omni.bench.ttft import build_ours, load_reference, omni_config  # noqa: E402

CASES = {
    "8 pages of 48x64 patches": (8, 48, 64),
    "32 images of 32x32": (32, 32, 32),
    "4 pages of 64x64": (4, 64, 64),
}
TINY_CASES = {"4 pages of 4x6 patches": (4, 4, 6), "3 images of 2x2": (3, 2, 2)}


@contextmanager
def one_page_at_a_time() -> Iterator[None]:
    """Every packed image attends in its own call (the behaviour before equal sizes were batched)."""

    def singles(seq_lengths: Sequence[int]) -> list[tuple[int, int, int]]:
        starts = [sum(seq_lengths[:i]) for i in range(len(seq_lengths))]
        return [(start, 1, length) for start, length in zip(starts, seq_lengths)]

    batched = radio_blocks.equal_runs
    radio_blocks.equal_runs = singles
    try:
        yield
    finally:
        radio_blocks.equal_runs = batched


def run_case(model: Any, reference: Any, pages: int, rows: int, cols: int, repeats: int) -> dict[str, Any]:
    vit, device = model.vision_model, model.device
    pixels = torch.randn(pages * rows * cols, vit.config.patch_dim, device=device, dtype=model.dtype)
    grid = torch.tensor([[rows, cols]] * pages)
    with torch.no_grad():
        batched = measure(lambda: vit.encode_images(pixels, grid), device, repeats, warmup=2).seconds
        together = vit.encode_images(pixels, grid).float()
        with one_page_at_a_time():
            single = measure(lambda: vit.encode_images(pixels, grid), device, repeats, warmup=2).seconds
            apart = vit.encode_images(pixels, grid).float()
        row = {"ours_s": batched, "ours_one_at_a_time_s": single, "batching_speedup": single / batched}
        row["max_rel_diff"] = ((together - apart).abs().max() / apart.abs().max()).item()
        if reference is not None:
            theirs = lambda: reference.get_image_features(pixels, grid.to(device))  # noqa: E731
            row["transformers_s"] = measure(theirs, device, repeats, warmup=2).seconds
            row["transformers_over_ours"] = row["transformers_s"] / batched
    return row


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tiny", action="store_true", help="tiny widths and pages (smoke run)")
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    model = build_ours(omni_config("ME", args.tiny), device, torch.bfloat16)
    reference = None if args.skip_reference else load_reference(model, device, torch.bfloat16)
    rows = {}
    for name, (pages, rows_, cols) in (TINY_CASES if args.tiny else CASES).items():
        rows[name] = run_case(model, reference, pages, rows_, cols, args.repeats)
    headers = ["case", "ours ms", "one at a time ms", "batching", "transformers ms", "tf/ours", "max diff"]
    table = []
    for name, row in rows.items():
        tf = row.get("transformers_s")
        table.append([
            name, f"{row['ours_s'] * 1e3:.2f}", f"{row['ours_one_at_a_time_s'] * 1e3:.2f}",
            f"{row['batching_speedup']:.2f}x", "-" if tf is None else f"{tf * 1e3:.2f}",
            "-" if tf is None else f"{row['transformers_over_ours']:.2f}x", f"{row['max_rel_diff']:.1e}",
        ])  # fmt: skip
    print(format_table(headers, table))
    result = {"device": str(device), "rows": rows}
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
