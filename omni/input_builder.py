"""The model inputs of a batch: placeholders expanded, media sized and turned into tensors.

:class:`InputBuilder` takes prompts that hold one ``<image>`` / ``<video>`` / ``<so_embedding>``
placeholder per media item and media already loaded (``omni.media_inputs``), and produces the
:class:`ProcessorOutput` described in ``OmniProcessor``'s docstring.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from omni.audio_inputs import AudioBatch, AudioFeaturizer
from omni.errors import InputError
from omni.image_sizing import plan_image_grids, video_frame_grid
from omni.media_inputs import PreparedVideo
from omni.pixels import StreamingResize, image_patches, resize_normalize
from omni.processor_settings import ProcessorSettings
from omni.prompting import (
    MarkerTokens,
    audio_block,
    count_placeholders,
    image_block,
    tubelet_labels,
    video_blocks,
)
from omni.text_tokenizer import TextTokenizer


def _frame_grid(height: int, width: int, s: ProcessorSettings) -> tuple[int, int]:
    """Patch grid ``(rows, cols)`` of a video's frames of ``height x width``."""
    return video_frame_grid(
        height,
        width,
        target_patches=s.video_target_num_patches,
        merge=s.merge,
        keep_aspect_ratio=s.video_maintain_aspect_ratio,
    )


def _same_place(pixels: torch.Tensor, device: torch.device, size: tuple[int, int]) -> bool:
    """Whether frames resized ahead of time are at ``size`` on ``device`` (a bare ``cuda`` matches
    the current GPU)."""
    here = pixels.device
    wanted = (
        device.index
        if device.index is not None
        else (torch.cuda.current_device() if device.type == "cuda" else None)
    )
    return here.type == device.type and here.index == wanted and tuple(pixels.shape[-2:]) == size


# token type ids in ``mm_token_type_ids``
TEXT_TYPE, IMAGE_TYPE, VIDEO_TYPE, AUDIO_TYPE = 0, 1, 2, 3


class ProcessorOutput(dict):
    """The model inputs: a dict of tensors with attribute access and ``.to(device, dtype)``."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> ProcessorOutput:
        """Move every tensor to ``device``; ``dtype`` applies to floating-point tensors only."""
        out = ProcessorOutput()
        for key, value in self.items():
            if isinstance(value, torch.Tensor):
                cast = dtype if dtype is not None and value.is_floating_point() else None
                value = value.to(device=device, dtype=cast)
            out[key] = value
        return out


@dataclass
class _Sample:
    """One text of a batch while it is being expanded."""

    pieces: list[str]  # text split around placeholders (placeholders are their own pieces)
    images: list[int] = field(default_factory=list)  # global image indices, in order
    videos: list[int] = field(default_factory=list)
    audios: list[int] = field(default_factory=list)  # global audio indices (after video sound insertion)
    sound_of_video: dict[int, int] = field(default_factory=dict)  # video index -> audio index


class InputBuilder:
    """Expands prompts and builds tensors with one checkpoint's tokenizer, markers and audio front end."""

    def __init__(self, tokenizer: TextTokenizer, markers: MarkerTokens, audio: AudioFeaturizer) -> None:
        self.tokenizer = tokenizer
        self.markers = markers
        self.audio = audio
        self.image_token_id = tokenizer.require_id(markers.image)
        self.image_start_token_id = tokenizer.require_id(markers.image_start)
        self.image_end_token_id = tokenizer.require_id(markers.image_end)
        self.audio_token_id = tokenizer.convert_tokens_to_ids(markers.audio)

    def check_markers(self, texts: list[str]) -> None:
        """User texts must not hold the markers the expansion writes (they would misalign the media)."""
        for i, t in enumerate(texts):
            for marker in self.markers.reserved_markers:
                if marker in t:
                    raise InputError(
                        f"text {i} contains {marker!r}, which only the processor may write; use the "
                        f"placeholders {self.markers.image!r}, {self.markers.video!r}, {self.markers.audio!r}"
                    )

    def check_counts(self, texts: list[str], n_images: int, n_videos: int, n_audios: int) -> None:
        """One placeholder per media item of each kind, over the whole batch."""
        counts = [count_placeholders(self.markers, t) for t in texts]
        for kind, index, given in (("image", 0, n_images), ("video", 1, n_videos), ("audio", 2, n_audios)):
            found = sum(c[index] for c in counts)
            if found != given:
                placeholder = self.markers.placeholders[index]
                per_text = ", ".join(f"text {i}: {c[index]}" for i, c in enumerate(counts))
                raise InputError(
                    f"{found} {placeholder} placeholder(s) in the text ({per_text}) but {given} {kind} "
                    f"item(s) given; put one {placeholder} where each {kind} goes"
                )

    def build(
        self,
        texts: list[str],
        images: list[torch.Tensor],
        videos: list[PreparedVideo],
        waveforms: list[torch.Tensor],
        *,
        settings: ProcessorSettings,
        return_tensors: str | None = "pt",
        padding: bool = True,
        padding_side: str | None = None,
        add_special_tokens: bool = True,
        audio_clip_seconds: Any = ...,
        device: torch.device | None = None,
    ) -> ProcessorOutput:
        """Expand ``texts`` for the media and build the model inputs (see ``OmniProcessor``).

        ``device``: where images and video frames are resized and normalised (and their tensors live).
        """
        if return_tensors not in ("pt", None):
            raise InputError(f"return_tensors must be 'pt' or None, got {return_tensors!r}")
        s = settings
        merge, markers = s.merge, self.markers
        self.check_markers(texts)
        self.check_counts(texts, len(images), len(videos), len(waveforms))

        samples, ordered_audio = self._assign(texts, videos, waveforms)
        video_grids = [self._video_grid(v, s) for v in videos]
        tokens_per_tubelet = [rows * cols // merge**2 for rows, cols in video_grids]
        video_texts = [
            video_blocks(
                markers,
                tubelet_labels(v.frames.shape[0], s.video_temporal_patch_size, v.fps, v.frame_indices),
                n,
            )
            for v, n in zip(videos, tokens_per_tubelet)
        ]
        audio_batch = None
        if ordered_audio:
            for marker in (markers.audio, markers.audio_start, markers.audio_end):
                self.tokenizer.require_id(marker)
            audio_batch = self.audio(ordered_audio, audio_clip_seconds)
        audio_texts = [audio_block(markers, n) for n in audio_batch.token_counts] if audio_batch else []
        image_grids = self._image_grids(samples, images, video_texts, audio_texts, add_special_tokens, s)

        expanded = [self._expand(sample, image_grids, video_texts, audio_texts, merge) for sample in samples]
        ids = self.tokenizer.encode_batch(expanded, add_special_tokens=add_special_tokens)
        for i, seq in enumerate(ids):
            if len(seq) > s.max_model_len:
                raise InputError(
                    self._too_long_message(i, len(seq), samples[i], image_grids, videos, audio_batch, s)
                )
        if return_tensors is None and not padding:
            result = ProcessorOutput(input_ids=ids, attention_mask=[[1] * len(x) for x in ids])
        else:
            if not padding and len({len(x) for x in ids}) > 1:
                raise InputError("texts expand to different lengths; pass padding=True to batch them")
            result = ProcessorOutput(
                self.tokenizer.pad(ids, padding_side=padding_side, return_tensors=return_tensors)
            )
        if images or videos or ordered_audio:
            tubelets = [-(-v.frames.shape[0] // s.video_temporal_patch_size) for v in videos]
            result["mm_token_type_ids"] = self._token_types(
                result["input_ids"], samples, tubelets, return_tensors
            )
        if images:
            sizes = [rows * cols for rows, cols in image_grids]
            pixel_values = torch.empty(sum(sizes), 3 * s.patch_size**2, dtype=torch.float32, device=device)
            for img, (rows, cols), part in zip(images, image_grids, pixel_values.split(sizes)):
                img = img.to(pixel_values.device)
                image_patches(img, rows, cols, s.patch_size, s.image_mean, s.image_std, out=part)
            result["pixel_values"] = pixel_values
            result["image_grid_hw"] = torch.tensor(image_grids, dtype=torch.long)
        if videos:
            result.update(self._video_tensors(videos, video_grids, s, device))
        if audio_batch is not None:
            result["input_features"] = audio_batch.input_features
            result["input_features_mask"] = audio_batch.input_features_mask
            result["audio_clip_counts"] = audio_batch.audio_clip_counts
            result["audio_clip_token_counts"] = audio_batch.audio_clip_token_counts
        return result

    def _assign(
        self,
        texts: list[str],
        videos: list[PreparedVideo],
        waveforms: list[torch.Tensor],
    ) -> tuple[list[_Sample], list[torch.Tensor]]:
        """Media indices of each text in placeholder order, and the audio in order (a video's sound,
        when it was loaded, right after the video)."""
        markers = self.markers
        splitter = markers.splitter()
        samples: list[_Sample] = []
        ordered_audio: list[torch.Tensor] = []
        next_image = next_video = next_audio = 0
        for t in texts:
            sample = _Sample(pieces=[p for p in splitter.split(t) if p])
            for piece in sample.pieces:
                if piece == markers.image:
                    sample.images.append(next_image)
                    next_image += 1
                elif piece == markers.video:
                    sample.videos.append(next_video)
                    sound = videos[next_video].sound
                    if sound is not None:  # loaded only when the sound was asked for
                        sample.sound_of_video[next_video] = len(ordered_audio)
                        sample.audios.append(len(ordered_audio))
                        ordered_audio.append(sound)
                    next_video += 1
                elif piece == markers.audio:
                    sample.audios.append(len(ordered_audio))
                    ordered_audio.append(waveforms[next_audio])
                    next_audio += 1
            samples.append(sample)
        return samples, ordered_audio

    @staticmethod
    def _video_grid(video: PreparedVideo, s: ProcessorSettings) -> tuple[int, int]:
        return _frame_grid(video.frames.shape[-2], video.frames.shape[-1], s)

    @staticmethod
    def streaming_resize(settings: ProcessorSettings, device: torch.device) -> StreamingResize:
        """A frame sink that resizes a video's frames on ``device`` to their patch grid as they decode,
        for ``prepare_video(resize=...)``; ``build`` then uses its result instead of resizing again."""
        s = settings

        def size_for(height: int, width: int) -> tuple[int, int]:
            rows, cols = _frame_grid(height, width, s)
            return rows * s.patch_size, cols * s.patch_size

        return StreamingResize(size_for, s.video_mean, s.video_std, device)

    def _image_grids(
        self,
        samples: list[_Sample],
        images: list[torch.Tensor],
        video_texts: list[str],
        audio_texts: list[str],
        add_special_tokens: bool,
        s: ProcessorSettings,
    ) -> list[tuple[int, int]]:
        """Patch grid of every image; the images of a text share what its other tokens leave of the context."""
        grids: list[tuple[int, int]] = [(0, 0)] * len(images)
        for sample in samples:
            if not sample.images:
                continue
            other = self._tokens_without_images(sample, video_texts, audio_texts, add_special_tokens)
            planned = plan_image_grids(
                [tuple(images[i].shape[-2:]) for i in sample.images],
                patch_size=s.patch_size,
                merge=s.merge,
                min_patches=s.min_num_patches,
                max_patches=s.max_num_patches,
                available_patches=s.merge**2 * (s.max_model_len - other - 4),
            )
            for i, grid in zip(sample.images, planned):
                grids[i] = grid
        return grids

    def _expand(
        self,
        sample: _Sample,
        image_grids: list[tuple[int, int]],
        video_texts: list[str],
        audio_texts: list[str],
        merge: int,
    ) -> str:
        """The text with every placeholder replaced by its token run."""
        markers = self.markers
        out, image_i, video_i, audio_i = [], iter(sample.images), iter(sample.videos), iter(sample.audios)
        for piece in sample.pieces:
            if piece == markers.image:
                rows, cols = image_grids[next(image_i)]
                out.append(image_block(markers, rows * cols // merge**2))
            elif piece == markers.video:
                v = next(video_i)
                out.append(video_texts[v])
                if v in sample.sound_of_video:
                    out.append(audio_texts[next(audio_i)])
            elif piece == markers.audio:
                out.append(audio_texts[next(audio_i)])
            else:
                out.append(piece)
        return "".join(out)

    def _tokens_without_images(
        self, sample: _Sample, video_texts: list[str], audio_texts: list[str], add_special_tokens: bool
    ) -> int:
        """Tokens a text takes apart from its images (the rest of the context is the images' budget)."""
        markers = self.markers
        plain = "".join(p for p in sample.pieces if p not in markers.placeholders)
        count = len(self.tokenizer.encode(plain, add_special_tokens=add_special_tokens))
        pieces = [video_texts[v] for v in sample.videos] + [audio_texts[a] for a in sample.audios]
        return count + sum(len(x) for x in self.tokenizer.encode_batch(pieces, add_special_tokens=False))

    def _token_types(
        self, input_ids: Any, samples: list[_Sample], video_tubelets: list[int], return_tensors: str | None
    ) -> Any:
        """0 text / 1 image / 2 video / 3 audio per position, from the order of ``<img>`` blocks."""
        types = []
        rows = input_ids if isinstance(input_ids, list) else input_ids.tolist()
        markers = self.markers
        for seq, sample in zip(rows, samples):
            # kind of every <img> block of this text, in order
            kinds: list[int] = []
            video_i = iter(sample.videos)
            for piece in sample.pieces:
                if piece == markers.image:
                    kinds.append(IMAGE_TYPE)
                elif piece == markers.video:
                    v = next(video_i)
                    kinds.extend([VIDEO_TYPE] * video_tubelets[v])
            block, inside, row = -1, False, []
            for token in seq:
                if token == self.image_start_token_id:
                    block, inside = block + 1, True
                    row.append(TEXT_TYPE)
                elif token == self.image_end_token_id:
                    inside = False
                    row.append(TEXT_TYPE)
                elif inside and token == self.image_token_id:
                    row.append(kinds[block])
                elif token == self.audio_token_id:
                    row.append(AUDIO_TYPE)
                else:
                    row.append(TEXT_TYPE)
            types.append(row)
        if return_tensors == "pt":
            return torch.tensor(types, dtype=torch.long).reshape(len(types), -1)
        return types

    def _video_tensors(
        self,
        videos: list[PreparedVideo],
        grids: list[tuple[int, int]],
        s: ProcessorSettings,
        device: torch.device | None = None,
    ) -> dict[str, torch.Tensor]:
        """Resized, normalised frames of every video (zero-padded to a common size) and their sizes."""
        heights = [rows * s.patch_size for rows, _ in grids]
        widths = [cols * s.patch_size for _, cols in grids]
        total = sum(v.frames.shape[0] for v in videos)
        same = len(set(zip(heights, widths))) == 1
        target = torch.device("cpu") if device is None else device
        done = [
            v.pixels if v.pixels is not None and _same_place(v.pixels, target, (h, w)) else None
            for v, h, w in zip(videos, heights, widths)
        ]
        if len(videos) == 1 and done[0] is not None:
            out = done[0]  # resized while it decoded
        else:
            out = (torch.empty if same else torch.zeros)(
                total, 3, max(heights), max(widths), dtype=torch.float32, device=device
            )
            start = 0
            for v, pixels, h, w in zip(videos, done, heights, widths):
                n = v.frames.shape[0]
                if pixels is not None:
                    out[start : start + n, :, :h, :w] = pixels
                else:
                    resize_normalize(
                        v.frames, h, w, s.video_mean, s.video_std, out=out[start : start + n, :, :h, :w]
                    )
                start += n
        temporal = s.video_temporal_patch_size
        frame_counts = [v.frames.shape[0] for v in videos]
        return {
            "pixel_values_videos": out,
            "video_grid_thw": torch.tensor(
                [[-(-n // temporal), rows, cols] for n, (rows, cols) in zip(frame_counts, grids)],
                dtype=torch.long,
            ),
            "video_frame_counts": torch.tensor(frame_counts, dtype=torch.long),
        }

    def _too_long_message(
        self,
        index: int,
        length: int,
        sample: _Sample,
        image_grids: list[tuple[int, int]],
        videos: list[PreparedVideo],
        audio_batch: AudioBatch | None,
        s: ProcessorSettings,
    ) -> str:
        merge = s.merge
        parts = []
        for i in sample.images:
            rows, cols = image_grids[i]
            parts.append(f"image {i}: {rows * cols // merge**2} tokens")
        for v in sample.videos:
            frames = videos[v].frames.shape[0]
            parts.append(f"video {v}: {frames} frames")
        if audio_batch is not None:
            for a in sample.audios:
                parts.append(f"audio {a}: {audio_batch.token_counts[a]} tokens")
        detail = "; ".join(parts) or "text only"
        return (
            f"text {index} expands to {length} tokens, more than max_model_len={s.max_model_len} ({detail}); "
            "use fewer or shorter media (fps / num_frames / max_frames for videos, start / end for audio) "
            "or pass a larger max_model_len"
        )
