"""The training loop: token-weighted loss over ranks and micro-batches, AdamW, warmup + cosine.

One optimizer step takes ``batch_size x grad_accum x world_size`` conversations. Each micro-batch's
mean loss is weighted by its share of the step's trained tokens (counted over all ranks before the
first backward), so the gradient is that of the mean over every assistant token of the global
batch: the same with 1 rank or N, with or without accumulation. The data order is a function of
the seed and the step alone, so a resumed run sees the batches the uninterrupted run would.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from backbone.moe import ExpertBiasBalancer
from omni.errors import InputError
from omni.finetune import state as train_state
from omni.finetune.data import BatchBuilder, ConversationData, Record, trained_tokens
from omni.finetune.distributed import World, all_sum, all_sum_tensor, set_gradient_sync

# Shape metadata the model reads on the host (``.tolist()``): left on the CPU, so moving them to the
# GPU and back does not stall every step.
HOST_KEYS = frozenset(
    {"image_grid_hw", "video_grid_thw", "video_frame_counts", "audio_clip_counts", "audio_clip_token_counts"}
)


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The batch's tensors on ``device`` (asynchronously from pinned memory), shape metadata kept on the host."""
    return {
        k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) and k not in HOST_KEYS else v)
        for k, v in batch.items()
    }


@dataclass
class TrainConfig:
    """Settings of a run (the command line's options)."""

    steps: int = 100
    batch_size: int = 1  # conversations per rank per micro-batch
    grad_accum: int = 1
    lr: float = 1e-4
    min_lr_ratio: float = 0.1
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0
    num_workers: int = 2
    eval_every: int = 0
    save_every: int = 0
    eval_max_new_tokens: int = 16
    eval_batch_size: int = 8
    bf16: bool = False
    progress: bool = True
    time_limit_s: float = 0.0  # > 0: stop by then, the cosine decay following elapsed time too
    expert_bias_update_rate: float = 0.0  # > 0: balance expert load through the routers' selection biases

    def resume_key(self) -> dict[str, Any]:
        """Settings that must not change between a run and its resumption."""
        keys = ("batch_size", "grad_accum", "lr", "min_lr_ratio", "warmup_steps", "weight_decay", "seed")
        return {k: v for k, v in asdict(self).items() if k in keys}


def learning_rate(step: int, config: TrainConfig, elapsed_s: float = 0.0) -> float:
    """Linear warmup over ``warmup_steps``, then cosine decay to ``min_lr_ratio * lr`` at the last step.

    With a time limit the decay follows whichever is further along: steps or elapsed time, so a run
    stopped by the clock still ends at the floor learning rate.
    """
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    span = max(1, config.steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    if config.time_limit_s > 0:
        progress = max(progress, min(1.0, elapsed_s / config.time_limit_s))
    floor = config.min_lr_ratio
    return config.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def step_plan(n_records: int, config: TrainConfig, world: World, first: int, last: int) -> list[list[int]]:
    """This rank's micro-batches (lists of record indices) for optimizer steps ``first .. last-1``.

    The records are shuffled once per epoch (seeded by ``seed`` and the epoch) into one endless
    stream; step ``s`` takes the stream's ``s``-th run of ``global`` records, and rank ``r`` the
    ``r``-th slice of that run, cut into ``grad_accum`` micro-batches.
    """
    per_rank = config.batch_size * config.grad_accum
    global_batch = per_rank * world.size
    start, stop = first * global_batch, last * global_batch
    stream: list[int] = []
    epoch = start // n_records
    offset = start - epoch * n_records
    while len(stream) < stop - start + offset:
        order = torch.randperm(
            n_records, generator=torch.Generator().manual_seed(config.seed * 100_003 + epoch)
        )
        stream.extend(order.tolist())
        epoch += 1
    stream = stream[offset : offset + stop - start]
    plan = []
    for s in range(last - first):
        at = s * global_batch + world.rank * per_rank
        mine = stream[at : at + per_rank]
        plan.extend(
            mine[m * config.batch_size : (m + 1) * config.batch_size] for m in range(config.grad_accum)
        )
    return plan


def _decay_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices only (not on norms, biases and other vectors)."""
    decay, keep = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else keep).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": keep, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


@dataclass
class StepResult:
    step: int
    loss: float
    lr: float
    tokens: int
    seconds: float


@dataclass
class Trainer:
    """Runs ``config.steps`` optimizer steps of ``model`` (already prepared and, if need be, sharded)."""

    model: nn.Module
    builder: BatchBuilder
    records: Sequence[Record]
    config: TrainConfig
    output: Path
    world: World = field(default_factory=World)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    full_state: bool = True  # save every weight in the resumable state (full fine-tuning)
    on_eval: Callable[[int], None] | None = None
    history: list[StepResult] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.optimizer = torch.optim.AdamW(
            _decay_groups(self.model, self.config.weight_decay),
            lr=self.config.lr,
            betas=(0.9, 0.95),
            eps=1e-8,
            # one kernel for all parameters instead of dozens (single process: sharded params stay on foreach)
            fused=(self.device.type == "cuda" and self.world.size == 1) or None,
        )
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.step = 0
        self.balancer = (
            ExpertBiasBalancer(self.model, self.config.expert_bias_update_rate)
            if self.config.expert_bias_update_rate > 0
            else None
        )

    # ------------------------------------------------------------------ state
    def save_state(self) -> None:
        train_state.save_state(
            self.output,
            self.model,
            self.optimizer,
            self.step,
            self.config.resume_key(),
            trainable_only=not self.full_state,
            is_main=self.world.is_main,
        )

    def resume(self) -> None:
        self.step = train_state.load_state(self.output, self.model, self.optimizer, self.config.resume_key())
        if self.world.is_main:
            print(f"resumed from {self.output / train_state.STATE_DIR} at step {self.step}")

    # ------------------------------------------------------------------ loop
    def _batches(self) -> Iterator[dict[str, Any]]:
        plan = step_plan(len(self.records), self.config, self.world, self.step, self.config.steps)
        loader = torch.utils.data.DataLoader(
            ConversationData(self.records, self.builder),
            sampler=plan,
            batch_size=None,
            num_workers=self.config.num_workers,
            prefetch_factor=4 if self.config.num_workers > 0 else None,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
            # its own generator: starting the loader must not draw from torch's global RNG, which
            # dropout uses and the resumable state restores
            generator=torch.Generator().manual_seed(self.config.seed),
        )
        return iter(loader)

    def train(self) -> list[StepResult]:
        """Train up to ``config.steps``; returns the per-step results of this call."""
        if self.config.steps < 1:
            raise InputError("--steps must be at least 1")
        batches = self._batches()
        bar = None
        if self.world.is_main and self.config.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.config.steps, initial=self.step, desc="finetune", dynamic_ncols=True)
        results = []
        self._started = time.perf_counter()
        try:
            while self.step < self.config.steps:
                result = self._one_step([next(batches) for _ in range(self.config.grad_accum)])
                results.append(result)
                self.history.append(result)
                self.step += 1
                if bar is not None:
                    bar.set_postfix(
                        loss=f"{result.loss:.4f}",
                        lr=f"{result.lr:.2e}",
                        tok_s=f"{result.tokens / result.seconds:,.0f}",
                    )
                    bar.update(1)
                elif self.world.is_main and not self.config.progress:
                    print(
                        f"step {self.step}/{self.config.steps} loss {result.loss:.4f} lr {result.lr:.2e} "
                        f"{result.seconds:.2f} s",
                        flush=True,
                    )
                if self.config.save_every and self.step % self.config.save_every == 0:
                    self.save_state()
                last = self.step == self.config.steps  # the caller scores the final model
                if (
                    self.on_eval
                    and self.config.eval_every
                    and self.step % self.config.eval_every == 0
                    and not last
                ):
                    self.on_eval(self.step)
                if self._out_of_time():
                    break
        finally:
            if bar is not None:
                bar.close()
        return results

    def _elapsed(self) -> float:
        """Seconds since training started by rank 0's clock (0 without a time limit), same on all ranks."""
        if self.config.time_limit_s <= 0:
            return 0.0
        mine = time.perf_counter() - self._started
        return all_sum(mine if self.world.is_main else 0.0, self.world, self.device)

    def _out_of_time(self) -> bool:
        if self.config.time_limit_s <= 0 or self._elapsed() < self.config.time_limit_s:
            return False
        if self.world.is_main:
            print(f"time limit reached: stopped after step {self.step} of {self.config.steps}", flush=True)
        return True

    def _train_mode(self) -> None:
        """Train mode, except BatchNorm (Parakeet's convolution module) keeps its running statistics.

        Batch statistics of micro-batches of a few padded clips are noisy and would depend on how a
        global batch is split over ranks and micro-batches; the layers' affine weights still train.
        """
        self.model.train()
        for module in self.model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()

    def _one_step(self, micro: list[dict[str, Any]]) -> StepResult:
        start = time.perf_counter()
        self._train_mode()
        counts = [trained_tokens(b["labels"]) for b in micro]
        total = all_sum(sum(counts), self.world, self.device)
        if total == 0:
            raise InputError(f"step {self.step}: no assistant tokens in the batch")
        seen = sum(int(b["attention_mask"].sum()) for b in micro)
        loss_sum = 0.0
        autocast = self.config.bf16 and self.device.type == "cuda"
        for m, batch in enumerate(micro):
            set_gradient_sync(self.model, m == len(micro) - 1)
            inputs = to_device(batch, self.device)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=autocast):
                out = self.model(**inputs)
            # mean over this micro-batch's tokens -> its share of the global mean; FSDP averages over
            # ranks, hence the world size
            weight = counts[m] * self.world.size / total
            (out.loss * weight).backward()
            loss_sum += float(out.loss.detach()) * counts[m]
        lr = learning_rate(self.step, self.config, self._elapsed())
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if self.config.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.trainable, self.config.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.balancer is not None:
            self.balancer.update(lambda counts: all_sum_tensor(counts, self.world))
        loss = all_sum(loss_sum, self.world, self.device) / total
        tokens = int(all_sum(seen, self.world, self.device))
        return StepResult(self.step, loss, lr, tokens, max(time.perf_counter() - start, 1e-9))
