"""Pixels in, normalised model tensors out: image/frame coercion, resize, normalisation, patchify.

The numerics follow the released processor: resize in float32 with bicubic interpolation and
antialiasing (``align_corners=False``) *before* dividing by 255, so the bicubic overshoot is kept
rather than clamped back to uint8, then ``(x / 255 - mean) / std`` per channel. PIL's bicubic uses
a different kernel and is not used.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from omni.errors import InputError
from omni.media.images import to_rgb

# frames resized per interpolate call: one at a time keeps the float32 working set in cache, which
# measured about twice as fast per frame as batches of 16 (720p -> 672 x 384, 2 threads)
FRAME_CHUNK = 1


def _from_float(values: torch.Tensor, what: str) -> torch.Tensor:
    """Float pixels must be in [0, 1]; they are scaled to the 0..255 range the pipeline expects."""
    values = values.float()
    if values.numel() and (not bool(torch.isfinite(values).all()) or values.min() < 0 or values.max() > 1):
        raise InputError(f"{what}: float pixels must be finite and in [0, 1] (or pass uint8 0..255)")
    return values * 255.0


def _to_rgb_range(pixels: torch.Tensor, what: str) -> torch.Tensor:
    """``[N, C, H, W]`` with C in (1, 3, 4), uint8 or float in [0, 1] -> ``[N, 3, H, W]`` of 0..255.

    Grey is repeated over the three channels; RGBA is composited onto white (as images with
    transparency are); float pixels become float32 0..255, uint8 stays uint8.
    """
    if pixels.shape[1] not in (1, 3, 4):
        raise InputError(f"{what}: expected 1, 3 or 4 colour channels, got shape {tuple(pixels.shape)}")
    if min(pixels.shape) == 0:
        raise InputError(f"{what}: no pixels (shape {tuple(pixels.shape)})")
    if pixels.dtype != torch.uint8:
        if not pixels.is_floating_point():
            raise InputError(f"{what}: pixels must be uint8 or float in [0, 1], got {pixels.dtype}")
        pixels = _from_float(pixels, what)
    if pixels.shape[1] == 1:
        return pixels.expand(-1, 3, -1, -1)
    if pixels.shape[1] == 4:
        alpha = pixels[:, 3:].float() / 255.0
        rgb = pixels[:, :3].float() * alpha + 255.0 * (1.0 - alpha)
        return rgb.round().to(torch.uint8) if pixels.dtype == torch.uint8 else rgb
    return pixels


def image_to_chw(image: object, what: str) -> torch.Tensor:
    """One image as a ``[3, H, W]`` tensor of 0..255 values (uint8, or float32 for float input).

    Accepts a PIL image (any mode; transparency composited onto white), a numpy array ``[H, W]`` /
    ``[H, W, C]`` or a torch tensor ``[C, H, W]`` / ``[H, W]`` (C = 1, 3 or 4), uint8 or float in [0, 1].
    """
    if isinstance(image, Image.Image):
        return torch.from_numpy(np.array(to_rgb(image))).permute(2, 0, 1)
    if isinstance(image, np.ndarray):
        array = np.ascontiguousarray(image)
        if array.ndim == 3 and array.shape[-1] in (1, 3, 4) and array.shape[0] not in (1, 3, 4):
            tensor = torch.from_numpy(array).permute(2, 0, 1)
        else:
            tensor = torch.from_numpy(array)
    elif isinstance(image, torch.Tensor):
        tensor = image.detach().cpu()
    else:
        raise InputError(
            f"{what}: unsupported image type {type(image).__name__} "
            "(pass a PIL image, a path, a uint8 array [H, W, 3] or a uint8 tensor [3, H, W])"
        )
    if tensor.dim() == 2:
        tensor = tensor.unsqueeze(0)
    if tensor.dim() != 3:
        raise InputError(f"{what}: expected an image [3, H, W] or [H, W, 3], got shape {tuple(tensor.shape)}")
    return _to_rgb_range(tensor.unsqueeze(0), what)[0]


def frames_to_tchw(frames: object, what: str) -> torch.Tensor:
    """Video frames as ``[T, 3, H, W]`` 0..255 values: a tensor/array ``[T, C, H, W]`` or ``[T, H, W, C]``,
    or a list of images (all the same size)."""
    if isinstance(frames, (list, tuple)):
        if not frames:
            raise InputError(f"{what}: the video has no frames")
        chw = [image_to_chw(f, f"{what} frame {i}") for i, f in enumerate(frames)]
        shapes = {tuple(f.shape) for f in chw}
        if len(shapes) > 1:
            raise InputError(f"{what}: frames differ in size ({sorted(shapes)[:3]})")
        if len({f.dtype for f in chw}) > 1:
            chw = [f.float() for f in chw]
        return torch.stack(chw)
    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(np.ascontiguousarray(frames))
    if not isinstance(frames, torch.Tensor):
        raise InputError(
            f"{what}: unsupported video type {type(frames).__name__} "
            "(pass a path, a uint8 tensor [T, 3, H, W] or a list of frames)"
        )
    frames = frames.detach().cpu()
    if frames.dim() != 4:
        raise InputError(
            f"{what}: expected frames [T, 3, H, W] or [T, H, W, 3], got shape {tuple(frames.shape)}"
        )
    if frames.shape[1] not in (1, 3, 4) and frames.shape[-1] in (1, 3, 4):
        frames = frames.permute(0, 3, 1, 2)
    return _to_rgb_range(frames, what)


def _normaliser(
    mean: Sequence[float], std: Sequence[float], device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``scale, shift`` with ``x * scale + shift == (x / 255 - mean) / std``, shaped ``[1, 3, 1, 1]``."""
    m = torch.tensor(mean, dtype=torch.float64).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float64).view(1, 3, 1, 1)
    return (1.0 / (255.0 * s)).float().to(device), (-m / s).float().to(device)


def resize_normalize(
    frames: torch.Tensor,
    height: int,
    width: int,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``[N, 3, h, w]`` 0..255 -> float32 ``[N, 3, height, width]`` normalised, resized in chunks.

    ``device``: where to resize (frames travel there as uint8, chunk by chunk; the result lives there).
    ``out``: where to write the result (float32 ``[N, 3, height, width]`` on ``device``).
    """
    device = (frames.device if out is None else out.device) if device is None else device
    scale, shift = _normaliser(mean, std, device)
    if out is None:
        out = torch.empty(frames.shape[0], 3, height, width, dtype=torch.float32, device=device)
    for start in range(0, frames.shape[0], FRAME_CHUNK):
        chunk = frames[start : start + FRAME_CHUNK].to(device).to(torch.float32)
        if chunk.shape[-2:] != (height, width):
            chunk = F.interpolate(
                chunk, size=(height, width), mode="bicubic", align_corners=False, antialias=True
            )
        torch.addcmul(shift, chunk, scale, out=out[start : start + chunk.shape[0]])
    return out


class StreamingResize:
    """Resizes and normalises one video's frames on ``device`` while the rest of it decodes.

    Handed to the decoder as its frame sink (``load_video(on_frames=...)``): each run of frames is
    sent to ``device`` and its resize queued there as soon as it is decoded, so that on a GPU the
    resize runs behind the decode instead of after it. ``size_for(height, width)`` gives the target
    size for frames of that size. The result is the same as :func:`resize_normalize` on the whole clip.
    """

    def __init__(
        self,
        size_for: Callable[[int, int], tuple[int, int]],
        mean: Sequence[float],
        std: Sequence[float],
        device: torch.device,
    ) -> None:
        self._size_for = size_for
        self._mean, self._std = tuple(mean), tuple(std)
        self._device = device
        self._source: tuple[int, int, int] | None = None  # (total, height, width) of what is being built
        self._out: torch.Tensor | None = None
        self._filled: list[bool] = []

    def __call__(self, first: int, frames: torch.Tensor, total: int) -> None:
        source = (total, frames.shape[-2], frames.shape[-1])
        if source != self._source:  # first frames, or another decoder's frames of another size
            height, width = self._size_for(source[1], source[2])
            self._out = torch.empty(total, 3, height, width, dtype=torch.float32, device=self._device)
            self._source, self._filled = source, [False] * total
        assert self._out is not None
        count = frames.shape[0]
        target = self._out[first : first + count]
        resize_normalize(frames, *self._out.shape[-2:], self._mean, self._std, out=target)
        self._filled[first : first + count] = [True] * count

    def result(self, frames: torch.Tensor) -> torch.Tensor | None:
        """The resized frames if they are those of ``frames`` (uint8 ``[T, 3, H, W]``), all delivered;
        else None (the caller then resizes ``frames`` itself)."""
        if self._source != (frames.shape[0], frames.shape[-2], frames.shape[-1]) or not all(self._filled):
            return None
        return self._out


def patchify(image: torch.Tensor, patch_size: int) -> torch.Tensor:
    """``[3, H, W]`` -> ``[(H/p)*(W/p), 3*p*p]``: patches row-major, each laid out channel-major ``(c, y, x)``."""
    channels, height, width = image.shape
    rows, cols = height // patch_size, width // patch_size
    patches = image.reshape(channels, rows, patch_size, cols, patch_size).permute(1, 3, 0, 2, 4)
    return patches.reshape(rows * cols, channels * patch_size * patch_size)


def image_patches(
    image: torch.Tensor,
    rows: int,
    cols: int,
    patch_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``[3, h, w]`` 0..255 -> normalised patches ``[rows * cols, 3 * p * p]`` of the image resized to
    ``rows x cols`` patches (the layout of :func:`patchify`).

    The normalisation writes straight into the patch layout (into ``out`` when given, e.g. a slice
    of the batch's ``pixel_values``), so the resized image is traversed once after the resize.
    """
    height, width = rows * patch_size, cols * patch_size
    pixels = image.to(torch.float32)[None]
    if pixels.shape[-2:] != (height, width):
        pixels = F.interpolate(
            pixels, size=(height, width), mode="bicubic", align_corners=False, antialias=True
        )
    if out is None:
        out = torch.empty(rows * cols, 3 * patch_size * patch_size, dtype=torch.float32, device=image.device)
    scale, shift = _normaliser(mean, std, out.device)
    source = pixels[0].reshape(3, rows, patch_size, cols, patch_size)
    target = out.view(rows, cols, 3, patch_size, patch_size).permute(2, 0, 3, 1, 4)
    torch.addcmul(shift.view(3, 1, 1, 1, 1), source, scale.view(3, 1, 1, 1, 1), out=target)
    return out
