"""Time the Mamba-2 SSD prefill scan on CUDA: `ssd_chunked_triton` forced one-pass vs forced parallel.

Shape of the language model: batch 1, 64 heads, head_dim 64, 8 groups, d_state 128; bf16 x/B/C, fp32 dt
and A. Prints, per length, the median time of each path (CUDA events, after a warm-up), the speed-up
and each path's max relative error against `backbone.ssd.ssd_chunked` (chunk 128, fp32). Then (unless
--quick) a per-kernel breakdown of the parallel path at each length, a sweep of its tile choices at the
longest length, and short lengths around the automatic path-selection threshold.

Then the chunk-parallel path's products: kernel time (the profiler's sum over its kernels, so the host's
launch time is left out) and error with 16-bit products (the default for bf16) and with TF32, beside
mamba-ssm's chunked scan (`_mamba_chunk_scan_combined_fwd`, what transformers' Mamba-2 layers call
where it is installed) when `mamba_ssm` imports.

Usage: python benchmarks/bench_ssd.py [--lengths 3344 7517 16144] [--reps 20] [--quick]
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backbone.kernels.ssd_parallel_triton import ssd_chunked_parallel_triton  # noqa: E402
from backbone.kernels.ssd_triton import (  # noqa: E402
    PARALLEL_CHUNK,
    PARALLEL_MIN_CHUNKS,
    ssd_chunked_triton,
    uses_parallel_path,
)
from backbone.ssd import ssd_chunked  # noqa: E402

HEADS, HEAD_DIM, GROUPS, DSTATE = 64, 64, 8, 128


def make_inputs(length: int, batch: int = 1, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(batch, length, HEADS, HEAD_DIM, generator=g, device="cuda").bfloat16()
    B = torch.randn(batch, length, GROUPS, DSTATE, generator=g, device="cuda").bfloat16()
    C = torch.randn(batch, length, GROUPS, DSTATE, generator=g, device="cuda").bfloat16()
    raw = torch.randn(batch, length, HEADS, generator=g, device="cuda") * 0.5 - 1.0
    dt = torch.nn.functional.softplus(raw)  # ~0.1 .. 1
    A = -torch.exp(torch.rand(HEADS, generator=g, device="cuda") * 2.0)  # -1 .. -7.4
    D = torch.randn(HEADS, generator=g, device="cuda")
    return x, dt, A, B, C, D


def time_ms(fn, reps: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(stop))
    return sorted(times)[len(times) // 2]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).abs().max() / b.float().abs().max()).item()


def worst_err(out: tuple[torch.Tensor, torch.Tensor], ref: tuple[torch.Tensor, torch.Tensor]) -> float:
    return max(rel_err(out[0], ref[0]), rel_err(out[1], ref[1]))


def main_table(lengths: list[int], reps: int) -> None:
    print(f"batch 1, {HEADS} heads, p {HEAD_DIM}, {GROUPS} groups, n {DSTATE}; bf16 x/B/C, fp32 dt/A; with D")
    print(
        f"{'L':>6} {'one-pass ms':>12} {'parallel ms':>12} {'speed-up':>9} {'err one-pass':>13} {'err parallel':>13}"
    )
    for length in lengths:
        x, dt, A, B, C, D = make_inputs(length)
        one = time_ms(lambda: ssd_chunked_triton(x, dt, A, B, C, D, parallel=False), reps)  # noqa: B023
        par = time_ms(lambda: ssd_chunked_triton(x, dt, A, B, C, D, parallel=True), reps)  # noqa: B023
        ref = ssd_chunked(x, dt, A, B, C, 128, D)
        err_one = worst_err(ssd_chunked_triton(x, dt, A, B, C, D, parallel=False), ref)
        err_par = worst_err(ssd_chunked_triton(x, dt, A, B, C, D, parallel=True), ref)
        print(f"{length:>6} {one:>12.3f} {par:>12.3f} {one / par:>8.2f}x {err_one:>13.2e} {err_par:>13.2e}")
        del ref
        torch.cuda.empty_cache()


def kernel_ms(fn, calls: int = 10) -> float:
    """Mean GPU kernel time of one call of `fn` (ms), from the profiler: launches and allocations excluded."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    total_us = sum(e.device_time_total for e in prof.key_averages() if e.device_type.name == "CUDA")
    return total_us / calls / 1000


def mamba_ssm_scan():
    """mamba-ssm's forward chunked scan as (x, dt, A, B, C, D) -> (y, final state), or None."""
    try:
        from mamba_ssm.ops.triton.ssd_combined import _mamba_chunk_scan_combined_fwd
    except Exception:  # not installed, or built without its extensions
        return None

    def scan(x, dt, A, B, C, D):
        out = _mamba_chunk_scan_combined_fwd(x, dt, A, B, C, 128, D=D)
        return out[0], out[5]

    return scan


def products_table(lengths: list[int]) -> None:
    reference = mamba_ssm_scan()
    print("\nchunk-parallel path, kernel time in ms (profiler) and error against the fp32 scan:")
    header = f"{'L':>6} {'16-bit ms':>10} {'TF32 ms':>8} {'ratio':>6} {'err 16-bit':>11} {'err TF32':>9}"
    print(header + (f" {'mamba-ssm ms':>13} {'err':>9}" if reference else "  (mamba_ssm not importable)"))
    for length in lengths:
        inputs = make_inputs(length)
        x, dt, A, B, C, D = inputs
        ref = ssd_chunked(x, dt, A, B, C, 128, D)
        runs = {
            native: partial(
                ssd_chunked_parallel_triton,
                *inputs,
                out_dtype=x.dtype,
                start_dtype=x.dtype,
                native_dots=native,
            )
            for native in (True, False)
        }
        native_ms, tf32_ms = kernel_ms(runs[True]), kernel_ms(runs[False])
        row = (
            f"{length:>6} {native_ms:>10.3f} {tf32_ms:>8.3f} {tf32_ms / native_ms:>5.2f}x"
            f" {worst_err(runs[True](), ref):>11.2e} {worst_err(runs[False](), ref):>9.2e}"
        )
        if reference:
            ms = kernel_ms(partial(reference, *inputs))
            row += f" {ms:>13.3f} {worst_err(reference(*inputs), ref):>9.2e}"
        print(row)
        del ref
        torch.cuda.empty_cache()


def breakdown(length: int) -> None:
    from torch.profiler import ProfilerActivity, profile

    x, dt, A, B, C, D = make_inputs(length)
    for _ in range(3):
        ssd_chunked_triton(x, dt, A, B, C, D, parallel=True)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(10):
            ssd_chunked_triton(x, dt, A, B, C, D, parallel=True)
        torch.cuda.synchronize()
    print(f"\nparallel path at L={length}, per kernel (mean of 10 calls):")
    for event in prof.key_averages():
        if event.device_type.name == "CUDA":
            total_us = getattr(event, "device_time_total", None) or getattr(event, "cuda_time_total", 0)
            print(f"  {event.key[:60]:<60} {total_us / 10 / 1000:8.3f} ms  x{event.count // 10}")


def sweep(length: int, reps: int) -> None:
    x, dt, A, B, C, D = make_inputs(length)
    ref = ssd_chunked(x, dt, A, B, C, 128, D)
    print(
        f"\ntile sweep of the parallel path at L={length} (chunk, block, channels per program of pass 1 and of "
        "the output pass, num_warps, state_block):"
    )
    configs = [
        (128, 64, 32, 64, 4, 256),
        (128, 64, 32, 32, 4, 256),
        (128, 64, 32, 64, 8, 256),
        (128, 32, 32, 64, 4, 256),
        (128, 128, 32, 64, 8, 256),
        (128, 64, 32, 64, 4, 512),
        (128, 64, 32, 64, 4, 128),
        (64, 64, 32, 64, 4, 256),
        (256, 64, 32, 64, 4, 256),
        (256, 128, 32, 64, 8, 256),
    ]
    for config in configs:
        chunk, block, block_p, output_block_p, warps, state_block = config

        def run(chunk=chunk, block=block, block_p=block_p, out_p=output_block_p, warps=warps, sb=state_block):
            return ssd_chunked_parallel_triton(
                x, dt, A, B, C, D, None, chunk, block, block_p, state_block=sb, num_warps=warps,
                output_block_p=out_p,
            )  # fmt: skip

        label = " ".join(f"{value:>4}" for value in config)
        try:
            ms = time_ms(run, reps)
            err = worst_err(run(), ref)
            print(f"  {label}: {ms:8.3f} ms  err {err:.2e}")
        except Exception as exc:  # a tile that does not fit (shared memory) is reported, not fatal
            print(f"  {label}: failed ({type(exc).__name__})")


def short_lengths(reps: int) -> None:
    first = PARALLEL_CHUNK * (PARALLEL_MIN_CHUNKS - 1) + 1
    print(f"\nshort sequences (automatic choice: the parallel path from L = {first}):")
    print(f"{'L':>6} {'one-pass ms':>12} {'parallel ms':>12} {'auto':>9}")
    for length in (64, 128, 256, 384, 385, 512, 768, 1024, 2048):
        x, dt, A, B, C, D = make_inputs(length)
        one = time_ms(lambda: ssd_chunked_triton(x, dt, A, B, C, D, parallel=False), reps)  # noqa: B023
        par = time_ms(lambda: ssd_chunked_triton(x, dt, A, B, C, D, parallel=True), reps)  # noqa: B023
        auto = "parallel" if uses_parallel_path(length) else "one-pass"
        print(f"{length:>6} {one:>12.3f} {par:>12.3f} {auto:>9}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[3344, 7517, 16144])
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="only the main table")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("needs a CUDA device")
    print(torch.cuda.get_device_name(), "torch", torch.__version__)
    main_table(args.lengths, args.reps)
    products_table(args.lengths)
    if not args.quick:
        for length in args.lengths:
            try:
                breakdown(length)
            except Exception as exc:  # the profiler is a convenience
                print(f"(no per-kernel breakdown: {type(exc).__name__}: {exc})")
        sweep(max(args.lengths), args.reps)
        short_lengths(args.reps)


if __name__ == "__main__":
    main()
