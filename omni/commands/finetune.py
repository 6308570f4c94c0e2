"""``omni finetune``: train on JSONL conversations (LoRA, adapters only, or full), on one GPU or many.

Several GPUs: ``torchrun --nproc_per_node N -m omni finetune ...`` shards the model with FSDP2.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

_DTYPES = ("float32", "bfloat16")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("data")
    data.add_argument(
        "--data", required=True, help="training JSONL (one conversation a line; paths relative to it)"
    )
    data.add_argument(
        "--eval-data", default=None, help="JSONL scored by accuracy per task during and after training"
    )
    data.add_argument("--eval-every", type=int, default=0, help="evaluate every N steps (0: only at the end)")
    data.add_argument(
        "--eval-limit", type=int, default=None, help="score only the first N eval conversations"
    )
    data.add_argument(
        "--max-length", type=int, default=None, help="reject batches longer than this many tokens"
    )
    data.add_argument("--num-workers", type=int, default=2, help="DataLoader worker processes loading media")
    data.add_argument(
        "--thinking",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="render the conversations with thinking on (default off)",
    )

    start = parser.add_argument_group("model").add_mutually_exclusive_group(required=True)
    start.add_argument("--model", default=None, help="checkpoint directory to start from")
    start.add_argument(
        "--init-config",
        default=None,
        metavar="PRESET_OR_JSON",
        help="train from scratch: a preset name (e.g. bundled-small) or a config.json path",
    )
    model = parser.add_argument_group("what trains")
    model.add_argument("--mode", choices=("adapters", "lora", "full"), default="lora")
    model.add_argument("--freeze-vision", action="store_true", help="keep the RADIO tower frozen")
    model.add_argument("--freeze-audio", action="store_true", help="keep the Parakeet tower frozen")
    model.add_argument("--freeze-llm", action="store_true", help="keep the language model frozen")
    model.add_argument(
        "--expert-bias-update-rate",
        type=float,
        default=None,
        metavar="RATE",
        help="auxiliary-loss-free MoE load balancing: after each step, move each router's selection bias "
        "by RATE towards equal expert load (default: 1e-3 when the language model trains in full, "
        "else 0, off)",
    )
    model.add_argument("--lora-rank", type=int, default=16)
    model.add_argument("--lora-alpha", type=float, default=32.0)
    model.add_argument("--lora-dropout", type=float, default=0.0)

    opt = parser.add_argument_group("optimisation")
    opt.add_argument("--steps", type=int, default=None, help="optimizer steps (default: from --epochs)")
    opt.add_argument(
        "--epochs", type=float, default=1.0, help="passes over the data when --steps is not given"
    )
    opt.add_argument("--batch-size", type=int, default=1, help="conversations per GPU per micro-batch")
    opt.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    opt.add_argument("--lr", type=float, default=1e-4)
    opt.add_argument(
        "--min-lr-ratio", type=float, default=0.1, help="cosine decay floor, as a fraction of --lr"
    )
    opt.add_argument("--warmup-steps", type=int, default=0)
    opt.add_argument("--weight-decay", type=float, default=0.0)
    opt.add_argument("--max-grad-norm", type=float, default=1.0, help="0 disables clipping")
    opt.add_argument("--seed", type=int, default=0)
    opt.add_argument("--gradient-checkpointing", action="store_true", help="recompute block activations")
    opt.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="bf16 autocast on CUDA (default on)",
    )

    run = parser.add_argument_group("run")
    run.add_argument(
        "--output", required=True, help="output directory (released layout; state/ for resuming)"
    )
    run.add_argument("--save-every", type=int, default=0, help="write resumable state every N steps")
    run.add_argument("--resume", action="store_true", help="continue from OUTPUT/state")
    run.add_argument(
        "--time-limit",
        type=float,
        default=0.0,
        metavar="MINUTES",
        help="stop training after this many minutes; the learning-rate decay follows the clock too",
    )
    run.add_argument("--device", default=None, help="cpu, cuda ... (default: cuda when available)")
    run.add_argument("--dtype", choices=_DTYPES, default="float32", help="dtype of the trained weights")
    run.add_argument("--save-dtype", choices=_DTYPES, default=None, help="dtype of the saved weights")
    run.add_argument("--eval-max-new-tokens", type=int, default=16)
    run.add_argument("--eval-batch-size", type=int, default=8)
    run.add_argument("--no-progress", action="store_true", help="plain log lines instead of a progress bar")


def _load(args: argparse.Namespace, dtype: Any, device: Any) -> tuple[Any, Any]:
    from omni import OmniModel, OmniProcessor
    from omni.finetune.init import fresh_model_and_processor, read_init_config

    if args.init_config:
        model, processor = fresh_model_and_processor(
            read_init_config(args.init_config), seed=args.seed, dtype=dtype
        )
        return model.to(device), processor
    model = OmniModel.from_pretrained(args.model, dtype=dtype, device=device)
    return model, OmniProcessor.from_pretrained(args.model)


def _check(args: argparse.Namespace) -> None:
    from omni.errors import InputError

    for name in ("batch_size", "grad_accum", "lora_rank"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1")
    if args.steps is not None and args.steps < 1:
        raise InputError("--steps must be at least 1")
    if args.resume and not args.save_every:
        print("note: --resume without --save-every writes no further state while training")
    rate = args.expert_bias_update_rate
    if rate is not None and (rate < 0 or not math.isfinite(rate)):
        raise InputError(f"--expert-bias-update-rate must be a finite rate >= 0, got {rate}")


# Megatron-Core's default bias update rate (DeepSeek-V3's value); the family's recipe turns the expert bias on
DEFAULT_EXPERT_BIAS_RATE = 1e-3


def expert_bias_rate(args: argparse.Namespace) -> float:
    """--expert-bias-update-rate, or its default: on when the language model trains in full."""
    if args.expert_bias_update_rate is not None:
        return args.expert_bias_update_rate
    return DEFAULT_EXPERT_BIAS_RATE if args.mode == "full" and not args.freeze_llm else 0.0


def main(args: argparse.Namespace) -> int:
    import torch

    from omni.finetune.data import BatchBuilder, filler_conversation, read_jsonl
    from omni.finetune.distributed import apply_fsdp, barrier, close_world, init_world
    from omni.finetune.evaluation import evaluate_accuracy, format_table, write_scores
    from omni.finetune.export import merged_copy, plain_model, save_released
    from omni.finetune.modes import describe, prepare_model
    from omni.finetune.trainer import TrainConfig, Trainer

    _check(args)
    world, device = init_world(args.device)
    try:
        dtype = getattr(torch, args.dtype)
        model, processor = _load(args, dtype, device)
        prepare_model(
            model,
            args.mode,
            freeze_vision=args.freeze_vision,
            freeze_audio=args.freeze_audio,
            freeze_llm=args.freeze_llm,
            lora_rank=args.lora_rank,
            lora_alpha=args.lora_alpha,
            lora_dropout=args.lora_dropout,
        )
        if args.gradient_checkpointing:
            model.language_model.gradient_checkpointing = True
            model.vision_model.gradient_checkpointing = True
        if world.is_main:
            print(describe(model, args.mode))
        config = model.config
        if world.distributed:
            apply_fsdp(model)

        records = read_jsonl(args.data)
        eval_records = read_jsonl(args.eval_data)[: args.eval_limit] if args.eval_data else None
        global_batch = args.batch_size * args.grad_accum * world.size
        steps = args.steps or max(1, math.ceil(args.epochs * len(records) / global_batch))
        train_config = TrainConfig(
            steps=steps,
            batch_size=args.batch_size,
            grad_accum=args.grad_accum,
            lr=args.lr,
            min_lr_ratio=args.min_lr_ratio,
            warmup_steps=args.warmup_steps,
            weight_decay=args.weight_decay,
            max_grad_norm=args.max_grad_norm,
            seed=args.seed,
            num_workers=args.num_workers,
            eval_every=args.eval_every,
            save_every=args.save_every,
            time_limit_s=60.0 * args.time_limit,
            eval_max_new_tokens=args.eval_max_new_tokens,
            eval_batch_size=args.eval_batch_size,
            bf16=args.bf16,
            progress=not args.no_progress,
            expert_bias_update_rate=expert_bias_rate(args),
        )
        output = Path(args.output)
        output.mkdir(parents=True, exist_ok=True)
        scaling = args.lora_alpha / args.lora_rank
        autocast = torch.bfloat16 if args.bf16 and device.type == "cuda" else None

        def run_eval(step: int | None) -> None:
            if eval_records is None:
                return
            # under FSDP rank 0 scores a gathered, merged copy; the other ranks wait
            target = model
            if world.distributed:
                state = merged_copy(model, config, scaling, cpu_offload=True)
                target = plain_model(config, state).to(device) if world.is_main else None
            if world.is_main:
                scores = evaluate_accuracy(
                    target,
                    processor,
                    eval_records,
                    max_new_tokens=args.eval_max_new_tokens,
                    batch_size=args.eval_batch_size,
                    num_workers=min(args.num_workers, 2),
                    autocast_dtype=autocast,
                )
                label = "final" if step is None else f"step {step}"
                print(
                    f"\neval ({label}, {sum(s.n for s in scores.values())} samples)\n{format_table(scores)}",
                    flush=True,
                )
                if step is None:
                    write_scores(output / "eval_results.json", scores)
            barrier(world)

        trainer = Trainer(
            model=model,
            builder=BatchBuilder(
                processor,
                enable_thinking=args.thinking,
                max_length=args.max_length,
                filler=filler_conversation(config.audio_config is not None) if world.distributed else None,
            ),
            records=records,
            config=train_config,
            output=output,
            world=world,
            device=device,
            full_state=args.mode == "full",
            on_eval=run_eval,
        )
        if args.resume:
            trainer.resume()
        if world.is_main:
            print(
                f"{len(records)} conversations, {steps} steps of {global_batch} "
                f"({args.batch_size} x {args.grad_accum} accumulation x {world.size} ranks)"
            )
        trainer.train()
        save_dtype = getattr(torch, args.save_dtype) if args.save_dtype else None
        save_released(
            model,
            processor,
            output,
            scaling,
            is_main=world.is_main,
            cpu_offload=world.distributed,
            dtype=save_dtype,
            source_dir=args.model,
        )
        if world.is_main:
            print(f"saved the model to {output}")
        run_eval(None)
        barrier(world)
        return 0
    finally:
        close_world(world)
