"""Worker run in a subprocess by test_mamba_prefill_interpreted.py: evaluates the Mamba-2 prefill kernels
under Triton's CPU interpreter against the mixer's PyTorch reference and prints one JSON object
{case: relative error}.

TRITON_INTERPRET must be set before triton is first imported; hence a separate process.
"""

from __future__ import annotations

import json
import os
import sys

os.environ["TRITON_INTERPRET"] = "1"

import torch  # noqa: E402

from backbone.kernels.mamba_prefill_triton import causal_conv_silu, discretize  # noqa: E402
from tests.kernels.mamba_step_cases import MIXERS, clone, make_mixer, random_state, rel_err  # noqa: E402


def token_mask(batch: int, length: int) -> torch.Tensor:
    """Row 0 left-padded by 3, row 1 with a hole in the middle, later rows whole."""
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[0, : min(3, length - 1)] = 0
    if batch > 1 and length > 4:
        mask[1, length // 2] = 0
    return mask


def conv_cases(results: dict) -> None:
    """The conv kernel alone on a strided view of a packed input, against the mixer's conv with the
    reference's masking, with and without a state and a mask, across block edges and L < K - 1, for K
    from 1 to 6."""
    shapes = {name: MIXERS[name] for name in ("base", "odd", "k1")}
    shapes["k6"] = {**MIXERS["base"], "kernel": 6}  # taps beyond the three rows the kernel keeps
    for name, shape in shapes.items():
        mixer = make_mixer(**shape)
        for length in (2, 5, 37):
            for masked in (False, True):
                for with_state in (False, True):
                    g = torch.Generator().manual_seed(length)
                    batch, channels = 2, mixer.conv_dim
                    packed = torch.randn(batch, length, channels + 7, generator=g)
                    xbc = packed[..., 3 : 3 + channels]
                    mask = token_mask(batch, length) if masked else None
                    state = random_state(mixer, batch, torch.float32, g) if with_state else None
                    ref_state = clone(state) if with_state else None
                    with torch.no_grad():
                        out = causal_conv_silu(
                            xbc, mixer.conv1d.weight[:, 0], mixer.conv1d.bias, mask,
                            state.conv if with_state else None,
                        )  # fmt: skip
                        m = mask[..., None].float() if masked else 1.0
                        ref = mixer._causal_conv(xbc * m, ref_state) * m
                    key = f"conv/{name}/L{length}/{'mask' if masked else 'nomask'}/{'state' if with_state else 'fresh'}"
                    err = rel_err(out, ref)
                    if with_state and mixer.kernel > 1:
                        err = max(err, rel_err(state.conv, ref_state.conv))
                    results[key] = err


def time_step_cases(results: dict) -> None:
    """The time-step kernel on a strided view of a packed input (raw steps from -30 to 30, across
    softplus's threshold and into its tiny values), against the mixer's `discretize_dt`, mask and A;
    both inputs in fp32 and bf16, with and without a limit and a mask, rows across the kernel's blocks."""
    for name in ("base", "nobias_limit", "odd"):
        mixer = make_mixer(**MIXERS[name])
        heads = mixer.num_heads
        for dtype in (torch.float32, torch.bfloat16):
            for length in (3, 70):
                for masked in (False, True):
                    g = torch.Generator().manual_seed(length + heads)
                    batch = 2
                    packed = (torch.rand(batch, length, heads + 5, generator=g) * 60 - 30).to(dtype)
                    dt_raw = packed[..., 2 : 2 + heads]
                    mask = token_mask(batch, length).bool() if masked else None
                    params = mixer.to(dtype)
                    with torch.no_grad():
                        dt, A = discretize(dt_raw, params.dt_bias, params.A_log, params.time_step_limit, mask)
                        ref = params.discretize_dt(dt_raw)
                        if masked:
                            ref = ref * mask[..., None].float()
                        ref_A = -torch.exp(params.A_log.float())
                    key = f"dt/{name}/{str(dtype).split('.')[-1]}/L{length}/{'mask' if masked else 'nomask'}"
                    results[key] = max(rel_err(dt, ref), rel_err(A, ref_A))
                    results[key + "/layout"] = float(
                        dt.dtype == A.dtype == torch.float32
                        and dt.is_contiguous()
                        and dt.shape == dt_raw.shape
                    )
                    mixer = mixer.float()


def mixer_cases(results: dict) -> None:
    """The mixer's forward with its prefill kernels (the conv kernel and the gated-norm kernel; the scan
    has its own tests) against its reference forward: outputs and both states."""
    runs = [(name, torch.float32) for name in MIXERS] + [("base", torch.bfloat16)]
    for name, dtype in runs:
        mixer = make_mixer(**MIXERS[name]).to(dtype)
        g = torch.Generator().manual_seed(5)
        batch, length = 3, 21
        hidden = torch.randn(batch, length, MIXERS[name]["hidden"], generator=g).to(dtype)
        mask = token_mask(batch, length).bool()  # as the model passes it
        for with_state in (False, True):
            state = random_state(mixer, batch, dtype, g) if with_state else None
            ref_state = clone(state) if with_state else None
            with torch.no_grad():
                ref = mixer(hidden, mask, ref_state)
                mixer._fast_usable = lambda hidden: True  # as on CUDA
                out = mixer(hidden, mask, state)
                del mixer._fast_usable
            assert out.shape == ref.shape and out.dtype == ref.dtype
            err = rel_err(out, ref)
            if with_state:
                err = max(err, rel_err(state.ssm, ref_state.ssm))
                if mixer.kernel > 1:
                    err = max(err, rel_err(state.conv, ref_state.conv))
            key = f"mixer/{name}/{str(dtype).split('.')[-1]}/{'state' if with_state else 'fresh'}"
            results[key] = err


if __name__ == "__main__":
    torch.set_num_threads(1)
    out: dict[str, float] = {}
    for run in (conv_cases, time_step_cases, mixer_cases):
        run(out)
    json.dump(out, sys.stdout)
