"""The media of a conversation's content items, loaded in the order the chat template places them.

The template puts the placeholders of a user (or system) turn's media ahead of its text, in
content order per kind (images, then videos, then audio), turn after turn; collecting each kind in
content order, turn after turn, gives the processor its media in placeholder order. A PDF item
becomes one image item per page, so the template counts the pages.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from omni import chat
from omni.errors import InputError
from omni.media import load_pdf
from omni.media_inputs import PreparedVideo, is_file_source, prepare_audio, prepare_image, prepare_video
from omni.pixels import StreamingResize

VIDEO_LOAD_OPTIONS = ("fps", "num_frames", "max_frames", "start", "end")


@dataclass
class ConversationMedia:
    """Media gathered from one or more conversations, each kind in placeholder order."""

    sampling_rate: int = 16000
    use_audio_in_video: bool = False
    load: bool = True  # False: only count PDF pages (for rendering the prompt alone)
    video_defaults: dict[str, Any] = field(default_factory=dict)  # load options an item does not set
    audio_source_rate: int | None = None  # rate of audio arrays whose item does not say
    make_resize: Callable[[], StreamingResize] | None = None  # resize video files' frames as they decode
    images: list[torch.Tensor] = field(default_factory=list)
    videos: list[PreparedVideo] = field(default_factory=list)
    waveforms: list[torch.Tensor] = field(default_factory=list)

    def collect(self, conversation: list[Mapping[str, Any]], c: int) -> list[Mapping[str, Any]]:
        """Gather the media of conversation ``c``; returns it as the template should see it (PDF pages
        as image items)."""
        rendered = []
        for m, message in enumerate(conversation):
            if not isinstance(message, Mapping):
                raise InputError(
                    f"conversation {c}, message {m}: expected a dict, got {type(message).__name__}"
                )
            items = chat.content_items(message)
            if not items or message.get("role") not in ("user", "system"):
                rendered.append(message)
                continue
            new_items: list[Mapping[str, Any]] = []
            for k, item in enumerate(items):
                where = f"conversation {c}, message {m}, item {k}"
                try:
                    new_items.extend(self._item(item, where))
                except InputError as err:
                    message_text = str(err)
                    raise InputError(
                        message_text if message_text.startswith(where) else f"{where}: {message_text}"
                    ) from err
            rendered.append({**message, "content": new_items})
        return rendered

    def _item(self, item: Mapping[str, Any], where: str) -> list[Mapping[str, Any]]:
        kind = chat.normalise_type(item, where)
        if kind == "text":
            return [item]
        if kind not in chat.MEDIA_TYPES:
            raise InputError(f"{where}: unsupported content type {item['type']!r}")
        source = chat.media_source(item, kind, where)
        if kind == "pdf":
            pages = load_pdf(source, pages=item.get("pages"), dpi=item.get("dpi", 144))
            if self.load:
                self.images.extend(prepare_image(page, len(self.images)) for page in pages)
            return [{"type": "image"} for _ in pages]
        if not self.load:
            return [item]
        if kind == "image":
            self.images.append(prepare_image(source, len(self.images)))
        elif kind == "video":
            options = {
                **self.video_defaults,
                **{k: item[k] for k in VIDEO_LOAD_OPTIONS if item.get(k) is not None},
            }
            self.videos.append(
                prepare_video(
                    source,
                    len(self.videos),
                    load_options=options,
                    metadata=item.get("video_metadata"),
                    # a video item's own "use_audio" wins over the call's use_audio_in_video
                    with_sound=bool(item.get("use_audio", self.use_audio_in_video))
                    and is_file_source(source),
                    sampling_rate=self.sampling_rate,
                    resize=self.make_resize() if self.make_resize is not None else None,
                )
            )
        else:
            self.waveforms.append(self._audio(source, item, len(self.waveforms)))
        return [item]

    def _audio(self, source: Any, item: Mapping[str, Any], index: int) -> torch.Tensor:
        """An audio item, at ``sampling_rate``, cut to its ``start`` / ``end`` window (seconds)."""
        waveform = prepare_audio(
            source, index, sampling_rate=self.sampling_rate, source_rate=item.get("sampling_rate")
        )
        start, end = item.get("start"), item.get("end")
        if start is None and end is None:
            return waveform
        first = 0 if start is None else round(float(start) * self.sampling_rate)
        stop = (
            waveform.numel() if end is None else min(waveform.numel(), round(float(end) * self.sampling_rate))
        )
        if stop <= first:
            raise InputError(f"audio {index}: the window start={start}, end={end} holds no samples")
        return waveform[first:stop]
