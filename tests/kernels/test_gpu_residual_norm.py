"""GPU parity of the ViT's fused scaled-residual + LayerNorm kernel with the separate tensor operations, and of
the RADIO blocks run through it with the reference path (OMNI_DISABLE_FAST_PATHS=1). Skipped without CUDA."""

from __future__ import annotations

from unittest import mock

import pytest
import torch
from numerics import rel_err

from encoders import radio_blocks
from encoders.radio_blocks import DISABLE_FAST_PATHS_ENV, RadioBlock, run_blocks
from encoders.radio_config import RadioConfig

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("rows", [1, 4099])
def test_seam_sum_is_exact_and_norm_within_a_unit_of_its_scale(rows):
    from encoders.residual_norm_triton import scaled_residual_norm_triton

    width = 1280
    norm = torch.nn.LayerNorm(width, eps=1e-6).cuda()
    with torch.no_grad():
        norm.weight.copy_(torch.randn(width, device="cuda") * 0.3 + 1)
        norm.bias.copy_(torch.randn(width, device="cuda") * 0.1)
    norm = norm.bfloat16()
    gamma = (torch.rand(width, device="cuda") + 0.5).bfloat16()
    x = (torch.randn(rows, width, device="cuda") * 4).bfloat16()
    y = torch.randn(rows, width, device="cuda").bfloat16()
    with torch.no_grad():
        new_ref = x + y * gamma
        normed_ref = norm(new_ref)
    new, normed = scaled_residual_norm_triton(x, y, gamma, norm)
    assert torch.equal(new, new_ref)
    # fp32 statistics summed in another order than PyTorch's: the fp32 results differ in their last bits
    # relative to the normalised value before the bias, and the bf16 roundings may then land a unit
    # apart. Where the bias nearly cancels that value the bf16 result is small and the gap is many of its
    # own units (16 on an H200), so the bound is a unit of the result plus one of the value before the bias.
    before_bias = (normed_ref.float() - norm.bias.float()).abs()
    gap = (normed.float() - normed_ref.float()).abs()
    assert (gap <= 2**-7 * normed_ref.float().abs() + 2**-8 * before_bias + 1e-6).all()
    assert rel_err(normed, normed_ref) <= 2**-7  # a unit at the largest value (an H200: 2**-8)


def _blocks(count: int, width: int, dtype: torch.dtype) -> torch.nn.ModuleList:
    config = RadioConfig(
        hidden_size=width,
        num_hidden_layers=count,
        num_attention_heads=width // 80,
        patch_size=16,
        max_img_size=256,
    )
    torch.manual_seed(0)
    blocks = torch.nn.ModuleList(RadioBlock(config) for _ in range(count))
    with torch.no_grad():
        for block in blocks:
            block.layer_scale1.lambda1.uniform_(0.5, 1.5)
            block.layer_scale2.lambda1.uniform_(0.5, 1.5)
    return blocks.cuda().to(dtype).eval()


def test_blocks_fused_match_the_reference_path(monkeypatch):
    blocks = _blocks(4, 640, torch.bfloat16)
    hidden = torch.randn(1, 3 * 257, 640, device="cuda").bfloat16()
    with torch.no_grad():
        fused = run_blocks(blocks, hidden, [257, 257, 257])
        monkeypatch.setenv(DISABLE_FAST_PATHS_ENV, "1")
        reference = run_blocks(blocks, hidden, [257, 257, 257])
    assert rel_err(fused, reference) <= 2e-2


def test_fused_seams_only_in_inference(monkeypatch):
    blocks = _blocks(2, 160, torch.bfloat16)
    hidden = torch.randn(2, 17, 160, device="cuda").bfloat16()
    with torch.no_grad():
        assert radio_blocks._fused_seams_usable(blocks, hidden)
        monkeypatch.setenv(DISABLE_FAST_PATHS_ENV, "1")
        assert not radio_blocks._fused_seams_usable(blocks, hidden)
        monkeypatch.delenv(DISABLE_FAST_PATHS_ENV)
    assert not radio_blocks._fused_seams_usable(blocks, hidden)  # parameters that want gradients
    with mock.patch("encoders.residual_norm_triton.scaled_residual_norm_triton") as seam, torch.no_grad():
        seam.side_effect = lambda x, y, gamma, norm: (x + y * gamma, norm(x + y * gamma))
        run_blocks(blocks, hidden)
    assert seam.call_count == 3  # two seams a block, the last block's second add left as it is
    with torch.no_grad():
        assert not radio_blocks._fused_seams_usable(blocks.float(), hidden.float())  # bf16 only


def test_mlp_gelu_epilogue_is_as_close_to_fp32_as_the_separate_ops():
    from timm.layers import Mlp

    torch.manual_seed(0)
    mlp = Mlp(1280, 5120, act_layer=torch.nn.GELU).cuda().eval()
    with torch.no_grad():
        for parameter in mlp.parameters():
            parameter.normal_(std=0.02)
        hidden = torch.randn(1, 4099, 1280, device="cuda")
        exact = mlp(hidden)  # fp32, erf GELU
        mlp = mlp.bfloat16()
        low = hidden.bfloat16()
        assert radio_blocks.gelu_epilogue_usable(mlp, low)
        fused = radio_blocks.mlp_gelu_epilogue(mlp, low)
        separate = mlp(low)
    assert fused.shape == separate.shape and fused.dtype == torch.bfloat16
    assert rel_err(fused, exact) <= 1.1 * rel_err(separate, exact)
    assert rel_err(fused, separate) <= 1e-2
    assert not radio_blocks.gelu_epilogue_usable(mlp.float(), hidden)  # 16-bit only
    assert not radio_blocks.gelu_epilogue_usable(mlp.train(), low)  # dropout may be live


def test_blocks_take_the_gelu_epilogue(monkeypatch):
    blocks = _blocks(2, 160, torch.bfloat16)
    hidden = torch.randn(1, 17, 160, device="cuda").bfloat16()
    calls = []
    real = radio_blocks.mlp_gelu_epilogue
    monkeypatch.setattr(
        radio_blocks, "mlp_gelu_epilogue", lambda mlp, x: calls.append(x.shape) or real(mlp, x)
    )
    with torch.no_grad():
        run_blocks(blocks, hidden)
    assert len(calls) == 2


def test_a_wrapped_or_hooked_mlp_is_called_not_read():
    peft = pytest.importorskip("peft")
    from timm.layers import Mlp

    mlp = Mlp(160, 640, act_layer=torch.nn.GELU).cuda().eval().bfloat16()
    hidden = torch.randn(1, 17, 160, device="cuda").bfloat16()
    assert radio_blocks.gelu_epilogue_usable(mlp, hidden)
    handle = mlp.register_forward_hook(lambda *args: None)
    assert not radio_blocks.gelu_epilogue_usable(mlp, hidden)  # the hook must see the call
    handle.remove()
    peft.inject_adapter_in_model(peft.LoraConfig(r=2, target_modules=["fc1"]), mlp)
    # reading fc1's weight would skip the adapter (peft exposes the base layer's weight as its own)
    assert not radio_blocks.gelu_epilogue_usable(mlp, hidden)
