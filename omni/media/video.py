"""Video loading: sample frames from a file (decord, falling back to PyAV) or from frames in memory."""

from __future__ import annotations

import logging
import math
import re
import threading
from dataclasses import dataclass
from numbers import Real
from typing import Any

import numpy as np
import torch
from PIL import Image

from omni.errors import InputError
from omni.media.deadline import DecodeCancelled, run_with_deadline
from omni.media.images import load_image
from omni.media.sources import MediaSource, describe, is_file_like, is_path_like, open_source
from omni.media.video_decoders import (
    FrameSink,
    NoVideoStream,
    TruncatedVideo,
    decord_available,
    open_reader,
)
from omni.media.video_sampling import frame_timestamps, frame_window, sample_frame_indices, uniform_indices

logger = logging.getLogger(__name__)

BACKENDS = ("decord", "pyav")
IN_MEMORY_FPS = 1.0
_DECORD_PREFIX = re.compile(r"^\[[\d:]+\]\s+\S+:\d+:\s+(Check failed:\s*)?")
_NOT_VIDEO_HINTS = {
    "image": "; load it with load_image",
    "document": "; load it with load_pdf",
    "audio": "; load it with load_audio",
    "text": "",
}


@dataclass
class VideoClip:
    """Sampled frames of a video and where they came from.

    ``frames`` is uint8 ``[T, 3, H, W]`` (RGB). Decoded clips are stored channels-last in memory
    (a permuted view of the decoder's buffer); call ``.contiguous()`` if you need the default layout.
    """

    frames: torch.Tensor
    frame_indices: list[int]
    source_fps: float
    duration: float
    timestamps: list[float]
    backend: str = "memory"

    @property
    def num_frames(self) -> int:
        """Number of sampled frames."""
        return len(self.frame_indices)


def _check_options(
    fps: Any,
    num_frames: Any,
    max_frames: Any,
    start: Any,
    end: Any,
    backend: Any,
    timeout_s: Any,
    in_memory: bool,
) -> None:
    def is_number(value: Any) -> bool:
        return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(float(value))

    def is_count(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 1

    if fps is not None and num_frames is not None and not in_memory:
        raise InputError("load_video: fps and num_frames are exclusive; pass one of them")
    if fps is not None and not (is_number(fps) and fps > 0):
        raise InputError(f"load_video: fps must be a positive number, got {fps!r}")
    if num_frames is not None and not is_count(num_frames):
        raise InputError(f"load_video: num_frames must be a positive integer, got {num_frames!r}")
    if not is_count(max_frames):
        raise InputError(f"load_video: max_frames must be a positive integer, got {max_frames!r}")
    if num_frames is not None and num_frames > max_frames:
        raise InputError(f"load_video: num_frames={num_frames} is more than max_frames={max_frames}")
    for label, value in (("start", start), ("end", end)):
        if value is not None and not (is_number(value) and value >= 0):
            raise InputError(f"load_video: {label} must be a non-negative number of seconds, got {value!r}")
    if start is not None and end is not None and end <= start:
        raise InputError(f"load_video: end={end!r} must be after start={start!r}")
    if backend is not None and backend not in BACKENDS:
        raise InputError(f"load_video: backend must be one of {BACKENDS} or None, got {backend!r}")
    if not (is_number(timeout_s) and timeout_s > 0):
        raise InputError(f"load_video: timeout_s must be a positive number, got {timeout_s!r}")


def _frames_tensor(src: Any) -> torch.Tensor:
    """Frames given in memory as uint8 ``[T, 3, H, W]``."""
    if isinstance(src, (list, tuple)):
        if not src:
            raise InputError("<video frames>: the frame list is empty")
        images: list[Image.Image] = []
        for index, item in enumerate(src):
            try:
                images.append(load_image(item))
            except InputError as err:
                raise InputError(f"<video frames>: frame {index}: {err}") from err
        sizes = {image.size for image in images}
        if len(sizes) > 1:
            raise InputError(f"<video frames>: all frames must have the same size, got {sorted(sizes)}")
        return torch.from_numpy(np.stack([np.asarray(image) for image in images])).permute(0, 3, 1, 2)
    name = "<video tensor>"
    is_uint8 = src.dtype == torch.uint8 if isinstance(src, torch.Tensor) else src.dtype == np.uint8
    if not is_uint8:
        raise InputError(f"{name}: expected uint8 frames, got {src.dtype} (scale to 0-255 and cast to uint8)")
    array = (
        src.detach().cpu() if isinstance(src, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(src))
    )
    if array.dim() != 4:
        raise InputError(
            f"{name}: expected frames of shape [T, C, H, W] or [T, H, W, C], got {tuple(array.shape)}"
        )
    if array.shape[1] not in (1, 3, 4):
        if array.shape[-1] not in (1, 3, 4):
            raise InputError(
                f"{name}: expected 1, 3 or 4 channels in [T, C, H, W] or [T, H, W, C], got {tuple(array.shape)}"
            )
        array = array.permute(0, 3, 1, 2)
    if min(array.shape) == 0:
        raise InputError(f"{name}: the video has no pixels or no frames ({tuple(array.shape)})")
    if array.shape[1] == 1:
        array = array.expand(-1, 3, -1, -1)
    elif array.shape[1] == 4:  # composite on white, as images are
        alpha = array[:, 3:].float() / 255.0
        array = (array[:, :3].float() * alpha + 255.0 * (1.0 - alpha)).round().to(torch.uint8)
    return array


def _clip_from_memory(
    src: Any,
    fps: float | None,
    num_frames: int | None,
    max_frames: int,
    start: float | None,
    end: float | None,
) -> VideoClip:
    frames = _frames_tensor(src)
    source_fps = float(fps) if fps is not None else IN_MEMORY_FPS
    first, stop = frame_window(frames.shape[0], source_fps, start, end, "<video frames>")
    count = stop - first
    wanted = min(num_frames, count) if num_frames is not None else min(count, max_frames)
    indices = uniform_indices(first, count, wanted)
    return VideoClip(
        frames=frames[indices],
        frame_indices=indices,
        source_fps=source_fps,
        duration=frames.shape[0] / source_fps,
        timestamps=frame_timestamps(indices, source_fps),
    )


class _SinkFailed(Exception):
    """Carries an error raised by the caller's frame sink through the decoder's error handling."""


class _GuardedSink:
    """A frame sink whose errors are told apart from the decoder's (they reach the caller as they are)."""

    def __init__(self, sink: FrameSink) -> None:
        self._sink = sink

    def __call__(self, first: int, frames: torch.Tensor, total: int) -> None:
        try:
            self._sink(first, frames, total)
        except Exception as err:
            raise _SinkFailed from err


def _decode_file(
    source: MediaSource,
    cancel: threading.Event,
    *,
    fps: float | None,
    num_frames: int | None,
    max_frames: int,
    start: float | None,
    end: float | None,
    backend: str | None,
    on_frames: FrameSink | None,
) -> VideoClip:
    if backend is not None:
        order = [backend]
    else:
        order = ["decord", "pyav"] if decord_available() else ["pyav"]
    failures: list[str] = []

    def failed(name: str, err: BaseException) -> None:
        # first line only, without decord's "[time] source.cc:line: Check failed:" prefix
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        message = _DECORD_PREFIX.sub("", first_line).strip() or type(err).__name__
        failures.append(f"{name}: {message[:200]}")

    sink = None if on_frames is None else _GuardedSink(on_frames)
    for name in order:
        try:
            reader = open_reader(name, source)
        except NoVideoStream:
            raise InputError(f"{source.name}: the file has no video stream") from None
        except ImportError as err:
            if backend is not None:
                raise ImportError(f"load_video(backend={backend!r}) needs the {backend} package") from err
            failures.append(f"{name}: not installed")
            continue
        except Exception as err:  # decoder libraries raise many unrelated types
            failed(name, err)
            logger.info("%s: %s cannot open the video (%s)", source.name, name, err)
            continue
        try:
            indices = sample_frame_indices(
                reader.total_frames,
                reader.fps,
                fps=fps,
                num_frames=num_frames,
                max_frames=max_frames,
                start=start,
                end=end,
                name=source.name,
            )
            frames = reader.read(indices, cancel, sink)
        except (InputError, DecodeCancelled):
            raise
        except _SinkFailed as err:  # the caller's own work on the frames failed, not the decoder
            raise err.__cause__ from None
        except TruncatedVideo as err:
            failed(name, err)
            continue
        except Exception as err:  # decoder libraries raise many unrelated types
            failed(name, err)
            logger.info("%s: %s failed to decode frames (%s)", source.name, name, err)
            continue
        finally:
            reader.close()
        return VideoClip(
            frames=frames,
            frame_indices=indices,
            source_fps=reader.fps,
            duration=reader.total_frames / reader.fps,
            timestamps=frame_timestamps(indices, reader.fps),
            backend=name,
        )
    raise InputError(
        f"{source.name}: cannot decode the video, it is corrupt, truncated or in an unsupported format "
        f"({'; '.join(failures)})"
    )


def load_video(
    src: Any,
    *,
    fps: float | None = None,
    num_frames: int | None = None,
    max_frames: int = 256,
    start: float | None = None,
    end: float | None = None,
    backend: str | None = None,
    timeout_s: float = 120.0,
    on_frames: FrameSink | None = None,
) -> VideoClip:
    """Sample frames of a video into a :class:`VideoClip`.

    ``src``: a path, bytes or binary file object (any container FFmpeg reads, recognised by
    content), a uint8 tensor / array ``[T, C, H, W]`` or ``[T, H, W, C]``, or a list of frames
    (PIL images or anything :func:`load_image` accepts).

    Files: ``fps`` (frames per second to take) and ``num_frames`` (frames in total) are exclusive;
    with neither, 2 fps. Frames are spread uniformly over the ``[start, end)`` window (seconds;
    default the whole video) by the released processor's rule (see ``video_sampling``). A rate
    that would exceed ``max_frames`` takes ``max_frames`` frames uniformly; ``num_frames >
    max_frames`` is an error. decord decodes by default (only the sampled frames); PyAV is used
    when decord is missing or fails, or with ``backend="pyav"``. A decode that takes longer than
    ``timeout_s`` raises ``InputError``. ``on_frames(first, frames, total)`` is called (from the decoding
    thread) with each run of sampled frames as soon as it is decoded, so that work on them can
    overlap the rest of the decode; a decoder that fails part-way may be followed by one that hands
    the same frames again.

    Frames in memory: they are the source stream, and ``fps`` is *its* frame rate (default 1.0),
    used for the window and the timestamps (so it may be combined with ``num_frames``); no frames
    are dropped unless ``num_frames``, ``max_frames`` or the window ask for it.
    """
    in_memory = isinstance(src, (torch.Tensor, np.ndarray, list, tuple))
    _check_options(fps, num_frames, max_frames, start, end, backend, timeout_s, in_memory)
    if in_memory:
        clip = _clip_from_memory(src, fps, num_frames, max_frames, start, end)
        if on_frames is not None:
            on_frames(0, clip.frames, clip.num_frames)
        return clip
    if not (is_path_like(src) or is_file_like(src) or isinstance(src, (bytes, bytearray, memoryview))):
        raise InputError(
            f"cannot load a video from {type(src).__name__}: pass a path, bytes, a file object, "
            "a uint8 frame tensor or a list of frames"
        )
    source = open_source(src, "video")
    kind = source.kind()
    if kind is not None and kind.category in _NOT_VIDEO_HINTS:
        raise InputError(f"{source.name}: is {describe(kind)}, not a video{_NOT_VIDEO_HINTS[kind.category]}")
    return run_with_deadline(
        lambda cancel: _decode_file(
            source,
            cancel,
            fps=fps,
            num_frames=num_frames,
            max_frames=max_frames,
            start=start,
            end=end,
            backend=backend,
            on_frames=on_frames,
        ),
        timeout_s=float(timeout_s),
        name=source.name,
        what="video",
    )
