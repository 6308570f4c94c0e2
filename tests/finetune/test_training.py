"""The training loop: overfitting a handful of samples, LoRA / adapter modes, exact resumption."""

from __future__ import annotations

import pytest
import torch

from omni.finetune.data import BatchBuilder, read_jsonl
from omni.finetune.distributed import World
from omni.finetune.modes import parameter_counts, prepare_model
from omni.finetune.trainer import TrainConfig, Trainer, learning_rate, step_plan

TASKS = ("shapes-count", "beeps")


def _trainer(model, processor, records, tmp_path, **settings) -> Trainer:
    config = TrainConfig(num_workers=0, progress=False, **settings)
    return Trainer(model, BatchBuilder(processor), records, config, output=tmp_path, full_state=True)


def test_loss_falls_when_overfitting(fresh, data_dir, tmp_path):
    model, processor = fresh()
    records = [r for r in read_jsonl(data_dir / "train.jsonl") if r.task in TASKS]
    prepare_model(model, "full")
    trainer = _trainer(model, processor, records, tmp_path, steps=20, batch_size=2, lr=1e-2, warmup_steps=2)
    losses = [r.loss for r in trainer.train()]
    assert len(losses) == 20
    assert sum(losses[-3:]) / 3 < 0.3 * losses[0], losses


def test_modes_choose_what_trains(fresh):
    model, _ = fresh()
    prepare_model(model, "adapters")
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"mlp1", "sound_projection"}

    model, _ = fresh()
    prepare_model(model, "lora", lora_rank=4, freeze_audio=True)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any("mixer.in_proj.lora_A" in n for n in names)
    assert any("mixer.q_proj.lora_B" in n for n in names)
    assert any("shared_experts.up_proj.lora_A" in n for n in names)
    assert any("attn.qkv.lora_A" in n for n in names)
    assert not any(n.startswith("sound_encoder") for n in names)  # frozen tower: no LoRA there
    assert not any("mixer.experts." in n for n in names)  # stacked routed experts stay frozen
    assert any(n.startswith("sound_projection") for n in names)
    trainable, total = parameter_counts(model)
    assert 0 < trainable < total


def test_schedule_and_plan():
    config = TrainConfig(steps=10, lr=1.0, warmup_steps=2, min_lr_ratio=0.1, batch_size=2, grad_accum=2)
    assert learning_rate(0, config) == pytest.approx(0.5)
    assert learning_rate(2, config) == pytest.approx(1.0)
    assert learning_rate(10, config) == pytest.approx(0.1)
    whole = step_plan(7, config, World(), 0, 3)
    assert [len(b) for b in whole] == [2] * 6
    assert step_plan(7, config, World(), 1, 3) == whole[2:]  # resuming sees the same batches
    halves = [step_plan(7, config, World(rank=r, size=2), 0, 2) for r in range(2)]
    for step in range(2):  # two ranks together take what one rank of twice the batch takes
        single = step_plan(7, TrainConfig(batch_size=4, grad_accum=2), World(), step, step + 1)
        both = sum(halves[0][2 * step : 2 * step + 2] + halves[1][2 * step : 2 * step + 2], [])
        assert sorted(both) == sorted(sum(single, []))


class _Stop(Exception):
    pass


def _stop(step: int) -> None:
    raise _Stop(step)


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_resume_gives_the_uninterrupted_losses(fresh, data_dir, tmp_path, mode):
    records = [r for r in read_jsonl(data_dir / "train.jsonl") if r.task in TASKS]
    settings = dict(steps=3, batch_size=1, grad_accum=2, lr=2e-3, warmup_steps=1, weight_decay=0.01)

    def run(seed: int, out, **extra) -> Trainer:
        model, processor = fresh(seed)
        prepare_model(model, mode, lora_rank=4)
        trainer = _trainer(model, processor, records, out, **settings, **extra)
        trainer.full_state = mode == "full"
        return trainer

    reference = [r.loss for r in run(0, tmp_path / "a").train()]

    first = run(0, tmp_path / "b", save_every=2, eval_every=2)
    first.on_eval = _stop
    with pytest.raises(_Stop):
        first.train()
    assert [r.loss for r in first.history] == reference[:2]

    # the full state overwrites a differently seeded model; LoRA's state needs the same base
    second = run(7 if mode == "full" else 0, tmp_path / "b")
    second.resume()
    assert second.step == 2
    rest = [r.loss for r in second.train()]
    torch.testing.assert_close(torch.tensor(rest), torch.tensor(reference[2:]), rtol=1e-6, atol=1e-7)
    assert not any(p.name.endswith(".pt") for p in (tmp_path / "b" / "state").iterdir())


def test_time_limit_decays_by_the_clock_and_stops(fresh, data_dir, tmp_path):
    config = TrainConfig(steps=1000, lr=1.0, warmup_steps=2, min_lr_ratio=0.1, time_limit_s=60.0)
    assert learning_rate(10, config, elapsed_s=0.0) == pytest.approx(1.0, abs=1e-3)  # steps barely started
    assert learning_rate(10, config, elapsed_s=30.0) == pytest.approx(0.55)  # half the time: half-way down
    assert learning_rate(10, config, elapsed_s=90.0) == pytest.approx(0.1)  # past the limit: the floor

    model, processor = fresh()
    records = [r for r in read_jsonl(data_dir / "train.jsonl") if r.task in TASKS]
    prepare_model(model, "full")
    trainer = _trainer(
        model, processor, records, tmp_path, steps=50, batch_size=1, lr=1e-3, time_limit_s=1e-6
    )
    results = trainer.train()
    assert len(results) == 1 and trainer.step == 1  # the clock ran out after the first step


def _biases(model) -> list[list[float]]:
    from backbone.moe import TopKRouter

    return [m.e_score_correction_bias.tolist() for m in model.modules() if isinstance(m, TopKRouter)]


@pytest.mark.parametrize("rate", [0.0, 0.01])
def test_full_training_balances_expert_load_through_the_selection_biases(fresh, data_dir, tmp_path, rate):
    """With a rate, every step moves each router's biases by +-rate or 0 (the counts of that step's real
    tokens); without one they stay as loaded. The biases are saved with the model."""
    from omni.finetune.export import save_released

    model, processor = fresh()
    records = [r for r in read_jsonl(data_dir / "train.jsonl") if r.task in TASKS]
    prepare_model(model, "full")
    trainer = _trainer(model, processor, records, tmp_path, steps=3, batch_size=2, lr=1e-3,
                       expert_bias_update_rate=rate)  # fmt: skip
    trainer.train()
    biases = _biases(model)
    assert len(biases) == 2  # the tiny config's two MoE layers
    for layer in biases:
        steps = [round(b / rate) if rate else b for b in layer]
        if rate:
            assert all(abs(s) <= 3 and abs(b - s * rate) < 1e-6 for s, b in zip(steps, layer))
            assert any(s != 0 for s in steps)
        else:
            assert layer == [0.0] * len(layer)
    out = tmp_path / "saved"
    save_released(model, processor, out, scaling=1.0, dtype=torch.bfloat16)  # the biases stay fp32
    from omni import OmniModel

    assert _biases(OmniModel.from_pretrained(out)) == biases


def test_expert_bias_rate_defaults_to_on_for_full_language_model_training(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    import argparse

    from omni.cli import main as omni_main
    from omni.commands.finetune import DEFAULT_EXPERT_BIAS_RATE, add_arguments, expert_bias_rate

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    base = ["--data", "x.jsonl", "--init-config", "c.json", "--output", "out"]
    assert expert_bias_rate(parser.parse_args([*base, "--mode", "full"])) == DEFAULT_EXPERT_BIAS_RATE == 1e-3
    assert expert_bias_rate(parser.parse_args([*base, "--mode", "full", "--freeze-llm"])) == 0.0
    assert expert_bias_rate(parser.parse_args([*base, "--mode", "lora"])) == 0.0
    assert (
        expert_bias_rate(parser.parse_args([*base, "--mode", "full", "--expert-bias-update-rate", "0"]))
        == 0.0
    )
    assert (
        expert_bias_rate(parser.parse_args([*base, "--mode", "lora", "--expert-bias-update-rate", "2e-3"]))
        == 2e-3
    )
    assert omni_main(["finetune", *base, "--expert-bias-update-rate", "-1"]) != 0
    assert "--expert-bias-update-rate" in capsys.readouterr().err
