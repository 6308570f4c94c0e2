"""``OmniModel``: the vision and audio towers, their adapters and the hybrid language model.

Media features replace the placeholder rows of the text embeddings, in order: images and video
frames go to ``<image>`` rows, audio to ``<so_embedding>`` rows. When a prompt holds both images
and videos, the processor's ``mm_token_type_ids`` (0 text, 1 image, 2 video, 3 audio) says which
rows are which. Efficient Video Sampling (EVS) then drops the video rows that barely change
between tubelets; rows of a batch shrink by different amounts and are re-padded on the left.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from backbone import HybridConfig, HybridLM
from encoders import ParakeetConfig, ParakeetSoundEncoder, RadioConfig, RadioEncoder
from encoders.transfer import range_rows
from omni.config import OmniConfig
from omni.errors import InputError, raises_input_error
from omni.projector import SoundProjection, vision_projector
from tokenreduce import evs_keep_mask, evs_retained_count, pixel_shuffle, pixel_shuffle_packed

TEXT_TYPE, IMAGE_TYPE, VIDEO_TYPE, AUDIO_TYPE = 0, 1, 2, 3
IGNORE_INDEX = -100


@dataclass
class OmniOutput:
    """What ``OmniModel.forward`` returns."""

    logits: torch.Tensor
    loss: torch.Tensor | None = None
    cache: Any = None
    attention_mask: torch.Tensor | None = None  # the mask the language model saw (after EVS)


@dataclass
class EmbeddedInputs:
    """Text embeddings with media features scattered in (and EVS applied)."""

    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor | None
    labels: torch.Tensor | None
    # every row of `attention_mask` is all ones, known on the host: the language model can take None and
    # read nothing back (after EVS on one prompt)
    full_rows: bool = False

    @property
    def model_mask(self) -> torch.Tensor | None:
        """The mask to give the language model: None where the host knows there is no padding."""
        return None if self.full_rows else self.attention_mask


class OmniModel(nn.Module):
    """Nemotron 3 Nano Omni: RADIO ViT + Parakeet encoder + adapters + hybrid Mamba/MoE LM."""

    def __init__(self, config: OmniConfig) -> None:
        super().__init__()
        self.config = config
        text = HybridConfig.from_dict(config.text_config)
        self.language_model = HybridLM(text)

        vision = RadioConfig.from_dict(
            {"video_temporal_patch_size": config.video_temporal_patch_size, **config.vision_config}
        )
        self.vision_model = RadioEncoder(vision)
        # checkpoints whose language model carries MTP layers normalise the ViT output first
        self.vision_final_layernorm = (
            nn.LayerNorm(config.vision_hidden_size, eps=vision.layer_norm_eps)
            if text.num_nextn_predict_layers > 0
            else None
        )
        factor = config.downsample_factor
        self.mlp1 = vision_projector(
            config.vision_hidden_size * factor * factor, config.projector_hidden_size, text.hidden_size
        )
        self.sound_encoder: ParakeetSoundEncoder | None = None
        self.sound_projection: SoundProjection | None = None
        if config.audio_config is not None:
            audio = ParakeetConfig.from_dict(config.audio_config)
            self.sound_encoder = ParakeetSoundEncoder(audio)
            self.sound_projection = SoundProjection(
                audio.hidden_size,
                int(config.audio_config.get("projection_hidden_size", 4096)),
                text.hidden_size,
                bias=bool(config.audio_config.get("projection_bias", False)),
            )
        self.video_pruning_rate = config.video_pruning_rate
        # ids that end an answer by default (generation_config.json's eos list when the checkpoint has one)
        self.default_eos_token_id: int | list[int] | None = None

    # ------------------------------------------------------------------ basics
    @property
    def device(self) -> torch.device:
        return self.language_model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.language_model.dtype

    def get_input_embeddings(self) -> nn.Embedding:
        return self.language_model.get_input_embeddings()

    # ------------------------------------------------------------------ encoders
    def _vision_tokens(self, features: torch.Tensor) -> torch.Tensor:
        if self.vision_final_layernorm is not None:
            features = self.vision_final_layernorm(features)
        return features

    def image_embeddings(self, pixel_values: torch.Tensor, image_grid_hw: torch.Tensor) -> list[torch.Tensor]:
        """Per image ``[rows·cols/4, d]`` language-model embeddings from packed patches."""
        grid = torch.as_tensor(image_grid_hw, dtype=torch.long).cpu()
        features = self.vision_model.encode_images(pixel_values.to(self.device), grid)
        shuffled = pixel_shuffle_packed(self._vision_tokens(features), grid, self.config.downsample_ratio)
        merge = self.config.downsample_factor**2
        sizes = (grid.prod(-1) // merge).tolist()
        return list(self.mlp1(shuffled).split(sizes))

    def video_embeddings(
        self,
        pixel_values_videos: torch.Tensor,
        video_frame_counts: torch.Tensor | None = None,
        video_grid_thw: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """Per video ``[tubelets, rows/2, cols/2, d]`` embeddings.

        ``pixel_values_videos`` holds the frames of all videos back to back (``video_frame_counts``
        per video), zero-padded to a common size when videos differ (``video_grid_thw`` gives each
        video's true patch grid). Without those keys the whole tensor is one video.
        """
        frames = pixel_values_videos.to(self.device)
        patch = self.vision_model.config.patch_size
        counts = (
            [frames.shape[0]] if video_frame_counts is None else torch.as_tensor(video_frame_counts).tolist()
        )
        if sum(counts) != frames.shape[0]:
            raise InputError(
                f"video_frame_counts add up to {sum(counts)} frames but pixel_values_videos holds {frames.shape[0]}"
            )
        if video_grid_thw is not None:
            grids = [(int(h), int(w)) for _, h, w in torch.as_tensor(video_grid_thw).tolist()]
            if len(grids) != len(counts):
                raise InputError(
                    f"video_grid_thw describes {len(grids)} videos, video_frame_counts {len(counts)}"
                )
        else:
            grids = [(frames.shape[-2] // patch, frames.shape[-1] // patch)] * len(counts)
        clips = [
            clip[:, :, : rows * patch, : cols * patch]
            for clip, (rows, cols) in zip(frames.split(counts), grids)
        ]
        features = self.vision_model.encode_videos(clips)
        # videos of one grid share the pixel shuffle and the projector (one pass, not one per video)
        by_grid: dict[tuple[int, int], list[int]] = {}
        for index, grid in enumerate(grids):
            by_grid.setdefault(grid, []).append(index)
        out: list[torch.Tensor | None] = [None] * len(clips)
        for (rows, cols), members in by_grid.items():
            stacked = self._vision_tokens(torch.cat([features[i] for i in members]))
            shuffled = pixel_shuffle(
                stacked.reshape(-1, rows, cols, stacked.shape[-1]), self.config.downsample_ratio
            )
            for i, part in zip(members, self.mlp1(shuffled).split([features[i].shape[0] for i in members])):
                out[i] = part
        return out  # type: ignore[return-value]  (every index belongs to one grid)

    def audio_embeddings(
        self,
        input_features: torch.Tensor,
        input_features_mask: torch.Tensor | None = None,
        audio_clip_counts: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``[Σ tokens, d]`` embeddings of all audio clips, clip by clip, split audios re-joined.

        ``audio_clip_counts`` (clips per audio) marks which clips end their audio: only those keep
        the released processor's extra trailing token. Without it every clip is a whole audio.
        """
        if self.sound_encoder is None or self.sound_projection is None:
            raise InputError("audio was given, but this model has no audio encoder (no audio_config)")
        features = input_features.to(self.device, self.dtype)
        # the mask read to the host once: the clips' counts and the encoder's checks come from it there,
        # before the encoder queues (nothing then waits for the GPU)
        mask = (
            None
            if input_features_mask is None
            else torch.as_tensor(input_features_mask).to("cpu", torch.bool)
        )
        final = None
        if audio_clip_counts is not None:
            flags: list[bool] = []
            for count in torch.as_tensor(audio_clip_counts).tolist():
                flags.extend([False] * (int(count) - 1) + [True])
            if len(flags) != features.shape[0]:
                raise InputError(
                    f"audio_clip_counts add up to {len(flags)} clips but input_features holds {features.shape[0]}"
                )
            final = torch.tensor(flags)
        hidden, _ = self.sound_encoder(features, mask, final)
        # the kept rows counted on the host: `hidden[keep]` would wait for the whole encoder
        kept = self.sound_encoder.kept_counts(features.shape[0], features.shape[1], mask, final).tolist()
        width = hidden.shape[1]
        rows = range_rows(
            [(clip * width, clip * width + count) for clip, count in enumerate(kept)], hidden.device
        )
        return self.sound_projection(hidden.reshape(-1, hidden.shape[-1])[rows])

    # ------------------------------------------------------------------ assembly
    @raises_input_error
    def embed_inputs(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_grid_hw: torch.Tensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        input_features: torch.Tensor | None = None,
        input_features_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        mm_token_type_ids: torch.Tensor | None = None,
        video_frame_counts: torch.Tensor | None = None,
        video_grid_thw: torch.Tensor | None = None,
        audio_clip_counts: torch.Tensor | None = None,
        video_pruning_rate: float | None = None,
        **unused: Any,
    ) -> EmbeddedInputs:
        """Text embeddings with every media feature in its placeholder row, EVS applied to videos."""
        # What each position holds is worked out on the host, from the ids as the processor hands them
        # over: no encoder kernel waits on a count, and the host queues the language model while the
        # encoders run. What has to come back from the GPU (ids, token types, and the mask where EVS
        # counts rows) is read first, while its queue is still empty, and the types are checked; then
        # the encoders are queued, and the placeholder rows and the text's embedding follow while the
        # GPU runs them.
        host_ids = _on_host(input_ids)
        types = self._placeholder_types(host_ids, mm_token_type_ids, pixel_values, pixel_values_videos)
        rate = 0.0
        if pixel_values_videos is not None:
            rate = self.video_pruning_rate if video_pruning_rate is None else float(video_pruning_rate)
        host_mask = _on_host(attention_mask) if rate > 0 and attention_mask is not None else None

        images = videos = audio = None
        if pixel_values is not None:
            if image_grid_hw is None:
                raise InputError("pixel_values given without image_grid_hw")
            images = torch.cat(self.image_embeddings(pixel_values, image_grid_hw))
        if pixel_values_videos is not None:
            videos = self.video_embeddings(pixel_values_videos, video_frame_counts, video_grid_thw)
        if input_features is not None:
            audio = self.audio_embeddings(input_features, input_features_mask, audio_clip_counts)

        # the rows each video keeps after EVS, counted on the host, spare the compaction a read back
        row_counts = _row_counts(types, host_mask) if rate > 0 else None
        given = {IMAGE_TYPE: images, VIDEO_TYPE: videos, AUDIO_TYPE: audio}
        rows = {
            kind: _rows_of(types, kind).to(self.device, non_blocking=True)
            for kind, features in given.items()
            if features is not None
        }
        input_ids = input_ids.to(self.device)
        if attention_mask is not None:
            attention_mask = attention_mask.to(self.device)
        if labels is not None:
            labels = labels.to(self.device)
        embeds = self.get_input_embeddings()(input_ids)

        if images is not None:
            embeds = _scatter(embeds, rows[IMAGE_TYPE], images, "image")

        keep, lengths = None, None
        if videos is not None:
            flat = torch.cat([v.reshape(-1, v.shape[-1]) for v in videos])
            embeds = _scatter(embeds, rows[VIDEO_TYPE], flat, "video")
            if rate > 0:
                # scored in the embeddings' dtype, as the released code scores them: in bf16 the scores
                # crowd into few values, and fp32 scores would order those ties otherwise
                video_keep = torch.cat([evs_keep_mask(v, rate).reshape(-1) for v in videos])
                keep = torch.ones_like(input_ids, dtype=torch.bool)
                keep.view(-1)[rows[VIDEO_TYPE]] = video_keep.to(keep.device)
                lengths = _kept_lengths(row_counts, [tuple(v.shape[:3]) for v in videos], rate)

        if audio is not None:
            embeds = _scatter(embeds, rows[AUDIO_TYPE], audio, "audio")

        if keep is not None and attention_mask is not None:
            keep &= attention_mask.bool()
        if keep is not None:
            embeds, attention_mask, labels = _compact_rows(embeds, keep, labels, lengths)
        # set only where EVS compacted the rows and the host counted them all to one length
        full_rows = lengths is not None and min(lengths) == max(lengths)
        return EmbeddedInputs(embeds, attention_mask, labels, full_rows)

    def _placeholder_types(
        self,
        input_ids: torch.Tensor,
        mm_token_type_ids: torch.Tensor | None,
        pixel_values: torch.Tensor | None,
        pixel_values_videos: torch.Tensor | None,
    ) -> torch.Tensor:
        """0 text / 1 image / 2 video / 3 audio for every position."""
        if mm_token_type_ids is not None:
            types = torch.as_tensor(mm_token_type_ids).to(input_ids.device)
            if types.shape != input_ids.shape:
                raise InputError(
                    f"mm_token_type_ids {list(types.shape)} must match input_ids {list(input_ids.shape)}"
                )
            return types
        if pixel_values is not None and pixel_values_videos is not None:
            raise InputError(
                "images and videos in one call need mm_token_type_ids (the processor adds it) to tell "
                "their <image> rows apart"
            )
        types = torch.zeros_like(input_ids)
        visual = IMAGE_TYPE if pixel_values_videos is None else VIDEO_TYPE
        types[input_ids == self.config.image_token_id] = visual
        if self.config.audio_token_id is not None:
            types[input_ids == self.config.audio_token_id] = AUDIO_TYPE
        return types

    # ------------------------------------------------------------------ running
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        logits_to_keep: int = 0,
        **media: Any,
    ) -> OmniOutput:
        """Logits (and ``loss`` when ``labels`` are given) for a processed batch.

        Takes transformers' input names (``input_ids``, ``attention_mask``, ``pixel_values``,
        ``image_grid_hw``, ``pixel_values_videos``, ``input_features``, ``input_features_mask``,
        ``labels``) and the processor's own keys (``mm_token_type_ids``, ``video_frame_counts``,
        ``video_grid_thw``, ``audio_clip_counts``); ``video_pruning_rate`` overrides the config's.
        With EVS, logits cover the rows after pruning (see ``OmniOutput.attention_mask``).
        """
        if inputs_embeds is None:
            if input_ids is None:
                raise InputError("forward needs input_ids (or inputs_embeds)")
            embedded = self.embed_inputs(input_ids, attention_mask, labels=labels, **media)
        else:
            embedded = EmbeddedInputs(inputs_embeds, attention_mask, labels)
        out = self.language_model(
            inputs_embeds=embedded.inputs_embeds,
            attention_mask=embedded.model_mask,
            labels=embedded.labels,
            logits_to_keep=logits_to_keep,
        )
        return OmniOutput(logits=out.logits, loss=out.loss, attention_mask=embedded.attention_mask)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        max_new_tokens: int = 128,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = None,
        eos_token_id: int | Sequence[int] | None = None,
        pad_token_id: int | None = None,
        streamer: Any = None,
        stop_strings: Sequence[str] | None = None,
        tokenizer: Any = None,
        **media: Any,
    ) -> torch.LongTensor:
        """Answer a processed batch: returns ``[B, prompt + new]`` ids (the prompt as given).

        ``streamer`` follows transformers' ``put``/``end`` protocol (``backbone.TextStreamer`` or
        transformers' own). ``stop_strings`` end a row once its decoded answer contains one of them;
        they need ``tokenizer`` (the processor, or anything with ``decode``).
        """
        media.pop("labels", None)
        embedded = self.embed_inputs(input_ids, attention_mask, **media)
        stop = _stop_on_strings(stop_strings, tokenizer)
        if eos_token_id is None:
            eos_token_id = self.default_eos_token_id
        new = self.language_model.generate(
            inputs_embeds=embedded.inputs_embeds,
            attention_mask=embedded.model_mask,
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            seed=seed,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            streamer=streamer,
            stop=stop,
        )
        return torch.cat([input_ids.to(new.device), new.to(input_ids.dtype)], dim=1)

    # ------------------------------------------------------------------ checkpoints
    @classmethod
    def from_config(
        cls,
        config: OmniConfig | dict,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
    ) -> OmniModel:
        """A randomly initialised model (for training from scratch and tests)."""
        if isinstance(config, dict):
            config = OmniConfig.from_dict(config)
        model = cls(config)
        model.vision_model.reset_parameters()
        return model.to(device=device or "cpu", dtype=dtype or torch.float32)

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
    ) -> OmniModel:
        """Load a released-layout checkpoint directory, shard by shard, onto ``device`` in ``dtype``."""
        from omni.checkpoint import load_omni_checkpoint

        return load_omni_checkpoint(cls, path, dtype=dtype, device=device)

    def save_pretrained(self, path: str | os.PathLike, max_shard_bytes: int = 5 * 1024**3) -> None:
        """Write ``config.json`` and the weights in the released layout (transformers and vLLM load it)."""
        from omni.checkpoint import save_omni_checkpoint

        save_omni_checkpoint(self, path, max_shard_bytes=max_shard_bytes)


def _on_host(values: torch.Tensor) -> torch.Tensor:
    """``values`` as a CPU tensor (copied back where they are on a GPU)."""
    return torch.as_tensor(values).cpu()  # a CPU tensor comes back as itself


def _rows_of(types: torch.Tensor, kind: int) -> torch.Tensor:
    """Flat indices of the ``kind`` placeholders of ``types`` [B, L], in order (on ``types``' device)."""
    return (types.reshape(-1) == kind).nonzero().reshape(-1)


def _scatter(embeds: torch.Tensor, rows: torch.Tensor, features: torch.Tensor, what: str) -> torch.Tensor:
    """Put ``features`` into the flat ``rows`` (from `_rows_of`) of ``embeds`` [B, L, d], in order,
    checking the counts agree."""
    count = rows.shape[0]
    if count != features.shape[0]:
        raise InputError(
            f"the prompt has {count} {what} placeholder tokens but the {what} inputs give "
            f"{features.shape[0]} feature vectors (were the inputs made by this model's processor, "
            "with the same settings?)"
        )
    out = embeds.clone()
    out.view(-1, out.shape[-1]).index_copy_(0, rows, features.to(embeds.dtype))
    return out


def _row_counts(types: torch.Tensor, attention_mask: torch.Tensor | None) -> tuple[list[int], ...]:
    """Per row of ``types`` [B, L], as host lists: video placeholders, those of them the attention mask
    lets through, and the positions it lets through (both given on the host: nothing is read back)."""
    video = types == VIDEO_TYPE
    valid = torch.ones_like(video) if attention_mask is None else attention_mask.bool()
    counts = torch.stack([video.sum(1), (video & valid).sum(1), valid.sum(1)]).tolist()
    return tuple(counts)


def _kept_lengths(
    row_counts: tuple[list[int], ...], grids: list[tuple[int, int, int]], rate: float
) -> list[int] | None:
    """The positions each row keeps after EVS at ``rate``, counted on the host from `_row_counts` and the
    videos' ``(tubelets, rows, cols)`` grids in order; None where the host cannot tell (a video row
    under the attention mask, or videos that do not fill the rows' placeholders)."""
    videos, unmasked, valid = row_counts
    if videos != unmasked:
        return None
    dropped = [0] * len(valid)
    row, left = 0, videos[0]
    for tubelets, rows, cols in grids:
        while left == 0 and row + 1 < len(videos):
            row += 1
            left = videos[row]
        count = tubelets * rows * cols
        if count > left:
            return None
        left -= count
        dropped[row] += count - evs_retained_count(tubelets, rows, cols, rate)
    return [v - d for v, d in zip(valid, dropped, strict=True)]


def _compact_rows(
    embeds: torch.Tensor, keep: torch.Tensor, labels: torch.Tensor | None, lengths: list[int] | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Drop the positions ``keep`` rules out and left-pad the rows back to one length. ``lengths``, the
    kept positions of each row when the host knows them, spares the one read back of the GPU."""
    if lengths is None:
        lengths = keep.sum(1).tolist()
    width = max(lengths)
    # a stable sort puts each row's dropped positions first and its kept ones last, in their order
    order = torch.sort(keep.to(torch.int32), dim=1, stable=True).indices[:, keep.shape[1] - width :]
    kept = keep.gather(1, order)
    rows = embeds.gather(1, order[..., None].expand(-1, -1, embeds.shape[-1]))
    out = torch.where(kept[..., None], rows, torch.zeros((), dtype=rows.dtype, device=rows.device))
    new_labels = None if labels is None else torch.where(kept, labels.gather(1, order), IGNORE_INDEX)
    return out, kept.long(), new_labels


def _stop_on_strings(
    stop_strings: Sequence[str] | None, tokenizer: Any
) -> Callable[[torch.Tensor], bool] | None:
    """A per-row stop test for ``backbone`` generation: True once the answer contains a stop string."""
    if not stop_strings:
        return None
    if tokenizer is None or not hasattr(tokenizer, "decode"):
        raise InputError("stop_strings need tokenizer= (the processor, or a tokenizer with decode)")
    strings = list(stop_strings)

    def stop(ids: torch.Tensor) -> bool:
        text = tokenizer.decode(ids.tolist())
        return any(s in text for s in strings)

    return stop
