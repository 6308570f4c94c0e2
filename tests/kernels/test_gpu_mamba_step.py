"""GPU parity of the fused Mamba-2 decode step and of the prefill kernels with the reference path
(OMNI_DISABLE_FAST_PATHS=1) at the released model's mixer sizes, and the step's CUDA-graph capture.
Skipped without CUDA."""

from __future__ import annotations

import math

import pytest
import torch
from numerics import rel_err

from backbone.cache import MambaState
from backbone.config import HybridConfig
from backbone.kernels import DISABLE_ENV
from backbone.mamba2 import Mamba2Mixer

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _mixer(dtype: torch.dtype, limit: tuple[float, float] = (0.0, math.inf)) -> Mamba2Mixer:
    """64 heads x 64 channels, 128 states, 8 groups, K = 4: conv_dim 6144, inner 4096."""
    config = HybridConfig(
        layer_types="M",
        vocab_size=16,
        hidden_size=2688,
        mamba_num_heads=64,
        mamba_head_dim=64,
        ssm_state_size=128,
        n_groups=8,
        conv_kernel=4,
        time_step_limit=limit,
    )
    torch.manual_seed(0)
    with torch.device("cuda"):
        mixer = Mamba2Mixer(config).to(dtype).eval()
    with torch.no_grad():
        mixer.dt_bias.uniform_(-5.0, 0.5)
        mixer.D.normal_(1.0, 0.5)
        mixer.norm.weight.normal_(1.0, 0.3)
        mixer.conv1d.weight.normal_(0.0, 0.5)
        mixer.conv1d.bias.normal_(0.0, 0.5)
    return mixer


def _state(mixer: Mamba2Mixer, batch: int, dtype: torch.dtype) -> MambaState:
    g = torch.Generator(device="cuda").manual_seed(1)
    conv = torch.randn(batch, mixer.conv_dim, mixer.kernel - 1, generator=g, device="cuda").to(dtype)
    ssm = torch.randn(batch, mixer.num_heads, mixer.head_dim, mixer.state_size, generator=g, device="cuda")
    return MambaState(conv, ssm)


def _hidden(batch: int, steps: int, dtype: torch.dtype) -> list[torch.Tensor]:
    g = torch.Generator(device="cuda").manual_seed(2)
    return [torch.randn(batch, 1, 2688, generator=g, device="cuda").to(dtype) for _ in range(steps)]


def _run(mixer: Mamba2Mixer, state: MambaState, hiddens: list[torch.Tensor]) -> list[torch.Tensor]:
    with torch.no_grad():
        return [mixer(h, None, state) for h in hiddens]


@pytest.mark.parametrize("batch", [1, 7, 64])
@pytest.mark.parametrize(
    ("dtype", "tolerance"), [(torch.float32, 1e-4), (torch.bfloat16, 2e-2)], ids=["fp32", "bf16"]
)
@pytest.mark.parametrize("limit", [(0.0, math.inf), (0.01, 0.05)], ids=["free", "limited"])
def test_fused_decode_step_matches_reference(monkeypatch, batch, dtype, tolerance, limit):
    mixer = _mixer(dtype, limit)
    hiddens = _hidden(batch, 4, dtype)
    fast_state, ref_state = _state(mixer, batch, dtype), _state(mixer, batch, dtype)
    with torch.no_grad():
        assert mixer._fused_step_usable(hiddens[0], fast_state)
    fast = _run(mixer, fast_state, hiddens)
    monkeypatch.setenv(DISABLE_ENV, "1")
    with torch.no_grad():
        assert not mixer._fused_step_usable(hiddens[0], ref_state)
    ref = _run(mixer, ref_state, hiddens)
    for ours, theirs in zip(fast, ref):
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
        assert rel_err(ours, theirs) <= tolerance
    assert rel_err(fast_state.ssm, ref_state.ssm) <= tolerance
    assert torch.equal(fast_state.conv, ref_state.conv)  # the conv state only moves inputs


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_fused_decode_step_in_a_cuda_graph(dtype):
    """A captured step replayed on new inputs gives the eager fused step's outputs and states exactly."""
    batch = 3
    mixer = _mixer(dtype)
    hiddens = _hidden(batch, 3, dtype)
    eager_state = _state(mixer, batch, dtype)
    eager = _run(mixer, eager_state, hiddens)

    graph_state = _state(mixer, batch, dtype)
    static_in = torch.zeros_like(hiddens[0])
    warm = _state(mixer, batch, dtype)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream), torch.no_grad():
        mixer(static_in, None, warm)  # compiles the kernels outside the capture
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), torch.no_grad():
        static_out = mixer(static_in, None, graph_state)
    graph_state.conv.copy_(_state(mixer, batch, dtype).conv)  # capture does not run: reset anyway
    graph_state.ssm.copy_(_state(mixer, batch, dtype).ssm)
    for hidden, expected in zip(hiddens, eager):
        static_in.copy_(hidden)
        graph.replay()
        assert torch.equal(static_out, expected)
    torch.cuda.synchronize()
    assert torch.equal(graph_state.ssm, eager_state.ssm)
    assert torch.equal(graph_state.conv, eager_state.conv)


def _prompt(batch: int, length: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Hidden states and a mask with row 0 left-padded (by 5, or all but its last token) and row 1
    missing one middle token."""
    g = torch.Generator(device="cuda").manual_seed(3)
    hidden = torch.randn(batch, length, 2688, generator=g, device="cuda").to(dtype)
    mask = torch.ones(batch, length, dtype=torch.bool, device="cuda")  # as the model passes it
    mask[0, : min(5, length - 1)] = False
    if batch > 1:
        mask[1, length // 2] = False
    return hidden, mask


@pytest.mark.parametrize(("batch", "length"), [(1, 3), (2, 300), (1, 2049)])
@pytest.mark.parametrize(
    ("dtype", "tolerance"), [(torch.float32, 1e-4), (torch.bfloat16, 2e-2)], ids=["fp32", "bf16"]
)
@pytest.mark.parametrize("start", ["fresh", "state"])
def test_prefill_kernels_match_reference(monkeypatch, batch, length, dtype, tolerance, start):
    """The prefill kernels (`mamba_prefill_triton`) against the reference forward: padded rows, from
    nothing or continuing from a state (then the updated states too)."""
    mixer = _mixer(dtype)
    hidden, mask = _prompt(batch, length, dtype)
    fast_state = _state(mixer, batch, dtype) if start == "state" else None
    ref_state = _state(mixer, batch, dtype) if start == "state" else None
    with torch.no_grad():
        fast = mixer(hidden, mask, fast_state)
        monkeypatch.setenv(DISABLE_ENV, "1")
        ref = mixer(hidden, mask, ref_state)
    assert fast.dtype == ref.dtype and fast.shape == ref.shape
    assert rel_err(fast, ref) <= tolerance
    if start == "state":
        assert rel_err(fast_state.ssm, ref_state.ssm) <= tolerance
        assert torch.equal(fast_state.conv, ref_state.conv)  # the conv state only moves (masked) inputs
