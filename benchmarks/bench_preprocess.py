"""Preprocessing latency: media files -> model tensors, ours vs transformers 5.23 (CPU, or --device cuda).

Cases (the design targets): a 60 s 720p video at 2 fps (ours must be >= 2x faster than decord +
transformers' processor) and a 1080p image (ours no slower than transformers' processor).
Prints a table with the ratio and writes JSON. Run: python benchmarks/bench_preprocess.py [--json F]
[--device cuda] (both processors then resize and normalise on the GPU; decoding stays on the CPU)
[--video clip.mp4] (that clip instead of the synthetic one, which needs PyAV to be written).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np


def write_video(path: Path, seconds: float, fps: int, width: int, height: int) -> None:
    """A synthetic H.264 clip: a moving gradient (so the codec has real work to do)."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        ys, xs = np.mgrid[0:height, 0:width]
        for t in range(int(seconds * fps)):
            frame = np.stack([(xs + 4 * t) % 256, (ys + 2 * t) % 256, (xs + ys + t) % 256], -1).astype(
                np.uint8
            )
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--device",
        default="cpu",
        help="where both processors resize and normalise (e.g. cuda); decoding stays on the CPU",
    )
    parser.add_argument("--video", default=None, help="a clip to use instead of writing the synthetic one")
    args = parser.parse_args()
    on = {} if args.device == "cpu" else {"device": args.device}

    def done(out):  # the timed work includes finishing the device's queue
        if args.device != "cpu":
            import torch

            torch.cuda.synchronize()
        return out

    from PIL import Image
    from transformers import AutoProcessor
    from transformers.video_utils import load_video

    from omni import OmniProcessor
    from omni.tokenizer_build import save_tokenizer

    warnings.simplefilter("ignore")
    tmp = Path(tempfile.mkdtemp())
    save_tokenizer(tmp)
    OmniProcessor.from_pretrained(tmp).save_pretrained(tmp)
    ours = OmniProcessor.from_pretrained(tmp)
    theirs = AutoProcessor.from_pretrained(tmp)

    if args.video:
        video = Path(args.video)
    else:
        video = tmp / "clip.mp4"
        write_video(video, seconds=60, fps=24, width=1280, height=720)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (1080, 1920, 3), dtype=np.uint8))

    def ours_video():
        return done(ours(text="<video> What happens?", videos=[str(video)], fps=2, return_tensors="pt", **on))

    def theirs_video():
        frames, metadata = load_video(str(video), fps=2, backend="decord")
        return done(
            theirs(
                text="<video> What happens?",
                videos=[frames],
                video_metadata=metadata,
                return_tensors="pt",
                **on,
            )
        )

    def ours_image():
        return done(ours(text="<image> What is this?", images=[image], return_tensors="pt", **on))

    def theirs_image():
        return done(theirs(text="<image> What is this?", images=[image], return_tensors="pt", **on))

    rows = []
    for name, mine, ref, repeats in (
        (
            f"{video.name if args.video else '60 s 720p video'} @ 2 fps",
            ours_video,
            theirs_video,
            args.repeats,
        ),
        ("1080p image", ours_image, theirs_image, args.repeats * 5),
    ):
        mine()  # warm-up (imports, caches)
        a = statistics.median(timed(mine, repeats))
        row = {"case": name, "ours_s": a, "transformers_s": None, "speedup": None}
        try:
            ref()
        except Exception as err:  # noqa: BLE001 - the peer's failure is reported, ours still timed
            row["transformers_error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:120]}"
        else:
            b = statistics.median(timed(ref, repeats))
            row.update(transformers_s=b, speedup=b / a)
        rows.append(row)

    print(f"{'case':<26} {'ours (s)':>10} {'transformers (s)':>17} {'speed-up':>9}")
    for r in rows:
        if r["speedup"] is None:
            print(
                f"{r['case']:<26} {r['ours_s']:>10.3f} {'failed':>17} {'-':>9}  ({r['transformers_error']})"
            )
        else:
            print(f"{r['case']:<26} {r['ours_s']:>10.3f} {r['transformers_s']:>17.3f} {r['speedup']:>8.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
