"""GPU: a padded first prefill runs packed (`backbone.packing`): torch's variable-length flash kernel for
attention, the real tokens only through the MoE. Against the masked path, each row alone, and in a
training step. Skipped without CUDA."""

from __future__ import annotations

import pytest
import torch
from numerics import rel_err

from backbone import HybridConfig, HybridLM, attention
from backbone.packing import PACKED_PREFILL_ENV

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


# Without MoE layers the comparisons are tight; with them, the packed and padded batches give the router
# matmuls of different sizes, and a near-tie between two experts may flip at a few tokens.
DENSE, WITH_MOE = "M*-M*-", "ME*EM*E-"


def _model(dtype: torch.dtype = torch.bfloat16, layers: str = DENSE) -> HybridLM:
    config = HybridConfig(
        layer_types=layers, vocab_size=512, hidden_size=256, num_attention_heads=8,
        num_key_value_heads=2, head_dim=64, intermediate_size=256, mamba_num_heads=8, mamba_head_dim=32,
        ssm_state_size=32, n_groups=2, chunk_size=64, n_routed_experts=16, num_experts_per_tok=4,
        moe_intermediate_size=128, moe_shared_expert_intermediate_size=192, eos_token_id=2, pad_token_id=0,
        initializer_range=0.05,
    )  # fmt: skip
    torch.manual_seed(0)
    with torch.device("cuda"):
        return HybridLM(config).to(dtype).eval()


def _left_padded(lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    total = max(lengths)
    ids = torch.randint(3, 512, (len(lengths), total), device="cuda")
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        mask[row, total - n :] = 1
    return ids.masked_fill(mask == 0, 0), mask


@pytest.fixture
def kernel_calls(monkeypatch):
    calls = []
    real = attention.flash_varlen
    monkeypatch.setattr(attention, "flash_varlen", lambda *a: calls.append(a[0].shape) or real(*a))
    monkeypatch.setattr(attention, "_VARLEN_FAILED", set())
    return calls


def test_packed_prefill_matches_the_masked_path_and_each_row_alone(monkeypatch, kernel_calls):
    model = _model()
    lengths = [700, 130, 1025, 1]
    ids, mask = _left_padded(lengths)
    with torch.no_grad():
        packed = model(input_ids=ids, attention_mask=mask).logits
        assert len(kernel_calls) == 2 and kernel_calls[0] == (sum(lengths), 8, 64)
        assert not attention._VARLEN_FAILED  # the kernel ran: no fallback to the mask
        monkeypatch.setenv(PACKED_PREFILL_ENV, "0")
        masked = model(input_ids=ids, attention_mask=mask).logits
        alone = [model(input_ids=ids[r : r + 1, -n:]).logits[0] for r, n in enumerate(lengths)]
    real = mask.bool()
    assert rel_err(packed[real], masked[real]) <= 2e-2
    for row, n in enumerate(lengths):
        assert rel_err(packed[row, -n:], alone[row]) <= 2e-2, row


def test_packed_moe_prefill_matches_the_masked_path(monkeypatch, kernel_calls):
    model = _model(layers=WITH_MOE)
    ids, mask = _left_padded([700, 130, 1025, 64])
    with torch.no_grad():
        packed = model(input_ids=ids, attention_mask=mask).logits[mask.bool()].float()
        assert kernel_calls and not attention._VARLEN_FAILED
        monkeypatch.setenv(PACKED_PREFILL_ENV, "0")
        masked = model(input_ids=ids, attention_mask=mask).logits[mask.bool()].float()
    per_token = (packed - masked).abs().amax(-1) / masked.abs().amax()
    assert per_token.median() <= 1e-2
    assert (per_token <= 5e-2).float().mean() >= 0.98
    assert (packed.argmax(-1) == masked.argmax(-1)).float().mean() >= 0.95


def test_packed_generation_gives_each_rows_tokens_fp16(kernel_calls):
    model = _model(torch.float16)
    lengths = [300, 45, 170]
    ids, mask = _left_padded(lengths)
    kw = dict(max_new_tokens=12, eos_token_id=[])
    batch = model.generate(input_ids=ids, attention_mask=mask, **kw)
    assert kernel_calls and not attention._VARLEN_FAILED
    agree = 0
    for row, n in enumerate(lengths):
        alone = model.generate(input_ids=ids[row : row + 1, -n:], **kw)
        agree += int(torch.equal(alone[0, n:], batch[row, -12:]))
    assert agree >= 2  # greedy near-ties may flip one row in fp16


def test_packed_training_step_matches_the_masked_one(monkeypatch, kernel_calls):
    model = _model().train()
    ids, mask = _left_padded([400, 257, 90])
    labels = ids.masked_fill(mask == 0, -100)
    labels[mask.cumsum(1) == 1] = -100  # a row's first token has nothing real before it

    def step():
        model.zero_grad()
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        return loss.float(), {n: p.grad.float() for n, p in model.named_parameters() if p.grad is not None}

    loss, grads = step()
    assert kernel_calls and not attention._VARLEN_FAILED
    monkeypatch.setenv(PACKED_PREFILL_ENV, "0")
    ref_loss, ref_grads = step()
    assert abs(loss - ref_loss) <= 1e-2 * abs(ref_loss)
    for name, grad in ref_grads.items():
        assert rel_err(grads[name], grad) <= 5e-2, name
