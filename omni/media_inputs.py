"""The processor's media arguments, checked and loaded into one form per modality.

Images become ``[3, H, W]`` tensors of 0..255 values, videos a :class:`PreparedVideo` (frames plus
what the frame labels need), audio a mono float32 waveform at the model's sampling rate. Files,
paths and bytes go through ``omni.media``; in-memory inputs are used as they are (no EXIF
rotation, no resampling of frames), as transformers' processor does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from omni.errors import InputError
from omni.media import VideoClip, load_audio, load_image, load_video, load_video_audio
from omni.pixels import StreamingResize, frames_to_tchw, image_to_chw


@dataclass
class PreparedVideo:
    """Sampled frames ``[T, 3, H, W]`` (0..255), the source frame rate and sampled frame indices
    (``None`` when unknown: labels then carry no time), the sound to add with
    ``use_audio_in_video`` (``None`` if the video has none), and the frames already resized and
    normalised while they decoded (``None`` unless a ``StreamingResize`` was given)."""

    frames: torch.Tensor
    fps: float | None
    frame_indices: list[int] | None
    sound: torch.Tensor | None = None
    pixels: torch.Tensor | None = None


def is_file_source(value: Any) -> bool:
    """A path, bytes or binary file object (something ``omni.media`` opens)."""
    return isinstance(value, (str, Path, bytes, bytearray, memoryview)) or hasattr(value, "read")


def _with_context(err: InputError, what: str) -> InputError:
    message = str(err)
    return InputError(message if message.startswith(what) else f"{what}: {message}")


def as_item_list(
    value: Any, *, frames_are_one_item: bool = False, numbers_are_one_item: bool = False
) -> list[Any]:
    """A media argument as a flat list of items (a single item, a list, or a list of per-text lists).

    ``frames_are_one_item``: a list of PIL images is one video. ``numbers_are_one_item``: a list of
    numbers is one waveform.
    """
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        return [value]
    if frames_are_one_item and value and all(isinstance(v, Image.Image) for v in value):
        return [list(value)]
    if numbers_are_one_item and value and all(isinstance(v, (int, float)) for v in value):
        return [np.asarray(value, dtype=np.float32)]
    items: list[Any] = []
    for entry in value:
        if isinstance(entry, (list, tuple)) and not (
            (frames_are_one_item and entry and all(isinstance(v, Image.Image) for v in entry))
            or (numbers_are_one_item and entry and all(isinstance(v, (int, float)) for v in entry))
        ):
            items.extend(entry)  # per-text nesting, e.g. [[img1, img2], [img3]]
        else:
            items.append(entry)
    return items


def prepare_image(item: Any, index: int) -> torch.Tensor:
    """Image ``index`` as ``[3, H, W]``; files are decoded with ``omni.media.load_image``."""
    what = f"image {index}"
    try:
        if is_file_source(item):
            item = load_image(item)
        return image_to_chw(item, what)
    except InputError as err:
        raise _with_context(err, what) from err


def _metadata_value(meta: Any, key: str) -> Any:
    if meta is None:
        return None
    if isinstance(meta, Mapping):
        return meta.get(key)
    return getattr(meta, key, None)


def prepare_video(
    item: Any,
    index: int,
    *,
    load_options: Mapping[str, Any] | None = None,
    metadata: Any = None,
    with_sound: bool = False,
    sampling_rate: int = 16000,
    resize: StreamingResize | None = None,
) -> PreparedVideo:
    """Video ``index``: a file (sampled with ``load_options``: fps, num_frames, max_frames, start, end),
    an ``omni.media.VideoClip``, or frames in memory. Frames in memory are used as given, with the
    ``fps`` / ``frames_indices`` of ``metadata`` for their labels (none: labels without times), or,
    when ``load_options`` are given, go through ``load_video`` (``fps`` is then their frame rate).
    ``with_sound`` loads a file's sound track too. ``resize`` (for files) resizes the frames as they
    decode; its result becomes ``pixels``."""
    what = f"video {index}"
    options = dict(load_options or {})
    try:
        sound, streamed = None, None
        if is_file_source(item):
            source, streamed = item, resize
            if with_sound and hasattr(item, "read"):
                source = item.read()  # read once, decode twice (frames and sound)
            item = load_video(source, **options, on_frames=resize)
            if with_sound:
                sound = load_video_audio(
                    source, sampling_rate=sampling_rate, start=options.get("start"), end=options.get("end")
                )
        elif options and not isinstance(item, VideoClip):
            item = load_video(item, **options)  # frames in memory at ``fps``, windowed / thinned as asked
        if isinstance(item, VideoClip):
            frames = frames_to_tchw(item.frames, what)
            pixels = streamed.result(frames) if streamed is not None else None
            return PreparedVideo(frames, float(item.source_fps), list(item.frame_indices), sound, pixels)
        frames = frames_to_tchw(item, what)
        fps = _metadata_value(metadata, "fps")
        indices = _metadata_value(metadata, "frames_indices")
        if indices is not None:
            indices = [int(i) for i in indices]
            if len(indices) != frames.shape[0]:
                raise InputError(f"{len(indices)} frames_indices given for {frames.shape[0]} frames")
        return PreparedVideo(frames, float(fps) if fps else None, indices, None)
    except InputError as err:
        raise _with_context(err, what) from err


def prepare_audio(
    item: Any, index: int, *, sampling_rate: int, source_rate: int | None = None
) -> torch.Tensor:
    """Audio ``index`` as mono float32 at ``sampling_rate``: a file, or samples at ``source_rate``."""
    what = f"audio {index}"
    try:
        if is_file_source(item):
            return load_audio(item, sampling_rate=sampling_rate)
        if not isinstance(item, (np.ndarray, torch.Tensor, Sequence)):
            raise InputError(
                f"unsupported audio type {type(item).__name__} (pass a path or a 1-D float array of samples)"
            )
        return load_audio(item, sampling_rate=sampling_rate, source_rate=source_rate)
    except InputError as err:
        raise _with_context(err, what) from err
