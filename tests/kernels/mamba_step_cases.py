"""Worker run in a subprocess by test_mamba_step_interpreted.py: evaluates the fused Mamba-2 decode-step
kernels under Triton's CPU interpreter against the mixer's PyTorch reference and prints one JSON object
{case: relative error}.

TRITON_INTERPRET must be set before triton is first imported; hence a separate process.
"""

from __future__ import annotations

import json
import math
import os
import sys

os.environ["TRITON_INTERPRET"] = "1"

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from numerics import rel_err  # noqa: E402

from backbone.cache import MambaState  # noqa: E402
from backbone.config import HybridConfig  # noqa: E402
from backbone.kernels.mamba_step_triton import (  # noqa: E402
    conv_step_silu,
    gated_group_rmsnorm,
    mamba_decode_step,
    ssd_step_discretized,
)
from backbone.mamba2 import Mamba2Mixer  # noqa: E402
from backbone.ssd import ssd_step  # noqa: E402

# Mixer shapes: the last ones are not powers of two (6 heads of 5 channels, 7 states, 3 groups, K = 3).
MIXERS = {
    "base": dict(hidden=16, heads=4, head_dim=4, dstate=8, groups=2, kernel=4, bias=True, limit=None),
    "nobias_limit": dict(
        hidden=16, heads=4, head_dim=4, dstate=8, groups=2, kernel=4, bias=False, limit=(0.08, 0.3)
    ),
    "odd": dict(
        hidden=10, heads=6, head_dim=5, dstate=7, groups=3, kernel=3, bias=True, limit=(0.1, math.inf)
    ),
    "k1": dict(hidden=12, heads=2, head_dim=3, dstate=5, groups=1, kernel=1, bias=True, limit=(0.0, 0.2)),
}


def make_mixer(hidden, heads, head_dim, dstate, groups, kernel, bias, limit, seed=0) -> Mamba2Mixer:
    config = HybridConfig(
        layer_types="M",
        vocab_size=16,
        hidden_size=hidden,
        mamba_num_heads=heads,
        mamba_head_dim=head_dim,
        ssm_state_size=dstate,
        n_groups=groups,
        conv_kernel=kernel,
        use_conv_bias=bias,
        time_step_limit=limit if limit is not None else (0.0, math.inf),
    )
    torch.manual_seed(seed)
    mixer = Mamba2Mixer(config).eval()
    with torch.no_grad():
        mixer.dt_bias.uniform_(-3.0, 0.5)
        mixer.D.normal_(1.0, 0.5)
        mixer.norm.weight.normal_(1.0, 0.3)
        mixer.conv1d.weight.normal_(0.0, 0.5)
        if mixer.conv1d.bias is not None:
            mixer.conv1d.bias.normal_(0.0, 0.5)
    return mixer


def random_state(mixer: Mamba2Mixer, batch: int, dtype: torch.dtype, g: torch.Generator) -> MambaState:
    conv = torch.randn(batch, mixer.conv_dim, mixer.kernel - 1, generator=g).to(dtype)
    ssm = torch.randn(batch, mixer.num_heads, mixer.head_dim, mixer.state_size, generator=g)
    return MambaState(conv, ssm)


def clone(state: MambaState) -> MambaState:
    return MambaState(state.conv.clone(), state.ssm.clone())


def decode_cases(results: dict) -> None:
    """Three fused decode steps of the whole mixer against its reference forward, fp32 and bf16."""
    runs = [(name, shape, torch.float32, 2 if name != "odd" else 3) for name, shape in MIXERS.items()]
    runs.append(("bf16", MIXERS["base"], torch.bfloat16, 2))
    for name, shape, dtype, batch in runs:
        mixer = make_mixer(**shape).to(dtype)
        g = torch.Generator().manual_seed(1)
        ours = random_state(mixer, batch, dtype, g)
        ref = clone(ours)
        worst = 0.0
        with torch.no_grad():
            for _ in range(3):
                hidden = torch.randn(batch, 1, shape["hidden"], generator=g).to(dtype)
                out = mamba_decode_step(mixer, hidden, ours)
                out_ref = mixer(hidden, None, ref)
                assert out.shape == out_ref.shape and out.dtype == out_ref.dtype
                worst = max(worst, rel_err(out, out_ref))
            if shape["limit"] is not None:
                proj = mixer.in_proj(hidden)[..., -mixer.num_heads :]
                free = F.softplus(proj.float() + mixer.dt_bias.float())
                results[f"decode/{name}/limit_active"] = float(
                    not torch.equal(mixer.discretize_dt(proj), free)
                )
        results[f"decode/{name}/outputs"] = worst
        results[f"decode/{name}/ssm"] = rel_err(ours.ssm, ref.ssm)
        results[f"decode/{name}/conv"] = rel_err(ours.conv, ref.conv) if mixer.kernel > 1 else 0.0


def conv_cases(results: dict) -> None:
    """The conv kernel alone on a strided input and a non-contiguous state."""
    for name in ("base", "odd"):
        for bias in (True, False):
            mixer = make_mixer(**{**MIXERS[name], "bias": bias})
            g = torch.Generator().manual_seed(2)
            batch, channels, k = 3, mixer.conv_dim, mixer.kernel
            packed = torch.randn(batch, channels + 9, generator=g)
            xbc = packed[:, 4 : 4 + channels]
            conv = torch.randn(batch, k - 1, channels, generator=g).transpose(1, 2)  # strides (.., 1, C)
            conv_ref = conv.clone()
            with torch.no_grad():
                out = conv_step_silu(xbc, conv, mixer.conv1d.weight[:, 0], mixer.conv1d.bias)
                out_ref = mixer._causal_conv(xbc[:, None], MambaState(conv_ref, torch.empty(0)))[:, 0]
            key = f"conv/{name}/{'bias' if bias else 'nobias'}"
            results[key] = max(rel_err(out, out_ref), rel_err(conv, conv_ref))


def ssd_cases(results: dict) -> None:
    """The discretising SSD kernel alone (strided views, softplus on both sides of its threshold)."""
    for name in ("base", "odd"):
        for limit in ((0.0, math.inf), (0.05, 2.0)):
            mixer = make_mixer(**{**MIXERS[name], "limit": limit})
            g = torch.Generator().manual_seed(3)
            batch, heads, p, groups, n = 2, mixer.num_heads, mixer.head_dim, mixer.n_groups, mixer.state_size
            packed = torch.randn(batch, heads * p + 2 * groups * n + heads + 3, generator=g)
            x = packed[:, : heads * p].unflatten(-1, (heads, p))
            B = packed[:, heads * p : heads * p + groups * n].unflatten(-1, (groups, n))
            C = packed[:, heads * p + groups * n : heads * p + 2 * groups * n].unflatten(-1, (groups, n))
            dt_raw = packed[:, -heads - 3 : -3] * 3.0
            dt_raw[0, 0], dt_raw[1, -1] = 25.0, -30.0
            state = torch.randn(batch, heads, p, n, generator=g)
            state_ref = state.clone()
            with torch.no_grad():
                y = ssd_step_discretized(
                    state, x, dt_raw, mixer.dt_bias, mixer.A_log, B, C, mixer.D, mixer.time_step_limit
                )
                A = -torch.exp(mixer.A_log.float())
                y_ref = ssd_step(state_ref, x, mixer.discretize_dt(dt_raw), A, B, C, mixer.D)
            key = f"ssd/{name}/{'limit' if limit[0] > 0 else 'free'}"
            results[key] = max(rel_err(y, y_ref), rel_err(state, state_ref))


def softplus_case(results: dict) -> None:
    """With a zero state, x = 1, B = C = 1 (one state) and D = 0, y is dt itself: checked per element."""
    dt_raw = torch.tensor(
        [[-40.0, -25.0, -15.0, -8.0, -3.0, -0.5, 0.0, 0.7, 4.0, 15.0, 19.9, 20.0, 20.5, 35.0]]
    )
    heads = dt_raw.shape[1]
    bias = torch.full((heads,), 0.05)
    state = torch.zeros(1, heads, 1, 1)
    ones = torch.ones(1, 1, 1)
    y = ssd_step_discretized(
        state, torch.ones(1, heads, 1), dt_raw, bias, torch.zeros(heads), ones, ones, torch.zeros(heads)
    )
    ref = F.softplus(dt_raw + bias)
    results["softplus/elementwise"] = ((y[..., 0] - ref).abs() / ref).max().item()


def norm_cases(results: dict) -> None:
    """The gated grouped RMSNorm kernel alone, gate a strided view, fp32 and bf16 output."""
    for name in ("base", "odd"):
        mixer = make_mixer(**MIXERS[name])
        g = torch.Generator().manual_seed(4)
        inner = mixer.inner
        y = torch.randn(3, inner, generator=g)
        gate = torch.randn(3, inner + 5, generator=g)[:, 2 : 2 + inner]
        norm = mixer.norm
        for dtype in (torch.float32, torch.bfloat16):
            with torch.no_grad():
                out = gated_group_rmsnorm(y, gate, norm.weight, norm.n_groups, norm.eps, dtype)
                out_ref = norm(y, gate, dtype)
            assert out.dtype == dtype
            results[f"norm/{name}/{str(dtype).split('.')[-1]}"] = rel_err(out, out_ref)


if __name__ == "__main__":
    torch.set_num_threads(1)
    out: dict[str, float] = {}
    for run in (decode_cases, conv_cases, ssd_cases, softplus_case, norm_cases):
        run(out)
    json.dump(out, sys.stdout)
