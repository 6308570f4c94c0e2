"""Process-group setup and FSDP2 sharding for ``torchrun ... -m omni finetune``.

Every language-model block and Conformer block is its own FSDP2 unit (``fully_shard``); the rest of
the model (embeddings, head, the ViT, adapters) is the root unit. CUDA uses NCCL, CPU gloo.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class World:
    """This process's place in the run."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def init_world(device: str | None = None) -> tuple[World, torch.device]:
    """Join the torchrun process group when there is one; returns the world and this rank's device."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    target = torch.device(device)
    if target.type == "cuda":
        index = local if size > 1 else (target.index or 0)
        target = torch.device("cuda", index)
        torch.cuda.set_device(target)
    if size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if target.type == "cuda" else "gloo")
    return World(rank=rank, size=size, local_rank=local), target


def close_world(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def shard_blocks(model: nn.Module) -> list[nn.Module]:
    """The blocks that become their own FSDP units: the language model's and the audio encoder's.

    Each of those runs exactly once per forward on every rank. The ViT's blocks do not: they run once
    for the packed images and again for every video (and every chunk of its tubelets), and ranks
    hold different numbers of videos, so per-block all-gathers would not pair up across ranks (a
    hang on NCCL, an abort on gloo). The ViT therefore stays in the root unit, gathered once a step.
    """
    blocks: list[nn.Module] = list(model.language_model.backbone.layers)
    if getattr(model, "sound_encoder", None) is not None:
        blocks += list(model.sound_encoder.encoder.layers)
    return blocks


def apply_fsdp(model: nn.Module) -> nn.Module:
    """Shard ``model`` in place with FSDP2: one unit per block plus the root."""
    from torch.distributed.fsdp import fully_shard

    for block in shard_blocks(model):
        fully_shard(block)
    fully_shard(model)
    return model


def all_sum(value: float, world: World, device: torch.device) -> float:
    """Sum of ``value`` over ranks (the value itself in a single process)."""
    if not world.distributed:
        return float(value)
    tensor = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return float(tensor.item())


def all_sum_tensor(tensor: torch.Tensor, world: World) -> torch.Tensor:
    """Element-wise sum of ``tensor`` over ranks (the tensor itself in a single process)."""
    if not world.distributed:
        return tensor
    total = tensor.clone()
    dist.all_reduce(total)
    return total


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def set_gradient_sync(model: nn.Module, enabled: bool) -> None:
    """Skip FSDP2's gradient reduce-scatter on all but the last micro-batch of a step."""
    setter = getattr(model, "set_requires_gradient_sync", None)
    if callable(setter):
        setter(enabled)
