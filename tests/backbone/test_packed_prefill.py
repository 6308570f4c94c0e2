"""Padded prefills as packed rows (`backbone.packing`): the real tokens only through the MoE / MLP layers
and one variable-length causal attention call. The GPU kernel is stood in for by per-row SDPA here, so
the wiring (gather, cu_seqlens, scatter, gradients) is checked on the CPU; tests/kernels checks the
kernel itself."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from backbone import attention
from backbone import model as model_module
from backbone.moe import MoE
from backbone.packing import PACKED_PREFILL_ENV, PackedRows, packing_wanted


def _varlen_by_rows(q, k, v, cu_seqlens, longest, scale):
    """What the flash kernel computes, one packed sequence at a time (CPU stand-in)."""
    assert int((cu_seqlens[1:] - cu_seqlens[:-1]).max()) == longest
    groups = q.shape[1] // k.shape[1]
    pieces = []
    for start, stop in zip(cu_seqlens[:-1].tolist(), cu_seqlens[1:].tolist()):
        qs, ks, vs = (t[start:stop].transpose(0, 1) for t in (q, k, v))
        ks, vs = ks.repeat_interleave(groups, 0), vs.repeat_interleave(groups, 0)
        pieces.append(F.scaled_dot_product_attention(qs, ks, vs, is_causal=True, scale=scale).transpose(0, 1))
    return torch.cat(pieces)


@pytest.fixture
def packed_on_cpu(monkeypatch):
    """Packing switched on for CPU tensors, with the stand-in kernel; counts the kernel's calls."""
    calls = []

    def kernel(*args):
        calls.append(args[0].shape)
        return _varlen_by_rows(*args)

    monkeypatch.setattr(
        model_module,
        "packing_wanted",
        lambda hidden, mask, past: mask is not None and past == 0 and hidden.shape[1] > 1,
    )
    monkeypatch.setattr(attention, "_varlen_usable", lambda q, packed: packed is not None)
    monkeypatch.setattr(attention, "flash_varlen", kernel)
    return calls


def _left_padded(lengths, total, vocab=96):
    ids = torch.randint(3, vocab, (len(lengths), total))
    mask = torch.zeros(len(lengths), total, dtype=torch.long)
    for row, n in enumerate(lengths):
        mask[row, total - n :] = 1
        ids[row, : total - n] = 0
    return ids, mask


def test_gather_and_scatter_follow_the_mask_whatever_its_holes():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 1, 0, 1, 0]])
    packed = PackedRows.from_mask(mask)
    assert packed.tokens == 10 and packed.max_length == 5
    assert packed.cu_seqlens.tolist() == [0, 3, 8, 10] and packed.cu_seqlens.dtype == torch.int32
    x = torch.arange(15.0).view(3, 5, 1).expand(3, 5, 2)
    rows = packed.gather(x)
    assert rows[:, 0].tolist() == [2, 3, 4, 5, 6, 7, 8, 9, 11, 13]
    back = packed.scatter(rows)
    assert torch.equal(back, x * mask[..., None])


def test_packing_is_for_a_padded_first_prefill_on_cuda_only(monkeypatch):
    hidden = torch.zeros(2, 4, 8)
    mask = torch.ones(2, 4, dtype=torch.bool)
    assert not packing_wanted(hidden, mask, past=0)  # the CPU keeps the masked reference path
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))
    assert packing_wanted(hidden, mask, past=0)
    assert not packing_wanted(hidden, None, past=0)
    assert not packing_wanted(hidden, mask, past=3)
    assert not packing_wanted(hidden[:, :1], mask[:, :1], past=0)
    monkeypatch.setenv(PACKED_PREFILL_ENV, "0")
    assert not packing_wanted(hidden, mask, past=0)


def test_packed_prefill_gives_the_masked_logits_at_real_tokens(tiny_model, packed_on_cpu, monkeypatch):
    model = tiny_model()
    torch.manual_seed(1)
    ids, mask = _left_padded([9, 4, 12], total=12)
    with torch.no_grad():
        packed = model(ids, attention_mask=mask).logits
        assert len(packed_on_cpu) == model.config.layer_types.count("attention")
        assert packed_on_cpu[0][0] == 25  # the real tokens only
    monkeypatch.setattr(model_module, "packing_wanted", packing_wanted)  # the masked reference path
    with torch.no_grad():
        reference = model(ids, attention_mask=mask).logits
    real = mask.bool()
    torch.testing.assert_close(packed[real], reference[real], rtol=1e-5, atol=1e-5)


def test_moe_and_mlp_layers_see_only_real_tokens(tiny_model, packed_on_cpu, monkeypatch):
    model = tiny_model()
    seen = {}
    forward = MoE.forward
    monkeypatch.setattr(
        MoE,
        "forward",
        lambda self, h, m=None: seen.setdefault("moe", []).append(h.shape[0]) or forward(self, h, m),
    )
    for name, module in model.named_modules():
        if name.endswith(("mixer.in_proj", "mixer.up_proj")):
            kind = name.rsplit(".", 1)[1]
            module.register_forward_hook(
                lambda m, args, out, kind=kind: seen.setdefault(kind, []).append(args[0].shape[:-1].numel())
            )
    ids, mask = _left_padded([3, 7], total=7)
    with torch.no_grad():
        model(ids, attention_mask=mask)
    assert set(seen) == {"moe", "in_proj", "up_proj"}  # MoE, Mamba-2, dense MLP
    assert all(rows == 10 for rows in seen["moe"] + seen["up_proj"]), seen
    # Mamba-2 keeps the padded layout: gathering its projections cost more than it saved (H200, full
    # depth, 8 prompts of 512..4,096 tokens: 370 ms against 344 ms)
    assert all(rows == 14 for rows in seen["in_proj"]), seen


@pytest.mark.parametrize("checkpointing", [False, True])
def test_packed_training_step_gives_the_masked_loss_and_gradients(
    tiny_model, packed_on_cpu, monkeypatch, checkpointing
):
    model = tiny_model().train()
    model.gradient_checkpointing = checkpointing
    torch.manual_seed(2)
    ids, mask = _left_padded([6, 10], total=10)
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, -10] = labels[:, -6] = -100  # a row's first token has no real position before it to predict it

    def loss_and_grads():
        model.zero_grad()
        loss = model(ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    loss, grads = loss_and_grads()
    assert packed_on_cpu
    monkeypatch.setattr(model_module, "packing_wanted", packing_wanted)
    ref_loss, ref_grads = loss_and_grads()
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    assert grads.keys() == ref_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-4, atol=1e-6, msg=name)
