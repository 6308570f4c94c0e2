"""load_video: frame sampling, timestamps, windows, decoders, in-memory frames and bad files."""

import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image
from transformers.video_utils import VideoMetadata, default_sample_indices_fn

from omni.errors import InputError
from omni.media import VideoClip, load_video
from omni.media import video as video_module
from omni.media.deadline import check_cancel, run_with_deadline
from omni.media.video_sampling import sample_frame_indices


def reference_indices(total, source_fps, **kwargs):
    metadata = VideoMetadata(total_num_frames=total, fps=source_fps)
    return default_sample_indices_fn(metadata, **kwargs).tolist()


@pytest.mark.parametrize(
    "total, source_fps, kwargs",
    [
        (20, 10.0, {"fps": 2}),
        (20, 10.0, {"fps": 3}),
        (1800, 29.97, {"fps": 2}),
        (901, 30.0, {"fps": 1.5}),
        (7, 24.0, {"fps": 2}),  # shorter than one sampling step: one frame
        (20, 10.0, {"num_frames": 6}),
        (1000, 25.0, {"num_frames": 128}),
        (129, 30.0, {"num_frames": 128}),
    ],
)
def test_sampling_matches_the_released_processor(total, source_fps, kwargs):
    ours = sample_frame_indices(total, source_fps, max_frames=10_000, **kwargs)
    assert ours == reference_indices(total, source_fps, **kwargs)


def test_sampling_clamps_caps_and_windows():
    assert sample_frame_indices(20, 10.0, fps=50) == list(range(20))  # more than exists: every frame
    assert sample_frame_indices(20, 10.0, num_frames=50) == list(range(20))
    assert sample_frame_indices(20, 10.0, fps=10, max_frames=8) == [0, 2, 5, 7, 10, 12, 15, 17]
    assert sample_frame_indices(20, 10.0) == list(range(0, 20, 5))  # default 2 fps
    # [0.5 s, 1.5 s) holds frames 5..14; 2 fps over that second gives two frames
    assert sample_frame_indices(20, 10.0, fps=2, start=0.5, end=1.5) == [5, 10]
    assert sample_frame_indices(20, 10.0, num_frames=4, start=0.3) == [3, 7, 11, 15]
    with pytest.raises(InputError, match="past the end"):
        sample_frame_indices(20, 10.0, start=2.0)


def test_file_by_fps_and_by_count(media_dir, kit):
    clip = load_video(media_dir / "clip.mp4", fps=5)
    assert isinstance(clip, VideoClip)
    assert clip.frame_indices == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]
    assert clip.timestamps == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8]
    assert clip.source_fps == kit.VIDEO_FPS and clip.duration == pytest.approx(2.0)
    assert clip.frames.dtype == torch.uint8 and clip.frames.shape == (10, 3, kit.HEIGHT, kit.WIDTH)
    assert [kit.decoded_index(frame) for frame in clip.frames.numpy()] == clip.frame_indices

    clip = load_video(media_dir / "clip.mp4", num_frames=4)
    assert clip.frame_indices == [0, 5, 10, 15]
    assert [kit.decoded_index(frame) for frame in clip.frames.numpy()] == [0, 5, 10, 15]
    assert load_video(media_dir / "clip.mp4").frame_indices == [0, 5, 10, 15]  # 2 fps default


def test_window_and_max_frames(media_dir, kit):
    clip = load_video(media_dir / "clip.mp4", fps=10, start=0.5, end=1.0)
    assert clip.frame_indices == [5, 6, 7, 8, 9]
    assert clip.timestamps == [0.5, 0.6, 0.7, 0.8, 0.9]
    assert [kit.decoded_index(frame) for frame in clip.frames.numpy()] == [5, 6, 7, 8, 9]
    assert load_video(media_dir / "clip.mp4", fps=10, max_frames=4).frame_indices == [0, 5, 10, 15]
    with pytest.raises(InputError, match="num_frames=9 is more than max_frames=8"):
        load_video(media_dir / "clip.mp4", num_frames=9, max_frames=8)
    with pytest.raises(InputError, match="exclusive"):
        load_video(media_dir / "clip.mp4", fps=1, num_frames=2)
    with pytest.raises(InputError, match="clip.mp4: start=5 s is at or past the end"):
        load_video(media_dir / "clip.mp4", start=5.0)
    with pytest.raises(InputError, match="end"):
        load_video(media_dir / "clip.mp4", start=1.0, end=0.5)


def test_decord_and_pyav_agree(media_dir):
    pytest.importorskip("decord")
    by_decord = load_video(media_dir / "clip.mp4", fps=5, backend="decord")
    by_pyav = load_video(media_dir / "clip.mp4", fps=5, backend="pyav")
    assert (by_decord.backend, by_pyav.backend) == ("decord", "pyav")
    assert by_decord.frame_indices == by_pyav.frame_indices
    assert by_decord.source_fps == by_pyav.source_fps and by_decord.duration == by_pyav.duration
    difference = (by_decord.frames.float() - by_pyav.frames.float()).abs()
    assert float(difference.mean()) < 1.0 and float(difference.max()) <= 8


def test_default_backend_is_decord_and_falls_back_to_pyav(media_dir, monkeypatch, kit):
    pytest.importorskip("decord")
    assert load_video(media_dir / "clip.mp4", num_frames=2).backend == "decord"

    def broken(self, indices, cancel, sink=None):
        raise RuntimeError("simulated decord failure")

    monkeypatch.setattr(video_module.open_reader.__globals__["DecordReader"], "read", broken)
    clip = load_video(media_dir / "clip.mp4", num_frames=2)
    assert clip.backend == "pyav" and [kit.decoded_index(f) for f in clip.frames.numpy()] == [0, 10]


def _gather(calls, total):
    """The frames handed to a sink, put back in order; fails on a gap or a wrong total."""
    assert calls and all(count == total for _, _, count in calls)
    frames = torch.empty(total, *calls[0][1].shape[1:], dtype=torch.uint8)
    seen = [False] * total
    for first, chunk, _ in calls:
        frames[first : first + chunk.shape[0]] = chunk
        seen[first : first + chunk.shape[0]] = [True] * chunk.shape[0]
    assert all(seen)
    return frames


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_frames_reach_the_sink_while_decoding(media_dir, backend):
    if backend == "decord":
        pytest.importorskip("decord")
    calls = []
    clip = load_video(
        media_dir / "clip.mp4",
        fps=10,
        backend=backend,
        on_frames=lambda first, frames, total: calls.append((first, frames.clone(), total)),
    )
    assert clip.num_frames == 20
    assert torch.equal(_gather(calls, clip.num_frames), clip.frames)
    # delivered run by run as the decoder goes, not once at the end
    limit = video_module.open_reader.__globals__["DECORD_CHUNK"] if backend == "decord" else 1
    assert len(calls) > 1 and max(chunk.shape[0] for _, chunk, _ in calls) <= limit
    assert [first for first, _, _ in calls] == sorted(first for first, _, _ in calls)


def test_sink_sees_the_fallback_decoder_frames_again(media_dir, monkeypatch):
    """A decoder that fails part-way is followed by one that hands every frame again."""
    pytest.importorskip("decord")
    reader_class = video_module.open_reader.__globals__["DecordReader"]
    real_read = reader_class.read

    def fails_after_one_run(self, indices, cancel, sink=None):
        sink(0, real_read(self, indices[:3], cancel), len(indices))
        raise RuntimeError("simulated decoder failure after the first run")

    monkeypatch.setattr(reader_class, "read", fails_after_one_run)
    calls = []
    clip = load_video(
        media_dir / "clip.mp4",
        fps=10,
        on_frames=lambda first, frames, total: calls.append((first, frames.clone(), total)),
    )
    assert clip.backend == "pyav" and calls[0][0] == 0 and calls[1][0] == 0
    assert torch.equal(_gather(calls[1:], clip.num_frames), clip.frames)


def test_an_error_of_the_sink_is_not_taken_for_a_broken_file(media_dir):
    def out_of_memory(first, frames, total):
        raise RuntimeError("CUDA out of memory (simulated)")

    for backend in ("decord", "pyav") if video_module.decord_available() else ("pyav",):
        with pytest.raises(RuntimeError, match="CUDA out of memory"):
            load_video(media_dir / "clip.mp4", fps=10, backend=backend, on_frames=out_of_memory)
    with pytest.raises(RuntimeError, match="CUDA out of memory"):
        load_video(media_dir / "clip.mp4", fps=10, on_frames=out_of_memory)  # no fallback decoder either


def test_frames_in_memory_reach_the_sink_at_once(kit):
    frames = torch.from_numpy(np.stack([kit.frame_pixels(i) for i in range(6)])).permute(0, 3, 1, 2)
    calls = []
    clip = load_video(frames, num_frames=3, on_frames=lambda *call: calls.append(call))
    assert len(calls) == 1 and calls[0][0] == 0 and calls[0][2] == 3
    assert torch.equal(calls[0][1], clip.frames)


def test_bytes_and_file_objects(media_dir):
    data = (media_dir / "clip.mp4").read_bytes()
    assert load_video(data, num_frames=2, backend="pyav").frame_indices == [0, 10]
    with open(media_dir / "clip.mp4", "rb") as handle:
        assert load_video(handle, num_frames=2).frame_indices == [0, 10]


def test_frames_in_memory(kit):
    frames = np.stack([kit.frame_pixels(i) for i in range(6)])  # [T, H, W, C]
    clip = load_video(torch.from_numpy(frames))
    assert clip.frame_indices == list(range(6)) and clip.source_fps == 1.0
    assert clip.timestamps == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0] and clip.duration == 6.0
    assert torch.equal(clip.frames, torch.from_numpy(frames).permute(0, 3, 1, 2))
    chw = load_video(torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous(), fps=2.0, num_frames=3)
    assert chw.frame_indices == [0, 2, 4] and chw.timestamps == [0.0, 1.0, 2.0]
    pil = load_video([Image.fromarray(f) for f in frames], fps=4.0, start=0.5)
    assert pil.frame_indices == [2, 3, 4, 5] and pil.timestamps == [0.5, 0.75, 1.0, 1.25]
    assert load_video(frames, max_frames=3).frame_indices == [0, 2, 4]
    with pytest.raises(InputError, match="uint8"):
        load_video(torch.zeros(2, 3, 4, 4))
    with pytest.raises(InputError, match="same size"):
        load_video([Image.new("RGB", (4, 4)), Image.new("RGB", (5, 4))])
    with pytest.raises(InputError, match="empty"):
        load_video([])


def test_bad_files_name_the_file(media_dir, tmp_path):
    png_as_mp4 = tmp_path / "holiday.mp4"
    png_as_mp4.write_bytes((media_dir / "alpha.png").read_bytes())
    with pytest.raises(
        InputError, match=r"holiday\.mp4: is a PNG image, not a video; load it with load_image"
    ):
        load_video(png_as_mp4)
    wav_as_mp4 = tmp_path / "song.mp4"
    wav_as_mp4.write_bytes((media_dir / "stereo.wav").read_bytes())
    with pytest.raises(InputError, match=r"song\.mp4: is a WAV audio"):
        load_video(wav_as_mp4)
    mp4_as_avi = tmp_path / "renamed.avi"
    mp4_as_avi.write_bytes((media_dir / "clip.mp4").read_bytes())
    assert load_video(mp4_as_avi, num_frames=2).frame_indices == [0, 10]  # content wins over the name

    data = (media_dir / "clip.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    (tmp_path / "noise.mp4").write_bytes(
        bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8))
    )
    (tmp_path / "empty.mp4").write_bytes(b"")
    for name, message in [
        ("cut.mp4", "cannot decode"),
        ("noise.mp4", "cannot decode"),
        ("empty.mp4", "empty"),
    ]:
        for backend in (None, "pyav"):
            with pytest.raises(InputError, match=rf"{name}.*{message}"):
                load_video(tmp_path / name, backend=backend)
    with pytest.raises(InputError, match=r"absent\.mp4: file not found"):
        load_video(tmp_path / "absent.mp4")


def test_decode_timeout(media_dir, monkeypatch):
    stopped = threading.Event()

    class StuckReader:
        backend, total_frames, fps = "stuck", 20, 10.0

        def read(self, indices, cancel, sink=None):
            try:
                while True:
                    check_cancel(cancel)
                    time.sleep(0.01)
            finally:
                stopped.set()

        def close(self):
            pass

    monkeypatch.setattr(video_module, "open_reader", lambda backend, source: StuckReader())
    started = time.monotonic()
    with pytest.raises(InputError, match=r"clip\.mp4: decoding the video did not finish within 0.3 s"):
        load_video(media_dir / "clip.mp4", timeout_s=0.3)
    assert time.monotonic() - started < 2.0
    assert stopped.wait(2.0)  # the worker noticed the cancellation and exited


def test_deadline_passes_results_and_errors_through():
    assert run_with_deadline(lambda cancel: 7, timeout_s=5, name="x", what="video") == 7
    with pytest.raises(KeyError):
        run_with_deadline(lambda cancel: {}["missing"], timeout_s=5, name="x", what="video")
