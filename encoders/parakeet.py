"""Parakeet FastConformer audio encoder (the omni checkpoint's ``sound_encoder``).

``ParakeetSoundEncoder`` is the module behind the checkpoint prefix ``sound_encoder.``: its
``state_dict()`` keys are the checkpoint's with that prefix removed (``encoder.subsampling.*``,
``encoder.layers.{i}.*``). The ``sound_projection`` adapter belongs to the omni model.

Batches of clips of different lengths give each clip the output it gets alone: padding is
zeroed before every convolution in time, hidden from every valid query, and the one trailing
output the reference computes over padding (see ``encoders.audio_clips``) is reproduced from
the clip's own extent only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from encoders.audio_clips import AudioClipper, subsampled_lengths
from encoders.errors import EncoderInputError
from encoders.mel import LogMelFrontEnd
from encoders.parakeet_attention import ClipLayout, padded_distances, relative_position_embedding
from encoders.parakeet_config import ParakeetConfig
from encoders.parakeet_graphs import LayerGraphs
from encoders.parakeet_layers import ConformerBlock, ConvSubsampling


def _host_mask(mask: torch.Tensor) -> np.ndarray:
    """``mask`` as a bool array on the host, for counting and checking it with numpy: torch's CPU reductions
    over a mask of this size (20 clips of 3,001 frames) split across its thread pool, whose wake-ups cost
    about a millisecond a reduction on an H200's host and now and then tens of milliseconds, while the GPU
    waited for the encoder's replay (encodes of 24 to 70 ms around a replay of 20 ms)."""
    return mask.detach().to("cpu", torch.bool).numpy()


class FastConformerEncoder(nn.Module):
    """Conv subsampling (8×) then Conformer blocks; checkpoint names ``subsampling``, ``layers``."""

    def __init__(self, config: ParakeetConfig) -> None:
        super().__init__()
        self.config = config
        self.input_scale = config.hidden_size**0.5 if config.scale_input else 1.0
        self.subsampling = ConvSubsampling(config)
        self.layers = nn.ModuleList([ConformerBlock(config) for _ in range(config.num_hidden_layers)])
        self.layer_graphs = LayerGraphs([self.subsampling, self.layers])

    def output_lengths(self, frame_lengths: torch.Tensor) -> torch.Tensor:
        """Encoder outputs computed from ``frame_lengths`` mel frames."""
        c = self.config
        return subsampled_lengths(
            frame_lengths, c.subsampling_conv_kernel_size, c.subsampling_conv_stride, c.stride_stages
        )

    def forward(
        self, features: torch.Tensor, frame_lengths: torch.Tensor, keep: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``features [B, F, mels]`` with ``frame_lengths [B]`` valid frames; ``keep [B]`` outputs to
        return per clip (at most one past the valid ones). Returns ``hidden [B, T, d]`` and the
        ``[B, T]`` mask of kept outputs."""
        width = self.config.hidden_size
        if len(self.layers) and self.layers[0].fused_usable(features.new_empty(1, 1, width)):
            x = self.layer_graphs.run(self._encode_fused, (features, frame_lengths))
            if x is None:  # a shape's first call, or graphs off
                x = self._encode_fused(features, frame_lengths)
        else:
            x, positions, clips = self._embed(features, frame_lengths)
            for layer in self.layers:
                x = layer(x, positions, clips)
        length = x.shape[1]
        steps = torch.arange(length, device=x.device)
        kept = steps[None, :] < keep.clamp(max=length)[:, None]
        return x, kept

    def _embed(
        self, features: torch.Tensor, frame_lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, ClipLayout]:
        """The subsampled, scaled frames ``[B, T, d]``, the position table and the clips' layout."""
        x = self.subsampling(features, frame_lengths)
        if self.input_scale != 1.0:
            x = x * self.input_scale
        length, width = x.shape[1:]
        positions = relative_position_embedding(length, width, x.device, x.dtype, padded_distances(length))
        if self.training:
            x = F.dropout(x, self.config.dropout, True)
            positions = F.dropout(positions, self.config.dropout_positions, True)
        # outputs of the clip alone: its features then end one (zeroed) frame past the valid ones
        clips = ClipLayout(
            valid_lengths=self.output_lengths(frame_lengths).clamp(max=length),
            extents=self.output_lengths(frame_lengths + 1).clamp(max=length),
            length=length,
        )
        return x, positions, clips

    def _encode_fused(self, features: torch.Tensor, frame_lengths: torch.Tensor) -> torch.Tensor:
        """`_embed`, then every layer's `ConformerBlock.forward_fused`: the run `layer_graphs` captures (on
        the subsampling's kernels nothing in it reads the GPU back; a path that does fails the capture, and
        that shape stays eager)."""
        x, positions, clips = self._embed(features, frame_lengths)
        halves = torch.full((x.shape[-1],), 0.5, dtype=x.dtype, device=x.device)
        scales = (halves, halves + halves)
        for layer in self.layers:
            x = layer.forward_fused(x, positions, clips, scales)
        return x


class ParakeetSoundEncoder(nn.Module):
    """The omni checkpoint's ``sound_encoder``: a child ``encoder`` (:class:`FastConformerEncoder`)."""

    # checkpoint keys (after the ``sound_encoder.`` prefix) that carry no weights of this module
    IGNORED_CHECKPOINT_KEYS = (r"^encoder\.feature_extractor\.", r"^encoder\.encode_positions\.")

    def __init__(self, config: ParakeetConfig | Mapping[str, Any]) -> None:
        super().__init__()
        if not isinstance(config, ParakeetConfig):
            config = ParakeetConfig.from_dict(config)
        self.config = config
        self.encoder = FastConformerEncoder(config)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ParakeetSoundEncoder:
        """From the checkpoint's ``audio_config`` (or legacy ``sound_config``) dict."""
        return cls(ParakeetConfig.from_dict(config))

    def output_lengths(self, frame_lengths: torch.Tensor, final: bool | torch.Tensor = True) -> torch.Tensor:
        """Outputs kept per clip of ``frame_lengths`` valid mel frames.

        A final clip (a whole audio, or the last clip of one) keeps one more than its valid
        outputs, ``subsampled(frames + 1)``, as the released processor counts; other clips of a
        split audio keep their valid outputs only.
        """
        with_tail = self.encoder.output_lengths(frame_lengths + 1)
        without = self.encoder.output_lengths(frame_lengths)
        final = torch.as_tensor(final, device=frame_lengths.device)
        return torch.where(final, with_tail, without)

    def kept_counts(
        self,
        batch: int,
        frames: int,
        mask: torch.Tensor | None = None,
        final: torch.Tensor | Sequence[bool] | None = None,
    ) -> torch.Tensor:
        """On the host, the outputs `forward` keeps per clip (its ``out_mask`` row sums) for ``batch`` clips
        of ``frames`` mel frames with this ``mask`` and ``final``: lets a caller pick the kept rows without
        reading the GPU back. A mask on the GPU is read back here, before the encoder's kernels queue."""
        if mask is None:
            return self.encoder.output_lengths(torch.full((batch,), frames, dtype=torch.long))
        frame_lengths = torch.from_numpy(_host_mask(mask).sum(-1))
        final = torch.ones(batch, dtype=torch.bool) if final is None else torch.as_tensor(final).cpu().bool()
        return self.output_lengths(frame_lengths, final)

    def forward(
        self,
        features: torch.Tensor,
        mask: torch.Tensor | None = None,
        final: torch.Tensor | bool | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode mel features.

        ``features [B, F, mels]`` and ``mask [B, F]`` (valid frames, a prefix of each row; None:
        all valid) as the front end returns them; ``final [B]`` bool (default all True) marks
        clips that end their audio. Returns ``hidden [B, F', d]`` and ``out_mask [B, F']``, the
        outputs to keep: ``hidden[out_mask]`` are the clips' tokens in order, as many per clip as
        :meth:`output_lengths` gives (the released processor's count for whole audios).

        The mask is checked and counted on the host (read back once if it lies on the GPU, before
        the encoder's kernels queue); the counts then go to the GPU without waiting for it.
        """
        features, frame_lengths = self._check_inputs(features, mask)
        device = features.device
        counts = frame_lengths.to(device, non_blocking=True)
        if mask is None:  # every frame valid: keep every output, like the reference without a mask
            keep = self.encoder.output_lengths(frame_lengths)
            return self.encoder(features, counts, keep.to(device, non_blocking=True))
        if features.shape[1] <= int(frame_lengths.max()):
            # the trailing output of a final clip reads one frame past the valid ones (zero)
            features = F.pad(features, (0, 0, 0, 1))
        final = torch.as_tensor(True if final is None else final, dtype=torch.bool)
        if final.numel() not in (1, features.shape[0]):
            raise EncoderInputError(
                f"final: expected one flag per clip ({features.shape[0]}), got {final.numel()}"
            )
        lengths = frame_lengths.to(final.device)  # the host's counts where `final` lies on the host
        keep = self.output_lengths(lengths, final.reshape(-1)).expand(features.shape[0])
        return self.encoder(features, counts, keep.to(device, non_blocking=True))

    def _check_inputs(
        self, features: torch.Tensor, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``features`` and the valid frames of each clip, counted on the host (a CPU tensor)."""
        if not isinstance(features, torch.Tensor) or features.dim() != 3:
            shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
            raise EncoderInputError(f"audio features: expected [clips, frames, mel bins], got {shape}")
        batch, frames, mels = features.shape
        if mels != self.config.num_mel_bins:
            raise EncoderInputError(
                f"audio features: {mels} mel bins, but the encoder expects {self.config.num_mel_bins}"
            )
        if batch == 0 or frames == 0:
            raise EncoderInputError(f"audio features: empty batch of shape {tuple(features.shape)}")
        if mask is None:
            return features, torch.full((batch,), frames, dtype=torch.long)
        if tuple(mask.shape) != (batch, frames):
            raise EncoderInputError(
                f"audio features mask: expected shape {(batch, frames)}, got {tuple(mask.shape)}"
            )
        valid = _host_mask(mask)
        frame_lengths = valid.sum(-1)
        if not np.array_equal(valid, np.arange(frames)[None, :] < frame_lengths[:, None]):
            raise EncoderInputError("audio features mask: valid frames must come first in every row")
        return features, torch.from_numpy(frame_lengths)

    @torch.no_grad()
    def encode_waveforms(
        self,
        waveforms: Sequence[torch.Tensor | np.ndarray],
        front_end: LogMelFrontEnd,
        clip_seconds: float = 30.0,
        batch_size: int = 8,
    ) -> list[torch.Tensor]:
        """Encode whole audios of any length: ``[tokens_i, d]`` per waveform, ``tokens_i`` being the
        released processor's count.

        Each waveform is cut into clips (:class:`~encoders.audio_clips.AudioClipper`), the clips of
        all waveforms are featurised and encoded ``batch_size`` at a time (longest first, so
        clips of similar length share a batch) and re-joined; memory is bounded by one batch.
        """
        if front_end.n_mels != self.config.num_mel_bins:
            raise ValueError(
                f"front end makes {front_end.n_mels} mel bins, encoder expects {self.config.num_mel_bins}"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        c = self.config
        clipper = AudioClipper(
            clip_seconds,
            front_end.sampling_rate,
            front_end.hop_length,
            c.subsampling_conv_kernel_size,
            c.subsampling_conv_stride,
            c.stride_stages,
        )
        if isinstance(waveforms, (torch.Tensor, np.ndarray)) and waveforms.ndim == 1:
            waveforms = [waveforms]
        plans, pieces = [], []  # pieces: (audio index, clip index, samples)
        for index, waveform in enumerate(waveforms):
            if isinstance(waveform, np.ndarray):
                waveform = torch.from_numpy(np.ascontiguousarray(waveform))
            if not isinstance(waveform, torch.Tensor) or waveform.dim() != 1 or waveform.numel() == 0:
                shape = tuple(waveform.shape) if hasattr(waveform, "shape") else type(waveform).__name__
                raise EncoderInputError(f"audio {index}: expected non-empty mono 1-D samples, got {shape}")
            clips, plan = clipper.split(waveform)
            plans.append(plan)
            pieces += [(index, i, clip) for i, clip in enumerate(clips)]

        parameter = next(self.parameters())
        outputs: list[list[torch.Tensor | None]] = [[None] * len(plan) for plan in plans]
        order = sorted(range(len(pieces)), key=lambda p: -pieces[p][2].numel())
        for first in range(0, len(order), batch_size):
            batch = [pieces[p] for p in order[first : first + batch_size]]
            features, mask = front_end([samples for _, _, samples in batch], device=parameter.device)
            final = torch.tensor([plans[a][i].final for a, i, _ in batch], device=parameter.device)
            hidden, kept = self(features.to(parameter.dtype), mask, final)
            for row, (a, i, _) in enumerate(batch):
                outputs[a][i] = hidden[row, kept[row]]
        return [AudioClipper.join(outs, plan) for outs, plan in zip(outputs, plans)]
