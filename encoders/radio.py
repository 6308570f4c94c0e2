"""RADIO ViT vision tower of Nemotron 3 Nano Omni: packed variable-resolution images and 2-frame video.

Inputs are already normalised float pixels (the omni processor applies the CLIP mean/std), so the
checkpoint's ``input_conditioner`` is not used. Each image (or video tubelet) becomes

    [cls + register tokens] + [patch linear + cropped position embedding per patch]

runs through the pre-norm ViT blocks attending only within itself, and leaves as its patch features
with the prefix tokens dropped. Parameter names equal the checkpoint's keys under ``vision_model.``
(``radio_model.model.patch_generator.embedder.weight``, ``radio_model.model.blocks.{i}.attn.qkv.weight``,
...), so a checkpoint slice loads with :meth:`RadioEncoder.load_checkpoint_state`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.utils.checkpoint
from torch import nn

from .errors import EncoderInputError
from .radio_blocks import PACKED_ATTENTION_MODES, RadioBlock, run_blocks
from .radio_config import RadioConfig
from .radio_position import cropped_position_embedding
from .transfer import range_rows

# Tokens per ViT pass over video tubelets: 32 tubelets of a 1,024-patch frame, many more of the small
# frames of short clips. It bounds the activations of long videos (a pass of the ViT-H at this size holds
# well under 2 GB in bf16) while keeping passes few: each layer of each pass costs the host a fixed time
# to queue its kernels, and at 8,192 tokens a pass the GPU waited on the host.
VIDEO_PASS_TOKENS = 32768


class PrefixTokens(nn.Module):
    """The learned class + register tokens (checkpoint key ``cls_token.token``)."""

    def __init__(self, count: int, width: int) -> None:
        super().__init__()
        self.token = nn.Parameter(torch.zeros(count, width))


class PatchGenerator(nn.Module):
    """Patch linears (image and tubelet), the cropped position embedding and the prefix tokens."""

    def __init__(self, config: RadioConfig) -> None:
        super().__init__()
        self.config = config
        side = config.position_grid_side
        self.embedder = nn.Linear(config.patch_dim, config.hidden_size, bias=False)
        if config.video_patch_dim is not None:
            self.video_embedder = nn.Linear(config.video_patch_dim, config.hidden_size, bias=False)
        else:
            self.video_embedder = None
        self.pos_embed = nn.Parameter(torch.zeros(1, side * side, config.hidden_size))
        self.cls_token = PrefixTokens(config.num_prefix_tokens, config.hidden_size)

    def positions(self, rows: int, cols: int, dtype: torch.dtype) -> torch.Tensor:
        return cropped_position_embedding(self.pos_embed, rows, cols, dtype=dtype)

    def embed_packed_images(self, patches: torch.Tensor, grids: Sequence[tuple[int, int]]) -> torch.Tensor:
        """``[Σ rows·cols, patch_dim]`` → ``[Σ (prefix + rows·cols), hidden]``, images kept in order."""
        embedded = self.embedder(patches)
        prefix = self.cls_token.token.to(embedded.dtype)
        cache: dict[tuple[int, int], torch.Tensor] = {}
        pieces: list[torch.Tensor] = []
        for (rows, cols), image in zip(grids, embedded.split([r * c for r, c in grids])):
            if (rows, cols) not in cache:
                cache[(rows, cols)] = self.positions(rows, cols, embedded.dtype)
            pieces.extend((prefix, image + cache[(rows, cols)]))
        return torch.cat(pieces)

    def embed_tubelets(self, tubelets: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
        """``[n, rows·cols, video_patch_dim]`` → ``[n, prefix + rows·cols, hidden]``."""
        embedded = self.video_embedder(tubelets) + self.positions(rows, cols, tubelets.dtype)
        prefix = self.cls_token.token.to(embedded.dtype).expand(embedded.shape[0], -1, -1)
        return torch.cat([prefix, embedded], dim=1)


class VisionTransformer(nn.Module):
    """``patch_generator`` + ``blocks`` (the checkpoint's ``radio_model.model``)."""

    def __init__(self, config: RadioConfig) -> None:
        super().__init__()
        self.patch_generator = PatchGenerator(config)
        self.blocks = nn.ModuleList(RadioBlock(config) for _ in range(config.num_hidden_layers))


class RadioModelSlot(nn.Module):
    """Holds ``model`` so that keys read ``radio_model.model.*`` as in the checkpoint."""

    def __init__(self, config: RadioConfig) -> None:
        super().__init__()
        self.model = VisionTransformer(config)


class RadioEncoder(nn.Module):
    """The RADIO vision tower. ``state_dict()`` keys = checkpoint keys with ``vision_model.`` removed."""

    # Checkpoint keys (after the ``vision_model.`` prefix) that the tower does not use.
    IGNORED_CHECKPOINT_KEYS: tuple[str, ...] = (
        r"(^|\.)radio_model\.input_conditioner\.",
        r"(^|\.)radio_model\.summary_idxs$",
    )
    # Keys the released checkpoints omit; the parameter then keeps its identity initial value.
    OPTIONAL_CHECKPOINT_KEYS: tuple[str, ...] = (r"\.layer_scale[12]\.lambda1$",)

    def __init__(self, config: RadioConfig) -> None:
        super().__init__()
        self.config = config
        self.radio_model = RadioModelSlot(config)
        self.gradient_checkpointing = False
        self.reset_parameters()

    @classmethod
    def from_config_dict(cls, vision_config: Mapping[str, Any]) -> RadioEncoder:
        """Build from a checkpoint's ``vision_config`` dict (flat or legacy ``args`` form)."""
        return cls(RadioConfig.from_dict(vision_config))

    @property
    def patch_generator(self) -> PatchGenerator:
        return self.radio_model.model.patch_generator

    @property
    def blocks(self) -> nn.ModuleList:
        return self.radio_model.model.blocks

    @property
    def packed_attention_mode(self) -> str:
        """How packed images attend on this device: ``per_image`` (default) or ``block_diagonal``."""
        return self.blocks[0].attn.packed_mode if len(self.blocks) else "per_image"

    @packed_attention_mode.setter
    def packed_attention_mode(self, mode: str) -> None:
        if mode not in PACKED_ATTENTION_MODES:
            raise ValueError(f"unknown packed attention mode {mode!r} (use one of {PACKED_ATTENTION_MODES})")
        for block in self.blocks:
            block.attn.packed_mode = mode

    @torch.no_grad()
    def reset_parameters(self, std: float = 0.02) -> None:
        """Random initialisation (truncated normal weights, zero biases, unit norms and layer scales)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        generator = self.patch_generator
        nn.init.trunc_normal_(generator.pos_embed, std=std)
        nn.init.trunc_normal_(generator.cls_token.token, std=std)
        for block in self.blocks:
            block.layer_scale1.lambda1.fill_(self.config.layerscale_value)
            block.layer_scale2.lambda1.fill_(self.config.layerscale_value)

    # ----------------------------------------------------------------------------------------------
    # checkpoint
    # ----------------------------------------------------------------------------------------------
    @classmethod
    def is_ignored_checkpoint_key(cls, key: str) -> bool:
        return any(re.search(pattern, key) for pattern in cls.IGNORED_CHECKPOINT_KEYS)

    @classmethod
    def is_optional_checkpoint_key(cls, key: str) -> bool:
        return any(re.search(pattern, key) for pattern in cls.OPTIONAL_CHECKPOINT_KEYS)

    def load_checkpoint_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Copy checkpoint tensors (keys without ``vision_model.``) into the tower, casting to its dtype.

        Ignored keys are skipped and optional ones may be absent; any other missing or unknown key,
        or a shape mismatch, raises ``ValueError`` naming it.
        """
        own = self.state_dict()
        used = {key: value for key, value in state.items() if not self.is_ignored_checkpoint_key(key)}
        unexpected = sorted(set(used) - set(own))
        missing = sorted(k for k in set(own) - set(used) if not self.is_optional_checkpoint_key(k))
        if unexpected or missing:
            raise ValueError(
                f"RADIO checkpoint mismatch: missing keys {missing[:8]}, unexpected keys {unexpected[:8]}"
            )
        for key, value in used.items():
            if tuple(value.shape) != tuple(own[key].shape):
                raise ValueError(
                    f"RADIO checkpoint tensor {key} has shape {tuple(value.shape)}, expected {tuple(own[key].shape)}"
                )
        self.load_state_dict(used, strict=False)

    # ----------------------------------------------------------------------------------------------
    # encoding
    # ----------------------------------------------------------------------------------------------
    def forward(self, pixel_values: torch.Tensor, grid_hw: torch.Tensor) -> torch.Tensor:
        return self.encode_images(pixel_values, grid_hw)

    def run_blocks(self, hidden: torch.Tensor, seq_lengths: Sequence[int] | None = None) -> torch.Tensor:
        """The ViT blocks over ``[B, L, hidden]``; ``seq_lengths`` splits a packed ``B == 1`` row."""
        if not (self.gradient_checkpointing and self.training and torch.is_grad_enabled()):
            return run_blocks(self.blocks, hidden, seq_lengths)
        for block in self.blocks:
            hidden = torch.utils.checkpoint.checkpoint(block, hidden, seq_lengths, use_reentrant=False)
        return hidden

    def encode_images(self, pixel_values: torch.Tensor, grid_hw: torch.Tensor) -> torch.Tensor:
        """Patch features of packed images, prefix tokens dropped.

        ``pixel_values`` ``[Σ patches, C·p·p]``: each image's patches in row-major order, each patch
        flattened (channel, row, column), as the omni image processor emits them. ``grid_hw``
        ``[n_images, 2]``: each image's patch grid (rows, cols). Returns ``[Σ patches, hidden]`` in the
        same order. Images never attend to one another.
        """
        grids = self._check_images(pixel_values, grid_hw)
        patches = pixel_values.to(self.patch_generator.embedder.weight.dtype)
        tokens = self.patch_generator.embed_packed_images(patches, grids)
        prefix = self.config.num_prefix_tokens
        lengths = [prefix + rows * cols for rows, cols in grids]
        hidden = self.run_blocks(tokens.unsqueeze(0), lengths)[0]
        if len(lengths) == 1:
            return hidden[prefix:]
        return hidden[_patch_rows(lengths, prefix, hidden.device)]

    def encode_video(self, frames: torch.Tensor, tubelets_per_batch: int | None = None) -> torch.Tensor:
        """Features of a video's tubelets: ``[T, C, H, W]`` → ``[ceil(T/t), (H/p)·(W/p), hidden]``.

        ``frames`` are normalised float frames of one size; consecutive frames are paired into
        tubelets of ``t = video_temporal_patch_size`` frames, the last frame repeated to fill the final
        tubelet. Tubelets run through the ViT ``tubelets_per_batch`` at a time to bound memory (default:
        as many as fit in ``VIDEO_PASS_TOKENS`` tokens).
        """
        return self.encode_videos([frames], tubelets_per_batch)[0]

    def encode_videos(
        self, videos: Sequence[torch.Tensor], tubelets_per_batch: int | None = None
    ) -> list[torch.Tensor]:
        """:meth:`encode_video` of each ``[T, C, H, W]`` video, videos of one frame size encoded together.

        Tubelets never attend across tubelets, so stacking those of equal-sized videos along the batch
        dimension gives the same features as one video at a time, in a few large passes instead of one
        small pass per video (a training batch holds many short clips).
        """
        generator = self.patch_generator
        if generator.video_embedder is None:
            raise EncoderInputError(
                "video: this RADIO tower has no video embedder (video_temporal_patch_size unset)"
            )
        if tubelets_per_batch is not None and (
            not isinstance(tubelets_per_batch, int) or tubelets_per_batch <= 0
        ):
            raise EncoderInputError(
                f"video: tubelets_per_batch must be a positive int, got {tubelets_per_batch!r}"
            )
        groups: dict[tuple[int, int], list[int]] = {}
        for index, frames in enumerate(videos):
            self._check_frames(frames)
            groups.setdefault(tuple(frames.shape[-2:]), []).append(index)
        prefix = self.config.num_prefix_tokens
        dtype = generator.video_embedder.weight.dtype
        out: list[torch.Tensor | None] = [None] * len(videos)
        for members in groups.values():
            pieces = [self.video_to_tubelets(videos[i].to(dtype)) for i in members]
            rows, cols = pieces[0][1], pieces[0][2]
            tubelets = torch.cat([piece[0] for piece in pieces])
            per_pass = tubelets_per_batch or max(1, VIDEO_PASS_TOKENS // (prefix + rows * cols))
            features = torch.cat(
                [
                    self.run_blocks(generator.embed_tubelets(chunk, rows, cols))[:, prefix:]
                    for chunk in tubelets.split(per_pass)
                ]
            )
            for i, part in zip(members, features.split([piece[0].shape[0] for piece in pieces])):
                out[i] = part
        return out  # type: ignore[return-value]

    def video_to_tubelets(self, frames: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """``[T, C, H, W]`` → (``[ceil(T/t), rows·cols, t·C·p·p]``, rows, cols).

        Each tubelet patch is flattened (frame, channel, row, column): frame-major, matching the
        checkpoint's ``video_embedder`` (the training code concatenates the per-frame (C, p, p)
        patches of consecutive frames).
        """
        temporal = self.config.video_temporal_patch_size
        p = self.config.patch_size
        count, channels, height, width = frames.shape
        remainder = count % temporal
        if remainder:
            frames = torch.cat([frames, frames[-1:].expand(temporal - remainder, -1, -1, -1)])
        rows, cols = height // p, width // p
        grouped = frames.reshape(-1, temporal, channels, rows, p, cols, p)
        tubelets = grouped.permute(0, 3, 5, 1, 2, 4, 6).reshape(-1, rows * cols, temporal * channels * p * p)
        return tubelets, rows, cols

    # ----------------------------------------------------------------------------------------------
    # input checks
    # ----------------------------------------------------------------------------------------------
    def _check_images(self, pixel_values: torch.Tensor, grid_hw: torch.Tensor) -> list[tuple[int, int]]:
        width = self.config.patch_dim
        if not isinstance(pixel_values, torch.Tensor):
            raise EncoderInputError(
                f"images: pixel_values must be a tensor, got {type(pixel_values).__name__}"
            )
        if pixel_values.dim() != 2 or pixel_values.shape[1] != width:
            raise EncoderInputError(
                f"images: pixel_values must be [patches, {width}] ({self.config.num_channels} channels × "
                f"{self.config.patch_size}² pixels per patch), got shape {tuple(pixel_values.shape)}"
            )
        if not pixel_values.is_floating_point():
            raise EncoderInputError(
                f"images: pixel_values must be normalised floats, got dtype {pixel_values.dtype}"
            )
        try:
            grid = torch.as_tensor(grid_hw)
        except (TypeError, ValueError, RuntimeError) as error:
            raise EncoderInputError(
                f"images: grid_hw is not a [n_images, 2] integer array ({error})"
            ) from None
        if grid.dim() != 2 or grid.shape[1] != 2:
            raise EncoderInputError(
                f"images: grid_hw must be [n_images, 2] (rows, cols), got shape {tuple(grid.shape)}"
            )
        if grid.is_floating_point() or grid.is_complex() or grid.dtype == torch.bool:
            raise EncoderInputError(f"images: grid_hw must hold integers, got dtype {grid.dtype}")
        if grid.shape[0] == 0 or pixel_values.shape[0] == 0:
            raise EncoderInputError("images: empty input (no images or no patches)")
        grids = [(int(rows), int(cols)) for rows, cols in grid.tolist()]
        for index, (rows, cols) in enumerate(grids):
            if rows <= 0 or cols <= 0:
                raise EncoderInputError(f"image {index}: grid {rows}×{cols} must be positive")
        total = sum(rows * cols for rows, cols in grids)
        if total != pixel_values.shape[0]:
            raise EncoderInputError(
                f"images: grid_hw describes {total} patches but pixel_values holds {pixel_values.shape[0]}"
            )
        _check_finite(pixel_values, "images: pixel_values")
        return grids

    def _check_frames(self, frames: torch.Tensor) -> None:
        channels, p = self.config.num_channels, self.config.patch_size
        if not isinstance(frames, torch.Tensor):
            raise EncoderInputError(f"video: frames must be a tensor, got {type(frames).__name__}")
        if frames.dim() != 4 or frames.shape[1] != channels:
            raise EncoderInputError(
                f"video: frames must be [T, {channels}, H, W], got shape {tuple(frames.shape)}"
            )
        if not frames.is_floating_point():
            raise EncoderInputError(f"video: frames must be normalised floats, got dtype {frames.dtype}")
        count, _, height, width = frames.shape
        if count == 0 or height == 0 or width == 0:
            raise EncoderInputError(f"video: empty input, got shape {tuple(frames.shape)}")
        if height % p or width % p:
            raise EncoderInputError(
                f"video: frame size {height}×{width} is not a multiple of the patch size {p}"
            )
        _check_finite(frames, "video: frames")


def _check_finite(values: torch.Tensor, what: str) -> None:
    finite = torch.isfinite(values)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise EncoderInputError(f"{what} contain {bad} NaN or infinite values")


def _patch_rows(lengths: Sequence[int], prefix: int, device: torch.device) -> torch.Tensor:
    """Indices of the patch rows (not the prefix rows) of a packed token sequence."""
    ranges, start = [], 0
    for length in lengths:
        ranges.append((start + prefix, start + length))
        start += length
    return range_rows(ranges, device)
