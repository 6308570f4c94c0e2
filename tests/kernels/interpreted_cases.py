"""Worker run in a subprocess by test_ssd_interpreted.py: evaluates the Triton SSD kernels under Triton's
CPU interpreter against the PyTorch reference and prints one JSON object {case: relative error}.

TRITON_INTERPRET must be set before triton is first imported, which a test process that already
imported torch's Triton integration cannot guarantee; hence a separate process.
"""

from __future__ import annotations

import json
import os
import sys

os.environ["TRITON_INTERPRET"] = "1"

import torch  # noqa: E402
from numerics import rel_err  # noqa: E402

from backbone.kernels.ssd_parallel_triton import ssd_chunked_parallel_triton  # noqa: E402
from backbone.kernels.ssd_triton import (  # noqa: E402
    PARALLEL_MIN_CHUNKS,
    ssd_chunked_triton,
    ssd_step_triton,
    uses_parallel_path,
)
from backbone.ssd import ssd_chunked, ssd_sequential, ssd_step  # noqa: E402


def inputs(batch=2, length=21, heads=2, head_dim=4, groups=1, dstate=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, length, heads, head_dim, generator=g)
    dt = torch.rand(batch, length, heads, generator=g) * 0.8 + 0.05
    A = -(torch.rand(heads, generator=g) * 2 + 0.2)
    B = torch.randn(batch, length, groups, dstate, generator=g)
    C = torch.randn(batch, length, groups, dstate, generator=g)
    D = torch.randn(heads, generator=g)
    state = torch.randn(batch, heads, head_dim, dstate, generator=g)
    return x, dt, A, B, C, D, state


SHAPES = {
    "ragged": dict(length=21, heads=2, head_dim=4, groups=1, dstate=8),  # not a multiple of the tile
    "grouped": dict(length=32, heads=2, head_dim=8, groups=2, dstate=4),  # one group per head, 2 tiles
    "single": dict(length=1, heads=1, head_dim=4, groups=1, dstate=4),
}


def chunked_cases(results: dict) -> None:
    for name, shape in SHAPES.items():
        for with_state in (False, True):
            x, dt, A, B, C, D, state = inputs(**shape)
            initial = state if with_state else None
            y, final = ssd_chunked_triton(x, dt, A, B, C, D, initial, chunk=16)
            y_ref, final_ref = ssd_chunked(x, dt, A, B, C, 4, D, initial_state=initial)
            y_seq, final_seq = ssd_sequential(x, dt, A, B, C, D, initial)
            key = f"chunked/{name}/{'state' if with_state else 'zero'}"
            results[key] = max(rel_err(y, y_ref), rel_err(final, final_ref))
            results[key + "/sequential"] = max(rel_err(y, y_seq), rel_err(final, final_seq))
            results[key + "/dtype"] = float(y.dtype != torch.float32 or final.dtype != torch.float32)


def strided_case(results: dict) -> None:
    x, dt, A, B, C, _, state = inputs(length=18, heads=2, head_dim=4, groups=1, dstate=8, seed=3)
    packed = torch.cat([x.flatten(2), B.flatten(2), C.flatten(2)], dim=-1)  # as the mixer's split views
    xv = packed[..., :8].unflatten(-1, (2, 4))
    Bv = packed[..., 8:16].unflatten(-1, (1, 8))
    Cv = packed[..., 16:].unflatten(-1, (1, 8))
    assert not xv.is_contiguous()
    y, final = ssd_chunked_triton(xv, dt, A, Bv, Cv, None, state, chunk=16)
    y_ref, final_ref = ssd_chunked(x, dt, A, B, C, 8, None, initial_state=state)
    results["strided/no_skip"] = max(rel_err(y, y_ref), rel_err(final, final_ref))


def padding_case(results: dict) -> None:
    x, dt, A, B, C, D, _ = inputs(batch=1, length=20, heads=2, head_dim=4, groups=1, dstate=4, seed=5)
    pad = 7
    xp, dtp = x.clone(), dt.clone()
    xp[:, :pad] = 0
    dtp[:, :pad] = 0
    y_pad, final_pad = ssd_chunked_triton(xp, dtp, A, B, C, D, None, chunk=16)
    y_alone, final_alone = ssd_chunked_triton(
        x[:, pad:], dt[:, pad:], A, B[:, pad:], C[:, pad:], D, None, chunk=16
    )
    results["padding/final"] = rel_err(final_pad, final_alone)
    results["padding/outputs"] = rel_err(y_pad[:, pad:], y_alone)
    results["padding/padded_outputs"] = y_pad[:, :pad].abs().max().item()


def parallel_cases(results: dict) -> None:
    """The chunk-parallel path, forced: against the reference and against the one-pass kernel."""
    # batch 2, two heads per group, 37 = 2 chunks of 16 and a partial one
    x, dt, A, B, C, D, state = inputs(batch=2, length=37, heads=4, head_dim=4, groups=2, dstate=8, seed=7)
    for d, initial, key in ((None, None, "parallel/noD/zero"), (D, state, "parallel/D/state")):
        y, final = ssd_chunked_triton(x, dt, A, B, C, d, initial, chunk=16, parallel=True)
        y_ref, final_ref = ssd_chunked(x, dt, A, B, C, 8, d, initial_state=initial)
        y_one, final_one = ssd_chunked_triton(x, dt, A, B, C, d, initial, chunk=16, parallel=False)
        results[key] = max(rel_err(y, y_ref), rel_err(final, final_ref))
        results[key + "/one_pass"] = max(rel_err(y, y_one), rel_err(final, final_one))
        results[key + "/dtype"] = float(y.dtype != torch.float32 or final.dtype != torch.float32)

    # Several row blocks per chunk (the diagonal skip), two channel blocks, masked channels and state.
    x, dt, A, B, C, D, state = inputs(batch=1, length=45, heads=2, head_dim=20, groups=1, dstate=12, seed=8)
    y, final = ssd_chunked_parallel_triton(
        x, dt, A, B, C, D, state, chunk=32, block=16, block_p=16, state_block=64, output_block_p=16
    )
    y_ref, final_ref = ssd_chunked(x, dt, A, B, C, 8, D, initial_state=state)
    results["parallel/tiles"] = max(rel_err(y, y_ref), rel_err(final, final_ref))

    # More chunks than the serial pass takes a turn (10 chunks of 16, 4 a turn: two whole turns and a part
    # one), its starts written over the contributions in place (fp32) or to their own bf16 buffer.
    xg, dtg, Ag, Bg, Cg, Dg, state_g = inputs(
        batch=2, length=150, heads=2, head_dim=4, groups=1, dstate=8, seed=3
    )
    y_ref_g, final_ref_g = ssd_chunked(xg, dtg, Ag, Bg, Cg, 8, Dg, initial_state=state_g)
    for start_dtype, key in (
        (torch.float32, "parallel/groups/fp32"),
        (torch.bfloat16, "parallel/groups/bf16"),
    ):
        y, final = ssd_chunked_parallel_triton(
            xg, dtg, Ag, Bg, Cg, Dg, state_g, chunk=16, state_group=4, start_dtype=start_dtype
        )
        results[key + "/y"] = rel_err(y, y_ref_g)
        results[key + "/final"] = rel_err(final, final_ref_g)

    # bf16 x, B and C: 16-bit products with fp32 sums by default (scaled operands rounded once), TF32 on
    # request; both against the fp32 scan of the same bf16 values.
    x16, B16, C16 = x.bfloat16(), B.bfloat16(), C.bfloat16()
    y_ref16, final_ref16 = ssd_chunked(
        x16.float(), dt, A, B16.float(), C16.float(), 8, D, initial_state=state
    )
    tiles = dict(chunk=32, block=16, block_p=16, state_block=64, output_block_p=16)
    y_native, final_native = ssd_chunked_parallel_triton(x16, dt, A, B16, C16, D, state, **tiles)
    y_tf32, final_tf32 = ssd_chunked_parallel_triton(
        x16, dt, A, B16, C16, D, state, native_dots=False, **tiles
    )
    results["parallel/native/y"] = rel_err(y_native, y_ref16)
    results["parallel/native/final"] = rel_err(final_native, final_ref16)
    results["parallel/native/tf32"] = max(rel_err(y_tf32, y_ref16), rel_err(final_tf32, final_ref16))
    results["parallel/native/rounded"] = float(not torch.equal(y_native, y_tf32))

    # 16-bit outputs and start states: y rounded once, the final state still summed and kept in fp32.
    y, final = ssd_chunked_parallel_triton(
        x, dt, A, B, C, D, state, chunk=32, block=16, out_dtype=torch.bfloat16, start_dtype=torch.bfloat16
    )
    results["parallel/bf16_starts/y"] = rel_err(y.float(), y_ref)
    results["parallel/bf16_starts/final"] = rel_err(final, final_ref)
    results["parallel/bf16_starts/dtypes"] = float(y.dtype != torch.bfloat16 or final.dtype != torch.float32)

    # Strided views: x, B, C split from one packed tensor, dt and the initial state transposed copies.
    x, dt, A, B, C, _, state = inputs(batch=2, length=35, heads=2, head_dim=4, groups=1, dstate=8, seed=9)
    packed = torch.cat([x.flatten(2), B.flatten(2), C.flatten(2)], dim=-1)
    xv = packed[..., :8].unflatten(-1, (2, 4))
    Bv = packed[..., 8:16].unflatten(-1, (1, 8))
    Cv = packed[..., 16:].unflatten(-1, (1, 8))
    dtv = dt.transpose(1, 2).contiguous().transpose(1, 2)
    state_v = state.transpose(2, 3).contiguous().transpose(2, 3)
    assert not (xv.is_contiguous() or dtv.is_contiguous() or state_v.is_contiguous())
    y, final = ssd_chunked_triton(xv, dtv, A, Bv, Cv, None, state_v, chunk=16, parallel=True)
    y_ref, final_ref = ssd_chunked(x, dt, A, B, C, 8, None, initial_state=state)
    results["parallel/strided"] = max(rel_err(y, y_ref), rel_err(final, final_ref))

    # One token, and left padding (dt = 0, x = 0) leaving the state untouched.
    x, dt, A, B, C, D, state = inputs(batch=1, length=20, heads=2, head_dim=4, groups=1, dstate=4, seed=5)
    y, final = ssd_chunked_triton(
        x[:, :1], dt[:, :1], A, B[:, :1], C[:, :1], D, state, chunk=16, parallel=True
    )
    y_ref, final_ref = ssd_chunked(x[:, :1], dt[:, :1], A, B[:, :1], C[:, :1], 4, D, initial_state=state)
    results["parallel/single"] = max(rel_err(y, y_ref), rel_err(final, final_ref))
    xp, dtp = x.clone(), dt.clone()
    xp[:, :7] = 0
    dtp[:, :7] = 0
    y_pad, final_pad = ssd_chunked_triton(xp, dtp, A, B, C, D, None, chunk=16, parallel=True)
    y_alone, final_alone = ssd_chunked_triton(x[:, 7:], dt[:, 7:], A, B[:, 7:], C[:, 7:], D, None, chunk=16)
    results["parallel/padding"] = max(rel_err(final_pad, final_alone), rel_err(y_pad[:, 7:], y_alone))
    results["parallel/padded_outputs"] = y_pad[:, :7].abs().max().item()


def selection_cases(results: dict) -> None:
    """Without `parallel`, sequences of `PARALLEL_MIN_CHUNKS` chunks or more take the chunk-parallel path,
    shorter ones the one-pass kernel."""
    boundary = 16 * (PARALLEL_MIN_CHUNKS - 1)  # the longest length that stays on the one-pass kernel
    x, dt, A, B, C, D, _ = inputs(
        batch=1, length=boundary + 1, heads=2, head_dim=4, groups=1, dstate=4, seed=6
    )
    for name, length in (("below", boundary), ("at", boundary + 1)):
        args = (x[:, :length], dt[:, :length], A, B[:, :length], C[:, :length], D)
        auto = ssd_chunked_triton(*args, chunk=16)
        forced = ssd_chunked_triton(*args, chunk=16, parallel=uses_parallel_path(length, 16))
        other = ssd_chunked_triton(*args, chunk=16, parallel=not uses_parallel_path(length, 16))
        results[f"select/{name}/parallel"] = float(uses_parallel_path(length, 16))
        results[f"select/{name}/same"] = float(all(torch.equal(a, f) for a, f in zip(auto, forced)))
        results[f"select/{name}/distinct"] = float(not all(torch.equal(a, o) for a, o in zip(auto, other)))


def step_cases(results: dict) -> None:
    for groups in (1, 2):
        x, dt, A, B, C, D, state = inputs(batch=2, length=3, heads=2, head_dim=8, groups=groups, dstate=8)
        ours, ref = state.clone(), state.clone()
        worst = 0.0
        for t in range(3):
            y = ssd_step_triton(ours, x[:, t], dt[:, t], A, B[:, t], C[:, t], D)
            y_ref = ssd_step(ref, x[:, t], dt[:, t], A, B[:, t], C[:, t], D)
            worst = max(worst, rel_err(y, y_ref))
        results[f"step/groups{groups}/outputs"] = worst
        results[f"step/groups{groups}/state"] = rel_err(ours, ref)
    x, dt, A, B, C, D, state = inputs(batch=1, length=1, heads=1, head_dim=4, dstate=4)
    try:
        ssd_step_triton(state.half(), x[:, 0], dt[:, 0], A, B[:, 0], C[:, 0], D)
        results["step/rejects_half_state"] = 0.0
    except ValueError:
        results["step/rejects_half_state"] = 1.0


if __name__ == "__main__":
    torch.set_num_threads(1)
    out: dict[str, float] = {}
    for run in (chunked_cases, strided_case, padding_case, parallel_cases, selection_cases, step_cases):
        run(out)
    json.dump(out, sys.stdout)
