"""HybridLM forward contract: inputs, errors, logits_to_keep, dtypes, gradient checkpointing."""

from __future__ import annotations

import pytest
import torch

from backbone import HybridLM


def test_inputs_embeds_equal_input_ids(tiny_model):
    model = tiny_model()
    ids = torch.randint(3, 96, (2, 7))
    with torch.no_grad():
        a = model(input_ids=ids)
        b = model(inputs_embeds=model.get_input_embeddings()(ids))
    torch.testing.assert_close(a.logits, b.logits, rtol=0, atol=0)
    assert a.last_hidden_state.shape == (2, 7, 32) and a.cache is None and a.loss is None


def test_logits_to_keep(tiny_model):
    model = tiny_model()
    ids = torch.randint(3, 96, (2, 7))
    with torch.no_grad():
        full = model(ids).logits
        assert torch.equal(model(ids, logits_to_keep=2).logits, full[:, -2:])
        assert torch.equal(model(ids, logits_to_keep=torch.tensor([0, 3])).logits, full[:, [0, 3]])


def test_forward_hooks_on_a_block_fire_and_change_nothing(tiny_model):
    """Blocks run by parts around the fused residual seams, but a block with hooks (FSDP's, a user's probe)
    is called as a module: its hooks see every call, and the logits stay the same."""
    model = tiny_model()
    ids = torch.randint(3, 96, (2, 7))
    with torch.no_grad():
        plain = model(ids).logits
        seen = []
        handle = model.backbone.layers[2].register_forward_hook(
            lambda module, args, out: seen.append(out.shape)
        )
        hooked = model(ids).logits
        handle.remove()
    assert seen == [(2, 7, 32)]
    assert torch.equal(hooked, plain)


def test_bf16_forward_is_close_to_fp32(tiny_model, relative_error):
    model = tiny_model()
    ids = torch.randint(3, 96, (2, 9))
    with torch.no_grad():
        reference = model(ids).logits
        out = model.to(torch.bfloat16)(ids)
    assert out.logits.dtype == torch.float32 and out.last_hidden_state.dtype == torch.bfloat16
    assert relative_error(out.logits, reference) < 0.1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(), "exactly one"),
        (
            dict(input_ids=torch.ones(2, 3, dtype=torch.long), inputs_embeds=torch.zeros(2, 3, 32)),
            "exactly one",
        ),
        (dict(input_ids=torch.ones(3, dtype=torch.long)), r"\[batch, length\]"),
        (dict(input_ids=torch.full((1, 3), 96)), r"\[0, 96\)"),
        (dict(inputs_embeds=torch.zeros(1, 3, 31)), "inputs_embeds"),
        (dict(input_ids=torch.ones(1, 0, dtype=torch.long)), "empty"),
        (
            dict(input_ids=torch.ones(1, 3, dtype=torch.long), attention_mask=torch.ones(1, 4)),
            "attention_mask",
        ),
        (
            dict(input_ids=torch.ones(1, 3, dtype=torch.long), labels=torch.ones(1, 2, dtype=torch.long)),
            "labels",
        ),
        (
            dict(
                input_ids=torch.ones(1, 3, dtype=torch.long),
                labels=torch.ones(1, 3, dtype=torch.long),
                logits_to_keep=1,
            ),
            "logits_to_keep",
        ),
    ],
)
def test_bad_inputs_raise_value_errors(tiny_model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_model()(**kwargs)


def test_gradient_checkpointing_gives_same_loss_and_gradients(tiny_model):
    ids = torch.randint(3, 96, (2, 8))
    results = []
    for checkpointing in (False, True):
        model = tiny_model(seed=9).train()
        model.gradient_checkpointing = checkpointing
        loss = model(ids, labels=ids).loss
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((loss.detach(), grads))
    torch.testing.assert_close(results[0][0], results[1][0])
    assert results[0][1].keys() == results[1][1].keys() and len(results[0][1]) > 20
    for name in results[0][1]:
        torch.testing.assert_close(results[0][1][name], results[1][1][name], msg=name)


def test_meta_construction_has_no_storage(tiny_config):
    with torch.device("meta"):
        model = HybridLM(tiny_config())
    assert all(p.is_meta for p in model.parameters())


def test_time_step_limit_is_applied_in_prefill_and_decode(tiny_model, relative_error):
    # dt_bias of -9 gives softplus(dt) ~ 1e-4, below time_step_min: the released kernels (limit (0, inf))
    # do not clamp it, and prefill and decode must agree on that
    model = tiny_model(seed=11)
    mixer = model.backbone.layers[0].mixer
    with torch.no_grad():
        mixer.dt_bias.fill_(-9.0)
    assert mixer.discretize_dt(torch.zeros(1, 1, mixer.num_heads)).max() < model.config.time_step_min
    ids = torch.randint(3, 96, (1, 10))
    with torch.no_grad():
        full = model(ids).logits
        cache = model.new_cache(1, 10)
        steps = [model(ids[:, :3], cache=cache).logits] + [
            model(ids[:, t : t + 1], cache=cache).logits for t in range(3, 10)
        ]
    assert relative_error(torch.cat(steps, dim=1), full) <= 1e-4

    clamped = tiny_model(seed=11, time_step_limit=(0.01, 0.05)).backbone.layers[0].mixer
    dt = clamped.discretize_dt(torch.linspace(-20, 20, 8 * 4).view(1, 4, 8))
    assert dt.min() == 0.01 and dt.max() == 0.05
