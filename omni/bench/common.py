"""What the benchmarks share: timing with device sync, peak memory, device rates, tables and JSON."""

from __future__ import annotations

import gc
import json
import math
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

GIB = 2**30


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously; the CPU needs no wait)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Wall seconds of ``fn()``, queued device work included."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def release_memory(device: torch.device) -> None:
    """Collect garbage and hand cached CUDA blocks back, so the next measurement starts clean."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


@dataclass
class Measurement:
    """Median time of the timed runs and their peak memory (bytes; 0 off CUDA)."""

    seconds: float
    peak_above_bytes: int  # the most allocated on top of what was held before the timed runs
    peak_total_bytes: int  # torch.cuda.max_memory_allocated over the timed runs
    times: list[float] = field(default_factory=list)  # each timed run's seconds, in order


def measure(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int = 1) -> Measurement:
    """Time ``fn`` ``repeats`` times after ``warmup`` untimed calls (kernels compiled, caches filled)."""
    for _ in range(warmup):
        fn()
    sync(device)
    base = 0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    times = [timed(fn, device) for _ in range(max(repeats, 1))]
    total = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    return Measurement(statistics.median(times), max(total - base, 0), total, times)


def measure_alternating(
    fns: Sequence[Callable[[], Any]], device: torch.device, repeats: int, warmup: int = 1
) -> list[Measurement]:
    """Time each of ``fns`` ``repeats`` times in rounds, one run of each a round, the order reversed every
    other round (so neither always follows the other); one `Measurement` each, its runs' times in order.
    On a card at its power limit a run's time depends on the load before it, so these are times after
    the other side's runs as much as after one's own."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    sync(device)
    times: list[list[float]] = [[] for _ in fns]
    above, total = [0] * len(fns), [0] * len(fns)
    for round_ in range(max(repeats, 1)):
        order = range(len(fns)) if round_ % 2 == 0 else reversed(range(len(fns)))
        for index in order:
            base = 0
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                base = torch.cuda.memory_allocated(device)
            times[index].append(timed(fns[index], device))
            if device.type == "cuda":
                peak = torch.cuda.max_memory_allocated(device)
                above[index], total[index] = max(above[index], peak - base), max(total[index], peak)
    return [
        Measurement(statistics.median(t), max(a, 0), p, t)
        for t, a, p in zip(times, above, total, strict=True)
    ]


def copy_bandwidth(device: torch.device, nbytes: int = 2 << 30) -> float:
    """Device-to-device copy rate in bytes/s, counting bytes read and written."""
    src = torch.empty(nbytes // 2, dtype=torch.bfloat16, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    sync(device)
    start = time.perf_counter()
    for _ in range(10):
        dst.copy_(src)
    sync(device)
    return 10 * 2 * nbytes / (time.perf_counter() - start)


def matmul_rate(
    device: torch.device, size: int = 8192, dtype: torch.dtype = torch.bfloat16, repeats: int = 5
) -> float:
    """Measured FLOP/s of a ``size``^3 matmul in ``dtype``: the rate a compute floor divides by."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b  # warm-up: the kernel is chosen and loaded
    seconds = timed(lambda: [a @ b for _ in range(repeats)], device)
    return repeats * 2 * size**3 / seconds


def matmul_seconds(
    flops: float, device: torch.device, repeats: int, size: int = 8192, dtype: torch.dtype = torch.bfloat16
) -> float:
    """Seconds this device takes for ``flops`` as back-to-back ``size``^3 matmuls, timed as `measure` times a
    case (median of ``repeats`` after one warm-up), so in the power and clock state of the case timed just
    before: the compute floor of a first token that takes a tenth of a second or more.

    `matmul_rate` times a few matmuls from an idle start, at the boost clock. A card at its power limit
    lowers its clock within tens of milliseconds of sustained matmuls (an H200 at 700 W: 784 TFLOP/s for
    the first 35 ms, 655-702 TFLOP/s from there on), so a floor from that rate is one the card cannot
    hold for the length of a first token."""
    per_matmul = 2 * size**3
    count = max(1, math.ceil(flops / per_matmul))
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)

    def stream() -> None:
        for _ in range(count):
            torch.mm(a, b, out=out)

    seconds = measure(stream, device, repeats).seconds
    return seconds * flops / (count * per_matmul)


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"


def transformers_version() -> str | None:
    """The installed transformers version (None when it is not installed)."""
    try:
        import transformers
    except ImportError:
        return None
    return transformers.__version__


def run_info(device: torch.device) -> dict[str, Any]:
    """Where and when a benchmark ran: device, versions, the encoders' attention kernel, host and date."""
    from encoders import flash4

    return {
        "device": device_name(device),
        "torch": torch.__version__,
        "transformers": transformers_version(),
        "encoder_attention": (
            f"FlashAttention 4 ({flash4.installed_version()})" if flash4.serves(device) else "torch SDPA"
        ),
        "host": platform.node(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table: the first column left-aligned, the others right-aligned, widths from content."""
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        first = f"{str(cells[0]):<{widths[0]}}"
        return " ".join([first, *(f"{str(c):>{w}}" for c, w in zip(cells[1:], widths[1:]))])

    return "\n".join(line(row) for row in [headers, *rows])


def write_json(path: str | Path, payload: Any) -> None:
    """Write ``payload`` as indented JSON (parents created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
