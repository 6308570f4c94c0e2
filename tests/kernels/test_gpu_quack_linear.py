"""GPU parity of the audio encoder's quack GEMMs (`encoders.quack_linear`): the feed-forward's first linear
with SiLU and the convolution module's first pointwise convolution with GLU, against torch's ops and the
fp32 reference, eagerly and replayed from a CUDA graph, at the released widths. Skipped without a Hopper
GPU or the quack package."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from numerics import rel_err

from encoders import quack_linear
from encoders.parakeet_attention import ClipLayout
from encoders.parakeet_config import ParakeetConfig
from encoders.parakeet_layers import ConvolutionModule, FeedForward

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] != 9,
        reason="needs a Hopper GPU",
    ),
]


@pytest.fixture(autouse=True)
def _quack():
    if quack_linear._kernels() is None:
        pytest.skip("quack is not installed")


def _feed_forward(seed: int = 0, bias: bool = False) -> FeedForward:
    """The released widths (the released checkpoints have no feed-forward biases)."""
    torch.manual_seed(seed)
    config = ParakeetConfig(hidden_size=1024, intermediate_size=4096, hidden_act="silu", attention_bias=bias)
    module = FeedForward(config).cuda().eval()
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, 0.03)
    return module.bfloat16()


@pytest.mark.parametrize("clips, positions, bias", [(20, 376, False), (3, 101, True)])
def test_feed_forward_on_quack_matches_torch_and_fp32(clips, positions, bias, monkeypatch):
    module = _feed_forward(bias=bias)
    x = torch.randn(clips, positions, 1024, device="cuda").bfloat16()
    calls = []
    real = quack_linear.linear_act
    monkeypatch.setattr(quack_linear, "linear_act", lambda *a: calls.append(1) or real(*a))
    with torch.no_grad():
        ours = module(x)
        assert calls, "the quack GEMM was not used"
        monkeypatch.setenv(quack_linear.ENV, "0")
        torch_path = module(x)
        assert len(calls) == 1
        first, second = module.linear1, module.linear2
        hidden = F.silu(F.linear(x.float(), first.weight.float(), _float(first.bias)))
        exact = F.linear(hidden, second.weight.float(), _float(second.bias))
    assert ours.shape == x.shape and ours.dtype == torch.bfloat16
    assert rel_err(ours, torch_path) <= 1e-2
    # SiLU on the fp32 sums, rounded once: no further from fp32 than torch's two roundings
    assert rel_err(ours, exact) <= 1.25 * rel_err(torch_path, exact)


def _float(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.float()


def test_linear_silu_replayed_from_a_cuda_graph_equals_eager():
    module = _feed_forward(seed=1, bias=True)
    static = torch.randn(20, 376, 1024, device="cuda").bfloat16()
    weight, bias = module.linear1.weight, module.linear1.bias
    with torch.no_grad():
        eager = quack_linear.linear_act(static, weight, bias, "silu")  # compiles outside the capture
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            captured = quack_linear.linear_act(static, weight, bias, "silu")
        static.copy_(torch.randn_like(static))
        graph.replay()
        fresh = quack_linear.linear_act(static, weight, bias, "silu")
    torch.cuda.synchronize()
    assert eager is not None and captured is not None
    assert torch.equal(captured, fresh)


def test_grad_and_other_dtypes_keep_torch():
    module = _feed_forward(bias=True)
    x = torch.randn(2, 8, 1024, device="cuda")
    assert not quack_linear.usable(x, module.linear1.weight.float())  # fp32
    assert not quack_linear.usable(x.bfloat16().requires_grad_(), module.linear1.weight)
    assert not quack_linear.usable(x.bfloat16(), module.linear1.weight)  # the weight wants a gradient
    with torch.no_grad():
        assert quack_linear.usable(x.bfloat16(), module.linear1.weight, module.linear1.bias)


@pytest.mark.parametrize("bias", [True, False])
def test_convolution_module_glu_on_quack_matches_torch_and_fp32(bias, monkeypatch):
    torch.manual_seed(2)
    module = ConvolutionModule(ParakeetConfig(hidden_size=1024, convolution_bias=bias)).cuda().eval()
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, 0.03)
        module.norm.running_var.uniform_(0.5, 1.5)
    exact_module = copy.deepcopy(module)
    module = module.bfloat16()
    x = torch.randn(20, 376, 1024, device="cuda").bfloat16()
    lengths = torch.tensor([376] * 19 + [200], device="cuda")
    clips = ClipLayout(valid_lengths=lengths, extents=lengths, length=376)
    calls = []
    real = quack_linear.linear_act
    monkeypatch.setattr(quack_linear, "linear_act", lambda *a: calls.append(a[-1]) or real(*a))
    with torch.no_grad():
        ours = module(x, clips)
        assert calls == ["glu"]
        monkeypatch.setenv(quack_linear.ENV, "0")
        torch_path = module(x, clips)
        exact = exact_module(x.float(), clips)
    valid = clips.valid[:, :, None]
    ours, torch_path, exact = (t.float() * valid for t in (ours, torch_path, exact))
    assert rel_err(ours, torch_path) <= 1e-2
    assert rel_err(ours, exact) <= 1.25 * rel_err(torch_path, exact)
