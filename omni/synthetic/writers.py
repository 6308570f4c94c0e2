"""Writers for the generated media: PNG and one-page PDF images, 16-bit WAV, MP4 (+ audio track).

The writers are deterministic: PNG, PDF (no timestamps in its metadata) and WAV give the same bytes for
the same input. MP4 gives the same decoded frames: they are converted to YUV 4:2:0 here in integer
arithmetic (PyAV 18's own RGB conversion varied from one call to the next) and encoded losslessly, since
x264, even single-threaded, did not always give the same bytes twice in one process.
"""

from __future__ import annotations

import functools
import wave
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image

VIDEO_CODECS: tuple[str, ...] = ("libx264", "mpeg4")  # in order of preference
AUDIO_CODECS: tuple[str, ...] = ("aac", "libmp3lame", "mp3", "libopus")
# libx264: lossless (the frames decode exactly as written), one thread. mpeg4: fixed quantiser 2, which
# FFmpeg takes as global_quality in lambda units (2 * FF_QP2LAMBDA = 236) with the qscale flag.
_VIDEO_OPTIONS = {
    "libx264": {"qp": "0", "preset": "medium", "threads": "1"},
    "mpeg4": {"flags": "+qscale", "global_quality": "236", "threads": "1"},
}


def write_png(image: Image.Image, path: str | Path) -> Path:
    """Save ``image`` as PNG (lossless)."""
    path = Path(path)
    image.save(path, format="PNG", optimize=True)
    return path


def write_pdf(image: Image.Image, path: str | Path, quality: int = 92) -> Path:
    """Save ``image`` as a one-page PDF at 72 dpi (one image pixel per PDF point).

    Pillow embeds RGB pages as JPEG; ``quality`` keeps the digits' edges crisp. Title and dates are
    left out so the bytes depend on the page only.
    """
    path = Path(path)
    image.convert("RGB").save(
        path, "PDF", resolution=72, quality=quality, title=None, creationDate=None, modDate=None
    )
    return path


def write_wav(waveform: np.ndarray, path: str | Path, sample_rate: int) -> Path:
    """Save a mono float waveform in [-1, 1] as 16-bit PCM WAV."""
    path = Path(path)
    pcm = _to_int16(waveform)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(int(sample_rate))
        out.writeframes(pcm.tobytes())
    return path


def _to_int16(waveform: np.ndarray) -> np.ndarray:
    samples = np.asarray(waveform, dtype=np.float64).reshape(-1)
    return np.round(np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")


def _encoder_opens(name: str) -> bool:
    import av

    try:
        av.codec.Codec(name, "w")
    except Exception:  # unknown codec or no encoder in this FFmpeg build
        return False
    return True


@functools.cache
def video_codec() -> str:
    """The first video encoder of ``VIDEO_CODECS`` that this PyAV build offers."""
    for name in VIDEO_CODECS:
        if _encoder_opens(name):
            return name
    raise RuntimeError(f"PyAV offers none of the video encoders {VIDEO_CODECS}")


@functools.cache
def audio_codec() -> str:
    """The first audio encoder of ``AUDIO_CODECS`` that this PyAV build offers."""
    for name in AUDIO_CODECS:
        if _encoder_opens(name):
            return name
    raise RuntimeError(f"PyAV offers none of the audio encoders {AUDIO_CODECS}")


def rgb_to_yuv420p(image: np.ndarray) -> np.ndarray:
    """``[H, W, 3]`` uint8 RGB (H, W even) -> the ``[3H/2, W]`` planar yuv420p layout PyAV takes.

    BT.601 limited range in the usual 8-bit fixed-point form; chroma of each 2x2 block from its
    averaged colour. Integer arithmetic, so the result is the same on every machine.
    """
    rgb = image.astype(np.int32)
    height, width, _ = rgb.shape
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = ((66 * r + 129 * g + 25 * b + 128) >> 8) + 16
    block = rgb.reshape(height // 2, 2, width // 2, 2, 3).sum(axis=(1, 3))  # 4x the block mean
    r, g, b = block[..., 0], block[..., 1], block[..., 2]
    u = ((-38 * r - 74 * g + 112 * b + 512) >> 10) + 128
    v = ((112 * r - 94 * g - 18 * b + 512) >> 10) + 128
    planes = np.concatenate([y.reshape(-1), u.reshape(-1), v.reshape(-1)])
    return np.clip(planes, 0, 255).astype(np.uint8).reshape(height * 3 // 2, width)


def write_mp4(
    frames: np.ndarray,
    fps: float,
    path: str | Path,
    audio: np.ndarray | None = None,
    sample_rate: int = 16_000,
    codec: str | None = None,
    audio_codec_name: str | None = None,
) -> Path:
    """Encode ``frames`` ``[T, H, W, 3]`` uint8 (H, W even) as yuv420p MP4, with an optional mono track.

    The video uses ``codec`` (default ``video_codec()``); ``audio`` (float in [-1, 1] at
    ``sample_rate``) uses ``audio_codec_name`` (default ``audio_codec()``). PyAV converts and
    regroups the audio into the encoder's sample format and frame size itself (Opus, the last
    fallback, stores 48 kHz; readers resample).
    """
    import av

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {tuple(frames.shape)}")
    _, height, width, _ = frames.shape
    if height % 2 or width % 2:
        raise ValueError(f"yuv420p needs even frame sides, got {width}x{height}")
    path = Path(path)
    codec = codec or video_codec()
    with av.open(str(path), mode="w", format="mp4") as container:
        video = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.codec_context.options = dict(_VIDEO_OPTIONS.get(codec, {}))
        sound = None
        if audio is not None:
            sound = container.add_stream(audio_codec_name or audio_codec(), rate=int(sample_rate))
            sound.layout = "mono"
        for image in frames:
            container.mux(video.encode(av.VideoFrame.from_ndarray(rgb_to_yuv420p(image), format="yuv420p")))
        container.mux(video.encode(None))
        if sound is not None:
            samples = np.clip(np.asarray(audio, dtype=np.float32).reshape(1, -1), -1.0, 1.0)
            chunk = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples), format="flt", layout="mono")
            chunk.sample_rate = int(sample_rate)
            chunk.pts = 0
            container.mux(sound.encode(chunk))
            container.mux(sound.encode(None))
    return path
